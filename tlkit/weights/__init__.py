"""Pretrained weights: where they are, fetching them, offline bundles, and weight files.

- :mod:`tlkit.weights.local` — is a base's ImageNet weight file on this machine; fetch it.
- :mod:`tlkit.weights.bundles` — folders of weight files with a SHA-256 manifest, for offline machines.
- :mod:`tlkit.weights.build` — a base built with its weights (ImageNet, a file, none); fetching ImageNet weights.
- :mod:`tlkit.weights.files` — build a base from a user's ``.weights.h5``/``.h5`` file, strictly.

Importing this package never imports TensorFlow.
"""

from tlkit.io.hashing import sha256_file
from tlkit.weights.build import build_base, fetch
from tlkit.weights.bundles import (
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    BundleFile,
    ImportedFile,
    bundle_bytes,
    import_bundle,
    read_manifest,
    verify_bundle,
    write_bundle,
)
from tlkit.weights.local import WeightsStatus, keras_cache_dir, list_weights, locate, resolve_bases, status

__all__ = [
    "MANIFEST_FORMAT",
    "MANIFEST_NAME",
    "BundleFile",
    "ImportedFile",
    "WeightsStatus",
    "build_base",
    "bundle_bytes",
    "fetch",
    "keras_cache_dir",
    "import_bundle",
    "list_weights",
    "locate",
    "read_manifest",
    "resolve_bases",
    "sha256_file",
    "status",
    "verify_bundle",
    "write_bundle",
]
