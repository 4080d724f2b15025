"""The documentation stays true: hook reference in sync, README's commands exist, examples parse."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from tlkit import hookspecs
from tlkit.api import resolve_config
from tlkit.config import load_config_file

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("hook", ["register_bases", "register_heads", "register_augmentations"])
def test_hook_reference_matches_the_hookspec_docstrings(hook):
    docs = (ROOT / "docs" / "plugins.md").read_text()
    assert f"### `{hook}(register)`\n\n{inspect.getdoc(getattr(hookspecs, hook))}\n" in docs


def test_readme_setup_commands_are_make_targets():
    readme = (ROOT / "README.md").read_text()
    makefile = (ROOT / "Makefile").read_text()
    for target in ("demo", "test"):
        assert f"make {target}" in readme
        assert re.search(rf"^{target}:", makefile, re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize("path", sorted((ROOT / "examples" / "configs").glob("*.toml")), ids=lambda p: p.name)
def test_example_configs_resolve(path, monkeypatch):
    monkeypatch.chdir(ROOT)
    config = resolve_config(load_config_file(path))
    assert config.epochs >= 1 and Path(config.data).is_dir()
