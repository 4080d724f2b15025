"""Heads, augmentations and the end-to-end model builder (small bases, weights=None)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tlkit
from tlkit import TlkitError
from tlkit.api import resolve_augmentations
from tlkit.model.builder import base_layer
from tlkit.registry.manager import get_registry

keras = pytest.importorskip("keras")

SIZE = 32


def _images(n=4, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, size=(n, SIZE, SIZE, 3)).astype("float32")


@pytest.fixture(autouse=True)
def _clear():
    yield
    keras.backend.clear_session()


def _layer_types(model):
    found = []
    for layer in model.layers:
        found.append(type(layer).__name__)
        if isinstance(layer, keras.Model):
            found += _layer_types(layer)
    return found


def test_dense256_is_exactly_the_recipe():
    model = tlkit.build_model("mobilenet_v2", "dense256", 5, image_size=SIZE, weights="none")
    head = model.get_layer("head").layers[1:]  # after its Input
    assert [type(layer).__name__ for layer in head] == ["Flatten", "Dropout", "Dense", "Dropout", "Dense"]
    assert head[1].rate == 0.5 and head[3].rate == 0.5
    assert head[2].units == 256 and head[2].activation.__name__ == "relu"
    assert head[4].units == 5 and head[4].activation.__name__ == "softmax"


@pytest.mark.parametrize(
    "head, params",
    [
        ("linear", {}),
        ("mlp", {"units": "64,32", "dropout": "0.1", "pooling": "max", "batchnorm": "true"}),
        ("mlp", {"pooling": "flatten"}),
    ],
)
def test_heads_build_and_output_probabilities(head, params):
    model = tlkit.build_model("mobilenet_v2", head, 3, image_size=SIZE, weights="none", head_params=params)
    probs = model.predict(_images(), verbose=0)
    assert probs.shape == (4, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    if head == "mlp" and params.get("units"):
        dense = [layer.units for layer in model.get_layer("head").layers if layer.name.startswith("head_dense")]
        assert dense == [64, 32]


def test_base_is_frozen_and_batchnorm_stays_in_inference_mode():
    model = tlkit.build_model("resnet50", "linear", 3, image_size=SIZE, weights="none", head_params={"dropout": 0.0})
    trainable = {w.path.split("/")[0] for w in model.trainable_weights}
    assert trainable == {"predictions"}
    assert len(model.trainable_weights) == 2 and not base_layer(model).trainable
    x = _images()
    # No dropout and no augmentation: training=True must equal inference if BN is frozen.
    np.testing.assert_allclose(model(x, training=True), model(x, training=False), atol=1e-5)


@pytest.mark.parametrize("name", sorted(get_registry().augmentations))
def test_each_augmentation_is_active_only_in_training(name):
    (choice,) = resolve_augmentations([name])
    if choice.spec.mixes_batch:
        pytest.skip("batch mixing is not a model layer (tests/test_batch_mixing.py)")
    layer = choice.spec.build(7, **choice.params)
    x = _images(n=8)
    np.testing.assert_allclose(layer(x, training=False), x, atol=1e-4)
    out = np.asarray(layer(x, training=True))
    assert out.shape == x.shape
    assert not np.allclose(out, x, atol=1e-2), f"{name} changed nothing while training"


def test_augmentation_params_reach_the_layer():
    (choice,) = resolve_augmentations(["rotation:factor=0.25,fill_mode=nearest"])
    layer = choice.spec.build(0, **choice.params)
    assert layer.factor in (0.25, (-0.25, 0.25)) and layer.fill_mode == "nearest"
    with pytest.raises(TlkitError, match="did you mean 'rotation'"):
        resolve_augmentations(["rotaton"])


def test_saved_model_reloads_without_tlkit_with_same_predictions(tmp_path):
    model = tlkit.build_model(
        "resnet50",
        "dense256",
        3,
        image_size=SIZE,
        weights="none",
        augmentations=["flip_horizontal", "crop:scale=0.7", "contrast"],
    )
    assert "Lambda" not in _layer_types(model)
    x = _images()
    expected = model.predict(x, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "expected.npy", expected)
    code = textwrap.dedent(f"""
        import sys, numpy as np, keras
        model = keras.saving.load_model({str(path)!r}, safe_mode=True)
        got = model.predict(np.load({str(tmp_path / "x.npy")!r}), verbose=0)
        np.testing.assert_allclose(got, np.load({str(tmp_path / "expected.npy")!r}), atol=1e-5)
        assert not [m for m in sys.modules if m.startswith('tlkit')], 'tlkit was imported'
        print('RELOAD OK')
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "RELOAD OK" in result.stdout, result.stderr[-2000:]


def test_weights_from_a_file_and_a_mismatching_file(tmp_path):
    from tlkit.weights.build import build_base

    spec = get_registry().base("mobilenet_v2")
    reference = build_base(spec, SIZE, None)
    path = tmp_path / "mnv2.weights.h5"
    reference.save_weights(path)
    loaded = build_base(spec, SIZE, str(path))
    for a, b in zip(reference.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(TlkitError, match="does not fit base 'resnet50'"):
        build_base(get_registry().base("resnet50"), SIZE, str(path))
    with pytest.raises(TlkitError, match="not a Keras weights file"):
        (tmp_path / "w.bin").write_bytes(b"x")
        build_base(spec, SIZE, str(tmp_path / "w.bin"))


def test_imagenet_download_failure_says_how_to_proceed(monkeypatch):
    import dataclasses

    from tlkit.weights.build import build_base

    spec = get_registry().base("mobilenet_v2")

    def offline(input_shape, weights):
        raise Exception("URL fetch failure on https://example/x.h5: None -- [Errno -3] name resolution")

    with pytest.raises(TlkitError) as info:
        build_base(dataclasses.replace(spec, build=offline), 224, "imagenet")
    message = str(info.value)
    assert "\n" not in message
    for hint in ("--weights none", "--weights PATH", spec.weights_file, "URL fetch failure"):
        assert hint in message


def test_input_size_rules():
    with pytest.raises(TlkitError, match="at least 75 px"):
        tlkit.build_model("inception_v3", "linear", 2, image_size=32, weights="none")
    with pytest.raises(TlkitError, match="only for input sizes 96, 128"):
        tlkit.build_model("mobilenet_v2", "linear", 2, image_size=100, weights="imagenet")
