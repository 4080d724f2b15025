"""The plugin author's kit: `tlkit new-plugin`, the exported pytest fixtures, a real install."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import types
import warnings
from typing import Annotated, Literal

import numpy as np
import pytest

import tlkit
from tests.support import run_tlkit
from tlkit import TlkitError
from tlkit.registry.scaffold import KINDS, new_plugin
from tlkit.registry.specs import params_from_signature, resolve_params, with_plugin
from tlkit.testing import registry_with

SPEC_CLASSES = {
    "head": tlkit.HeadSpec,
    "base": tlkit.BaseSpec,
    "augmentation": tlkit.AugmentationSpec,
    "tracker": tlkit.TrackerSpec,
}


def test_scaffolded_plugin_installs_lists_trains_and_passes_its_own_tests(tmp_path, tiny_data):
    project = new_plugin("mine", tmp_path)
    assert (project / "pyproject.toml").read_text().count('mine = "tlkit_mine"') == 1
    target = tmp_path / "site"
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(project),
        ],
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    env = {"PYTHONPATH": str(target)}

    listing = run_tlkit("plugins", "--json", env=env)
    plugins = {p["name"]: p for p in json.loads(listing.stdout)}
    assert plugins["mine"]["distribution"] == "tlkit-mine" and plugins["mine"]["version"] == "0.1.0"
    assert plugins["mine"]["hooks"] == ["register_heads"] and plugins["mine"]["registered"] == ["head:mine"]

    trained = run_tlkit(
        "train",
        "--data",
        str(tiny_data),
        "--head",
        "mine",
        "--head-param",
        "units=8",
        "--base",
        "mobilenet_v2",
        "--weights",
        "none",
        "--image-size",
        "32",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--output",
        str(tmp_path / "runs"),
        "--json",
        env=env,
    )
    assert trained.returncode == 0, trained.stderr
    assert json.loads(trained.stdout)["config"]["head_params"] == {"units": 8, "dropout": 0.2}

    own_tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(project / "tests")],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, **env},
        cwd=tmp_path,
    )
    assert own_tests.returncode == 0, own_tests.stdout[-3000:]
    assert "2 passed" in own_tests.stdout


def test_new_plugin_refuses_bad_names_kinds_and_existing_folders(tmp_path):
    bad = run_tlkit("new-plugin", "My-Plugin", "--dir", str(tmp_path))
    assert bad.returncode == 1 and "must start with a lowercase letter" in bad.stderr
    kind = run_tlkit("new-plugin", "ok", "--kind", "loss", "--dir", str(tmp_path))
    assert kind.returncode == 1 and len(kind.stderr.strip().splitlines()) == 1
    assert "unknown plugin kind 'loss'; use one of: head, base, augmentation, tracker" in kind.stderr
    assert not (tmp_path / "tlkit-ok").exists()
    made = run_tlkit("new-plugin", "ok", "--kind", "base", "--dir", str(tmp_path))
    assert made.returncode == 0 and "--base ok" in made.stdout
    again = run_tlkit("new-plugin", "ok", "--dir", str(tmp_path))
    assert again.returncode == 1 and "already exists" in again.stderr


def _load_generated(project, module_name: str) -> types.ModuleType:
    """Import the scaffolded package from its folder, as an installed plugin would be (no pip)."""
    init = project / module_name / "__init__.py"
    spec = importlib.util.spec_from_file_location(module_name, init, submodule_search_locations=[str(init.parent)])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _build_tiny(kind: str, spec, tmp_path):
    """Build what ``spec`` describes at a tiny size with random weights; return its output."""
    import keras

    if kind == "tracker":  # one run's events, read back from the file it writes
        tracker = spec.build(uri=str(tmp_path / "events.jsonl"), register_model="")
        run = tlkit.TrackedRun(kind="train", name="r", path=tmp_path, config={"base": "b"})
        assert tracker.run_started(run) == {"file": str(tmp_path / "events.jsonl")}
        tracker.epoch_ended("head", 1, 2, {"loss": 0.5})
        tracker.run_ended("killed", {})
        resumed = spec.build(uri="", register_model="")  # --resume: the file comes from run.state
        resumed.run_started(
            tlkit.TrackedRun(kind="train", name="r", path=tmp_path, config={}, state=run_state(tracker))
        )
        resumed.evaluation_finished(
            tlkit.TrackedRun(kind="train", name="r", path=tmp_path, config={}, state=run_state(tracker)), {"a": 1.0}, []
        )
        lines = (tmp_path / "events.jsonl").read_text().splitlines()
        return np.array([[json.loads(line)["event"] for line in lines]])

    if kind == "base":
        model = spec.build((32, 32, 3), None)
        assert model.count_params() == spec.param_count
        x = np.full((1, 32, 32, 3), 255.0, dtype="float32")
        for layer in spec.preprocess():
            x = layer(x)
        assert float(np.max(np.asarray(x))) == pytest.approx(1.0)  # tf preprocessing: 0–255 → −1…1
        return model(x, training=False)
    defaults = {p.name: p.default for p in spec.params}
    if kind == "head":
        features = keras.Input((2, 2, 8))
        return keras.Model(features, spec.build(features, 3, **defaults))(np.zeros((1, 2, 2, 8), "float32"))
    layer = spec.build(0, **defaults)
    images = np.full((1, 8, 8, 3), 100.0, dtype="float32")
    np.testing.assert_allclose(np.asarray(layer(images, training=False)), images, rtol=1e-5)
    return layer(images, training=True)


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_scaffolds_a_package_whose_hook_registers_a_working_spec(tmp_path, kind):
    name = f"my_{kind[:4]}"
    module_name = f"tlkit_{name}"
    project = new_plugin(name, tmp_path, kind=kind)
    files = sorted(str(p.relative_to(project)) for p in project.rglob("*") if p.is_file())
    assert files == ["README.md", "pyproject.toml", f"tests/test_{module_name}.py", f"{module_name}/__init__.py"]
    pyproject = (project / "pyproject.toml").read_text()
    assert f'[project.entry-points.tlkit]\n{name} = "{module_name}"' in pyproject
    assert f"the '{name}' {kind}" in pyproject
    assert f"tlkit info {name}" in (project / "README.md").read_text()
    test_source = (project / "tests" / f"test_{module_name}.py").read_text()
    assert "tlkit_plugin" in test_source and "tlkit_image_folder" in test_source
    compile(test_source, "test.py", "exec")

    module = _load_generated(project, module_name)
    hook = getattr(module, f"register_{kind}s")
    assert hasattr(hook, "tlkit_impl")  # decorated with @tlkit.hookimpl
    registered = []
    hook(registered.append)
    (spec,) = registered
    assert isinstance(spec, SPEC_CLASSES[kind]) and spec.name == name and spec.description
    if kind == "base":
        assert spec.preprocessing == tlkit.bases.TF.description
    elif kind == "tracker":
        assert spec.available  # needs no library
    else:
        assert spec.params and all(p.help for p in spec.params)

    output = _build_tiny(kind, spec, tmp_path)
    assert output.shape[0] == 1
    if kind == "head":
        assert tuple(output.shape) == (1, 3)
    if kind == "tracker":
        assert output[0].tolist() == ["run_started", "epoch", "run_ended", "run_started", "evaluation"]

    # and through a registry, as tlkit loads an installed plugin
    registry = registry_with(module, builtins=False)
    info = registry.plugin(module_name)
    assert info is not None and not info.errors and info.hooks == [f"register_{kind}s"]
    assert info.registered == [f"{kind}:{name}"]


def run_state(tracker) -> dict:
    """What the scaffolded tracker's run_started returned (tlkit keeps it in tracking.json)."""
    return {"file": str(tracker.path)}


