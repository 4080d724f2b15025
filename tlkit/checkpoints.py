"""Checkpoints in ``RUN_DIR/checkpoints/``: what a resumed run needs to continue exactly.

After every epoch tlkit writes (each file atomically, ``state.json`` last):

- ``last.weights.h5``  the weights being trained (the head in the head stage, the
  whole model in the fine-tuning stage)
- ``optimizer.npz``    the optimizer's variables (moments, step count)
- ``best.weights.h5``  the best weights so far by ``--monitor``
- ``state.json``       stage, epochs done, best epoch, history, data fingerprints

A run killed at any moment therefore resumes from its last completed epoch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tlkit.errors import TlkitError
from tlkit.rundir import atomic_path, write_json

STATE = "state.json"
LAST = "last.weights.h5"
BEST = "best.weights.h5"
OPTIMIZER = "optimizer.npz"


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def save_weights(model, path: Path) -> None:
    """``model.save_weights`` to ``path`` atomically."""
    with atomic_path(path, suffix=".weights.h5") as tmp:
        model.save_weights(tmp)


def save_optimizer(optimizer, path: Path) -> None:
    """The optimizer's variables, in order, as an ``.npz`` (atomically)."""
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, *[np.asarray(v) for v in optimizer.variables])


def restore_optimizer(model, path: Path) -> bool:
    """Load saved optimizer variables into ``model.optimizer``; False when they do not fit."""
    if not path.is_file():
        return False
    optimizer = model.optimizer
    optimizer.build(model.trainable_variables)
    with np.load(path) as saved:
        values = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    if len(values) != len(optimizer.variables) or any(
        tuple(v.shape) != tuple(value.shape) for v, value in zip(optimizer.variables, values)
    ):
        return False
    for variable, value in zip(optimizer.variables, values):
        variable.assign(value)
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
