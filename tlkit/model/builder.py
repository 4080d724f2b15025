"""Assemble ``raw pixels → augmentation → base preprocessing → frozen base → head`` into one model.

The result is a plain functional ``keras.Model`` made only of standard,
serializable layers, so ``model.keras`` loads with ``keras.saving.load_model``
in a Python that has never heard of tlkit, and it takes raw 0–255 RGB pixels:
a user can never feed it the wrong preprocessing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tlkit.errors import TlkitError
from tlkit.registry.specs import AugmentationSpec, BaseSpec, HeadSpec, safe_name
from tlkit.weights.build import build_base


@dataclass(frozen=True)
class AugmentationChoice:
    """An augmentation spec with its resolved parameters."""

    spec: AugmentationSpec
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelParts:
    """The end-to-end model and the pieces of it that training uses separately.

    All parts share layers (and so weights) with ``model``: training ``head``
    on cached features trains ``model``'s head.
    """

    model: Any  # raw pixels → augmentation → preprocessing → backbone → head
    backbone: Any  # the frozen base
    head: Any  # features → class probabilities (a nested keras.Model named "head")
    feature_model: Any  # raw pixels → preprocessing → backbone (no augmentation)
    augmenter: Any | None  # raw pixels → augmented pixels (call with training=True), or None
    preprocess_layers: list = field(default_factory=list)
    #: When the head starts with global pooling, what the feature cache can hold instead of the
    #: map: ``cached_model`` (pixels → pooled vector, C floats instead of h×w×C) and ``head_tail``
    #: (pooled vector → probabilities, the head's layers after the pooling, same weights).
    pooling: str | None = None  # "avg" or "max"
    cached_model: Any = None  # what the feature engine runs: feature_model, or it + the pooling
    head_tail: Any = None  # what trains on cached features: head, or its layers after the pooling
    #: The batch-mixing augmentations (``mixes_batch`` specs: mixup, cutmix): ``mix(images, labels, seed)``
    #: functions for the training input pipeline (:mod:`tlkit.data.mixing`), never layers of ``model``.
    mixers: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self.cached_model = self.cached_model or self.feature_model
        self.head_tail = self.head_tail or self.head


def _leading_pool(head_model) -> Any | None:
    """The head's global pooling layer when it is the one thing the head does with the feature map."""
    import keras  # lazy: Keras imports TensorFlow; only building a model needs it

    consumers = [
        layer
        for layer in head_model.layers
        if not isinstance(layer, keras.layers.InputLayer) and layer.input is head_model.inputs[0]
    ]
    if len(consumers) == 1 and isinstance(
        consumers[0], (keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D)
    ):
        pool = consumers[0]
        if not pool.get_config().get("keepdims"):
            return pool
    return None


