"""The documentation stays true: hook and option references in sync, README's commands exist, examples parse."""

from __future__ import annotations

import inspect
import re
import sys
from pathlib import Path

import pytest

from tlkit.api import resolve_config
from tlkit.config.options import OPTIONS, load_config_file
from tlkit.registry import hookspecs

ROOT = Path(__file__).resolve().parents[1]


def test_hook_reference_is_generated_from_the_hookspecs():
    sys.path.insert(0, str(ROOT / "docs" / "plugins"))
    try:
        import make_hooks_md
    finally:
        sys.path.pop(0)
    current = (ROOT / "docs" / "plugins" / "hooks.md").read_text(encoding="utf-8")
    assert current == make_hooks_md.render(), "docs/plugins/hooks.md is stale: run `make docs`"
    for hook in ("register_bases", "register_heads", "register_augmentations"):
        assert inspect.getdoc(getattr(hookspecs, hook)) in current


def test_option_reference_is_generated_from_the_config():
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        import make_options_md
    finally:
        sys.path.pop(0)
    current = (ROOT / "docs" / "options.md").read_text(encoding="utf-8")
    assert current == make_options_md.render(), (
        "docs/options.md is stale: run `.venv/bin/python docs/make_options_md.py`"
    )
    for name, meta in OPTIONS.items():
        assert f"| `{meta.flags}` | `{name}` |" in current
    for doc in ("cli.md", "user-guide.md", "training.md"):
        assert "(options.md)" in (ROOT / "docs" / doc).read_text(encoding="utf-8"), doc


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
