"""The model card says which packages besides Keras loading the run's ``model.keras`` needs."""

from __future__ import annotations

from tlkit.exporting.card import _needs_row, model_packages


def _layer(module: str, children=()):
    cls = type("Layer", (), {"__module__": module})
    layer = cls()
    layer.layers = list(children)
    return layer


def test_model_packages_walks_nested_models_and_skips_keras():
    inner = _layer("keras_hub.src.models.vit.vit_layers", [_layer("keras.src.layers.core.dense")])
    model = _layer(
        "keras.src.models.functional", [_layer("keras.src.layers.rescaling"), inner, _layer("my_plugin.layers")]
    )
    assert model_packages(model) == ["keras_hub", "my_plugin"]
    assert model_packages(_layer("keras.src.models.functional", [_layer("keras.src.layers.core.dense")])) == []


def test_the_card_row_only_when_something_is_needed():
    assert _needs_row([], "onnx") == []
    (row,) = _needs_row(["keras_hub"], "tflite")
    assert "once `keras_hub` is installed" in row and "this TFLite artefact needs none of them" in row
