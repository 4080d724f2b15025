"""Checkpoints in ``RUN_DIR/checkpoints/``: what a resumed run needs to continue exactly.

After every epoch tlkit writes (each file atomically, ``state.json`` last):

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

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from tlkit.errors import TlkitError
from tlkit.rundir import atomic_path, write_json

STATE = "state.json"
LAST = "last.arrays"
BEST = "best.arrays"
OPTIMIZER = "optimizer.arrays"


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


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


def load_weights(model, path: Path) -> None:
    """Load what :func:`save_weights` wrote into ``model`` (the same architecture)."""
    _assign(model.weights, _load_arrays(path), str(path))


def link_best(run_dir: Path) -> None:
    """Make ``best.arrays`` the current ``last.arrays`` (a hard link: no copy)."""
    folder = checkpoint_dir(run_dir)
    tmp = folder / ".best.arrays.tmp"
    tmp.unlink(missing_ok=True)
    try:
        os.link(folder / LAST, tmp)
    except OSError:  # a file system without hard links
        shutil.copyfile(folder / LAST, tmp)
    os.replace(tmp, folder / BEST)


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


def write_state(run_dir: Path, state: dict[str, Any]) -> None:
    write_json(checkpoint_dir(run_dir) / STATE, state)


def read_state(run_dir: Path) -> dict[str, Any] | None:
    path = checkpoint_dir(run_dir) / STATE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise TlkitError(f"{path} is damaged ({exc}); the run cannot be resumed") from None


def open_for_resume(run_dir: str | Path) -> tuple[Path, dict[str, Any] | None]:
    """Check that ``run_dir`` is a resumable tlkit run; return it and its checkpoint state."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise TlkitError(f"--resume {run_dir}: no such folder")
    if not (run_dir / "config.toml").is_file() or not (run_dir / "classes.json").is_file():
        raise TlkitError(
            f"--resume {run_dir}: not a tlkit run directory (it has no config.toml/classes.json)"
        )
    state = read_state(run_dir)
    if state is not None and state.get("status") == "done":
        raise TlkitError(
            f"--resume {run_dir}: that run already finished; start a new run with "
            f"tlkit train --config {run_dir / 'config.toml'}"
        )
    return run_dir, state
