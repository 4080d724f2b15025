"""Checkpoints in ``RUN_DIR/checkpoints/``: what a resumed run needs to continue exactly.

After every epoch tlkit checkpoints, as one unit (the names are :class:`tlkit.io.rundir.RunDir`'s):

- ``last-<generation>.arrays``      the weights being trained (the head in the head stage,
  the whole model in the fine-tuning stage), in ``model.weights`` order
- ``optimizer-<generation>.arrays`` the optimizer's variables (moments, step count)
- ``best-<generation>.arrays``      the best weights so far by ``--monitor`` (a hard link to the
  ``last`` file of the best epoch, so it costs no extra write)
- ``state.json``    stage, epochs done, best epoch, history, data fingerprints, and the
  generations above (``checkpoint``, ``best_checkpoint``)

A generation is named after its stage and epoch (``head-0007``).  ``state.json`` is written
last and is what commits an epoch: files of a newer generation are never read before it
names them, and older ones are removed only after it no longer does.  So a run killed at
any moment — even in the middle of a write — resumes from the last committed epoch with
weights, optimizer state and best weights that all belong to it.

Each file is ``np.save`` arrays back to back (no pickle, no zip CRC) rather than Keras's
``.weights.h5``: several times faster to write, which matters after every epoch.  Runs from
before generations (``last.arrays``, ``optimizer.arrays``, ``best.arrays``) still resume.
"""

from __future__ import annotations

import os
import shutil
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from tlkit.errors import TlkitError
from tlkit.io.files import atomic_path
from tlkit.io.rundir import RunDir


def _save_arrays(values: list, path: Path) -> None:
    """Arrays back to back in one file (``np.save`` each: no zip CRC, ~2× faster than savez)."""
    with atomic_path(path, suffix=".arrays") as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, np.int64(len(values)))
            for value in values:
                np.save(fh, np.asarray(value), allow_pickle=False)


def _load_arrays(path: Path) -> list[np.ndarray]:
    with open(path, "rb") as fh:
        count = int(np.load(fh))
        return [np.load(fh, allow_pickle=False) for _ in range(count)]


def _assign(variables: list, values: list[np.ndarray], what: str) -> None:
    if len(values) != len(variables) or any(
        tuple(v.shape) != tuple(value.shape) for v, value in zip(variables, values)
    ):
        raise TlkitError(f"checkpoint {what} does not fit the model; the run cannot be resumed")
    for variable, value in zip(variables, values):
        variable.assign(value)


def save_weights(model, path: Path) -> None:
    """``model.weights`` (trainable and not) to ``path`` atomically."""
    _save_arrays(model.weights, path)


def snapshot(variables: list) -> list[np.ndarray]:
    """Host copies of ``variables``' current values (safe to write while training goes on)."""
    return [_host_value(v) for v in variables]


def _host_value(variable: Any) -> np.ndarray:
    # A variable's read value is a fresh tensor (later updates copy on write); its numpy view is
    # a snapshot of this moment.  `.numpy()` copies once, Keras's convert_to_numpy twice.
    try:
        return variable.value.numpy()
    except (AttributeError, ValueError, NotImplementedError):
        import keras  # lazy: Keras imports TensorFlow; only a running fit gets here

        return keras.ops.convert_to_numpy(variable)


def load_weights(model, path: Path) -> None:
    """Load what :func:`save_weights` wrote into ``model`` (the same architecture)."""
    _assign(model.weights, _load_arrays(path), str(path))


def save_arrays(values: list[np.ndarray], path: Path) -> None:
    """Arrays (e.g. a :func:`snapshot`) to ``path`` atomically, in the format :func:`load_weights` reads."""
    _save_arrays(values, path)


def save_optimizer(optimizer, path: Path) -> None:
    """The optimizer's variables, in order (atomically)."""
    _save_arrays(optimizer.variables, path)


def restore_optimizer(model, path: Path) -> bool:
    """Load saved optimizer variables into ``model.optimizer``; False when there are none."""
    if not path.is_file():
        return False
    model.optimizer.build(model.trainable_variables)
    _assign(model.optimizer.variables, _load_arrays(path), str(path))
    return True


