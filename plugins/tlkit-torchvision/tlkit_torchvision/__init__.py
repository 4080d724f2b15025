"""tlkit-torchvision: torchvision's ImageNet MobileNetV2, converted into Keras, as a tlkit base.

Registered through the ``tlkit`` entry-point group::

    [project.entry-points.tlkit]
    torchvision = "tlkit_torchvision"

Base ``tv_mobilenet_v2``: torchvision's ``mobilenet_v2`` (width 1.0) rebuilt
layer for layer in Keras with torchvision's symmetric padding and BatchNorm
epsilon, loading torchvision's own ``.pth`` weights with a torch-free,
restricted pickle reader (:mod:`tlkit_torchvision.pth`).

Importing this module imports neither TensorFlow/Keras nor numpy nor torch;
``build`` and ``preprocess`` import Keras when called.
"""

from __future__ import annotations

from typing import Any

import tlkit
from tlkit_torchvision.weights import WEIGHTS_FILE, locate_weights

try:
    from importlib.metadata import PackageNotFoundError, version

    __version__ = version("tlkit-torchvision")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0+unknown"

#: ``count_params()`` of the headless model (input-size independent; BN moving
#: statistics included, as Keras counts them).  A test keeps it honest.
PARAMS = 2_257_984


def build(input_shape: tuple[int, int, int], weights: str | None = None) -> Any:
    """The headless Keras model (normalised image → 1280-channel feature map).

    ``weights``: None (random init), ``"imagenet"`` (located offline and
    SHA-256-checked) or the path of a ``.pth``/``.pt`` torchvision state dict.
    """
    from tlkit_torchvision import mobilenet_v2, pth
    from tlkit_torchvision.weights import resolve

    path = resolve(weights)
    state_dict = pth.load_state_dict(path) if path is not None else None
    return mobilenet_v2.build_features(input_shape, state_dict, source=str(path))


def preprocess() -> list[Any]:
    """The Keras layers mapping raw 0–255 RGB to torchvision's normalised input."""
    from tlkit_torchvision import mobilenet_v2

    return mobilenet_v2.preprocess()


TV_MOBILENET_V2 = tlkit.BaseSpec(
    name="tv_mobilenet_v2",
    build=build,
    preprocess=preprocess,
    description=(
        "torchvision's MobileNetV2 (ImageNet top-1 71.9%) converted exactly into Keras "
        "(symmetric padding, BN eps 1e-5); weights from torchvision's own .pth, read without torch"
    ),
    family="torchvision",
    default_size=224,
    min_size=32,
    param_count=PARAMS,
    preprocessing="torchvision: x/255, minus ImageNet mean, divided by std (built into the model)",
    weights_file=WEIGHTS_FILE,
    feature_shape="7×7×1280 at 224 px",
    weight_file_suffixes=(".pth", ".pt"),
    locate_weights=locate_weights,
)


@tlkit.hookimpl
def register_bases(register) -> None:
    """Register ``tv_mobilenet_v2``."""
    register(TV_MOBILENET_V2)


__all__ = ["TV_MOBILENET_V2", "build", "preprocess", "register_bases", "__version__"]
