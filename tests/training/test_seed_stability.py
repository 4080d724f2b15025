"""dense256's feature normalisation (issue 14, stability across seeds): the layers each ``norm`` builds,
the documented default, and that ``norm=none`` is still exactly the classic recipe."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.support import invoke_tlkit
from tlkit import TlkitError
from tlkit.config.options import load_config_file
from tlkit.config.resolve import resolve_head
from tlkit.registry.manager import get_registry

keras = pytest.importorskip("keras")

DOCS = Path(__file__).resolve().parents[2] / "docs"
DEFAULT_NORM = (
    "none"  # the classic recipe; what docs/training.md#stability-across-seeds, user-guide.md and `tlkit info` say
)


def _head(num_classes=3, **given):
    """dense256 built alone on a tiny 2×2×8 feature map, parameters checked as --head-param checks them."""
    spec, params = resolve_head("dense256", {k: str(v) for k, v in given.items()})
    features = keras.Input((2, 2, 8))
    return keras.Model(features, spec.build(features, num_classes, **params)), params


@pytest.mark.parametrize(
    "norm, layers",
    [
        ("none", ["Flatten", "Dropout", "Dense", "Dropout", "Dense"]),  # the classic recipe, exactly
        ("layer", ["Flatten", "LayerNormalization", "Dropout", "Dense", "Dropout", "Dense"]),
        ("batch", ["Flatten", "BatchNormalization", "Dropout", "Dense", "Dropout", "Dense"]),
    ],
)
def test_norm_builds_the_documented_layers(norm, layers):
    model, _ = _head(norm=norm)
    assert [type(layer).__name__ for layer in model.layers[1:]] == layers
    assert model.get_layer("head_dense").units == 256 and model.get_layer("predictions").units == 3
    probs = model.predict(np.random.default_rng(0).uniform(0, 6, (4, 2, 2, 8)).astype("float32"), verbose=0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_layer_norm_makes_the_head_blind_to_the_features_scale():
    # What the fix is for: un-normalised features of any scale reach the hidden layer as the same vector.
    model, _ = _head(norm="layer", dropout=0.0)
    hidden = keras.Model(model.inputs, model.get_layer("head_dense").output)
    x = np.random.default_rng(1).uniform(0, 6, (4, 2, 2, 8)).astype("float32")
    np.testing.assert_allclose(hidden.predict(x, verbose=0), hidden.predict(50 * x, verbose=0), rtol=1e-3, atol=1e-4)


def test_the_default_is_what_the_docs_say():
    spec = get_registry().head("dense256")
    norm = next(p for p in spec.params if p.name == "norm")
    assert norm.default == DEFAULT_NORM
    assert set(norm.choices) == {"none", "layer", "batch"}
    _, params = _head()
    assert params["norm"] == DEFAULT_NORM
    training = (DOCS / "training.md").read_text(encoding="utf-8")
    assert "## Stability across seeds" in training
    assert "--head-param norm=none" in training  # how to get the exact classic recipe back
    assert f"norm={DEFAULT_NORM}" in (DOCS / "user-guide.md").read_text(encoding="utf-8")


def test_an_unknown_norm_is_a_one_line_error():
    with pytest.raises(TlkitError, match="norm") as info:
        resolve_head("dense256", {"norm": "group"})
    assert "\n" not in str(info.value) and "none" in str(info.value)


def test_train_with_norm_batch_end_to_end(tiny_data, tmp_path):
    """The CLI trains it (on cached features), records it in config.toml, and model.keras loads with plain Keras."""
    result = invoke_tlkit(
        "train", "--data", tiny_data, "--base", "mobilenet_v2", "--weights", "none", "--image-size", "32",
        "--batch-size", "8", "--epochs", "1", "--head", "dense256", "--head-param", "norm=batch",
        "--output", tmp_path / "runs", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    run = Path(json.loads(result.stdout)["run_dir"])
    assert load_config_file(run / "config.toml").head_params["norm"] == "batch"  # reruns with the same head
    assert json.loads((run / "metrics.json").read_text())["training_path"] == "features"
    model = keras.saving.load_model(run / "model.keras")
    norm = model.get_layer("head").get_layer("head_norm")
    assert type(norm).__name__ == "BatchNormalization"
    assert not np.allclose(keras.ops.convert_to_numpy(norm.moving_variance), 1.0)  # it learnt the features' statistics
