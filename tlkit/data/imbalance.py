"""Class imbalance: class weights and a warning when the data is strongly skewed."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tlkit.errors import TlkitError

IMBALANCE_WARNING_RATIO = 3.0


def class_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Images per class index (multi-label (N, C) multi-hot labels: images having each label)."""
    if np.ndim(labels) == 2:
        return np.asarray(labels, dtype=np.int64).sum(axis=0)
    return np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)


def imbalance_ratio(counts: np.ndarray) -> float:
    """Largest class size over smallest (inf when a class is empty)."""
    smallest = int(counts.min())
    return float("inf") if smallest == 0 else float(counts.max()) / smallest


def class_weights(setting: str, labels: np.ndarray, classes: list[str]) -> dict[int, float] | None:
    """Keras ``class_weight`` for ``--class-weight none|balanced|FILE.json``.

    ``balanced`` weighs class c by ``n / (k · n_c)`` (as scikit-learn does), so
    every class contributes equally to the loss.  A JSON file maps class names
    to weights; classes it leaves out get 1.0.
    """
    if setting == "none":
        return None
    if setting == "balanced":
        counts = class_counts(labels, len(classes))
        total = float(counts.sum())
        return {i: (total / (len(classes) * c) if c else 0.0) for i, c in enumerate(counts)}
    given = read_class_weights(setting, classes)
    return {index: given.get(name, 1.0) for index, name in enumerate(classes)}


def read_class_weights(path: str | Path, classes: Sequence[str] | None = None) -> dict[str, float]:
    """The ``{class name: weight}`` of a ``--class-weight FILE.json``: a JSON object of numbers >= 0.

    With ``classes`` (the data's), every name in the file must be one of them; without
    (before the data is scanned) only the file itself is checked.

    Raises:
        TlkitError: the file is missing, not JSON, not an object, holds a weight that is not a
            number >= 0, or names a class that is not in ``classes``.
    """
    setting = str(path)
    try:
        given = json.loads(Path(setting).expanduser().read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TlkitError(
            f"--class-weight file {setting!r} does not exist; pass an existing .json file, 'balanced' or 'none'"
        ) from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise TlkitError(
            f'--class-weight file {setting!r} is not readable JSON ({exc}); write an object like {{"cat": 2.0}}'
        ) from None
    if not isinstance(given, dict):
        raise TlkitError(f"--class-weight file {setting!r} must hold an object {{class name: weight}}")
    if classes is not None:
        unknown = sorted(set(given) - set(classes))
        if unknown:
            raise TlkitError(
                f"--class-weight file {setting!r} names classes that are not in the data: {', '.join(unknown)} "
                f"(classes: {', '.join(classes)})"
            )
    weights = {}
    for name, value in given.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise TlkitError(f"--class-weight file {setting!r}: weight of {name!r} must be a number >= 0")
        weights[name] = float(value)
    return weights
