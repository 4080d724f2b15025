"""``__version__``: a module every layer may import (``tlkit/__init__`` imports the API lazily)."""

from __future__ import annotations

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("tlkit")
except _metadata.PackageNotFoundError:  # running from a source tree
    __version__ = "0+unknown"
