"""Shared fixtures: tiny random KerasHub backbones saved as presets (offline), an image folder, a private
Keras cache and feature cache for every test session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

#: Tiny architectures (32 px, patch 8, width 32, one block): what the tests save with save_to_preset.
#: DINOv2 with two register tokens, so that dropping the prefix tokens is tested for real.
TINY = {
    "dino": (
        "DINOV2Backbone",
        dict(
            patch_size=8,
            num_layers=1,
            hidden_dim=32,
            num_heads=2,
            intermediate_dim=64,
            num_register_tokens=2,
            image_shape=(32, 32, 3),
            position_embedding_shape=(32, 32, 3),
        ),
    ),
    "vit": (
        "ViTBackbone",
        dict(image_shape=(32, 32, 3), patch_size=8, num_layers=1, num_heads=2, hidden_dim=32, mlp_dim=64),
    ),
    "deit": (
        "DeiTBackbone",
        dict(image_shape=(32, 32, 3), patch_size=8, num_layers=1, num_heads=2, hidden_dim=32, intermediate_dim=64),
    ),
    "resnet": (
        "ResNetBackbone",
        dict(
            input_conv_filters=[64],
            input_conv_kernel_sizes=[3],
            stackwise_num_filters=[64, 16],
            stackwise_num_blocks=[1, 1],
            stackwise_num_strides=[1, 2],
            block_type="basic_block",
            use_pre_activation=False,
        ),
    ),
}


@pytest.fixture(autouse=True, scope="session")
def _private_caches(tmp_path_factory):
    """Keras's cache (where preset archives live) and tlkit's feature cache, empty and private."""
    os.environ["KERAS_HOME"] = str(tmp_path_factory.mktemp("keras-home"))
    os.environ["TLKIT_CACHE_DIR"] = str(tmp_path_factory.mktemp("tlkit-cache"))


@pytest.fixture(scope="session")
def tiny_presets(tmp_path_factory) -> dict[str, Path]:
    """``{"dino"|"vit"|"deit"|"resnet": preset folder}``: random tiny backbones, ``save_to_preset``-ed."""
    import keras
    import keras_hub

    keras.utils.set_random_seed(0)
    root = tmp_path_factory.mktemp("presets")
    folders = {}
    for key, (cls, config) in TINY.items():
        backbone = getattr(keras_hub.models, cls)(**config)
        backbone.save_to_preset(str(root / key))
        folders[key] = root / key
    return folders


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    """data/{train,val}/{cat,dog}: 6 train and 2 val 32-px images per class."""
    from tlkit.testing import make_image_folder

    return make_image_folder(tmp_path_factory.mktemp("images") / "data", ("cat", "dog"))