def checkpoint_files(run: RunDir, state: dict[str, Any]) -> tuple[Path, Path, Path]:
    """The (last weights, optimizer, best weights) files the committed ``state`` names."""
    generation, best = state.get("checkpoint") or "", state.get("best_checkpoint") or ""
    if not generation:  # a run directory from before generations
        return run.last_weights_path, run.optimizer_path, run.best_weights_path
    return (
        run.checkpoint_file("last", generation),
        run.checkpoint_file("optimizer", generation),
        run.checkpoint_file("best", best) if best else run.best_weights_path,
    )


@dataclass(frozen=True)
class EpochCheckpoint:
    """One epoch's checkpoint: host copies of the weights and optimizer state, and the state
    that commits them (see the module docstring).

    ``best`` holds the best weights when they are not on disk yet: this epoch's own
    (``best is weights``: written as a hard link), or those of a best epoch whose checkpoint
    this one replaced before it was written (:meth:`superseding`).
    """

    run: RunDir
    weights: list[np.ndarray]
    optimizer: list[np.ndarray] | None  # None between stages: the next stage starts a fresh optimizer
    best: list[np.ndarray] | None
    rows: list[dict[str, Any]]
    state: dict[str, Any]

    def superseding(self, older: EpochCheckpoint) -> EpochCheckpoint:
        """This checkpoint in place of ``older``, which will never be written: it takes over
        ``older``'s best weights when this epoch is not a new best."""
        if self.best is None and older.best is not None:
            return replace(self, best=older.best)
        return self

    def write(self) -> None:
        """Write the arrays, then ``state.json`` (the commit), then drop what it no longer names."""
        last, optimizer, best = checkpoint_files(self.run, self.state)
        save_arrays(self.weights, last)
        if self.optimizer is not None:
            save_arrays(self.optimizer, optimizer)
        if self.best is self.weights:
            _link(last, best)
        elif self.best is not None:
            save_arrays(self.best, best)
        self.run.write_history(self.rows)
        self.run.write_state(self.state)
        remove_unnamed(self.run, self.state)


def remove_unnamed(run: RunDir, state: dict[str, Any]) -> None:
    """Delete checkpoint files the committed ``state`` does not name (older generations)."""
    keep = {path.name for path in checkpoint_files(run, state)}
    for path in run.checkpoints_dir.glob("*.arrays"):
        if path.name not in keep:
            path.unlink(missing_ok=True)


def _link(source: Path, target: Path) -> None:
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:  # a file system without hard links
        shutil.copyfile(source, tmp)
    os.replace(tmp, target)


class BackgroundWriter:
    """Writes epoch checkpoints on a background thread while training goes on; the newest wins.

    The training thread only copies the values (:func:`snapshot`, a memcpy) and hands them
    over.  When the disk is slower than the epochs, a checkpoint still waiting to be written
    is replaced by the next one (:meth:`EpochCheckpoint.superseding`), so training never
    waits for the disk and at most two checkpoints are held in memory.  :meth:`wait` blocks
    until the newest checkpoint is on disk and re-raises a failed write.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._waiting: EpochCheckpoint | None = None
        self._busy = False
        self._closed = False
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def submit(self, checkpoint: EpochCheckpoint) -> None:
        """Queue ``checkpoint`` (replacing one not started yet); raise if an earlier write failed."""
        with self._cond:
            self._raise_failure()
            if self._waiting is not None:
                checkpoint = checkpoint.superseding(self._waiting)
            self._waiting = checkpoint
            self._cond.notify_all()
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="tlkit-checkpoint", daemon=True)
                self._thread.start()

    def wait(self) -> None:
        """Block until every submitted checkpoint is written (or replaced and written); re-raise a failure."""
        with self._cond:
            while self._waiting is not None or self._busy:
                self._cond.wait()
            self._raise_failure()

    def close(self) -> None:
        """:meth:`wait`, then stop the thread."""
        try:
            self.wait()
        finally:
            with self._cond:
                self._closed = True
                self._cond.notify_all()
            if self._thread is not None:
                self._thread.join()

    def _raise_failure(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _loop(self) -> None:
        while True:
            with self._cond:
                while self._waiting is None and not self._closed:
                    self._cond.wait()
                if self._waiting is None:
                    return
                checkpoint, self._waiting, self._busy = self._waiting, None, True
            try:
                checkpoint.write()
            except BaseException as exc:  # surfaced on the training thread at the next submit/wait
                with self._cond:
                    self._error = exc
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
