"""A worker of a two-process multi-worker run killed, then ``--resume`` on both (real processes, 127.0.0.1).

It checks all that the uninterrupted two-worker run of tests/training/test_scale.py checks, too.
Marked ``chaos``: ``-m "not chaos"`` skips it locally; CI runs it.
"""

from __future__ import annotations

import csv
import json
import socket
from pathlib import Path

import pytest

from tests.chaos.children import wait_until
from tlkit.features.store import FeatureStore
from tlkit.testing import make_image_folder

EPOCHS = 4


def _cluster_env(cache: Path) -> list[dict[str, str]]:
    """TF_CONFIG of two workers on fresh localhost ports, and the feature cache they share."""
    ports = []
    for _ in range(2):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    return [
        {
            "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
            "TLKIT_CACHE_DIR": str(cache),
        }
        for index in range(2)
    ]


def _state(runs: Path) -> dict | None:
    for path in runs.glob("*/checkpoints/state.json"):
        try:
            return {**json.loads(path.read_text()), "run": str(path.parents[1])}
        except ValueError:
            pass  # being replaced right now
    return None


@pytest.mark.chaos
def test_a_killed_worker_then_resume_on_both_finishes_the_run_once(tmp_path, spawn):
    """Worker 1 is SIGKILLed after the chief checkpointed epoch 1: the chief stops within its
    heartbeat timeout and says how to resume; ``--resume RUN`` on both workers then finishes the
    run with one history row per epoch, as an uninterrupted run has."""
    data = make_image_folder(tmp_path / "data", ("a", "b", "c"), per_class=6, val_per_class=2, size=24)
    runs, cache = tmp_path / "runs", tmp_path / "cache"
    train = [
        "train",
        "--data",
        data,
        *("--base", "mobilenet_v2", "--weights", "none", "--image-size", "32", "--batch-size", "2"),
        *("--epochs", str(EPOCHS), "--engine", "tensorflow", "--strategy", "multi-worker", "--output", runs),
    ]
    chief, worker = (spawn(*train, name=f"worker{i}", env=env) for i, env in enumerate(_cluster_env(cache)))
    state = wait_until(lambda: (s := _state(runs)) and s["epoch"] >= 1 and s, [chief, worker], 300, "epoch 1")
    worker.kill()
    if state["epoch"] >= EPOCHS or state["status"] != "running":
        pytest.fail(f"the run got to epoch {state['epoch']} ({state['status']}) before the kill: too late to test")
    assert "multi-worker (worker 0 of 2 worker(s), chief), 2 replica(s)" in " ".join(chief.stderr.split())
    assert "worker 1 of 2" in " ".join(worker.stderr.split())

    # The chief notices within TensorFlow's heartbeat timeout (~10 s) and says what to do.
    assert chief.finish(timeout=180) == 1, chief.describe()
    said = " ".join(chief.stderr.split())
    run = Path(state["run"])
    assert "worker 1 of this multi-worker run stopped" in said and f"tlkit train --resume {run}" in said, said
    assert "please report it" not in said
    killed_at = json.loads((run / "checkpoints" / "state.json").read_text())
    assert killed_at["status"] == "running" and 1 <= killed_at["epoch"] < EPOCHS
    assert not (run / "model.keras").exists()

    # Both resume from the chief's run directory (fresh ports: the old ones may linger).
    resumed = [
        spawn("train", "--resume", run, "--json", name=f"resumed{i}", env=env)
        for i, env in enumerate(_cluster_env(cache))
    ]
    for child in resumed:
        assert child.finish(timeout=300) == 0, child.describe()
    assert "(resuming)" in resumed[0].stderr and "(resuming)" in resumed[1].stderr
    chief_result, worker_result = (json.loads(child.stdout) for child in resumed)
    assert chief_result["run_dir"] == str(run) and chief_result["metrics"]["epochs_run"] == EPOCHS
    assert worker_result["run_dir"] != str(run) and not Path(worker_result["run_dir"]).exists()  # its temporary one
    with open(run / "history.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(row["epoch"]) for row in rows] == list(range(1, EPOCHS + 1))  # as uninterrupted: each epoch once
    final = json.loads((run / "checkpoints" / "state.json").read_text())
    assert final["status"] == "done" and final["epoch"] == EPOCHS and len(final["rows"]) == EPOCHS
    assert json.loads((run / "metrics.json").read_text())["epochs_run"] == EPOCHS
    assert (run / "model.keras").is_file()
    assert sorted(p.name for p in runs.iterdir()) == [run.name]  # no second run directory
    # The feature pass was split between the workers: one whole entry per split, no parts left.
    entries = [e["name"] for e in FeatureStore(cache).entries() if e["kind"] == "features"]
    assert len(entries) == 2 and not [name for name in entries if "-part" in name], entries
