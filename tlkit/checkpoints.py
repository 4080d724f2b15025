"""Checkpoints in ``RUN_DIR/checkpoints/``: what a resumed run needs to continue exactly.

After every epoch tlkit writes (each file atomically, the state last; the
names are :class:`tlkit.rundir.RunDir`'s):

- ``last.arrays``      the weights being trained (the head in the head stage, the
  whole model in the fine-tuning stage), in ``model.weights`` order
- ``optimizer.arrays`` the optimizer's variables (moments, step count)
- ``best.arrays``      the best weights so far by ``--monitor`` (a hard link to
  ``last.arrays`` of the best epoch, so it costs no extra write)
- ``state.json``     stage, epochs done, best epoch, history, data fingerprints

A run killed at any moment therefore resumes from its last completed epoch.
Each file is ``np.save`` arrays back to back (no pickle, no zip CRC) rather
than Keras's ``.weights.h5``: several times faster to write, which matters
after every epoch.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from tlkit.errors import TlkitError
from tlkit.rundir import RunDir, atomic_path


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
    import keras

    # A variable's read value is a fresh tensor; its numpy view is a snapshot of this moment.
    return [keras.ops.convert_to_numpy(v) for v in variables]


def load_weights(model, path: Path) -> None:
    """Load what :func:`save_weights` wrote into ``model`` (the same architecture)."""
    _assign(model.weights, _load_arrays(path), str(path))


def link_best(run: RunDir) -> None:
    """Make the best-weights file the current last-weights file (a hard link: no copy)."""
    tmp = run.checkpoints_dir / f".{run.BEST_WEIGHTS}.tmp"
    tmp.unlink(missing_ok=True)
    try:
        os.link(run.last_weights_path, tmp)
    except OSError:  # a file system without hard links
        shutil.copyfile(run.last_weights_path, tmp)
    os.replace(tmp, run.best_weights_path)


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


class BackgroundWriter:
    """Writes one epoch's checkpoint on a background thread while the next epoch trains.

    Writing the head's weights and optimizer state (hundreds of MB for ``dense256``)
    costs a good part of an epoch; the values are copied on the training thread
    (:func:`snapshot`, a memcpy) and written behind it, in order.  Each job writes
    its state file last, so a run killed mid-write resumes from the previous
    epoch.  :meth:`wait` blocks until the queue is empty and re-raises a failed write.
    """

    def __init__(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tlkit-checkpoint")
        self._pending: list = []

    def submit(self, job) -> None:
        """Queue ``job()`` after the previous one (which must have succeeded)."""
        self.wait()  # at most one epoch behind: bounded memory, and errors surface at once
        self._pending.append(self._pool.submit(job))

    def wait(self) -> None:
        """Block until every queued write is on disk; re-raise the first failure."""
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self._pool.shutdown(wait=True)
