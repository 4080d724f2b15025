"""The plugin registry: entry points, broken plugins, duplicates, TLKIT_PLUGINS, no TensorFlow on listing."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import pytest

import tlkit
from tests.support import make_plugin_dist, run_tlkit
from tlkit.errors import TlkitError
from tlkit.registry.manager import Registry

GOOD = """
from typing import Annotated

import tlkit

@tlkit.hookimpl
def register_heads(register):
    register(tlkit.HeadSpec(name="gap_dense512", build=build, description="GAP → Dense(512) → softmax"))

def build(features, num_classes, *, units: Annotated[int, tlkit.Param("width", ge=1)] = 512):
    from keras import layers
    x = layers.GlobalAveragePooling2D()(features)
    x = layers.Dense(units, activation="relu")(x)
    return layers.Dense(num_classes, activation="softmax")(x)
"""
BROKEN = "raise RuntimeError('this plugin is broken on purpose')\n"
DUPLICATE = """
import tlkit

@tlkit.hookimpl
def register_heads(register):
    register(tlkit.HeadSpec(name="dense256", build=lambda f, n: None, description="a clash"))
    register(tlkit.HeadSpec(name="dup_only_here", build=lambda f, n: None, description="fine"))
"""
NO_DEFAULT = """
import tlkit

@tlkit.hookimpl
def register_heads(register):
    register(tlkit.HeadSpec(name="nodefault", build=build, description="a parameter without a default"))

def build(features, num_classes, *, units):
    return None
"""
RAISES_IN_HOOK = """
import tlkit

@tlkit.hookimpl
def register_bases(register):
    raise ValueError("hook exploded")
"""


@pytest.fixture
def third_party(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "site"
    make_plugin_dist(root, "tlkit-good", "1.2.3", {"tlkit_good": GOOD}, {"good": "tlkit_good"})
    make_plugin_dist(root, "tlkit-broken", "0.1", {"tlkit_broken": BROKEN}, {"broken": "tlkit_broken"})
    make_plugin_dist(root, "tlkit-dup", "2.0", {"tlkit_dup": DUPLICATE}, {"dup": "tlkit_dup"})
    make_plugin_dist(root, "tlkit-hookfail", "0.2", {"tlkit_hookfail": RAISES_IN_HOOK}, {"hookfail": "tlkit_hookfail"})
    make_plugin_dist(root, "tlkit-nodefault", "0.3", {"tlkit_nodefault": NO_DEFAULT}, {"nodefault": "tlkit_nodefault"})
    monkeypatch.syspath_prepend(str(root))
    return root


def _entry_points(root: Path) -> list[metadata.EntryPoint]:
    builtin = [ep for ep in metadata.distribution("tlkit").entry_points if ep.group == "tlkit"]
    extra = [ep for d in metadata.distributions(path=[str(root)]) for ep in d.entry_points if ep.group == "tlkit"]
    return builtin + extra


def test_builtins_are_found_through_entry_points():
    registry = Registry()
    builtin = {p.name: p for p in registry.plugins if p.builtin}
    assert set(builtin) == {"builtin_bases", "builtin_heads", "builtin_augmentations", "builtin_trackers"}
    for info in builtin.values():
        assert info.distribution == "tlkit" and info.version and not info.errors
    assert {"dense256", "linear", "mlp"} <= set(registry.heads)
    assert registry.heads["dense256"].plugin == "builtin_heads"
    assert "register_heads" in builtin["builtin_heads"].hooks
    assert "head:dense256" in builtin["builtin_heads"].registered


def test_third_party_plugins_broken_and_duplicate(third_party):
    registry = Registry(entry_points=_entry_points(third_party), env={})
    plugins = {p.name: p for p in registry.plugins}
    # the good plugin works and is attributed to its distribution and version
    assert registry.heads["gap_dense512"].plugin == "good"
    assert plugins["good"].distribution == "tlkit-good" and plugins["good"].version == "1.2.3"
    assert plugins["good"].registered == ["head:gap_dense512"]
    # the broken one is listed with its error, the rest keep working
    assert "broken on purpose" in plugins["broken"].errors[0]
    assert "bases" and len(registry.bases) >= 21
    # a duplicate name is an error naming both plugins; the built-in stays in use
    message = plugins["dup"].errors[0]
    assert "builtin_heads (tlkit" in message and "dup (tlkit-dup 2.0)" in message
    assert registry.heads["dense256"].plugin == "builtin_heads"
    assert registry.heads["dup_only_here"].plugin == "dup"
    assert any("dense256" in e for e in plugins["builtin_heads"].errors)
    # a hook that raises is recorded against its plugin only
    assert "hook exploded" in plugins["hookfail"].errors[0]
    # parameters come from the build signature; one without a default is that plugin's error
    assert registry.heads["gap_dense512"].params == (tlkit.ParamSpec("units", 512, help="width", kind="int", ge=1),)
    assert "head 'nodefault': parameter 'units' of build() needs a default value" in plugins["nodefault"].errors[0]
    assert "nodefault" not in registry.heads


def test_tlkit_plugins_env_restricts_third_party(third_party):
    eps = _entry_points(third_party)
    only_good = Registry(entry_points=eps, env={"TLKIT_PLUGINS": "good"})
    assert {p.name for p in only_good.plugins if not p.builtin} == {"good"}
    by_dist = Registry(entry_points=eps, env={"TLKIT_PLUGINS": "tlkit-dup"})
    assert {p.name for p in by_dist.plugins if not p.builtin} == {"dup"}
    builtins_only = Registry(entry_points=eps, env={"TLKIT_PLUGINS": ""})
    assert all(p.builtin for p in builtins_only.plugins)
    assert "gap_dense512" not in builtins_only.heads and "dense256" in builtins_only.heads


def test_unknown_name_suggests_closest():
    registry = Registry()
    with pytest.raises(TlkitError, match="did you mean 'resnet50'"):
        registry.base("resnet5")
    with pytest.raises(TlkitError, match="did you mean 'flip_horizontal'"):
        registry.augmentation("flip_horizontl")


def test_register_wrong_type_is_a_plugin_error(tmp_path, monkeypatch):
    root = make_plugin_dist(
        tmp_path / "s",
        "tlkit-wrong",
        "1",
        {
            "tlkit_wrong": """
