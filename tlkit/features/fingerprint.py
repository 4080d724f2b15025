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


def files_fingerprint(paths: Sequence[str | Path], workers: int | None = None) -> str:
    """One hash over the ordered content hashes of ``paths`` (hashed in parallel)."""
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        hashes = list(pool.map(file_fingerprint, paths))
    return hashlib.sha256("\n".join(hashes).encode()).hexdigest()


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


__all__ = ["entry_key", "file_fingerprint", "files_fingerprint", "layers_fingerprint", "weights_fingerprint"]