# -- parameters declared in the build signature --------------------------------
def test_params_come_from_the_build_signature():
    def build(
        features,
        num_classes,
        *,
        units: Annotated[tuple[int, ...], tlkit.Param("widths", ge=1)] = [64, 32],
        rate: Annotated[float, "a rate"] = 0,
        mode: Annotated[Literal["a", "b"], tlkit.Param("mode")] = "b",
        depth: int = tlkit.param(2, ge=1, le=8, help="layers"),
        flag: bool = True,
        plain=3,
    ):
        return None

    spec = tlkit.HeadSpec("sig", build, "demo")
    params = {p.name: p for p in spec.params}
    assert list(params) == ["units", "rate", "mode", "depth", "flag", "plain"]
    assert params["units"] == tlkit.ParamSpec("units", (64, 32), help="widths", kind="ints", ge=1)
    assert params["rate"] == tlkit.ParamSpec("rate", 0.0, help="a rate", kind="float")  # checked, normalised
    assert params["mode"].choices == ("a", "b") and params["mode"].kind == "str" and params["mode"].help == "mode"
    assert params["depth"] == tlkit.ParamSpec("depth", 2, help="layers", kind="int", ge=1, le=8)
    assert params["flag"].kind == "bool" and params["plain"].kind == "int" and params["plain"].help == ""
    # explicit params still win (and stay the only declaration when given)
    explicit = tlkit.HeadSpec("sig", build, "demo", params=(tlkit.ParamSpec("units", (8,)),))
    assert [p.name for p in explicit.params] == ["units"]
    with pytest.raises(TypeError, match="give tlkit.ParamSpec"):
        tlkit.HeadSpec("sig", build, "demo", params=(tlkit.Param("a marker, not a record"),))
    # a build without keyword-only arguments has none
    assert tlkit.AugmentationSpec("noop", lambda seed: None, "demo").params == ()


