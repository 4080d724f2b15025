"""Helpers for plugin authors who add bases: a ``keras.applications``-style base in one call.

A base is a :class:`tlkit.BaseSpec`: a lazy ``build(input_shape, weights)`` plus
the preprocessing layers that map raw 0–255 RGB pixels to what the base expects.
Most ImageNet backbones are a Keras constructor taking ``include_top``,
``weights`` and ``input_shape``, and one of four standard preprocessings, so::

    import tlkit
    from tlkit.bases import TF

    @tlkit.hookimpl
    def register_bases(register):
        register(tlkit.keras_application_base(
            "nasnet_mobile", "NASNetMobile", preprocessing=TF,
            description="NASNet-Mobile, 74.0% ImageNet top-1", param_count=4_269_716,
            weights_file="nasnet_mobile_no_top.h5", feature_shape="7×7×1056 at 224 px",
        ))

The standard preprocessings (each matches the ``preprocess_input`` of the
``keras.applications`` modules that use it, to float32 rounding), built from
standard, serializable, non-trainable Keras layers (no ``Lambda``), so that a
saved model loads with plain ``keras.saving.load_model`` and takes raw pixels:

- :data:`CAFFE` (ResNet v1, VGG): RGB→BGR and subtract the ImageNet channel
  mean, as one frozen 1×1 ``Conv2D`` whose kernel is the channel permutation
  and whose bias is minus the mean (exact: the kernel holds only 0s and 1s).
- :data:`TF` (MobileNet v1/v2, ResNet v2, Inception v3, Xception): scale to
  −1…1 with ``Rescaling(1/127.5, offset=-1)``.
- :data:`TORCH` (DenseNet, torchvision models): ``(x/255 − mean) / std`` with
  the ImageNet mean and std, as one ``Normalization`` layer with the constants
  scaled by 255.
- :data:`INTERNAL` (EfficientNet, EfficientNetV2, ConvNeXt, MobileNetV3): the
  base rescales 0–255 pixels itself; no layers.

Importing this module never imports Keras or TensorFlow: the builders and
preprocessing layers import Keras when they are called.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tlkit.registry.specs import BaseSpec

# ImageNet statistics, as keras.applications.imagenet_utils uses them.
IMAGENET_MEAN_BGR_255 = (103.939, 116.779, 123.68)
IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)

# Keras warns that ImageNet weights "for input shape (224, 224) will be loaded"
# whenever a MobileNet is built at another size; where one weight set is valid
# at every size (MobileNetV3) the warning is noise.
_NON_DEFAULT_SIZE_WARNING = r"`input_shape` is undefined or non-square"


@dataclass(frozen=True)
class Preprocessing:
    """A standard mapping from raw 0–255 RGB pixels to a base's input.

    ``name`` is the short mode (``"caffe"``, ``"tf"``, ``"torch"``,
    ``"internal"``); ``description`` is what ``BaseSpec.preprocessing`` shows
    (``tlkit list-bases`` prints the part before the colon).  Pass
    ``preprocessing.layers`` as a ``BaseSpec``'s ``preprocess``.
    """

    name: str
    description: str

    def layers(self, name: str | None = None) -> list[Any]:
        """Fresh Keras layers for this preprocessing (an empty list for :data:`INTERNAL`).

        The layer is named ``name`` (default ``preprocess_<mode>``; it must be
        unique within a model, and a model holds one base's preprocessing) and
        computes in float32 even under a mixed-precision policy.
        """
        if self.name == "internal":
            return []
        import keras  # lazy: Keras imports TensorFlow; `import tlkit` declares bases without it

        name = name or f"preprocess_{self.name}"
        if self.name == "tf":
            return [keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name=name, dtype="float32")]
        if self.name == "torch":
            mean = [255.0 * m for m in IMAGENET_MEAN_RGB]
            variance = [(255.0 * s) ** 2 for s in IMAGENET_STD_RGB]
            return [keras.layers.Normalization(mean=mean, variance=variance, name=name, dtype="float32")]
        if self.name == "caffe":
            return [_caffe_layer(name)]
        raise ValueError(f"unknown preprocessing {self.name!r}; use one of {', '.join(PREPROCESSINGS)}")


def _caffe_layer(name: str) -> Any:
    import keras  # lazy: Keras (TensorFlow) and numpy stay out of `import tlkit`; only building the base needs them
    import numpy as np

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
    bias = -np.asarray(IMAGENET_MEAN_BGR_255, dtype="float32")
    layer.set_weights([kernel, bias])
    return layer


CAFFE = Preprocessing("caffe", "caffe: RGB→BGR, subtract ImageNet mean (built into the model)")
TF = Preprocessing("tf", "tf: scale 0–255 to −1…1 (built into the model)")
TORCH = Preprocessing(
    "torch",
    "torch: scale to 0–1, subtract ImageNet mean, divide by ImageNet std (built into the model)",
)
INTERNAL = Preprocessing("internal", "internal: the base rescales raw 0–255 pixels itself")

#: The standard preprocessings by name.
PREPROCESSINGS: dict[str, Preprocessing] = {p.name: p for p in (CAFFE, TF, TORCH, INTERNAL)}


def _standard(name: str | Preprocessing) -> Preprocessing:
    if isinstance(name, Preprocessing):
        return name
    try:
        return PREPROCESSINGS[name]
    except KeyError:
        raise ValueError(f"unknown preprocessing {name!r}; use one of {', '.join(PREPROCESSINGS)}") from None


def keras_application(
    constructor: str | Callable[..., Any],
    *,
    options: Mapping[str, Any] | None = None,
    quiet_size_warning: bool = False,
) -> Callable[..., Any]:
    """A ``BaseSpec.build(input_shape, weights)`` that calls a Keras application headless.

    ``constructor`` is a ``keras.applications`` name (``"ResNet50"``), a dotted
    import path (``"my_package.models.MyNet"``, imported on first build) or a
    callable; it is called as ``constructor(include_top=False, weights=weights,
    input_shape=input_shape, **options)``.  ``quiet_size_warning`` hides Keras's
    warning that ImageNet weights of another input size are being loaded.
    """
    extra = dict(options or {})
    label = constructor if isinstance(constructor, str) else getattr(constructor, "__name__", "model")

    def build(input_shape: tuple[int, int, int], weights: str | None = None) -> Any:
        application = _resolve(constructor)
        with warnings.catch_warnings():
            if quiet_size_warning:
                warnings.filterwarnings("ignore", message=_NON_DEFAULT_SIZE_WARNING)
            return application(include_top=False, weights=weights, input_shape=tuple(input_shape), **extra)

    short = label.rsplit(".", 1)[-1]
    build.__name__ = build.__qualname__ = f"build_{short}"
    build.__doc__ = f"{label}(include_top=False, ...) for the given input shape."
    return build


def _resolve(constructor: str | Callable[..., Any]) -> Callable[..., Any]:
    if callable(constructor):
        return constructor
    if "." not in constructor:
        import keras  # lazy: Keras imports TensorFlow; `import tlkit` declares bases without it

        return getattr(keras.applications, constructor)
    module, _, attribute = constructor.rpartition(".")
    return getattr(importlib.import_module(module), attribute)


def keras_application_base(
    name: str,
    constructor: str | Callable[..., Any],
    *,
    preprocessing: Preprocessing | str,
    description: str,
    param_count: int = 0,
    weights_file: str = "",
    feature_shape: str = "",
    family: str = "",
    default_size: int = 224,
    min_size: int = 32,
    weights_sizes: tuple[int, ...] = (),
    options: Mapping[str, Any] | None = None,
    quiet_size_warning: bool = False,
    explain_layer: str = "",
    params: int | None = None,
) -> BaseSpec:
    """A :class:`tlkit.BaseSpec` for a ``keras.applications``-style constructor.

    ``constructor`` and ``options`` are as in :func:`keras_application` (e.g.
    ``options={"include_preprocessing": True}``); ``preprocessing`` is one of
    :data:`CAFFE`, :data:`TF`, :data:`TORCH`, :data:`INTERNAL` (or its name).
    The other fields are the ``BaseSpec``'s: ``param_count`` is ``count_params()``
    of the headless model (``params=``, its old name, still works with a
    DeprecationWarning), ``weights_file`` the ImageNet weight file's name in
    Keras's cache (``~/.keras/models/``), ``feature_shape`` a text such as
    ``"7×7×2048 at 224 px"``, ``explain_layer`` the layer whose feature map
    ``tlkit explain`` explains (default: the base's output).
    """
    if params is not None:
        warnings.warn(
            "keras_application_base(params=...) is deprecated: the parameter count is param_count=, "
            "as in BaseSpec (a head's params are its parameters)",
            DeprecationWarning,
            stacklevel=2,
        )
        if param_count:
            raise TypeError("keras_application_base: give param_count (params is its deprecated name), not both")
        param_count = params
    mode = _standard(preprocessing)
    return BaseSpec(
        name=name,
        build=keras_application(constructor, options=options, quiet_size_warning=quiet_size_warning),
        preprocess=mode.layers,
        description=description,
        family=family,
        default_size=default_size,
        min_size=min_size,
        weights_sizes=tuple(weights_sizes),
        param_count=param_count,
        preprocessing=mode.description,
        weights_file=weights_file,
        feature_shape=feature_shape,
        explain_layer=explain_layer,
    )


__all__ = [
    "CAFFE",
    "IMAGENET_MEAN_BGR_255",
    "IMAGENET_MEAN_RGB",
    "IMAGENET_STD_RGB",
    "INTERNAL",
    "PREPROCESSINGS",
    "Preprocessing",
    "TF",
    "TORCH",
    "keras_application",
    "keras_application_base",
]
