"""The plugin author's kit: `tlkit new-plugin`, the exported pytest fixtures, a real install."""

from __future__ import annotations

import json
import subprocess
import sys
import types

import tlkit
from conftest import run_tlkit
from tlkit.scaffold import new_plugin


def test_scaffolded_plugin_installs_lists_trains_and_passes_its_own_tests(tmp_path, tiny_data):
    project = new_plugin("mine", tmp_path)
    assert (project / "pyproject.toml").read_text().count('mine = "tlkit_mine"') == 1
    target = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(project)],
        capture_output=True, text=True,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    env = {"PYTHONPATH": str(target)}

    listing = run_tlkit("plugins", "--json", env=env)
    plugins = {p["name"]: p for p in json.loads(listing.stdout)}
    assert plugins["mine"]["distribution"] == "tlkit-mine" and plugins["mine"]["version"] == "0.1.0"
    assert plugins["mine"]["hooks"] == ["register_heads"] and plugins["mine"]["registered"] == ["head:mine"]

    trained = run_tlkit("train", "--data", str(tiny_data), "--head", "mine", "--head-param", "units=8",
                        "--base", "mobilenet_v2", "--weights", "none", "--image-size", "32",
                        "--epochs", "1", "--batch-size", "8", "--output", str(tmp_path / "runs"),
                        "--json", env=env)
    assert trained.returncode == 0, trained.stderr
    assert json.loads(trained.stdout)["config"]["head_params"] == {"units": 8, "dropout": 0.2}

    own_tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                str(project / "tests")], capture_output=True, text=True,
                               env={**__import__("os").environ, **env}, cwd=tmp_path)
    assert own_tests.returncode == 0, own_tests.stdout[-3000:]
    assert "2 passed" in own_tests.stdout


def test_new_plugin_refuses_bad_names_and_existing_folders(tmp_path):
    bad = run_tlkit("new-plugin", "My-Plugin", "--dir", str(tmp_path))
    assert bad.returncode == 1 and "must start with a lowercase letter" in bad.stderr
    assert run_tlkit("new-plugin", "ok", "--dir", str(tmp_path)).returncode == 0
    again = run_tlkit("new-plugin", "ok", "--dir", str(tmp_path))
    assert again.returncode == 1 and "already exists" in again.stderr


def test_exported_fixtures(tlkit_image_folder, tlkit_plugin):
    data = tlkit_image_folder(classes=("a", "b", "c"), per_class=3, val_per_class=0, size=16)
    assert sorted(p.name for p in (data / "train").iterdir()) == ["a", "b", "c"]
    assert not (data / "val").exists()

    module = types.ModuleType("tlkit_fixture_demo")

    @tlkit.hookimpl
    def register_heads(register):
        register(tlkit.HeadSpec(name="fixture_head", build=lambda f, n: None, description="demo"))

    module.register_heads = register_heads
    registry = tlkit_plugin(module)
    assert registry.heads["fixture_head"].plugin == "tlkit_fixture_demo"
    from tlkit.api import list_specs

    assert "fixture_head" in {spec.name for spec in list_specs("head")}
