"""`tlkit weights list/download/import` (offline bundles) and strict `--weights FILE` loading.

Keras's cache is redirected to a temporary KERAS_HOME in every test; the
ImageNet "weight files" there are small fake files, and no test needs the
network.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from tlkit.errors import TlkitError
from tlkit.registry.manager import get_registry

SIZE = 32
MNV2 = "mobilenet_v2"


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty Keras cache dir (``$KERAS_HOME/models``) for this test."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    return tmp_path / "keras_home" / "models"


@pytest.fixture(scope="module")
def cli():
    """Run ``tlkit weights ...`` in-process; returns (exit code, stdout, stderr)."""
    from tlkit.cli.weights import weights_app

    app = typer.Typer()
    app.add_typer(weights_app, name="weights")
    runner = CliRunner()

    def run(*args: str):
        result = runner.invoke(app, ["weights", *args])
        return result.exit_code, result.stdout, result.stderr

    return run


def _fake_weights(cache: Path, base: str, content: bytes) -> Path:
    path = cache / get_registry().base(base).weights_file
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def _no_build(monkeypatch):
    """Make any attempt to build (i.e. download) a base fail the test."""
    import tlkit.weights.build

    def refuse(*args, **kwargs):
        raise AssertionError("build_base must not be called: the weights are local")

    monkeypatch.setattr(tlkit.weights.build, "build_base", refuse)


# -- list ---------------------------------------------------------------------


def test_list_shows_cached_and_missing_weights(cache, cli):
    code, out, err = cli("list", "--json")
    assert code == 0, err
    listing = json.loads(out)
    rows = {r["base"]: r for r in listing["bases"]}
    assert listing["cache"] == str(cache) and listing["total"] == len(rows)
    spec = get_registry().base(MNV2)
    assert rows[MNV2] == {
        "base": MNV2,
        "plugin": spec.plugin,
        "file": spec.weights_file,
        "available": False,
        "path": str(cache / spec.weights_file),
        "bytes": None,
        "mb": None,
        "error": None,
    }

    _fake_weights(cache, MNV2, b"w" * 1234)
    code, out, _ = cli("list", "--json")
    after = json.loads(out)
    assert after["available"] == listing["available"] + 1
    row = {r["base"]: r for r in after["bases"]}[MNV2]
    assert row["available"] and row["bytes"] == 1234 and row["path"] == str(cache / spec.weights_file)

    code, out, _ = cli("list")
    assert code == 0
    assert f"{after['available']} of {after['total']} bases have ImageNet weights locally" in out
    assert str(cache) in out.replace("\n", "")


# -- download --to: bundles -----------------------------------------------------


def test_download_to_bundles_local_weights_without_network(cache, cli, tmp_path, monkeypatch):
    _no_build(monkeypatch)
    content = b"mobilenet weights " * 1000
    _fake_weights(cache, MNV2, content)
    bundle = tmp_path / "bundle"
    code, out, err = cli("download", MNV2, "--to", str(bundle), "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["bases"][0]["status"] == "already local"
    fname = get_registry().base(MNV2).weights_file
    assert (bundle / fname).read_bytes() == content
    manifest = json.loads((bundle / "tlkit-weights.json").read_text())
    assert manifest["format"] == 1 and manifest["created"] and manifest["tlkit_version"]
    assert manifest["files"] == [
        {
            "base": MNV2,
            "plugin": get_registry().base(MNV2).plugin,
            "file": fname,
            "sha256": hashlib.sha256(content).hexdigest(),
            "bytes": len(content),
        }
    ]
    assert report["bundle"]["files"] == manifest["files"]
    assert sorted(p.name for p in bundle.iterdir()) == sorted([fname, "tlkit-weights.json"])  # no temp files

    # Re-running with another base adds it to the same bundle.
    _fake_weights(cache, "vgg16", b"vgg")
    code, out, err = cli("download", "vgg16", "--to", str(bundle))
    assert code == 0, err
    assert "tlkit weights import" in out
    merged = json.loads((bundle / "tlkit-weights.json").read_text())
    assert [f["base"] for f in merged["files"]] == [MNV2, "vgg16"]
    assert merged["created"] == manifest["created"]


def test_unknown_base_is_refused_with_a_suggestion_before_anything_happens(cache, cli, tmp_path, monkeypatch):
    _no_build(monkeypatch)
    _fake_weights(cache, MNV2, b"x")
    code, out, err = cli("download", MNV2, "mobilenet_v22", "--to", str(tmp_path / "b"))
    assert code == 1
    assert "unknown base 'mobilenet_v22'" in err and "did you mean 'mobilenet_v2'" in err
    assert not (tmp_path / "b").exists()


def test_offline_download_of_an_uncached_base_fails_with_one_actionable_line(cache, cli, monkeypatch):
    import tlkit.weights.build

    spec = get_registry().base("resnet50")
    calls = []

    def offline(base, image_size, weights):
        calls.append((base.name, image_size, weights))
        raise TlkitError(tlkit.weights.build._offline_message(base, "URL fetch failure on https://x: no network"))

    monkeypatch.setattr(tlkit.weights.build, "build_base", offline)
    code, out, err = cli("download", "resnet50", "--json")
    assert code == 1
    assert calls == [("resnet50", 224, "imagenet")]
    assert out == ""
    error = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(error) == 1 and err.rstrip().endswith(error[0])
    assert "could not get ImageNet weights for base 'resnet50'" in error[0]
    assert spec.weights_file in error[0] and str(cache) in error[0]


# -- import ---------------------------------------------------------------------


def _bundle(cache: Path, tmp_path: Path, cli, content: bytes = b"weights " * 500) -> Path:
    _fake_weights(cache, MNV2, content)
    bundle = tmp_path / "bundle"
    code, _, err = cli("download", MNV2, "--to", str(bundle))
    assert code == 0, err
    return bundle


def test_import_installs_into_an_empty_cache_then_reports_already_installed(cache, cli, tmp_path, monkeypatch):
    _no_build(monkeypatch)
    bundle = _bundle(cache, tmp_path, cli)
    fname = get_registry().base(MNV2).weights_file
    offline_home = tmp_path / "offline_home"
    monkeypatch.setenv("KERAS_HOME", str(offline_home))

    code, out, err = cli("import", str(bundle), "--json")
    assert code == 0, err
    files = json.loads(out)["files"]
    assert [(f["base"], f["status"]) for f in files] == [(MNV2, "installed")]
    installed = offline_home / "models" / fname
    assert installed.read_bytes() == (bundle / fname).read_bytes()
    assert sorted(p.name for p in installed.parent.iterdir()) == [fname]

    code, out, err = cli("import", str(bundle))
    assert code == 0, err
    assert "already installed" in out

    code, out, _ = cli("list", "--json")
    assert {r["base"]: r for r in json.loads(out)["bases"]}[MNV2]["available"]


def test_tampered_bundle_is_refused_and_nothing_is_installed(cache, cli, tmp_path, monkeypatch):
    bundle = _bundle(cache, tmp_path, cli)
    fname = get_registry().base(MNV2).weights_file
    data = bytearray((bundle / fname).read_bytes())
    expected = hashlib.sha256(data).hexdigest()
    data[100] ^= 0xFF
    (bundle / fname).write_bytes(bytes(data))
    offline_home = tmp_path / "offline_home"
    monkeypatch.setenv("KERAS_HOME", str(offline_home))

    code, _, err = cli("import", str(bundle))
    assert code == 1
    assert fname in err and expected in err and hashlib.sha256(data).hexdigest() in err
    assert "nothing was installed" in err
    assert not (offline_home / "models").exists() or not any((offline_home / "models").iterdir())


def test_a_different_cached_file_is_kept_unless_force(cache, cli, tmp_path):
    bundle = _bundle(cache, tmp_path, cli, content=b"bundle version")
    target = cache / get_registry().base(MNV2).weights_file
    target.write_bytes(b"another version")

    code, _, err = cli("import", str(bundle))
    assert code == 1 and "--force" in err and target.name in err
    assert target.read_bytes() == b"another version"

    code, out, err = cli("import", str(bundle), "--force", "--json")
    assert code == 0, err
    assert json.loads(out)["files"][0]["status"] == "replaced"
    assert target.read_bytes() == b"bundle version"


@pytest.mark.parametrize("manifest", [None, "{not json", '{"format": 1, "files": [{"base": "x", "file": "../evil"}]}'])
def test_a_folder_that_is_not_a_bundle_is_refused(cache, cli, tmp_path, manifest):
    folder = tmp_path / "not_a_bundle"
    folder.mkdir()
    (folder / "random.h5").write_bytes(b"x")
    if manifest is not None:
        (folder / "tlkit-weights.json").write_text(manifest)
    code, _, err = cli("import", str(folder))
    assert code == 1
    assert "is not a weights bundle made by `tlkit weights download --to`" in err
    assert not cache.exists()


# -- --weights FILE: strict loading --------------------------------------------


@pytest.fixture(scope="module")
def mnv2_file(tmp_path_factory):
    """A mobilenet_v2 (32 px) base with random weights, and its ``model.save_weights`` file."""
    from tlkit.weights.build import build_base

    model = build_base(get_registry().base(MNV2), SIZE, None)
    path = tmp_path_factory.mktemp("weights") / "mnv2.weights.h5"
    model.save_weights(path)
    return model, path


def _legacy_h5(model, path: Path) -> Path:
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    with h5py.File(path, "w") as f:  # Keras 3's save_weights only writes .weights.h5
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
    return path


def _same_weights(a, b) -> bool:
    wa, wb = a.get_weights(), b.get_weights()
    return len(wa) == len(wb) and all(np.array_equal(x, y) for x, y in zip(wa, wb))


def test_a_matching_weights_file_loads_exactly(mnv2_file, tmp_path):
    from tlkit.weights.build import build_base

    reference, path = mnv2_file
    spec = get_registry().base(MNV2)
    assert _same_weights(reference, build_base(spec, SIZE, str(path)))
    # A legacy .h5 of the same model loads exactly too (and at another input size).
    legacy = _legacy_h5(reference, tmp_path / "mnv2.h5")
    assert _same_weights(reference, build_base(spec, 64, str(legacy)))


def test_a_weights_file_of_another_base_is_refused_naming_a_layer_and_shapes(mnv2_file):
    from tlkit.weights.build import build_base

    _, path = mnv2_file
    with pytest.raises(TlkitError) as info:
        build_base(get_registry().base("resnet50"), SIZE, str(path))
    message = str(info.value)
    assert "does not fit base 'resnet50'" in message and "\n" not in message
    assert "layer 'conv1_conv'" in message
    assert "(7, 7, 3, 64)" in message and "(3, 3, 3, 32)" in message
    assert "the file has 104 layers with weights, the model 106" in message


def test_a_legacy_h5_of_another_width_is_refused_with_shapes(tmp_path):
    import keras

    from tlkit.weights.build import build_base

    narrow = keras.applications.MobileNetV2(include_top=False, weights=None, alpha=0.5, input_shape=(SIZE, SIZE, 3))
    path = _legacy_h5(narrow, tmp_path / "mobilenet_v2_0.5_notop.h5")
    with pytest.raises(TlkitError) as info:
        build_base(get_registry().base(MNV2), SIZE, str(path))
    assert str(info.value).endswith(
        "does not fit base 'mobilenet_v2': layer 'Conv1' kernel has shape (3, 3, 3, 32) "
        "in the model but (3, 3, 3, 16) in the file"
    )


def test_a_file_with_extra_layers_is_refused(tmp_path):
    import keras

    from tlkit.weights.build import build_base

    with_top = keras.applications.MobileNetV2(include_top=True, weights=None, input_shape=(SIZE, SIZE, 3))
    path = tmp_path / "with_top.weights.h5"
    with_top.save_weights(path)
    with pytest.raises(TlkitError, match="the file has 105 layers with weights, the model 104"):
        build_base(get_registry().base(MNV2), SIZE, str(path))


@pytest.mark.parametrize("content", [b"not hdf5 at all", b"\x89HDF\r\n\x1a\n" + b"\0" * 40])
def test_a_corrupt_file_is_not_a_readable_hdf5_weights_file(tmp_path, content):
    from tlkit.weights.build import build_base

    path = tmp_path / "broken.weights.h5"
    path.write_bytes(content)
    with pytest.raises(TlkitError, match="is not a readable HDF5 weights file"):
        build_base(get_registry().base(MNV2), SIZE, str(path))


def test_keras_warnings_while_loading_become_errors(mnv2_file, monkeypatch):
    import keras
    from keras.src.saving import saving_lib

    from tlkit.weights.build import build_base

    _, path = mnv2_file
    original = keras.Model.load_weights

    def load_with_warnings(self, filepath, *args, **kwargs):
        original(self, filepath, *args, **kwargs)
        warnings.warn_explicit("an unrelated note", UserWarning, "elsewhere.py", 1)
        warnings.warn_explicit(
            "Skipping nested container at 'x': layers keep random weights", UserWarning, saving_lib.__file__, 1
        )

    monkeypatch.setattr(keras.Model, "load_weights", load_with_warnings)
    with pytest.warns(UserWarning, match="an unrelated note"):  # other warnings pass through
        with pytest.raises(TlkitError, match="Keras could not load every layer.*Skipping nested container"):
            build_base(get_registry().base(MNV2), SIZE, str(path))


def test_plugin_owned_suffixes_still_go_to_the_plugin(tmp_path):
    from tlkit.weights.build import build_base

    seen = []
    spec = dataclasses.replace(
        get_registry().base(MNV2),
        weight_file_suffixes=(".pth",),
        build=lambda shape, weights: seen.append((shape, weights)) or "model",
    )
    path = tmp_path / "w.pth"
    path.write_bytes(b"torch")
    assert build_base(spec, SIZE, str(path)) == "model"
    assert seen == [((SIZE, SIZE, 3), str(path))]
    with pytest.raises(TlkitError, match="not a Keras weights file"):
        (tmp_path / "w.bin").write_bytes(b"x")
        build_base(spec, SIZE, str(tmp_path / "w.bin"))
