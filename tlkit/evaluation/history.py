"""Per-epoch history: rows ↔ column lists, and the one rule for the best epoch.

Training records one row per epoch (``epoch``, ``stage``, then the metrics);
the run directory keeps them as CSV (:class:`tlkit.io.rundir.RunDir`); figures, reports and comparisons read
them back as Keras-``History``-style columns.  Which epoch is *best* is
decided here and nowhere else: training keeps that epoch's weights, and every
reader that has no recorded best epoch derives it with the same rule.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

DEFAULT_MONITOR = "val_accuracy"
FALLBACK_MONITOR = "val_loss"


def monitor_mode(monitor: str) -> str:
    """``"min"`` for losses, ``"max"`` for everything else (accuracy, F1)."""
    return "min" if monitor.endswith("loss") else "max"


def is_improvement(value: float | None, best: float | None, monitor: str) -> bool:
    """True when ``value`` beats ``best`` for ``monitor`` (NaN never does; anything beats None)."""
    if value is None or math.isnan(value):
        return False
    if best is None:
        return True
    return value < best if monitor_mode(monitor) == "min" else value > best


def best_index(values: Sequence[float], monitor: str) -> int | None:
    """0-based index of the first best value (NaNs ignored); None when every value is NaN."""
    best: int | None = None
    for i, value in enumerate(values):
        if is_improvement(value, None if best is None else values[best], monitor):
            best = i
    return best


def best_epoch(history: dict[str, list[float]], monitor: str = DEFAULT_MONITOR) -> int | None:
    """1-based epoch of the best ``monitor`` value (``val_loss`` when ``monitor`` has none)."""
    for key in (monitor, FALLBACK_MONITOR):
        index = best_index(history.get(key) or [], key)
        if index is not None:
            return index + 1
    return None


def history_from_rows(rows: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Column lists (Keras ``History`` style) from per-epoch rows."""
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys and k not in ("epoch", "stage")]
    return {k: [float(row.get(k, math.nan)) for row in rows] for k in keys}


__all__ = [
    "best_epoch",
    "best_index",
    "history_from_rows",
    "is_improvement",
    "monitor_mode",
]
