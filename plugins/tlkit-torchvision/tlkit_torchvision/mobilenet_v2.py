"""torchvision's MobileNetV2 (width 1.0) as a functional Keras model, exact to its numerics.

Two details separate this from ``keras.applications.MobileNetV2`` and both
change predictions if missed:

- **symmetric padding**: torchvision pads every 3×3 convolution by 1 pixel
  on every side, stride 2 included; Keras's ``padding="same"`` (and its stock
  MobileNetV2's ``ZeroPadding2D(((0, 1), (0, 1)))``) pads asymmetrically.
  Here each 3×3 conv is ``ZeroPadding2D(1)`` followed by ``padding="valid"``.
- **BatchNorm epsilon 1e-5** (PyTorch's default; Keras's is 1e-3).

Layer names are the torch state-dict prefixes with ``.`` replaced by ``_``
(``features.3.conv.1.0`` → ``features_3_conv_1_0``), so converting weights
is mechanical; ReLU6 layers take their torch index too (``features_3_conv_1_2``).

Keras is imported inside the functions: importing this module stays cheap.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from tlkit import TlkitError
from tlkit.bases import TORCH

#: (expansion t, output channels c, repeats n, first stride s), as in torchvision.
INVERTED_RESIDUAL_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
INPUT_CHANNELS = 32
LAST_CHANNELS = 1280
NUM_CLASSES = 1000
DROPOUT = 0.2
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9  # torch momentum 0.1 == Keras momentum 0.9

FEATURES_NAME = "tv_mobilenet_v2"
PREPROCESS_NAME = "tv_normalize"


def preprocess() -> list[Any]:
    """Standard Keras layers mapping raw 0–255 RGB to torchvision's normalised input.

    torchvision's ``(x/255 − mean) / std`` with the ImageNet mean and std is
    tlkit's standard ``TORCH`` preprocessing: one float32 ``Normalization`` layer.
    """
    return TORCH.layers(name=PREPROCESS_NAME)


# -- architecture -------------------------------------------------------------


def _key_name(prefix: str) -> str:
    return prefix.replace(".", "_")


def _conv_bn(x, prefix: str, filters: int, kernel: int, stride: int, *, depthwise: bool, relu: bool):
    """torchvision's ``Conv2dNormActivation``: conv (no bias) → BN → ReLU6 (optional)."""
    import keras

    name = _key_name(prefix)
    if kernel > 1:
        x = keras.layers.ZeroPadding2D((kernel - 1) // 2, name=f"{name}_pad")(x)
    if depthwise:
        x = keras.layers.DepthwiseConv2D(kernel, strides=stride, padding="valid", use_bias=False, name=f"{name}_0")(x)
    else:
        x = keras.layers.Conv2D(filters, kernel, strides=stride, padding="valid", use_bias=False, name=f"{name}_0")(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=f"{name}_1")(x)
    if relu:
        x = keras.layers.ReLU(max_value=6.0, name=f"{name}_2")(x)
    return x


def _inverted_residual(x, index: int, inp: int, oup: int, stride: int, expand: int):
    """torchvision's ``InvertedResidual`` block, at ``features.<index>``."""
    import keras

    prefix = f"features.{index}.conv"
    hidden = int(round(inp * expand))
    y = x
    part = 0
    if expand != 1:
        y = _conv_bn(y, f"{prefix}.{part}", hidden, 1, 1, depthwise=False, relu=True)
        part += 1
    y = _conv_bn(y, f"{prefix}.{part}", hidden, 3, stride, depthwise=True, relu=True)
    # The linear bottleneck is a bare Conv2d + BatchNorm2d at conv.<part+1>, conv.<part+2>.
    y = keras.layers.Conv2D(oup, 1, use_bias=False, name=_key_name(f"{prefix}.{part + 1}"))(y)
    y = keras.layers.BatchNormalization(
        epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=_key_name(f"{prefix}.{part + 2}")
    )(y)
    if stride == 1 and inp == oup:
        y = keras.layers.Add(name=f"features_{index}_add")([x, y])
    return y


def _features(x):
    """Apply torchvision's ``mobilenet_v2().features`` to a normalised image tensor."""
    x = _conv_bn(x, "features.0", INPUT_CHANNELS, 3, 2, depthwise=False, relu=True)
    channels, index = INPUT_CHANNELS, 1
    for expand, out, repeats, first_stride in INVERTED_RESIDUAL_SETTING:
        for i in range(repeats):
            x = _inverted_residual(x, index, channels, out, first_stride if i == 0 else 1, expand)
            channels, index = out, index + 1
    return _conv_bn(x, f"features.{index}", LAST_CHANNELS, 1, 1, depthwise=False, relu=True)


# -- weight conversion --------------------------------------------------------


def _torch_tensors(layer) -> list[tuple[str, tuple[int, ...], Any]]:
    """``(torch key, torch shape, to_keras)`` for each weight of a Keras layer, in order."""
    import keras

    prefix = layer.name.replace("_", ".")
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        kh, kw, channels, mult = layer.kernel.shape
        # torch (C·mult, 1, kh, kw) → Keras (kh, kw, C, mult)
        return [
            (
                f"{prefix}.weight",
                (channels * mult, 1, kh, kw),
                lambda w: w.reshape(channels, mult, kh, kw).transpose(2, 3, 0, 1),
            )
        ]
    if isinstance(layer, keras.layers.Conv2D):
        kh, kw, cin, cout = layer.kernel.shape
        return [(f"{prefix}.weight", (cout, cin, kh, kw), lambda w: w.transpose(2, 3, 1, 0))]
    if isinstance(layer, keras.layers.BatchNormalization):
        (n,) = layer.gamma.shape
        same = lambda w: w  # noqa: E731
        return [(f"{prefix}.{part}", (n,), same) for part in ("weight", "bias", "running_mean", "running_var")]
    if isinstance(layer, keras.layers.Dense):
        cin, cout = layer.kernel.shape
        return [(f"{prefix}.weight", (cout, cin), lambda w: w.T), (f"{prefix}.bias", (cout,), lambda w: w)]
    return []


def load_torch_weights(
    model,
    state_dict: Mapping[str, np.ndarray],
    *,
    source: str = "the state dict",
    ignore_prefixes: tuple[str, ...] = (),
) -> None:
    """Copy a torchvision MobileNetV2 state dict into ``model`` (built by this module).

    Every tensor the model needs must be present with the right shape, and
    every tensor in the state dict must be used (``num_batches_tracked`` and
    keys starting with one of ``ignore_prefixes`` excepted), as with torch's
    ``load_state_dict(strict=True)``; otherwise a :class:`tlkit.TlkitError`
    names the first offending key and both shapes.
    """
    used: set[str] = set()
    assignments = []
    for layer in _weight_layers(model):
        values = []
        for key, shape, convert in _torch_tensors(layer):
            if key not in state_dict:
                raise TlkitError(
                    f"{source} does not fit torchvision's mobilenet_v2: it has no {key!r} "
                    f"(expected shape {shape}); is it another architecture's checkpoint?"
                )
            array = np.asarray(state_dict[key])
            if tuple(array.shape) != shape:
                raise TlkitError(
                    f"{source} does not fit torchvision's mobilenet_v2: {key!r} has shape "
                    f"{tuple(array.shape)} in the file but the model needs {shape}; "
                    f"is it another architecture's checkpoint?"
                )
            if not np.issubdtype(array.dtype, np.floating):
                raise TlkitError(f"{source}: {key!r} holds {array.dtype} values, not floats")
            values.append(convert(array.astype(np.float32)))
            used.add(key)
        if values:
            assignments.append((layer, values))
    extra = [
        k
        for k in state_dict
        if k not in used and not k.endswith("num_batches_tracked") and not k.startswith(ignore_prefixes)
    ]
    if extra:
        raise TlkitError(
            f"{source} does not fit torchvision's mobilenet_v2: it holds {len(extra)} tensor(s) "
            f"the model has no place for, first {extra[0]!r} (shape {tuple(np.shape(state_dict[extra[0]]))})"
        )
    for layer, values in assignments:
        layer.set_weights(values)


def _weight_layers(model):
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _weight_layers(layer)
        elif layer.weights:
            yield layer


# -- public builders ----------------------------------------------------------


def build_features(
    input_shape=(224, 224, 3), state_dict: Mapping[str, np.ndarray] | None = None, *, source: str = "the state dict"
):
    """The headless model: normalised image → 1280-channel feature map (7×7 at 224 px).

    ``state_dict`` (torch names → numpy arrays) supplies the weights;
    ``classifier.*`` entries in it are ignored.  None gives random weights.
    """
    import keras

    inputs = keras.Input(shape=tuple(input_shape), name="image")
    model = keras.Model(inputs, _features(inputs), name=FEATURES_NAME)
    if state_dict is not None:
        load_torch_weights(model, state_dict, source=source, ignore_prefixes=("classifier.",))
    return model


def build_classifier(
    state_dict: Mapping[str, np.ndarray] | None, input_shape=(224, 224, 3), *, source: str = "the state dict"
):
    """torchvision's full ``mobilenet_v2`` classifier: raw 0–255 RGB → 1000 ImageNet logits.

    Normalisation → features (a nested model named ``tv_mobilenet_v2``) →
    global average pool → dropout → ``Dense(1000)``; the output is logits
    (no softmax), as torchvision's.
    """
    import keras

    inputs = keras.Input(shape=tuple(input_shape), name="pixels")
    x = inputs
    for layer in preprocess():
        x = layer(x)
    features = build_features(input_shape, None)
    x = features(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dropout(DROPOUT, name="classifier_0")(x)
    x = keras.layers.Dense(NUM_CLASSES, name="classifier_1")(x)
    model = keras.Model(inputs, x, name="tv_mobilenet_v2_classifier")
    if state_dict is not None:
        load_torch_weights(model, state_dict, source=source)
    return model


__all__ = [
    "INVERTED_RESIDUAL_SETTING",
    "build_classifier",
    "build_features",
    "load_torch_weights",
    "preprocess",
]
