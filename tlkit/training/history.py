"""Per-epoch history: rows ↔ ``history.csv`` ↔ column lists, and the one rule for the best epoch.

Training records one row per epoch (``epoch``, ``stage``, then the metrics);
the run directory keeps them as CSV; figures, reports and comparisons read
them back as Keras-``History``-style columns.  Which epoch is *best* is
decided here and nowhere else: training keeps that epoch's weights, and every
reader that has no recorded best epoch derives it with the same rule.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path
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


def rows_to_csv(rows: list[dict[str, Any]]) -> str:
    """CSV text with a header from the union of the rows' keys (first-seen order)."""
    header: list[str] = []
    for row in rows:
        header += [key for key in row if key not in header]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def history_from_rows(rows: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Column lists (Keras ``History`` style) from per-epoch rows."""
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys and k not in ("epoch", "stage")]
    return {k: [float(row.get(k, math.nan)) for row in rows] for k in keys}


def read_history_csv(path: str | Path) -> tuple[dict[str, list[float]], list[str], list[int]]:
    """``(history, stages, epochs)`` from a ``history.csv`` (missing values become NaN)."""
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    history: dict[str, list[float]] = {}
    stages: list[str] = []
    epochs: list[int] = []
    columns = [c for c in (rows[0].keys() if rows else []) if c not in ("epoch", "stage")]
    for i, row in enumerate(rows, start=1):
        try:
            epochs.append(int(float(row.get("epoch") or i)))
        except ValueError:
            epochs.append(i)
        stages.append(row.get("stage") or "head")
        for column in columns:
            try:
                value = float(row.get(column) or "nan")
            except ValueError:
                value = math.nan
            history.setdefault(column, []).append(value)
    # A non-numeric column (a note, a path) is not a metric.
    history = {k: v for k, v in history.items() if not all(math.isnan(x) for x in v)}
    return history, stages, epochs


__all__ = [
    "best_epoch",
    "best_index",
    "history_from_rows",
    "is_improvement",
    "monitor_mode",
    "read_history_csv",
    "rows_to_csv",
]
