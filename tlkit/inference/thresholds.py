"""A multi-label model's decision thresholds, as its run directory keeps them (single-label models have none)."""

from __future__ import annotations

from typing import Any

import numpy as np

from tlkit.errors import TlkitError
from tlkit.io.rundir import RunDir


def is_multi_label(config: dict[str, Any] | None) -> bool:
    """True for a run (its config.toml as a dict) trained with ``--multi-label``."""
    return bool((config or {}).get("multi_label"))


def run_thresholds(source: Any) -> np.ndarray | None:
    """The thresholds of a multi-label model (a :class:`tlkit.inference.prediction.ModelSource`), in class order;
    None for a single-label one.  A multi-label run without ``thresholds.json`` uses 0.5 (noted)."""
    folder = RunDir(source.run_dir or source.model_path.parent)
    saved = folder.read_thresholds() if folder.thresholds_path.is_file() else None
    if saved is None:
        if not is_multi_label(source.config):
            return None
        source.notes.append(f"no {RunDir.THRESHOLDS}: every label's threshold is 0.5")
        return np.full(len(source.classes), 0.5)
    missing = [name for name in source.classes if name not in saved]
    if missing:
        raise TlkitError(f"{folder.thresholds_path} has no threshold for {', '.join(missing)}; retrain or fix it")
    return np.asarray([saved[name] for name in source.classes], dtype=np.float64)


__all__ = ["is_multi_label", "run_thresholds"]
