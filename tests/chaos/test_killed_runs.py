"""``tlkit train`` and ``tlkit export`` SIGKILLed mid-phase (real processes, no mocks), then used again.

Each ``tlkit`` child costs a TensorFlow start-up, so one run is killed twice (in its feature pass,
then — resumed — while writing its report) and the export is made from the shared calibrated run.
Marked ``chaos``: ``-m "not chaos"`` skips them locally; CI runs them.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from tests.chaos.children import entry_names, wait_until
from tests.support import CLASS_COLORS, CLI_FAST, invoke_tlkit
from tlkit.features.store import FeatureStore
from tlkit.testing import make_image_folder


def _done(run: Path) -> bool:
    """True once ``run``'s state says done."""
    try:
        return json.loads((run / "checkpoints" / "state.json").read_text()).get("status") == "done"
    except (OSError, ValueError):
        return False  # not written yet, or being replaced right now


@pytest.mark.chaos
def test_a_run_killed_in_its_feature_pass_then_in_its_report(tmp_path, spawn):
    """1. SIGKILL while the val entry is being written, the train entry published: the cache lists
    and verifies only the whole train entry (the half val entry is a hidden leftover no run opens);
    the run directory has no checkpoint.
    2. ``--resume`` trains it from the start, reusing the train entry whole, computing val again,
    and removes the dead writer's leftover; SIGKILL once the run is marked done, while its report
    is written: the run is finished (model, metrics; ``--resume`` says so) and ``tlkit report``
    writes the report.
    """
    cache = tmp_path / "cache"
    env = {"TLKIT_CACHE_DIR": str(cache)}
    store = FeatureStore(cache)
    for attempt, val_per_class in enumerate((40, 160)):  # more val images when the kill came too late
        data = make_image_folder(
            tmp_path / f"data{attempt}", tuple(CLASS_COLORS), per_class=8, val_per_class=val_per_class, size=40
        )
        runs = tmp_path / f"runs{attempt}"
        child = spawn(
            "train", "--data", data, *CLI_FAST, "--epochs", "1", "--engine", "tensorflow", "--output", runs, env=env
        )

        def second_entry_started() -> bool:
            whole, _ = entry_names(store.entries_dir)
            return len(whole) == 1 and any(store.entries_dir.glob(".tmp-*/features.*"))

        wait_until(second_entry_started, [child], 300, "the second feature entry (val) to be written")
        child.kill()
        whole, leftovers = entry_names(store.entries_dir)
        if len(whole) == 1 and leftovers:
            break
        shutil.rmtree(cache)  # the val pass ended before SIGKILL landed: again, with more val images
    else:
        pytest.fail(f"the val feature pass always finished before SIGKILL landed (entries {whole})")
    assert child.process.returncode == -9

    # Only the whole entry is seen: listed, verified; the leftover is neither listed nor an error.
    (train_key,), (leftover,) = whole, leftovers
    info = invoke_tlkit("cache", "info", "--json", env=env)
    assert [e["name"] for e in json.loads(info.stdout)["entries"]] == [train_key], info.stdout + info.stderr
    verify = invoke_tlkit("cache", "verify", env=env)
    assert verify.returncode == 0 and "Checked 1 feature entries" in verify.stdout, verify.stdout + verify.stderr
    (run,) = runs.iterdir()  # made before the feature pass, with no checkpoint
    assert (run / "config.toml").is_file() and not (run / "checkpoints" / "state.json").exists()

    # The leftover is the dead writer's: no process holds its lock. The store removes such a
    # folder once nothing in it changed for ten minutes (the guard for a cache shared between
    # machines whose locks are local to each one): make it that old.
    hour_ago = time.time() - 3600
    for path in [*(store.entries_dir / leftover).iterdir(), store.entries_dir / leftover]:
        os.utime(path, (hour_ago, hour_ago))

    resumed = spawn("train", "--resume", run, env=env, name="resumed")
    wait_until(lambda: _done(run), [resumed], 300, "the resumed run to be marked done")
    resumed.kill()
    assert resumed.process.returncode == -9
    if (run / "report.html").exists():
        pytest.fail("the report was written before SIGKILL landed: the kill came too late to test anything")

    features = json.loads((run / "metrics.json").read_text())["features"]
    assert features["train"]["cache"] == "hit" and features["train"]["entry"].endswith(train_key)
    assert features["val"]["cache"] == "computed"
    whole, leftovers = entry_names(store.entries_dir)
    assert len(whole) == 2 and not leftovers, (whole, leftovers)  # the dead writer's leftover is gone
    val_key = next(name for name in whole if name != train_key)
    assert store.meta(val_key)["shape"][:2] == [1, 3 * val_per_class]
    verify = invoke_tlkit("cache", "verify", env=env)
    assert verify.returncode == 0 and "Checked 2 feature entries" in verify.stdout, verify.stdout

    # Killed in its report, the run is finished: whole files, --resume refuses, compare reads it.
    for name in ("metrics.json", "checkpoints/state.json", "classes.json"):
        json.loads((run / name).read_text())
    assert (run / "model.keras").stat().st_size > 0
    again = invoke_tlkit("train", "--resume", run)
    assert again.returncode == 1 and "already finished" in again.stderr
    compare = invoke_tlkit("compare", run, "--no-plot", "--json")
    assert compare.returncode == 0 and run.name in compare.stdout, compare.stderr

    report = invoke_tlkit("report", run)
    assert report.returncode == 0, report.stderr
    html = (run / "report.html").read_text(encoding="utf-8")
    metrics = json.loads((run / "metrics.json").read_text())
    assert f"{metrics['best_val_accuracy']:.1%}" in html and run.name in html
    evaluation = json.loads((run / "evaluation" / "metrics.json").read_text())
    assert evaluation["num_images"] == 3 * val_per_class  # the evaluation the kill cut short, done whole
    assert not [p.name for p in run.iterdir() if p.name.startswith(".")]  # no temporary files left


