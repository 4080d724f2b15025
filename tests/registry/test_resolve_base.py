"""The ``resolve_base`` hook (a family of base names made on demand) and bases that read weight
folders or hub handles (``BaseSpec.weight_folders`` / ``weight_schemes`` / ``check_weights``)."""

from __future__ import annotations

import dataclasses
import json
import types
from pathlib import Path

import pytest

import tlkit
from tests.support import invoke_tlkit
from tlkit import TlkitError
from tlkit.config.resolve import resolve_config, resolve_weights
from tlkit.registry.manager import get_registry
from tlkit.registry.specs import safe_name

SEEN: list[str | None] = []  # the weights each fam: base's build received


def _family_plugin() -> types.ModuleType:
    """A plugin whose ``resolve_base`` answers ``fam:<anything>`` with a random MobileNetV2 that also
    reads weight folders and ``demo://`` handles (and refuses folders without a ``ok`` file)."""
    module = types.ModuleType("fam_plugin")
    mobilenet = get_registry().base("mobilenet_v2")

    def build(input_shape, weights=None):
        SEEN.append(weights)
        return mobilenet.build(input_shape, None)

    def check_weights(weights: str) -> None:
        if "://" not in weights and not (Path(weights) / "ok").is_file():
            raise TlkitError(f"folder {weights} holds no 'ok' file")

    @tlkit.hookimpl
    def resolve_base(name):
        if not name.startswith("fam:"):
            return None
        if name == "fam:":
            raise TlkitError("fam: needs something after the colon")
        if name == "fam:bug":
            raise KeyError("oops")
        if name == "fam:renamed":
            return dataclasses.replace(mobilenet, name="other")
        return dataclasses.replace(
            mobilenet,
            name=name,
            build=build,
            weight_folders=True,
            weight_schemes=("demo",),
            check_weights=check_weights,
            weights_source=f"demo://{name[4:]}",
        )

    module.resolve_base = resolve_base
    return module


@pytest.fixture
def family(tlkit_plugin):
    SEEN.clear()
    return tlkit_plugin(_family_plugin())


def test_a_family_name_resolves_once_stamped_with_its_plugin_and_is_not_listed(family):
    spec = family.base("fam:a/b")
    assert spec.name == "fam:a/b" and spec.plugin == "fam_plugin" and spec.weight_folders
    assert family.base("fam:a/b") is spec  # kept for the process
    assert "fam:a/b" not in family.bases
    assert [kind for kind, _ in family.find("fam:x")] == ["base"]
    assert "resolve_base" in family.plugin("fam_plugin").hooks
    with pytest.raises(TlkitError, match="unknown base 'nope'"):
        family.base("nope")


def test_a_family_plugin_s_mistakes_are_one_line_errors_naming_it(family):
    with pytest.raises(TlkitError, match="needs something after the colon"):
        family.base("fam:")
    with pytest.raises(
        TlkitError, match=r"plugin fam_plugin \(fam_plugin \(test\) 0\) failed to resolve base 'fam:bug': KeyError"
    ):
        family.base("fam:bug")
    with pytest.raises(TlkitError, match="must return a tlkit.BaseSpec named 'fam:renamed' or None, got 'other'"):
        family.base("fam:renamed")


def test_info_and_list_bases_on_a_family(family):
    info = invoke_tlkit("info", "fam:x", "--json")
    assert info.returncode == 0, info.stdout
    (row,) = json.loads(info.stdout)
    assert row["plugin"] == "fam_plugin" and row["weights_source"] == "demo://x"
    assert row["other_weights"] == "a weights folder, demo://…"
    listed = json.loads(invoke_tlkit("list-bases", "--json").stdout)
    assert not [r for r in listed if r["name"].startswith("fam:")]


def test_weights_folders_and_handles_only_for_bases_that_read_them(family, tmp_path):
    plain = get_registry().base("mobilenet_v2")
    reader = family.base("fam:x")
    assert resolve_weights(str(tmp_path), reader) == str(tmp_path.resolve())
    assert resolve_weights("demo://org/model", reader) == "demo://org/model"
    with pytest.raises(TlkitError, match=r"is a folder, which base 'mobilenet_v2' does not read; pass 'imagenet'"):
        resolve_weights(str(tmp_path), plain)
    with pytest.raises(TlkitError, match="is a hf:// handle, which base 'fam:x' does not read; .*a demo:// handle"):
        resolve_weights("hf://org/model", reader)
    with pytest.raises(
        TlkitError, match="neither 'imagenet', 'none', an existing file, a weights folder nor a demo://"
    ):
        resolve_weights(str(tmp_path / "missing"), reader)
    with pytest.raises(TlkitError, match="neither 'imagenet', 'none' nor an existing file"):
        resolve_weights(str(tmp_path / "missing"))


def test_the_base_s_check_runs_at_resolve_time(family, tmp_path):
    with pytest.raises(TlkitError, match="holds no 'ok' file"):
        resolve_config(data=str(tmp_path), base="fam:x", weights=str(tmp_path), output=str(tmp_path / "runs"))
    assert SEEN == []  # refused before anything was built


def test_a_family_base_with_a_weights_folder_trains_end_to_end(family, tiny_data, tmp_path, monkeypatch):
    monkeypatch.setenv("TLKIT_CACHE_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "weights folder"
    folder.mkdir()
    (folder / "ok").write_text("")
    name = "fam:org/model:v1"
    result = tlkit.train(
        data=str(tiny_data),
        base=name,
        weights=str(folder),
        image_size=32,
        batch_size=8,
        epochs=1,
        engine="onnxruntime",
        verbose=False,
        output=str(tmp_path / "runs"),
    )
    assert SEEN and set(SEEN) == {str(folder.resolve())}  # the plugin's build got the folder
    assert result.run_dir.parent == tmp_path / "runs" and safe_name(name) in result.run_dir.name
    assert result.config.base == name and result.config.weights == str(folder.resolve())
    (onnx,) = (tmp_path / "cache").rglob("*.onnx")  # the base exported for ONNX Runtime, under a safe name
    assert onnx.name.startswith(safe_name(name) + "-32-")
