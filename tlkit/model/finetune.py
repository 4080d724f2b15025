"""Unfreezing the top of the base for the fine-tuning stage.

BatchNormalization layers always stay frozen (and the base is called with
``training=False``, so they also stay in inference mode): updating their
statistics on a small dataset destroys what the base learned.
"""

from __future__ import annotations

from tlkit.errors import TlkitError
from tlkit.suggest import closest


def parse_unfreeze(text: str) -> tuple[str, int | str | None]:
    """``("all", None)``, ``("top", K)`` or ``("from", LAYER_NAME)`` from ``--unfreeze``."""
    text = str(text).strip()
    if text == "all":
        return "all", None
    if text.startswith("from:"):
        name = text[len("from:") :].strip()
        if not name:
            raise TlkitError("--unfreeze from:LAYER_NAME needs a layer name")
        return "from", name
    try:
        count = int(text)
    except ValueError:
        raise TlkitError(f"--unfreeze must be a number K, 'all' or from:LAYER_NAME, got {text!r}") from None
    if count < 1:
        raise TlkitError(f"--unfreeze must be at least 1, got {count}")
    return "top", count


def unfreeze_start(backbone, spec: str, base_name: str | None = None) -> int:
    """The index of the first layer of ``backbone`` that ``--unfreeze`` makes trainable.

    Called once the model is built and before anything is written or trained, so a layer name
    or depth the base does not have is refused at once (``base_name``: what the error calls the base).

    Raises:
        TlkitError: ``spec`` is malformed, deeper than the base, or names a layer it does not have.
    """
    kind, value = parse_unfreeze(spec)
    layers = backbone.layers
    shown = base_name or backbone.name
    if kind == "all":
        return 0
    if kind == "top":
        assert isinstance(value, int)  # parse_unfreeze returns ("top", K)
        if value > len(layers):
            raise TlkitError(
                f"--unfreeze {value} is beyond the depth of base {shown!r} ({len(layers)} layers); "
                f"use --unfreeze all or a number up to {len(layers)}"
            )
        return len(layers) - value
    assert isinstance(value, str)  # parse_unfreeze returns ("from", LAYER_NAME)
    names = [layer.name for layer in layers]
    if value not in names:
        raise TlkitError(
            f"base {shown!r} has no layer {value!r}{closest(value, names)} (--unfreeze from:LAYER_NAME); "
            f"its last layers are {', '.join(names[-3:])}"
        )
    return names.index(value)


def unfreeze(backbone, spec: str) -> int:
    """Make the selected top layers of ``backbone`` trainable (BatchNorm excluded); return how many."""
    from keras import layers as keras_layers  # lazy: Keras imports TensorFlow; only fine-tuning needs it

    start = unfreeze_start(backbone, spec)
    backbone.trainable = True
    unfrozen = 0
    for index, layer in enumerate(backbone.layers):
        trainable = index >= start and not isinstance(layer, keras_layers.BatchNormalization)
        layer.trainable = trainable
        unfrozen += int(trainable and bool(layer.weights))
    return unfrozen