def _staged(export: Path) -> Path | None:
    """The export's staging folder once its export.json is written (the last files before publishing)."""
    return next((p.parent for p in export.glob(".onnx.tmp-*/export.json")), None)


@pytest.mark.chaos
def test_an_export_killed_while_publishing_leaves_no_half_export(calibrated_run, tmp_path, spawn):
    """SIGKILL once the staging folder holds the artefact and export.json (README and the rename to
    come): no ``export/onnx`` appears, and the next export takes that name, works, and removes the
    dead export's staging folder."""
    data, source = calibrated_run
    run = tmp_path / source.name
    shutil.copytree(source, run, ignore=shutil.ignore_patterns("export"))  # the shared run stays untouched
    export = run / "export"
    for attempt in range(3):
        child = spawn("export", run, "--format", "onnx", "--parity-images", "6", name=f"export{attempt}")
        wait_until(lambda: _staged(export), [child], 300, "the export's staging folder to hold export.json")
        child.kill()
        published = sorted(p.name for p in export.iterdir() if not p.name.startswith("."))
        if not published:
            break
        # It published before SIGKILL landed; what it published must be whole. Kill the next one.
        assert invoke_tlkit("predict", export / published[-1], data / "val").returncode == 0
        shutil.rmtree(export)
    else:
        pytest.fail("every export was published before SIGKILL landed: the kill came too late to test anything")

    leftovers = [p for p in export.iterdir() if p.name.startswith(".onnx.tmp-")]
    assert leftovers and (leftovers[0] / "model.onnx").is_file()  # killed with everything staged, unpublished
    half = invoke_tlkit("predict", export / "onnx", data / "val")
    assert half.returncode == 1 and "does not exist" in half.stderr

    # No process holds the dead writer's staging folder: the next export of that name removes it, once
    # nothing in it changed for ten minutes (a guard for file systems without working locks).
    hour_ago = time.time() - 3600
    for path in [*leftovers[0].rglob("*"), leftovers[0]]:
        os.utime(path, (hour_ago, hour_ago))
    again = invoke_tlkit("export", run, "--format", "onnx", "--parity-images", "6")
    assert again.returncode == 0, again.stderr
    assert (export / "onnx" / "export.json").is_file()  # the leftover took no name (docs/export.md's rules)
    assert not [p.name for p in export.iterdir() if p.name.startswith(".")]  # and it is gone
    predicted = invoke_tlkit("predict", export / "onnx", data / "val", "--json")
    assert predicted.returncode == 0, predicted.stderr
    rows = [json.loads(line) for line in predicted.stdout.splitlines() if line.strip()]
    assert len(rows) == 18 and all(r["error"] is None and r["label"] in ("cat", "dog", "fox") for r in rows), rows[:2]
