"""Writing an entry's rows: the engine's features of a split, or rows gathered from other entries.

Pure array work for :class:`~tlkit.features.store.FeatureStore` (which owns where the rows
go): each writer streams the rows into an open binary file in order and returns their SHA-256,
so no entry is ever held whole in memory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Sources:
    """Rows of other entries that an entry reuses: ``found[hash] = (entry, row)``, ``arrays[entry]`` verified."""

    found: dict[str, tuple[str, int]] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def dtype(self) -> np.dtype:
        return next(iter(self.arrays.values())).dtype

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return tuple(next(iter(self.arrays.values())).shape[2:])


def gather_into(
    out: Any,
    shape: tuple[int, ...],
    dtype: str,
    hashes: list[str],
    sources: Sources,
    *,
    pixels: np.ndarray | None,
    engine: Any,
    batch_size: int,
    progress: Callable[[int], None] | None,
    chunk: int,
) -> tuple[str, int]:
    """Write one clean view of the images ``hashes`` (``shape`` = 1, images, ...) to ``out`` in order:
    rows found in ``sources`` copied (``chunk`` rows at a time, from their memory maps), the others
    computed by ``engine`` from ``pixels`` in batches of ``batch_size``.  Return the SHA-256 and the
    number of images computed."""
    missing = [i for i, h in enumerate(hashes) if h not in sources.found]
    if missing and (engine is None or pixels is None):
        raise RuntimeError("images missing from the cache and no engine to compute them")
    feature_shape = shape[2:]
    computed = np.empty((0, *feature_shape), dtype=dtype)
    next_missing = 0  # the first of ``missing`` not yet computed
    used = 0  # rows of ``computed`` already written

    def take(n: int) -> np.ndarray:
        """The next ``n`` computed rows (running the engine a batch at a time as needed)."""
        nonlocal computed, next_missing, used
        parts = []
        while n:
            if used == len(computed):
                assert pixels is not None and engine is not None  # checked above whenever rows are missing
                rows_idx = missing[next_missing : next_missing + batch_size]
                next_missing += len(rows_idx)
                batch = np.asarray(pixels[rows_idx], dtype=np.float32)
                computed = np.ascontiguousarray(engine(batch), dtype=dtype)
                if computed.shape != (len(rows_idx), *feature_shape):
                    raise RuntimeError(
                        f"the feature engine returned shape {computed.shape}, expected {(len(rows_idx), *feature_shape)}"
                    )
                used = 0
            k = min(n, len(computed) - used)
            parts.append(computed[used : used + k])
            used, n = used + k, n - k
        return np.concatenate(parts) if len(parts) != 1 else parts[0]

    digest = hashlib.sha256()
    for start in range(0, len(hashes), chunk):
        block = hashes[start : start + chunk]
        rows = np.empty((len(block), *feature_shape), dtype=dtype)
        by_source: dict[str, tuple[list[int], list[int]]] = {}
        holes = []
        for i, h in enumerate(block):
            if h in sources.found:
                name, row = sources.found[h]
                into, at = by_source.setdefault(name, ([], []))
                into.append(i)
                at.append(row)
            else:
                holes.append(i)
        for name, (into, at) in by_source.items():
            rows[into] = sources.arrays[name][0, at]
        if holes:
            rows[holes] = take(len(holes))
        out.write(rows.data)
        digest.update(rows.data)
        if progress is not None:
            progress(len(block))
    return digest.hexdigest(), len(missing)


def run_engine_into(
    out: Any,
    shape: tuple[int, ...],
    dtype: str,
    pixels: np.ndarray,
    engine: Any,
    *,
    batch_size: int,
    augment: Callable[[np.ndarray, int], np.ndarray] | None,
    progress: Callable[[int], None] | None,
) -> str:
    """Write the engine's features of ``pixels`` (``shape`` = views, images, ...) to the binary
    file ``out`` in order, and return their SHA-256.

    Plain writes, not a memory map: the written features stay in the page cache, not in this
    process's RSS, and a full disk is an ``OSError`` rather than a crash.  Hashing each batch
    as it is written gives the file's digest without reading it back.
    """
    views, count = shape[:2]
    digest = hashlib.sha256()
    for view in range(views):
        for start in range(0, count, batch_size):
            batch = np.asarray(pixels[start : start + batch_size], dtype=np.float32)
            if augment is not None:
                batch = augment(batch, view)
            rows = np.ascontiguousarray(engine(batch), dtype=dtype)
            if rows.shape != (len(batch), *shape[2:]):
                raise RuntimeError(
                    f"the feature engine returned shape {rows.shape}, expected {(len(batch), *shape[2:])}"
                )
            out.write(rows.data)
            digest.update(rows.data)
            if progress is not None:
                progress(len(batch))
    return digest.hexdigest()


__all__ = ["Sources", "gather_into", "run_engine_into"]
