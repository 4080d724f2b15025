"""What ``tlkit audit`` takes: train's options that decide what is audited, and the audit's own, checked
before any work.  Light to import (the CLI reads it to build ``tlkit audit --help``)."""

from __future__ import annotations

from tlkit.errors import TlkitError

DEFAULT_OUTPUT = "audit"
# The train options an audit takes (the rest do not change what is audited).
AUDIT_OPTIONS = (
    "data",
    "labels",
    "multi_label",
    "base",
    "weights",
    "image_size",
    "val_split",
    "seed",
    "engine",
    "feature_dtype",
)


def check_audit_options(*, folds: int, relabel_threshold: float, near_threshold: float | None) -> None:
    """The audit's own options, checked before any work (one line each)."""
    if not isinstance(folds, int) or isinstance(folds, bool) or folds < 2:
        raise TlkitError(f"--folds must be an integer >= 2, got {folds!r}")
    if not 0 < relabel_threshold <= 1:
        raise TlkitError(f"--relabel-threshold must be in (0, 1], got {relabel_threshold!r}")
    if near_threshold is not None and not 0 < near_threshold < 1:
        raise TlkitError(f"--near-threshold must be in (0, 1), got {near_threshold!r}")


__all__ = ["AUDIT_OPTIONS", "DEFAULT_OUTPUT", "check_audit_options"]
