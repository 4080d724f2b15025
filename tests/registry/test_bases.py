"""The built-in bases (``tlkit_builtins.bases``), found through the entry points.

Everything is built with ``weights=None`` (no internet here); the ImageNet
weight file names are checked by intercepting Keras's download call.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

import tlkit
from tlkit.registry.manager import Registry

BUILTIN_PLUGIN = "builtin_bases"

# base name -> the keras.applications module whose preprocess_input it must match
KERAS_PREPROCESS_MODULE = {
    "resnet50": "resnet50",
    "resnet101": "resnet",
    "resnet152": "resnet",
    "resnet50_v2": "resnet_v2",
    "resnet101_v2": "resnet_v2",
    "resnet152_v2": "resnet_v2",
    "vgg16": "vgg16",
    "vgg19": "vgg19",
    "mobilenet": "mobilenet",
    "mobilenet_v2": "mobilenet_v2",
    "mobilenet_v3_small": "mobilenet_v3",
    "mobilenet_v3_large": "mobilenet_v3",
    "efficientnet_b0": "efficientnet",
    "efficientnet_b1": "efficientnet",
    "efficientnet_b2": "efficientnet",
    "efficientnet_b3": "efficientnet",
    "efficientnet_v2_b0": "efficientnet_v2",
    "densenet121": "densenet",
    "inception_v3": "inception_v3",
    "xception": "xception",
    "convnext_tiny": "convnext",
}
NAMES = sorted(KERAS_PREPROCESS_MODULE)

# one base per preprocessing mode that needs layers
MODE_EXAMPLES = {"caffe": "resnet50", "tf": "mobilenet_v2", "torch": "densenet121"}


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry()  # the installed "tlkit" entry points, like the CLI


@pytest.fixture(autouse=True)
def _fresh_keras_session():
    yield
    if "keras" in sys.modules:
        sys.modules["keras"].backend.clear_session()


def _run_python(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""},
    )


# -- metadata ----------------------------------------------------------------
def test_registry_has_every_builtin_base(registry):
    builtin = {name for name, spec in registry.bases.items() if spec.plugin == BUILTIN_PLUGIN}
    assert builtin == set(NAMES)
    info = registry.plugin(BUILTIN_PLUGIN)
    assert info is not None and info.builtin and not info.errors
    assert info.hooks == ["register_bases"]


@pytest.mark.parametrize("name", NAMES)
def test_metadata_is_complete(registry, name):
    spec = registry.base(name)
    assert isinstance(spec, tlkit.BaseSpec)
    assert spec.description and "\n" not in spec.description
    assert spec.family and spec.preprocessing
    assert spec.weights_file.endswith(".h5") and "/" not in spec.weights_file
    assert spec.param_count > 0
    assert 32 <= spec.min_size <= spec.default_size
    assert spec.feature_shape.endswith(f" at {spec.default_size} px")
    if spec.weights_sizes:
        assert spec.default_size in spec.weights_sizes
        assert min(spec.weights_sizes) >= spec.min_size


def test_known_sizes(registry):
    sizes = {name: (registry.base(name).default_size, registry.base(name).min_size) for name in NAMES}
    assert sizes["inception_v3"] == (299, 75)
    assert sizes["xception"] == (299, 71)
    assert sizes["efficientnet_b1"][0] == 240
    assert sizes["efficientnet_b2"][0] == 260
    assert sizes["efficientnet_b3"][0] == 300
    assert registry.base("mobilenet").weights_sizes == (128, 160, 192, 224)
    assert registry.base("mobilenet_v2").weights_sizes == (96, 128, 160, 192, 224)


def test_builtins_use_the_public_helpers(registry):
    """Built-ins are plugins like any other: every row is a tlkit.keras_application_base."""
    standard = {p.description: p for p in tlkit.bases.PREPROCESSINGS.values()}
    for name in NAMES:
        spec = registry.base(name)
        assert spec.preprocessing in standard
        assert spec.preprocess == standard[spec.preprocessing].layers
        assert spec.build.__module__ == "tlkit.registry.keras_applications"  # what tlkit.bases re-exports


# -- the public helpers, as a third-party plugin uses them ----------------------
def test_keras_application_base_takes_a_name_a_dotted_path_or_a_callable():
    import keras

    calls = []

    def tiny(*, include_top, weights, input_shape, width):
        calls.append((include_top, weights, input_shape, width))
        inputs = keras.Input(input_shape)
        return keras.Model(inputs, keras.layers.Conv2D(width, 3, strides=2, name="tiny_conv")(inputs))

    by_callable = tlkit.keras_application_base(
        "tiny",
        tiny,
        preprocessing=tlkit.bases.TORCH,
        description="a tiny conv",
        options={"width": 4},
        param_count=112,
        feature_shape="15×15×4 at 32 px",
        default_size=32,
    )
    assert by_callable.preprocessing.startswith("torch:") and by_callable.default_size == 32
    model = by_callable.build((32, 32, 3), None)
    assert calls == [(False, None, (32, 32, 3), 4)] and model.count_params() == by_callable.param_count
    assert by_callable.build.__name__ == "build_tiny"

    by_path = tlkit.keras_application_base(
        "slim",
        "keras.applications.MobileNetV2",
        preprocessing="tf",
        description="slim",
        options={"alpha": 0.35},
    )
    assert by_path.build((32, 32, 3), None).count_params() == 410_208
    by_name = tlkit.keras_application_base("v2", "MobileNetV2", preprocessing=tlkit.bases.TF, description="v2")
    assert by_name.build.__name__ == "build_MobileNetV2"
    with pytest.raises(ValueError, match="unknown preprocessing 'bgr'; use one of caffe, tf, torch, internal"):
        tlkit.keras_application_base("x", "VGG16", preprocessing="bgr", description="x")


@pytest.mark.parametrize("mode", ["caffe", "tf", "torch", "internal"])
def test_standard_preprocessings(mode):
    preprocessing = tlkit.bases.PREPROCESSINGS[mode]
    assert preprocessing.description.startswith(f"{mode}: ")
    layers = preprocessing.layers()
    assert [layer.name for layer in layers] == ([] if mode == "internal" else [f"preprocess_{mode}"])
    assert [layer.name for layer in preprocessing.layers(name="mine")] == ([] if mode == "internal" else ["mine"])


# -- sizes -------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_check_size_enforces_min_size(registry, name):
    spec = registry.base(name)
    with pytest.raises(tlkit.TlkitError, match=f"at least {spec.min_size} px"):
        spec.check_size(spec.min_size - 1, None)
    spec.check_size(spec.min_size, None)
    spec.check_size(spec.default_size, "imagenet")


def test_check_size_enforces_weights_sizes(registry):
    spec = registry.base("mobilenet_v2")
    with pytest.raises(tlkit.TlkitError, match="ImageNet weights only for input sizes"):
        spec.check_size(100, "imagenet")
    spec.check_size(100, None)
    spec.check_size(96, "imagenet")


# -- building ----------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_base_builds_and_runs(registry, name):
    import keras

    spec = registry.base(name)
    size = max(spec.min_size, 32)
    keras.backend.clear_session()
    model = spec.build((size, size, 3), None)
    assert isinstance(model, keras.Model)
    assert model.count_params() == spec.param_count
    shape = model.output_shape
    assert len(shape) == 4 and shape[0] is None and all(d >= 1 for d in shape[1:])
    channels = int(re.search(r"×(\d+) at", spec.feature_shape).group(1))
    assert shape[-1] == channels
    features = model(np.zeros((1, size, size, 3), dtype="float32"), training=False)
    assert tuple(features.shape) == (1, *shape[1:])


@pytest.mark.parametrize("name", NAMES)
def test_weights_file_is_what_keras_downloads(registry, name, monkeypatch):
    """Build with weights="imagenet" but intercept the download and the load."""
    import keras
    from keras.src.utils import file_utils

    requested = []

    def fake_get_file(fname=None, origin=None, *args, cache_subdir="datasets", **kwargs):
        requested.append((fname, cache_subdir))
        return "/nonexistent/weights.h5"

    monkeypatch.setattr(file_utils, "get_file", fake_get_file)
    monkeypatch.setattr(keras.Model, "load_weights", lambda self, *a, **k: None)
    spec = registry.base(name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        spec.build((spec.default_size, spec.default_size, 3), "imagenet")
    assert requested == [(spec.weights_file, "models")]
    assert not [w for w in caught if "input_shape" in str(w.message)]


def test_mobilenet_v3_builds_quietly_at_other_sizes(registry, monkeypatch):
    import keras
    from keras.src.utils import file_utils

    monkeypatch.setattr(file_utils, "get_file", lambda *a, **k: "/nonexistent/weights.h5")
    monkeypatch.setattr(keras.Model, "load_weights", lambda self, *a, **k: None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        registry.base("mobilenet_v3_small").build((96, 96, 3), "imagenet")
    assert not [w for w in caught if "input_shape" in str(w.message)]


# -- preprocessing -----------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_preprocessing_matches_keras(registry, name):
    import keras

    spec = registry.base(name)
    module = getattr(keras.applications, KERAS_PREPROCESS_MODULE[name])
    images = np.random.default_rng(0).uniform(0, 255, size=(2, 9, 7, 3)).astype("float32")
    expected = np.asarray(module.preprocess_input(images.copy()))
    layers = spec.preprocess()
    x = images
    for layer in layers:
        x = layer(x)
    np.testing.assert_allclose(np.asarray(x), expected, atol=1e-3, rtol=0)
    for layer in layers:
        assert type(layer).__module__.startswith("keras.")
        assert type(layer).__name__ != "Lambda"
        assert layer.name.startswith("preprocess_")
        assert not layer.trainable_weights
    # fresh layers each call, so two models never share them
    assert all(a is not b for a, b in zip(layers, spec.preprocess()))


def test_internal_bases_need_no_layers(registry):
    internal = [n for n in NAMES if n.startswith(("efficientnet", "convnext", "mobilenet_v3"))]
    assert len(internal) == 8
    for name in internal:
        assert registry.base(name).preprocess() == []


def test_preprocessing_survives_save_and_load(registry, tmp_path):
    """Saved with the layers, loaded with plain Keras in a Python without tlkit."""
    import keras

    images = np.random.default_rng(1).uniform(0, 255, size=(2, 11, 13, 3)).astype("float32")
    np.save(tmp_path / "images.npy", images)
    for mode, name in MODE_EXAMPLES.items():
        inputs = keras.Input((None, None, 3), name="pixels")
        x = inputs
        for layer in registry.base(name).preprocess():
            x = layer(x)
        outputs = keras.layers.Conv2D(2, 3, name="tiny_conv")(x)
        model = keras.Model(inputs, outputs, name=f"tiny_{mode}")
        assert not any(type(layer).__name__ == "Lambda" for layer in model.layers)
        model.save(tmp_path / f"{mode}.keras")
        np.save(tmp_path / f"{mode}.npy", np.asarray(model(images)))

    result = _run_python(
        """
        import json, sys
        from pathlib import Path
        import numpy as np
        import keras

        folder = Path(sys.argv[1])
        images = np.load(folder / "images.npy")
        report = {}
        for mode in json.loads(sys.argv[2]):
            model = keras.saving.load_model(folder / f"{mode}.keras", safe_mode=True)
            got = np.asarray(model(images))
            want = np.load(folder / f"{mode}.npy")
            report[mode] = {
                "max_diff": float(np.max(np.abs(got - want))),
                "classes": [type(layer).__name__ for layer in model.layers],
                "trainable": [w.path for w in model.trainable_weights],
            }
        report["tlkit_imported"] = any(m.startswith("tlkit") for m in sys.modules)
        print(json.dumps(report))
        """,
        str(tmp_path),
        json.dumps(list(MODE_EXAMPLES)),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report.pop("tlkit_imported") is False
    assert set(report) == set(MODE_EXAMPLES)
    for mode, info in report.items():
        assert info["max_diff"] < 1e-4, (mode, info)
        assert "Lambda" not in info["classes"]
        assert all(path.startswith("tiny_conv/") for path in info["trainable"]), info