# A type alias that carries the rule (module level: this file's annotations are strings).
Width = Annotated[int, tlkit.Param("width", ge=1, lt=1024)]


def test_the_marker_in_annotated_and_as_a_default_is_one_marker():
    """tlkit.Param in the type and tlkit.param(default, ...) as the default declare the same thing;
    a type alias may carry the rule while tlkit.param carries only the default."""

    def in_type(features, num_classes, *, units: Annotated[int, tlkit.Param("width", ge=1, lt=1024)] = 8):
        return None

    def as_default(features, num_classes, *, units: int = tlkit.param(8, ge=1, lt=1024, help="width")):
        return None

    def alias_and_default(features, num_classes, *, units: Width = tlkit.param(8)):
        return None

    expected = (tlkit.ParamSpec("units", 8, help="width", kind="int", ge=1, lt=1024),)
    for build in (in_type, as_default, alias_and_default):
        assert tlkit.HeadSpec("h", build, "demo").params == expected, build.__name__
    with pytest.raises(TlkitError, match=r"^head 'h': units is out of range: 1024 \(must be < 1024\)$"):
        resolve_params("head 'h'", expected, {"units": "1024"})


@pytest.mark.parametrize(
    "signature, error, message",
    [
        ("*, units", ValueError, "parameter 'units' of build() needs a default value"),
        ("*, units: int = tlkit.param(help='width')", ValueError, "needs a default value"),
        ("*, units: dict = {}", ValueError, "type <class 'dict'> is not supported"),
        (
            "*, units: Annotated[int, tlkit.Param(ge=1)] = 0",
            ValueError,
            "parameter 'units' of build(): units must be a positive integer, got 0",
        ),
        ("*, mode: Literal['a', 'b'] = 'c'", ValueError, "unknown mode 'c' (choose from a, b)"),
        (
            "*, units: Annotated[int, tlkit.Param('width', minimum=1)] = 4",
            TypeError,
            "head 'bad': parameter 'units' of build(): tlkit.Param got an unknown keyword 'minimum'",
        ),
        ("*, units: int = tlkit.param(4, maximum=9)", TypeError, "parameter 'units' of build(): tlkit.Param got"),
        (
            "*, units: Annotated[int, tlkit.Param('w')] = tlkit.param(4, ge=1)",
            TypeError,
            "parameter 'units' of build(): it has a tlkit.Param in its type and a tlkit.param(...) default",
        ),
        ("*, units: Annotated[int, tlkit.param(4, ge=1)] = 4", TypeError, "tlkit.param(default, ...) goes after `=`"),
        ("*, rate: Annotated[float, tlkit.Param(ge='0')] = 1.0", TypeError, "bound ge='0' is not a finite number"),
        ("*, units: Annotated[int, tlkit.Param(kind='list')] = 1", ValueError, "unknown kind 'list'"),
    ],
)
def test_bad_param_declarations_fail_at_registration(signature, error, message):
    namespace = {"Annotated": Annotated, "Literal": Literal, "tlkit": tlkit}
    exec(f"def build(features, num_classes, {signature}):\n    return None", namespace)
    with pytest.raises(error, match="head 'bad'") as caught:
        tlkit.HeadSpec("bad", namespace["build"], "demo")
    assert message in str(caught.value)