import tlkit
@tlkit.hookimpl
def register_heads(register):
    register("not a spec")
"""
        },
        {"wrong": "tlkit_wrong"},
    )
    monkeypatch.syspath_prepend(str(root))
    registry = Registry(entry_points=_entry_points(root), env={})
    assert "takes a tlkit.HeadSpec" in registry.plugin("wrong").errors[0]


def test_cli_with_real_entry_points_and_a_broken_plugin(third_party):
    env = {"PYTHONPATH": str(third_party)}
    help_run = run_tlkit("--help", env=env)
    assert help_run.returncode == 0 and "train" in help_run.stdout
    listing = run_tlkit("plugins", "--json", env=env)
    assert listing.returncode == 0, listing.stderr
    plugins = {p["name"]: p for p in json.loads(listing.stdout)}
    assert "broken on purpose" in plugins["broken"]["errors"][0]
    assert plugins["good"]["registered"] == ["head:gap_dense512"]
    heads = run_tlkit("list-heads", "--json", env=env)
    listed = {h["name"]: h for h in json.loads(heads.stdout)}
    assert listed["gap_dense512"]["params"] == [
        {"name": "units", "kind": "int", "default": 512, "help": "width", "choices": [], "bounds": {"ge": 1}}
    ]
    restricted = run_tlkit("list-heads", "--json", env={**env, "TLKIT_PLUGINS": ""})
    assert "gap_dense512" not in {h["name"] for h in json.loads(restricted.stdout)}


def test_the_console_script_lists_bases():
    """(That listing stays light is checked in tests/test_light_imports.py.)"""
    listing = run_tlkit("list-bases")
    assert listing.returncode == 0 and "resnet50" in listing.stdout


def test_a_base_lists_its_param_count_and_a_head_its_params():
    """`params` meant a count for a base and a list for a head; a base's count is `param_count` now
    (its JSON keeps `params` as an alias for scripts, the table of `tlkit info` does not repeat it)."""
    from typer.testing import CliRunner

    from tlkit.cli.app import app

    runner = CliRunner()
    result = runner.invoke(app, ["info", "resnet50", "--json"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.output)
    assert row["param_count"] == row["params"] == 23_587_712
    table = runner.invoke(app, ["info", "resnet50"], env={"COLUMNS": "200"})
    assert "param_count" in table.output and "23,587,712" in table.output
    assert not any(line.split() and line.split()[1:2] == ["params"] for line in table.output.splitlines())
    heads = json.loads(runner.invoke(app, ["list-heads", "--json"]).output)
    dense = next(h for h in heads if h["name"] == "dense256")
    assert [p["name"] for p in dense["params"]] == ["units", "dropout", "norm"]
    assert dense["params"][1]["bounds"] == {"ge": 0.0, "le": 0.99}  # the names tlkit.Param and the options use
    shown = runner.invoke(app, ["info", "dense256"], env={"COLUMNS": "200"}).output
    assert "dropout = 0.5 (float, 0 ≤ x ≤ 0.99)" in shown and "norm = none (str: none, layer, batch)" in shown
