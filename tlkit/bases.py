"""``tlkit.bases``, the name plugin authors import: :mod:`tlkit.registry.keras_applications`."""

from __future__ import annotations

from tlkit.registry.keras_applications import *  # noqa: F403
from tlkit.registry.keras_applications import __all__  # noqa: F401
