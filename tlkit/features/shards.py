"""The feature pass of a multi-worker run, split across the workers through the shared cache.

Worker ``k`` of ``n`` runs the frozen base on images ``k, k+n, k+2n, ...`` of a
split and publishes that *part* in the shared :class:`~tlkit.features.store.FeatureStore`
(atomically, like any entry).  Every worker then waits for the ``n`` parts and assembles the
complete entry — the first to finish publishes it, the others find it — so
every worker trains on all the features, each image having gone through the
base once.  A worker that dies mid-pass leaves no half part (parts are
published by rename); the others stop waiting after ``timeout`` seconds with a
message saying which part is missing and why that usually happens.

``TLKIT_CACHE_DIR`` must be a folder all workers share (see docs/scaling.md).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from tlkit.errors import TlkitError
from tlkit.features.store import CACHE_ENV, FeatureStore

WAIT_ENV = "TLKIT_SHARD_TIMEOUT"
DEFAULT_TIMEOUT = 4 * 3600.0  # seconds a worker waits for the others' parts


def part_rows(total: int, index: int, count: int) -> np.ndarray:
    """The images (row numbers) worker ``index`` of ``count`` computes."""
    return np.arange(index, total, count)


def compute_part(
    *,
    key: str,
    index: int,
    count: int,
    pixels: np.ndarray,
    feature_shape: tuple[int, ...],
    engine: Any,
    batch_size: int,
    views: int = 1,
    augment: Callable[[np.ndarray, int], np.ndarray] | None = None,
    progress: Callable[[int], None] | None = None,
    describe: dict[str, Any] | None = None,
    dtype: str = "float32",
    store: FeatureStore | None = None,
) -> None:
    """Compute and publish worker ``index``'s part of entry ``key`` in ``store`` (default: the user's),
    unless it is already there."""
    store = FeatureStore() if store is None else store
    name = store.part_key(key, index, count)
    if store.verify(name):
        return
    store.compute(
        key=name,
        pixels=pixels[index::count],  # part_rows(len(pixels), index, count), as a view
        feature_shape=feature_shape,
        engine=engine,
        batch_size=batch_size,
        views=views,
        augment=augment,
        progress=progress,
        describe={"part": [index, count], **(describe or {})},
        dtype=dtype,
    )


def assemble(
    *,
    key: str,
    count: int,
    total: int,
    timeout: float | None = None,
    describe: dict[str, Any] | None = None,
    poll: float = 0.5,
    store: FeatureStore | None = None,
) -> np.ndarray:
    """Wait for all ``count`` parts of ``key`` in ``store`` (default: the user's) and return the complete
    entry (publishing it if no one has)."""
    store = FeatureStore() if store is None else store
    timeout = float(os.environ.get(WAIT_ENV, DEFAULT_TIMEOUT)) if timeout is None else timeout
    deadline = time.monotonic() + timeout
    parts: dict[int, np.ndarray] = {}
    while True:
        whole = store.lookup(key)
        if whole is not None:
            return whole
        for index in range(count):
            if index not in parts:
                found = store.lookup(store.part_key(key, index, count))
                if found is not None:
                    parts[index] = found
        if len(parts) == count:
            break
        if time.monotonic() > deadline:
            missing = sorted(set(range(count)) - set(parts))
            raise TlkitError(
                f"worker(s) {', '.join(map(str, missing))} never published their features in {store.entries_dir} "
                f"within {timeout:.0f} s: is {CACHE_ENV} a folder all workers share, and are they all running? "
                f"(wait longer with {WAIT_ENV}=SECONDS)"
            )
        time.sleep(poll)
    views, shape = parts[0].shape[0], parts[0].shape[2:]
    full = np.empty((views, total, *shape), dtype=parts[0].dtype)
    for index, part in parts.items():
        full[:, part_rows(total, index, count)] = part
    store.publish(key, full, {"parts": count, **(describe or {})})
    for index in range(count):  # the parts are in the whole now
        store.remove(store.part_key(key, index, count))
    whole = store.lookup(key)
    if whole is None:  # pragma: no cover - removed under us
        raise TlkitError(f"feature cache entry {store.entry_path(key)} vanished while in use; rerun")
    return whole


__all__ = ["DEFAULT_TIMEOUT", "WAIT_ENV", "assemble", "compute_part", "part_rows"]
