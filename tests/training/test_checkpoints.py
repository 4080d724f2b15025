"""Checkpoint files and the background writer (no TensorFlow: host arrays only).

What these pin down: an epoch is committed as a unit (a crash mid-write resumes from the
previous epoch with matching weights, optimizer state and best weights), a checkpoint the
disk has not caught up with is replaced by the next one without losing the best weights,
and run directories from before generations still resume.
"""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from tlkit.io.rundir import RunDir
from tlkit.training import checkpoints
from tlkit.training.checkpoints import BackgroundWriter, EpochCheckpoint, checkpoint_files


@pytest.fixture
def run(tmp_path) -> RunDir:
    run = RunDir.create(tmp_path, "base", "head")
    run.checkpoints_dir.mkdir(parents=True, exist_ok=True)
    return run


def _epoch(run: RunDir, epoch: int, *, best_epoch: int, is_best: bool) -> EpochCheckpoint:
    weights = [np.full((3, 2), float(epoch), np.float32), np.arange(epoch, dtype=np.float32)]
    optimizer = [np.full(4, 10.0 * epoch, np.float32)]
    state = {"epoch": epoch, "checkpoint": f"head-{epoch:04d}", "best_checkpoint": f"head-{best_epoch:04d}"}
    return EpochCheckpoint(
        run=run,
        weights=weights,
        optimizer=optimizer,
        best=weights if is_best else None,
        rows=[{"epoch": e} for e in range(1, epoch + 1)],
        state=state,
    )


def _on_disk(run: RunDir) -> tuple[dict, list, list, list]:
    state = json.loads(run.state_path.read_text())
    last, optimizer, best = checkpoint_files(run, state)
    load = checkpoints._load_arrays
    return state, load(last), load(optimizer), load(best)


def test_an_epoch_is_committed_as_a_unit_and_older_generations_are_removed(run):
    _epoch(run, 1, best_epoch=1, is_best=True).write()
    _epoch(run, 2, best_epoch=1, is_best=False).write()
    state, last, optimizer, best = _on_disk(run)
    assert state["epoch"] == 2
    assert last[0][0, 0] == 2.0 and optimizer[0][0] == 20.0 and best[0][0, 0] == 1.0
    assert sorted(p.name for p in run.checkpoints_dir.glob("*.arrays")) == [
        "best-head-0001.arrays",
        "last-head-0002.arrays",
        "optimizer-head-0002.arrays",
    ]


def test_a_crash_before_the_state_is_written_leaves_the_previous_epoch_whole(run, monkeypatch):
    _epoch(run, 1, best_epoch=1, is_best=True).write()

    def crash(self, _state):
        raise OSError("killed")

    # Epoch 2's arrays (a new best) reach the disk, then the process dies before state.json.
    monkeypatch.setattr(RunDir, "write_state", crash)
    with pytest.raises(OSError):
        _epoch(run, 2, best_epoch=2, is_best=True).write()
    state, last, optimizer, best = _on_disk(run)
    assert state["epoch"] == 1
    assert last[0][0, 0] == 1.0 and optimizer[0][0] == 10.0 and best[0][0, 0] == 1.0


def test_a_waiting_checkpoint_is_replaced_by_the_next_and_keeps_its_best_weights(run, monkeypatch):
    release, started = threading.Event(), threading.Event()
    real_save = checkpoints.save_arrays

    def slow_save(values, path):
        started.set()
        release.wait(10)
        real_save(values, path)

    monkeypatch.setattr(checkpoints, "save_arrays", slow_save)
    writer = BackgroundWriter()
    try:
        writer.submit(_epoch(run, 1, best_epoch=1, is_best=True))
        assert started.wait(10)  # epoch 1 is being written; the disk is "slow"
        writer.submit(_epoch(run, 2, best_epoch=2, is_best=True))  # waits...
        writer.submit(_epoch(run, 3, best_epoch=2, is_best=False))  # ...and is replaced: never written alone
        release.set()
        writer.wait()
    finally:
        release.set()
        writer.close()
    state, last, optimizer, best = _on_disk(run)
    assert state["epoch"] == 3 and state["best_checkpoint"] == "head-0002"
    assert last[0][0, 0] == 3.0 and optimizer[0][0] == 30.0
    assert best[0][0, 0] == 2.0  # epoch 2's weights, carried by epoch 3's checkpoint
    assert not run.checkpoint_file("last", "head-0002").exists()


def test_a_failed_write_is_raised_on_the_training_thread(run, monkeypatch):
    def full_disk(values, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoints, "save_arrays", full_disk)
    writer = BackgroundWriter()
    writer.submit(_epoch(run, 1, best_epoch=1, is_best=True))
    with pytest.raises(OSError, match="No space left"):
        writer.wait()
    writer.close()


def test_run_directories_from_before_generations_still_resume(run):
    assert checkpoint_files(run, {"epoch": 3}) == (run.last_weights_path, run.optimizer_path, run.best_weights_path)