def test_old_marker_spellings_warn_and_still_work():
    """Third-party plugins wrote tlkit.param(help, min=, max=) in Annotated: it still declares the same."""

    def build(
        features,
        num_classes,
        *,
        dropout: Annotated[float, tlkit.param("dropout rate", min=0.0, max=0.99)] = 0.2,
        mode: Annotated[Literal["a", "b"], tlkit.param("the mode")] = "a",
    ):
        return None

    # (this file's annotations are strings: they are evaluated, and warn, when the signature is read)
    with pytest.warns(DeprecationWarning) as caught:
        params = tlkit.HeadSpec("old", build, "demo").params
    messages = [str(w.message) for w in caught]
    assert any(
        "tlkit.param(min=..., max=...) is deprecated: the bounds are ge= (>=) and le= (<=)" in m for m in messages
    )
    assert any("parameter 'mode': tlkit.param('the mode') inside Annotated is deprecated" in m for m in messages)
    assert params == (
        tlkit.ParamSpec("dropout", 0.2, help="dropout rate", kind="float", ge=0.0, le=0.99),
        tlkit.ParamSpec("mode", "a", help="the mode", kind="str", choices=("a", "b")),
    )


def test_a_base_counts_its_parameters_in_param_count():
    def build(input_shape, weights=None):
        return None

    spec = tlkit.BaseSpec("b", build, list, "demo", param_count=1234)
    assert spec.param_count == 1234
    with pytest.warns(DeprecationWarning, match="BaseSpec.params .* is now BaseSpec.param_count"):
        old = tlkit.BaseSpec("b", build, list, "demo", params=1234)
    assert old == spec
    with pytest.warns(DeprecationWarning, match="param_count"):
        assert old.params == 1234
    with pytest.warns(DeprecationWarning, match="param_count="):
        via_helper = tlkit.keras_application_base("b", build, preprocessing="tf", description="d", params=99)
    assert via_helper.param_count == 99
    with pytest.raises(TypeError, match="not both"), pytest.warns(DeprecationWarning):
        tlkit.BaseSpec("b", build, list, "demo", params=1, param_count=2)
    # with_plugin (dataclasses.replace) copies it without a warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert with_plugin(spec, "p").param_count == 1234


def test_string_annotations_are_read_per_parameter(tmp_path, monkeypatch):
    """``from __future__ import annotations`` plugins, with an unresolvable unrelated annotation."""
    (tmp_path / "tlkit_future_demo.py").write_text(
        "from __future__ import annotations\n"
        "from typing import TYPE_CHECKING, Annotated\n"
        "import tlkit\n"
        "if TYPE_CHECKING:\n"
        "    import keras\n"
        "Width = Annotated[int, tlkit.Param('width', ge=1)]\n"
        "def build(features: keras.KerasTensor, num_classes: int, *, units: Width = 4):\n"
        "    return None\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("tlkit_future_demo")
    assert params_from_signature(module.build) == (tlkit.ParamSpec("units", 4, help="width", kind="int", ge=1),)
    monkeypatch.delitem(sys.modules, "tlkit_future_demo")


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
