"""What a KerasHub base gives tlkit: the patch grid is the backbone's own tokens, reshaped; the pooled
vector is CLS ⊕ mean; ONNX Runtime runs them; model.keras loads with plain Keras."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import tlkit
from tlkit.registry.manager import get_registry

PIXELS = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype("float32")


def _backbone(folder: Path):
    import keras_hub

    return keras_hub.models.Backbone.from_preset(str(folder))


def _own_output(folder: Path, x: np.ndarray) -> np.ndarray:
    """The backbone's own output for ``x`` (DINOv2 declares a dict input)."""
    backbone = _backbone(folder)
    return np.asarray(backbone({"images": x} if isinstance(backbone.input, dict) else x))


@pytest.mark.parametrize(
    ("key", "base", "prefix"), [("dino", "dinov2_small", 3), ("vit", "vit_base", 1), ("deit", "deit_small", 2)]
)
def test_the_grid_is_the_backbone_s_patch_tokens_reshaped(tiny_presets, key, base, prefix):
    spec = get_registry().base(base)
    model = spec.build((32, 32, 3), str(tiny_presets[key]))
    assert [layer.name for layer in model.layers[-2:]] == ["patch_tokens", "patch_grid"]
    x = np.asarray(spec.preprocess()[0](PIXELS))
    tokens = _own_output(tiny_presets[key], x)  # the backbone's own output: (3, prefix + 16, 32)
    assert tokens.shape == (3, prefix + 16, 32)
    grid = np.asarray(model(x, training=False))
    assert grid.shape == (3, 4, 4, 32)
    np.testing.assert_allclose(grid, tokens[:, prefix:, :].reshape(3, 4, 4, 32), atol=1e-5)

    pooled = get_registry().base(base + "_pooled").build((32, 32, 3), str(tiny_presets[key]))
    vector = np.asarray(pooled(x, training=False))
    assert vector.shape == (3, 1, 1, 64)
    expected = np.concatenate([tokens[:, 0, :], tokens[:, prefix:, :].mean(axis=1)], axis=-1)
    np.testing.assert_allclose(vector[:, 0, 0, :], expected, atol=1e-5)


def test_a_cnn_gives_its_feature_map(tiny_presets):
    model = get_registry().base("resnet50_a1").build((32, 32, 3), str(tiny_presets["resnet"]))
    x = PIXELS / 255.0
    np.testing.assert_allclose(np.asarray(model(x, training=False)), _own_output(tiny_presets["resnet"], x), atol=1e-5)
    with pytest.raises(tlkit.TlkitError, match="a pooled variant is for transformers"):
        get_registry().base(f"hub:{tiny_presets['resnet']}+pooled").build((32, 32, 3), None)


def test_hub_preprocessing_comes_from_the_preset_s_image_converter(tiny_presets, tmp_path):
    import keras_hub

    folder = tmp_path / "preset"
    _backbone(tiny_presets["vit"]).save_to_preset(str(folder))
    keras_hub.layers.ImageConverter(scale=[0.01, 0.02, 0.03], offset=[-1.0, -2.0, -3.0]).save_to_preset(str(folder))
    (layer,) = get_registry().base(f"hub:{folder}").preprocess()
    np.testing.assert_allclose(np.asarray(layer(PIXELS[:1])), PIXELS[:1] * [0.01, 0.02, 0.03] + [-1, -2, -3], atol=1e-5)
    (standard,) = get_registry().base(f"hub:{tiny_presets['vit']}").preprocess()  # none: ImageNet mean/std
    assert standard.name == "preprocess_torch"


def test_onnx_runtime_runs_a_transformer_base(tiny_presets, tmp_path):
    from tlkit.features.engines import make_engine
    from tlkit.model.builder import assemble

    registry = get_registry()
    parts = assemble(
        registry.base("dinov2_small"), registry.head("linear"), 2, image_size=32, weights=str(tiny_presets["dino"])
    )
    engine, reason = make_engine(parts.feature_model, "auto", tmp_path / "base.onnx", PIXELS)
    assert engine.name == "onnxruntime", reason  # tf2onnx's Erfc (exact GELU) is rewritten as 1 − Erf
    np.testing.assert_allclose(engine(PIXELS), np.asarray(parts.feature_model(PIXELS)), atol=1e-4)


def test_model_keras_loads_with_plain_keras_once_keras_hub_is_installed(tiny_presets, tmp_path):
    model = tlkit.build_model("dinov2_small_pooled", "dense256", 2, image_size=32, weights=str(tiny_presets["dino"]))
    expected = np.asarray(model(PIXELS, training=False))
    model.save(tmp_path / "model.keras")
    np.save(tmp_path / "pixels.npy", PIXELS)
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            import sys

            class Blocked:  # neither tlkit nor this plugin may be needed to load the model
                def find_spec(self, name, path=None, target=None):
                    if name.split(".")[0] in ("tlkit", "tlkit_keras_hub", "tlkit_builtins"):
                        raise ImportError(name + " is blocked in this test")

            sys.meta_path.insert(0, Blocked())
            import json, numpy as np, keras
            model = keras.saving.load_model({str(tmp_path / "model.keras")!r}, safe_mode=True)
            np.save({str(tmp_path / "out.npy")!r}, np.asarray(model(np.load({str(tmp_path / "pixels.npy")!r}))))
            print(json.dumps(sorted({{type(l).__module__.split(".")[0] for l in model.get_layer("dinov2_small_pooled").layers}})))
        """),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == ["keras", "keras_hub"]
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, atol=1e-6)


def test_an_efficientnet_preset_is_fixed_to_the_run_s_size_and_repaired(tmp_path):
    """EfficientNetBackbone takes ``input_shape`` (not ``image_shape``), and keras-hub 0.32's
    ``get_config`` drops ``num_features``: the saved preset loads back only with it given again."""
    import keras_hub
    from tlkit_keras_hub import presets

    tiny = keras_hub.models.EfficientNetBackbone(
        stackwise_kernel_sizes=[3],
        stackwise_num_repeats=[1],
        stackwise_input_filters=[8],
        stackwise_output_filters=[8],
        stackwise_expansion_ratios=[1],
        stackwise_strides=[2],
        stackwise_block_types=["fused"],
        stackwise_squeeze_and_excite_ratios=[0],
        stackwise_width_coefficients=[1.0],
        stackwise_depth_coefficients=[1.0],
        stackwise_force_input_filters=[0],
        stackwise_nores_option=[False],
        num_features=16,
    )
    folder = tmp_path / "efficientnet"
    tiny.save_to_preset(str(folder))
    with pytest.raises(tlkit.TlkitError, match="KerasHub could not load .*top_conv"):
        get_registry().base("efficientnetv2_rw_s").build((32, 32, 3), str(folder))
    presets.add_to_config(folder, {"num_features": 16})
    model = get_registry().base("efficientnetv2_rw_s").build((32, 32, 3), str(folder))
    assert model.output.shape == (None, 8, 8, 16)  # not (None, None, None, 16): the heads need a size
    x = PIXELS / 255.0
    np.testing.assert_allclose(np.asarray(model(x, training=False)), _own_output(folder, x), atol=1e-5)
