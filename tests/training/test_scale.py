"""Scale-out: tf.distribute strategies, two workers on localhost, mixed precision."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import numpy as np
import pytest

import tlkit
from tests.support import TLKIT, default_signals
from tlkit import TlkitError
from tlkit.testing import make_image_folder

FAST = ["--base", "mobilenet_v2", "--weights", "none", "--image-size", "32"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# MLflow 3.17's sqlite store, read back here, uses a loader SQLAlchemy deprecates
@pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated")
def test_two_workers_on_localhost_train_one_run_directory(tmp_path):
    data = make_image_folder(tmp_path / "data", ("a", "b"), per_class=8, val_per_class=2, size=24)
    cluster = {"worker": [f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"]}
    output = tmp_path / "runs"
    processes = []
    for index in range(2):
        env = dict(
            os.environ,
            TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
            TLKIT_CACHE_DIR=str(tmp_path / "cache"),
        )  # shared by both workers, as on a cluster
        processes.append(
            subprocess.Popen(
                [
                    TLKIT,
                    "train",
                    "--data",
                    str(data),
                    *FAST,
                    "--batch-size",
                    "2",
                    "--epochs",
                    "2",
                    "--strategy",
                    "multi-worker",
                    "--output",
                    str(output),
                    "--track",  # only the chief tracks (docs/tracking.md)
                    "mlflow",
                    "--track-uri",
                    f"sqlite:///{tmp_path / 'mlflow.db'}",
                    "--json",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
                cwd=tmp_path,  # MLflow keeps a sqlite store's artefacts in ./mlruns
                preexec_fn=default_signals,
            )
        )
    results = []
    try:
        for process in processes:
            results.append(process.communicate(timeout=300))
    finally:
        for process in processes:
            process.kill()
    for process, (_, stderr) in zip(processes, results):
        assert process.returncode == 0, stderr[-3000:]
    chief_err, worker_err = results[0][1], results[1][1]
    assert "multi-worker (worker 0 of 2 worker(s), chief), 2 replica(s)" in " ".join(chief_err.split())
    assert "worker 1 of 2" in " ".join(worker_err.split())
    runs = sorted(output.iterdir())
    assert len(runs) == 1, runs  # only the chief writes a run directory
    run = runs[0]
    rows = (run / "history.csv").read_text().splitlines()
    assert len(rows) == 1 + 2  # header + the 2 requested epochs
    assert json.loads(results[0][0])["metrics"]["epochs_run"] == 2
    assert (run / "model.keras").is_file() and (run / "checkpoints" / "state.json").is_file()
    # The feature pass was split: the shared cache holds one whole entry per split, no parts left.
    from tlkit.features.store import FeatureStore

    entries = [e["name"] for e in FeatureStore(tmp_path / "cache").entries() if e["kind"] == "features"]
    assert len(entries) == 2 and not [name for name in entries if "-part" in name], entries
    # One tracked run, the chief's, with each epoch once; the worker tracked nothing.
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    tracked = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [r.data.tags["tlkit.run_dir"] for r in tracked] == [str(run.resolve())]
    assert [m.step for m in client.get_metric_history(tracked[0].info.run_id, "val_loss")] == [1, 2]
    assert "MLflow" not in " ".join(worker_err.split())
    # The worker's temporary run directory is gone.
    worker_dir = json.loads(results[1][0])["run_dir"]
    assert worker_dir != str(run) and not Path(worker_dir).exists()


def test_mixed_bfloat16_on_cpu_and_the_model_loads_in_plain_keras(tmp_path):
    import keras

    data = make_image_folder(tmp_path / "data", ("a", "b"), per_class=4, val_per_class=2, size=24)
    result = tlkit.train(
        data=str(data),
        base="mobilenet_v2",
        weights="none",
        image_size=32,
        epochs=1,
        batch_size=4,
        output=str(tmp_path / "runs"),
        precision="mixed_bfloat16",
        verbose=False,
    )
    assert keras.mixed_precision.global_policy().name == "float32"  # the process is left as it was
    model = keras.saving.load_model(result.model_path)
    base = next(layer for layer in model.layers if isinstance(layer, keras.Model) and layer.name != "head")
    assert {layer.dtype_policy.name for layer in base.layers if layer.weights} == {"mixed_bfloat16"}
    head = model.get_layer("head")
    assert {layer.dtype_policy.name for layer in head.layers} == {"float32"}
    probs = model.predict(np.full((2, 32, 32, 3), 128, "float32"), verbose=0)
    assert probs.dtype == np.float32 and np.allclose(probs.sum(axis=1), 1, atol=1e-3)
    assert result.metrics["features"]["engine"] == "tensorflow"  # ONNX Runtime has no bfloat16 here


def test_strategy_selection_batch_and_errors(monkeypatch):
    from tlkit.training.distribute import make_distribution

    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.delenv("SLURM_NTASKS", raising=False)
    auto = make_distribution("auto")  # one CPU, no cluster: the default strategy
    assert (auto.name, auto.replicas, auto.is_chief) == ("default", 1, True)
    assert auto.global_batch(32, per_replica=True) == 32
    assert "learning rate 0.001 as given (not rescaled)" in auto.describe(32, True, 1e-3)
    mirrored = make_distribution("mirrored")
    assert mirrored.name == "mirrored" and mirrored.replicas >= 1
    assert mirrored.global_batch(8, per_replica=True) == 8 * mirrored.replicas
    with pytest.raises(TlkitError, match="needs the cluster: set TF_CONFIG"):
        make_distribution("multi-worker")
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(TlkitError, match="TF_CONFIG is not valid JSON"):
        make_distribution("auto")


def test_global_batch_must_split_over_the_replicas():
    from tlkit.training.distribute import Distribution

    two = Distribution(strategy=None, name="mirrored", replicas=2, workers=1, is_chief=True, task="")
    assert two.global_batch(16, per_replica=True) == 32
    assert two.global_batch(16, per_replica=False) == 16
    with pytest.raises(TlkitError, match="does not split evenly over 2 replicas"):
        two.global_batch(15, per_replica=False)


def test_a_feature_pass_split_over_workers_equals_one_process(tmp_path, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    from tlkit.features import shards as feature_shards
    from tlkit.features.store import FeatureStore

    monkeypatch.setenv("TLKIT_CACHE_DIR", str(tmp_path / "cache"))
    store = FeatureStore()
    pixels = np.random.default_rng(0).integers(0, 255, (11, 4, 4, 3), dtype=np.uint8)
    labels = np.arange(11) % 2

    def engine(batch: np.ndarray) -> np.ndarray:
        return batch.reshape(len(batch), -1)[:, :6] * 0.5 + 1.0

    one = store.load_or_compute(
        key="single", pixels=pixels, labels=labels, feature_shape=(6,), engine=engine, batch_size=3
    )

    def worker(index: int) -> np.ndarray:  # what each of 3 workers does, concurrently
        feature_shards.compute_part(
            key="split", index=index, count=3, pixels=pixels, feature_shape=(6,), engine=engine, batch_size=2
        )
        return np.asarray(feature_shards.assemble(key="split", count=3, total=11, timeout=60, poll=0.05))

    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(worker, range(3)))
    for result in results:
        np.testing.assert_array_equal(result, np.asarray(one.features))
    names = sorted(e["name"] for e in store.entries())
    assert names == ["single", "split"]  # the parts were folded into the whole and removed


def test_a_missing_worker_part_is_named_after_the_timeout(tmp_path, monkeypatch):
    from tlkit.features import shards as feature_shards

    monkeypatch.setenv("TLKIT_CACHE_DIR", str(tmp_path / "cache"))
    pixels = np.zeros((4, 2, 2, 3), dtype=np.uint8)
    feature_shards.compute_part(
        key="k",
        index=0,
        count=2,
        pixels=pixels,
        feature_shape=(1,),
        engine=lambda b: np.zeros((len(b), 1), np.float32),
        batch_size=4,
    )
    with pytest.raises(TlkitError, match=r"worker\(s\) 1 never published their features .* TLKIT_CACHE_DIR"):
        feature_shards.assemble(key="k", count=2, total=4, timeout=0.2, poll=0.05)


def test_assembling_replaces_a_damaged_whole_entry_in_the_way(tmp_path, monkeypatch):
    from tlkit.features import shards as feature_shards
    from tlkit.features.store import FeatureStore

    monkeypatch.setenv("TLKIT_CACHE_DIR", str(tmp_path / "cache"))
    pixels = np.arange(4 * 2 * 2 * 3, dtype=np.uint8).reshape(4, 2, 2, 3)
    store = FeatureStore()
    store.entry_path("k").mkdir(parents=True)
    store.meta_path("k").write_text("not json")  # a damaged entry where the whole one goes
    for index in range(2):
        feature_shards.compute_part(
            key="k",
            index=index,
            count=2,
            pixels=pixels,
            feature_shape=(1,),
            engine=lambda b: b.reshape(len(b), -1)[:, :1].astype(np.float32),
            batch_size=4,
        )
    whole = feature_shards.assemble(key="k", count=2, total=4, timeout=5, poll=0.05)
    np.testing.assert_array_equal(np.asarray(whole)[0, :, 0], pixels.reshape(4, -1)[:, 0])
