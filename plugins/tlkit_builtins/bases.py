"""Built-in bases: the ImageNet backbones of ``keras.applications``, headless.

Every base is a ``tlkit.BaseSpec`` built from one row of the table below, and
registered through the ``register_bases`` hook exactly as a third-party
plugin would do it.  Nothing here imports Keras at import time: the builders
and preprocessing factories import it when they are called, so that listing
bases stays fast and TensorFlow-free.

Preprocessing comes in four flavours (the ``mode`` of a row), each mapping raw
RGB pixels in 0–255 to what the base was trained on, with standard,
serializable, non-trainable Keras layers (no ``Lambda``), so that a saved
model loads with plain ``keras.saving.load_model`` and takes raw pixels:

- ``caffe`` (ResNet v1, VGG): RGB→BGR and subtract the ImageNet channel mean,
  as one frozen 1×1 ``Conv2D`` whose kernel is the channel permutation and
  whose bias is minus the mean (exact: the kernel holds only 0s and 1s).
- ``tf`` (MobileNet v1/v2, ResNet v2, Inception v3, Xception): scale to
  −1…1 with ``Rescaling(1/127.5, offset=-1)``.
- ``torch`` (DenseNet): ``(x/255 − mean) / std`` with the ImageNet mean and
  std, as one ``Normalization`` layer with the constants scaled by 255.
- ``internal`` (EfficientNet, EfficientNetV2, ConvNeXt, MobileNetV3): the
  base rescales 0–255 pixels itself; no layers.

Each row matches ``keras.applications.<module>.preprocess_input`` of its
Keras module to float32 rounding.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any, Callable

import tlkit

# ImageNet statistics, as keras.applications.imagenet_utils uses them.
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN_RGB = (0.485, 0.456, 0.406)
_TORCH_STD_RGB = (0.229, 0.224, 0.225)

#: Human-readable description of each preprocessing mode (``BaseSpec.preprocessing``).
PREPROCESSING: dict[str, str] = {
    "caffe": "caffe: RGB→BGR, subtract ImageNet mean (built into the model)",
    "tf": "tf: scale 0–255 to −1…1 (built into the model)",
    "torch": (
        "torch: scale to 0–1, subtract ImageNet mean, divide by ImageNet std "
        "(built into the model)"
    ),
    "internal": "internal: the base rescales raw 0–255 pixels itself",
}

# Keras warns that ImageNet weights "for input shape (224, 224) will be loaded"
# whenever a MobileNet is built at another size.  For MobileNetV3 there is only
# one weight set, valid at every size, so the warning is noise there.
_NON_DEFAULT_SIZE_WARNING = r"`input_shape` is undefined or non-square"


def _preprocess_layers(mode: str) -> list[Any]:
    """The Keras layers that map raw 0–255 RGB to a base's input for ``mode``.

    The layers are named ``preprocess_<mode>`` (unique within one model; a
    model holds one base's preprocessing) and compute in float32 even under a
    mixed-precision policy.
    """
    if mode == "internal":
        return []
    import keras
    import numpy as np

    name = f"preprocess_{mode}"
    if mode == "tf":
        return [keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name=name, dtype="float32")]
    if mode == "torch":
        mean = [255.0 * m for m in _TORCH_MEAN_RGB]
        variance = [(255.0 * s) ** 2 for s in _TORCH_STD_RGB]
        return [keras.layers.Normalization(mean=mean, variance=variance, name=name, dtype="float32")]
    if mode == "caffe":
        layer = keras.layers.Conv2D(
            3,
            1,
            name=name,
            trainable=False,
            dtype="float32",
            kernel_initializer="zeros",
            bias_initializer="zeros",
        )
        layer.build((None, None, None, 3))
        kernel = np.zeros((1, 1, 3, 3), dtype="float32")
        for out_channel in range(3):  # output BGR channel c = input RGB channel 2 - c
            kernel[0, 0, 2 - out_channel, out_channel] = 1.0
        bias = -np.asarray(_CAFFE_MEAN_BGR, dtype="float32")
        layer.set_weights([kernel, bias])
        return [layer]
    raise ValueError(f"unknown preprocessing mode {mode!r}")


def _keras_app(cls: str, *, quiet: bool = False, **options: Any) -> Callable[..., Any]:
    """A ``build(input_shape, weights)`` for ``keras.applications.<cls>``, headless.

    ``options`` are passed through (e.g. ``include_preprocessing=True``);
    ``quiet`` hides Keras's warning about non-default input sizes.
    """

    def build(input_shape: tuple[int, int, int], weights: str | None = None) -> Any:
        import keras

        application = getattr(keras.applications, cls)
        with warnings.catch_warnings():
            if quiet:
                warnings.filterwarnings("ignore", message=_NON_DEFAULT_SIZE_WARNING)
            return application(
                include_top=False,
                weights=weights,
                input_shape=tuple(input_shape),
                **options,
            )

    build.__name__ = build.__qualname__ = f"build_{cls}"
    build.__doc__ = f"keras.applications.{cls}(include_top=False, ...) for the given input shape."
    return build


def _base(
    name: str,
    cls: str,
    *,
    family: str,
    mode: str,
    params: int,
    weights_file: str,
    feature_shape: str,
    description: str,
    default_size: int = 224,
    min_size: int = 32,
    weights_sizes: tuple[int, ...] = (),
    quiet: bool = False,
    **options: Any,
) -> tlkit.BaseSpec:
    """One table row → a ``tlkit.BaseSpec`` backed by ``keras.applications.<cls>``."""
    if mode not in PREPROCESSING:
        raise ValueError(f"base {name!r}: unknown preprocessing mode {mode!r}")
    return tlkit.BaseSpec(
        name=name,
        build=_keras_app(cls, quiet=quiet, **options),
        preprocess=functools.partial(_preprocess_layers, mode),
        description=description,
        family=family,
        default_size=default_size,
        min_size=min_size,
        weights_sizes=weights_sizes,
        params=params,
        preprocessing=PREPROCESSING[mode],
        weights_file=weights_file,
        feature_shape=feature_shape,
    )


# Parameter counts are ``count_params()`` of the include_top=False model
# (input-size independent); weight files are the "notop" names keras.applications
# caches in ~/.keras/models/ (for MobileNet v1/v2, the one for the default size).
_INTERNAL = {"include_preprocessing": True}

BASES: tuple[tlkit.BaseSpec, ...] = (
    # -- ResNet v1 (caffe) ---------------------------------------------------
    _base(
        "resnet50", "ResNet50", family="resnet", mode="caffe", params=23_587_712,
        weights_file="resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        feature_shape="7×7×2048 at 224 px",
        description="ResNet-50 (residual CNN, 2015), 74.9% ImageNet top-1; the classic "
        "transfer-learning default",
    ),
    _base(
        "resnet101", "ResNet101", family="resnet", mode="caffe", params=42_658_176,
        weights_file="resnet101_weights_tf_dim_ordering_tf_kernels_notop.h5",
        feature_shape="7×7×2048 at 224 px",
        description="ResNet-101, 76.4% ImageNet top-1; deeper ResNet, ~2× ResNet-50's cost",
    ),
    _base(
        "resnet152", "ResNet152", family="resnet", mode="caffe", params=58_370_944,
        weights_file="resnet152_weights_tf_dim_ordering_tf_kernels_notop.h5",
        feature_shape="7×7×2048 at 224 px",
        description="ResNet-152, 76.6% ImageNet top-1; the deepest classic ResNet, slow on CPU",
    ),
    # -- ResNet v2 (tf) ------------------------------------------------------
    _base(
        "resnet50_v2", "ResNet50V2", family="resnet", mode="tf", params=23_564_800,
        weights_file="resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
        feature_shape="7×7×2048 at 224 px",
        description="ResNet-50 v2 (pre-activation), 76.0% ImageNet top-1; ResNet-50 "
        "accuracy bump at the same cost",
    ),
    _base(
        "resnet101_v2", "ResNet101V2", family="resnet", mode="tf", params=42_626_560,
        weights_file="resnet101v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
        feature_shape="7×7×2048 at 224 px",
        description="ResNet-101 v2 (pre-activation), 77.2% ImageNet top-1; deeper ResNet v2",
    ),
    _base(
        "resnet152_v2", "ResNet152V2", family="resnet", mode="tf", params=58_331_648,
        weights_file="resnet152v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
        feature_shape="7×7×2048 at 224 px",
        description="ResNet-152 v2 (pre-activation), 78.0% ImageNet top-1; the most "
        "accurate ResNet here, slow on CPU",
    ),
    # -- VGG (caffe) ---------------------------------------------------------
    _base(
        "vgg16", "VGG16", family="vgg", mode="caffe", params=14_714_688,
        weights_file="vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
        feature_shape="7×7×512 at 224 px",
        description="VGG-16 (plain 3×3 conv stack, 2014), 71.3% ImageNet top-1; simple "
        "baseline, heavy compute",
    ),
    _base(
        "vgg19", "VGG19", family="vgg", mode="caffe", params=20_024_384,
        weights_file="vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
        feature_shape="7×7×512 at 224 px",
        description="VGG-19, 71.3% ImageNet top-1; deeper VGG, the slowest base here",
    ),
    # -- MobileNet -----------------------------------------------------------
    _base(
        "mobilenet", "MobileNet", family="mobilenet", mode="tf", params=3_228_864,
        weights_sizes=(128, 160, 192, 224),
        weights_file="mobilenet_1_0_224_tf_no_top.h5",
        feature_shape="7×7×1024 at 224 px",
        description="MobileNet v1 (depthwise-separable convs), 70.4% ImageNet top-1; "
        "small and fast, for CPU/mobile",
    ),
    _base(
        "mobilenet_v2", "MobileNetV2", family="mobilenet", mode="tf", params=2_257_984,
        weights_sizes=(96, 128, 160, 192, 224),
        weights_file="mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
        feature_shape="7×7×1280 at 224 px",
        description="MobileNetV2 (inverted residuals), 71.3% ImageNet top-1; the fast "
        "CPU/mobile default",
    ),
    _base(
        "mobilenet_v3_small", "MobileNetV3Small", family="mobilenet", mode="internal",
        params=939_120, quiet=True, **_INTERNAL,
        weights_file="weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
        feature_shape="7×7×576 at 224 px",
        description="MobileNetV3-Small, 68.1% ImageNet top-1; the smallest, fastest base, "
        "for edge devices",
    ),
    _base(
        "mobilenet_v3_large", "MobileNetV3Large", family="mobilenet", mode="internal",
        params=2_996_352, quiet=True, **_INTERNAL,
        weights_file="weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5",
        feature_shape="7×7×960 at 224 px",
        description="MobileNetV3-Large, 75.6% ImageNet top-1; best accuracy per CPU "
        "millisecond among the MobileNets",
    ),
    # -- EfficientNet (internal) ---------------------------------------------
    _base(
        "efficientnet_b0", "EfficientNetB0", family="efficientnet", mode="internal",
        params=4_049_571,
        weights_file="efficientnetb0_notop.h5",
        feature_shape="7×7×1280 at 224 px",
        description="EfficientNet-B0 (compound-scaled MBConv), 77.1% ImageNet top-1; "
        "strong accuracy per FLOP, a good general choice",
    ),
    _base(
        "efficientnet_b1", "EfficientNetB1", family="efficientnet", mode="internal",
        params=6_575_239, default_size=240,
        weights_file="efficientnetb1_notop.h5",
        feature_shape="8×8×1280 at 240 px",
        description="EfficientNet-B1, 79.1% ImageNet top-1; a step up from B0 at 240 px",
    ),
    _base(
        "efficientnet_b2", "EfficientNetB2", family="efficientnet", mode="internal",
        params=7_768_569, default_size=260,
        weights_file="efficientnetb2_notop.h5",
        feature_shape="9×9×1408 at 260 px",
        description="EfficientNet-B2, 80.1% ImageNet top-1; mid-size EfficientNet at 260 px",
    ),
    _base(
        "efficientnet_b3", "EfficientNetB3", family="efficientnet", mode="internal",
        params=10_783_535, default_size=300,
        weights_file="efficientnetb3_notop.h5",
        feature_shape="10×10×1536 at 300 px",
        description="EfficientNet-B3, 81.6% ImageNet top-1; the most accurate EfficientNet "
        "here, 300 px",
    ),
    _base(
        "efficientnet_v2_b0", "EfficientNetV2B0", family="efficientnet", mode="internal",
        params=5_919_312, **_INTERNAL,
        weights_file="efficientnetv2-b0_notop.h5",
        feature_shape="7×7×1280 at 224 px",
        description="EfficientNetV2-B0 (fused-MBConv), 78.7% ImageNet top-1; faster to "
        "fine-tune than EfficientNet-B0",
    ),
    # -- others --------------------------------------------------------------
    _base(
        "densenet121", "DenseNet121", family="densenet", mode="torch", params=7_037_504,
        weights_file="densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",
        feature_shape="7×7×1024 at 224 px",
        description="DenseNet-121 (densely connected CNN), 75.0% ImageNet top-1; compact, "
        "popular for medical imaging",
    ),
    _base(
        "inception_v3", "InceptionV3", family="inception", mode="tf", params=21_802_784,
        default_size=299, min_size=75,
        weights_file="inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
        feature_shape="8×8×2048 at 299 px",
        description="Inception v3 (multi-branch CNN), 77.9% ImageNet top-1; mid-size, 299 px",
    ),
    _base(
        "xception", "Xception", family="xception", mode="tf", params=20_861_480,
        default_size=299, min_size=71,
        weights_file="xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
        feature_shape="10×10×2048 at 299 px",
        description="Xception (depthwise-separable Inception), 79.0% ImageNet top-1; "
        "accurate, 299 px",
    ),
    _base(
        "convnext_tiny", "ConvNeXtTiny", family="convnext", mode="internal",
        params=27_820_128, **_INTERNAL,
        weights_file="convnext_tiny_notop.h5",
        feature_shape="7×7×768 at 224 px",
        description="ConvNeXt-Tiny (modernised ResNet, 2022), 81.3% ImageNet top-1; the "
        "most accurate base here, heavier on CPU",
    ),
)


@tlkit.hookimpl
def register_bases(register: Callable[[tlkit.BaseSpec], None]) -> None:
    """Register every built-in ``keras.applications`` base."""
    for spec in BASES:
        register(spec)
