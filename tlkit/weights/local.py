"""Where a base's ImageNet weights are on this machine (fetching them: :mod:`tlkit.weights.build`).

A base's ImageNet weights are *local* when ``spec.locate_weights()`` returns a
path (bases whose plugin knows where its weights live), or else when
``spec.weights_file`` is in Keras's cache (``$KERAS_HOME/models``, default
``~/.keras/models``).  Nothing here imports TensorFlow.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tlkit.errors import TlkitError
from tlkit.registry.manager import get_registry
from tlkit.registry.specs import BaseSpec


def keras_cache_dir() -> Path:
    """Where Keras keeps downloaded weights (``$KERAS_HOME/models``, default ``~/.keras/models``)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models"


# -- where the weights are ---------------------------------------------------


@dataclass(frozen=True)
class WeightsStatus:
    """Whether one base's ImageNet weights are available on this machine."""

    base: str
    plugin: str
    file: str
    available: bool
    path: Path | None
    bytes: int | None
    error: str = ""  # why the plugin could not say (its locate_weights() failed)

    def as_dict(self) -> dict[str, Any]:
        return {
            "base": self.base,
            "plugin": self.plugin,
            "file": self.file,
            "available": self.available,
            "path": str(self.path) if self.path else None,
            "bytes": self.bytes,
            "mb": round(self.bytes / 1e6, 1) if self.bytes is not None else None,
            "error": self.error or None,
        }


def locate(spec: BaseSpec) -> Path | None:
    """The local file holding ``spec``'s ImageNet weights, or None when it is not here."""
    if spec.locate_weights is not None:
        try:
            found = spec.locate_weights()
        except TlkitError:
            raise
        except Exception as exc:  # a plugin bug: say whose
            raise TlkitError(
                f"base {spec.name!r} (plugin {spec.plugin or '?'}): locate_weights() raised {type(exc).__name__}: {exc}"
            ) from exc
        return Path(found) if found and Path(found).is_file() else None
    if not spec.weights_file:
        return None
    path = keras_cache_dir() / spec.weights_file
    return path if path.is_file() else None


def status(spec: BaseSpec) -> WeightsStatus:
    """:class:`WeightsStatus` of one base (where the file is, or would be in Keras's cache)."""
    found = locate(spec)
    if found is not None:
        return WeightsStatus(spec.name, spec.plugin, found.name, True, found, found.stat().st_size)
    expected = keras_cache_dir() / spec.weights_file if spec.weights_file else None
    return WeightsStatus(spec.name, spec.plugin, spec.weights_file, False, expected, None)


def list_weights() -> list[WeightsStatus]:
    """:class:`WeightsStatus` of every registered base, by name."""
    bases = get_registry().bases
    rows = []
    for name in sorted(bases):
        try:
            rows.append(status(bases[name]))
        except TlkitError as exc:  # one plugin's bug must not hide the other bases
            spec = bases[name]
            rows.append(WeightsStatus(spec.name, spec.plugin, spec.weights_file, False, None, None, str(exc)))
    return rows


def resolve_bases(names: Iterable[str]) -> list[BaseSpec]:
    """The specs for ``names`` (duplicates dropped); every unknown name is reported at once."""
    registry = get_registry()
    specs: list[BaseSpec] = []
    problems: list[str] = []
    for name in names:
        try:
            spec = registry.base(name)
        except TlkitError as exc:
            problems.append(str(exc))
            continue
        if spec not in specs:
            specs.append(spec)
    if problems:
        raise TlkitError("; ".join(problems))
    if not specs:
        raise TlkitError("name at least one base (tlkit weights list shows them all)")
    return specs


def download_size(spec: BaseSpec) -> int:
    """An input size at which the base's ImageNet weights file is the one in ``weights_file``."""
    if spec.weights_sizes and spec.default_size not in spec.weights_sizes:
        return spec.weights_sizes[-1]
    return spec.default_size


def keras_download_dirs() -> list[Path]:
    """Where Keras may really have put a download (it reads KERAS_HOME once, at import)."""
    dirs = [keras_cache_dir()]
    try:
        # lazy: keras.src imports TensorFlow; `tlkit weights list` stays without it
        from keras.src.backend.config import keras_home

        dirs.append(Path(os.path.expanduser(keras_home())) / "models")
    except Exception:  # private Keras API; only a fallback
        pass
    dirs.append(Path("/tmp/.keras/models"))  # Keras's fallback when home is not writable
    return dirs