def assemble(
    base: BaseSpec,
    head: HeadSpec,
    num_classes: int,
    *,
    image_size: int | None = None,
    weights: str | None = None,
    head_params: dict[str, Any] | None = None,
    augmentations: list[AugmentationChoice] | tuple[AugmentationChoice, ...] = (),
    seed: int = 0,
    multi_label: bool = False,
) -> ModelParts:
    """Build the end-to-end model with the base frozen, plus its shareable parts.

    ``head_params`` must already be resolved (every declared parameter
    present); :func:`tlkit.api.build_model` does that from user input.
    ``multi_label`` turns the head's softmax into a sigmoid (:func:`use_sigmoid`).
    """
    import keras  # lazy: Keras imports TensorFlow; only building a model needs it

    if num_classes < 2:
        raise TlkitError(f"a classifier needs at least 2 classes, got {num_classes}")
    size = image_size or base.default_size
    base.check_size(size, weights)
    shape = (size, size, 3)

    built = [
        (choice.spec.mixes_batch, choice.spec.build(seed + i, **choice.params))
        for i, choice in enumerate(augmentations)
    ]
    aug_layers = [made for mixes_batch, made in built if not mixes_batch]
    pre_layers = list(base.preprocess())
    for layer in pre_layers:
        layer.trainable = False
    backbone = build_base(base, size, weights)
    backbone.trainable = False

    # The head is its own model so it can be trained alone on cached features.
    # Under a mixed-precision policy only the base computes in float16/bfloat16: the head (small,
    # and ending in the softmax) stays float32, as Keras's mixed-precision guide advises.
    policy = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy("float32")
    try:
        feature_input = keras.Input(shape=tuple(backbone.output.shape[1:]), name="features")
        head_model = keras.Model(
            feature_input, head.build(feature_input, num_classes, **(head_params or {})), name="head"
        )
        if multi_label:
            use_sigmoid(head_model)
    finally:
        keras.mixed_precision.set_global_policy(policy)

    def preprocess_and_embed(x):
        for layer in pre_layers:
            x = layer(x)
        # training=False keeps BatchNorm in inference mode even when the base
        # is later unfrozen for fine-tuning.
        return backbone(x, training=False)

    inputs = keras.Input(shape=shape, dtype="float32", name="image")
    x = inputs
    for layer in aug_layers:
        x = layer(x)
    model = keras.Model(inputs, head_model(preprocess_and_embed(x)), name=f"tlkit_{safe_name(base.name)}_{head.name}")

    pixels = keras.Input(shape=shape, dtype="float32", name="image")
    feature_model = keras.Model(pixels, preprocess_and_embed(pixels), name=f"{safe_name(base.name)}_features")
    augmenter = None
    if aug_layers:
        raw = keras.Input(shape=shape, dtype="float32", name="image")
        y = raw
        for layer in aug_layers:
            y = layer(y)
        augmenter = keras.Model(raw, y, name="augmentation")
    parts = ModelParts(model, backbone, head_model, feature_model, augmenter, pre_layers)
    parts.mixers = [made for mixes_batch, made in built if mixes_batch]
    pool = _leading_pool(head_model)
    if pool is not None:
        parts.pooling = "avg" if isinstance(pool, keras.layers.GlobalAveragePooling2D) else "max"
        parts.head_tail = keras.Model(pool.output, head_model.output, name="head_tail")
        parts.cached_model = keras.Model(
            pixels, pool(feature_model.output), name=f"{safe_name(base.name)}_pooled_features"
        )
    return parts


def use_sigmoid(head_model) -> None:
    """Make ``head_model`` end in a sigmoid: its last layer's softmax activation becomes a sigmoid.

    Works for every head whose output layer has an ``activation`` (a ``Dense``
    with ``activation="softmax"``, as the built-in heads end, or an
    ``Activation("softmax")`` layer); the change is in the layer's config, so
    ``model.keras`` reloads with the sigmoid.

    Raises:
        TlkitError: the head ends otherwise (e.g. a ``Softmax`` layer).
    """
    import keras  # lazy: Keras imports TensorFlow; only building a model needs it

    history = getattr(head_model.outputs[0], "_keras_history", None)
    layer = history.operation if history is not None else head_model.layers[-1]
    activation = getattr(layer, "activation", None)
    name = getattr(activation, "__name__", "")
    if activation is None or name not in ("softmax", "sigmoid"):
        raise TlkitError(
            f"--multi-label needs a head whose last layer has a softmax activation (Dense(..., "
            f"activation='softmax')); this head ends in {type(layer).__name__} — use another --head"
        )
    layer.activation = keras.activations.get("sigmoid")


def build_model(*args: Any, **kwargs: Any):
    """The end-to-end ``keras.Model`` (see :func:`assemble` for the arguments)."""
    return assemble(*args, **kwargs).model


def base_layer(model):
    """The nested base (backbone) model inside an end-to-end tlkit model (also a reloaded one)."""
    import keras  # lazy: Keras imports TensorFlow; only building a model needs it

    nested = [
        layer
        for layer in model.layers
        if isinstance(layer, keras.Model) and layer.name != "head" and not layer.name.startswith("aug_")
    ]
    return max(nested, key=lambda m: m.count_params()) if nested else None
