"""'Did you mean …?' suggestions for mistyped names."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def closest_names(name: str, known: Iterable[str], n: int = 3) -> list[str]:
    """The known names closest to ``name``, best first (may be empty)."""
    known = list(known)
    matches = difflib.get_close_matches(name, known, n=n, cutoff=0.5)
    if not matches:
        # Prefix/substring hits catch e.g. "resnet" -> resnet50, resnet101.
        lowered = name.lower()
        matches = [k for k in known if lowered and (lowered in k or k in lowered)][:n]
    return matches


def closest(name: str, known: Iterable[str]) -> str:
    """A ready-to-append hint like ``"; did you mean 'resnet50'?"`` or ``""``."""
    matches = closest_names(name, known)
    if not matches:
        return ""
    return "; did you mean " + " or ".join(repr(m) for m in matches) + "?"
