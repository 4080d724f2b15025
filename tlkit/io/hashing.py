"""SHA-256 of a file: one implementation, streamed (never the whole file in memory)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

_CHUNK = 1 << 20


def sha256_file(path: str | Path, on_progress: Callable[[int], None] | None = None) -> str:
    """The file's SHA-256 hex digest; ``on_progress(n)`` after each chunk of ``n`` bytes."""
    with open(path, "rb") as handle:
        if on_progress is None:
            return hashlib.file_digest(handle, "sha256").hexdigest()
        digest = hashlib.sha256()
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
            on_progress(len(block))
        return digest.hexdigest()


__all__ = ["sha256_file"]
