"""Fixtures of the chaos tests (real processes killed at chosen moments; helpers in children.py)."""

from __future__ import annotations

import pytest

from tests.chaos.children import Spawner


@pytest.fixture
def spawn(tmp_path):
    """Start ``tlkit ARGS`` children (``spawn(*args, name=..., env=...)``); any still running is killed at the end."""
    spawner = Spawner(tmp_path / "children")
    yield spawner
    spawner.kill_all()
