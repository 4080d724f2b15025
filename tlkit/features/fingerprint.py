"""Fingerprints of what determines a split's features, and the cache key made of them.

An entry's key covers everything that changes the features: base, weights fingerprint, input
size, preprocessing, each image's content, augmented views, engine and the tlkit version
(:class:`tlkit.features.plan.FeaturePlan` gathers them; :func:`entry_key` hashes them).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np


def file_fingerprint(path: str | Path) -> str:
    """Content hash of one image file (what it holds, not where it lives)."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_hashes(paths: Sequence[str | Path], workers: int | None = None) -> list[str]:
    """:func:`file_fingerprint` of each of ``paths``, in order (hashed in parallel threads)."""
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        return list(pool.map(file_fingerprint, paths))


def combined_fingerprint(hashes: Sequence[str]) -> str:
    """One hash over an ordered list of content hashes (a split's images, in order)."""
    return hashlib.sha256("\n".join(hashes).encode()).hexdigest()


def files_fingerprint(paths: Sequence[str | Path], workers: int | None = None) -> str:
    """One hash over the ordered content hashes of ``paths`` (hashed in parallel)."""
    return combined_fingerprint(file_hashes(paths, workers))


def shared_copies(
    train: Sequence[str | Path], train_hashes: Sequence[str], val: Sequence[str | Path], val_hashes: Sequence[str]
) -> list[tuple[Path, Path]]:
    """``(val file, train file)`` for every validation image whose exact bytes are also in train."""
    in_train = dict(zip(train_hashes, train))
    return [(Path(v), Path(in_train[h])) for v, h in zip(val, val_hashes) if h in in_train]


def weights_fingerprint(model: Any) -> str:
    """Hash of a model's weight values (so random or user weights key the cache correctly)."""
    digest = hashlib.sha256()
    for weight in model.weights:
        value = np.ascontiguousarray(np.asarray(weight))
        digest.update(f"{weight.path}:{value.shape}:{value.dtype}".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def layers_fingerprint(layers: Sequence[Any]) -> str:
    """Hash of the preprocessing layers' configurations."""
    configs = [{"class": type(layer).__name__, "config": layer.get_config()} for layer in layers]
    for config in configs:
        config["config"].pop("name", None)
    return hashlib.sha256(json.dumps(configs, sort_keys=True, default=str).encode()).hexdigest()


def entry_key(parts: dict[str, Any]) -> str:
    """The cache key of everything that determines a split's features."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


__all__ = [
    "combined_fingerprint",
    "entry_key",
    "file_fingerprint",
    "file_hashes",
    "files_fingerprint",
    "layers_fingerprint",
    "shared_copies",
    "weights_fingerprint",
]
