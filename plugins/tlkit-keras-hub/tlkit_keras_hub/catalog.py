"""The curated KerasHub backbones: what each tlkit base name loads, at which size, with which preprocessing.

Each :class:`Curated` row names the KerasHub backbone class, the preset handle whose weights
``--weights imagenet`` loads, and the constructor arguments of that preset's architecture (what
``--weights none`` builds with random weights, offline).  Where the numbers come from:

- handles and presets: ``keras_hub/src/models/*/*_presets.py`` of keras-hub 0.32 (Kaggle handles
  with their version), and the timm checkpoint ``timm/resnet50.a1_in1k`` on Hugging Face, which
  KerasHub's timm converter reads;
- architectures: for the timm-converted CNNs, the output of KerasHub's own converters
  (``keras_hub/src/utils/timm/convert_{resnet,efficientnet,mobilenet}.py``) for that timm
  architecture; for the transformers, the Hugging Face configs of the checkpoints KerasHub converted
  (``facebook/dinov2-small``/``-base``, ``facebook/deit-small-distilled-patch16-224``,
  ``google/vit-base-patch16-224``) mapped as ``keras_hub/src/utils/transformers/convert_*.py`` does;
- ``param_count``: ``count_params()`` of the headless model built from that architecture at the
  default size (``bench/bench_keras_hub.py`` checks it).  It equals the preset metadata's
  ``params`` for ViT, DeiT, ResNet and MobileNetV3.  DINOv2's metadata (22,582,656 / 87,632,640)
  counts the 37×37 position table of 518 px, which KerasHub interpolates to the input size;
  EfficientNetV2-rw-S's (23,941,296) is timm's count with the 1000-class classifier;
- preprocessing: the preset's image converter (timm's / Hugging Face's ``mean``/``std``):
  ImageNet mean and std for all but Google's ViT, which scales to −1…1.

Nothing here imports Keras: listing bases stays fast.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tlkit.bases import TF, TORCH, Preprocessing


@dataclass(frozen=True)
class Curated:
    """One curated backbone (a tlkit base, plus its ``_pooled`` variant for a transformer)."""

    name: str
    backbone: str  # the KerasHub backbone class (keras_hub.models.<backbone>)
    preset: str  # the KerasHub preset name (or timm checkpoint) it stands for
    handle: str  # what --weights imagenet loads (Backbone.from_preset(handle))
    config: Mapping[str, Any]  # the architecture: constructor arguments, image_shape aside
    default_size: int
    param_count: int
    description: str
    family: str
    preprocessing: Preprocessing = TORCH
    patch: int = 0  # 0: a CNN (its output is a feature map)
    fixed_size: bool = False  # position embeddings not interpolated: pretrained only at default_size
    channels: int = 0
    min_size: int = 32
    #: Constructor arguments KerasHub's ``get_config`` leaves out of a saved preset (so that it would
    #: not load back), given again whenever this base's own preset is loaded.
    repair: Mapping[str, Any] = field(default_factory=dict)

    @property
    def transformer(self) -> bool:
        return self.patch > 0

    @property
    def archive(self) -> str:
        """The file in Keras's cache holding this preset for offline use (shared with the pooled variant)."""
        return archive_name(self.preset)


def archive_name(preset: str) -> str:
    """``keras_hub-<preset>.tar``: a preset (folder) packed as one file in Keras's cache, so that
    ``tlkit weights list/download/import`` and bundles handle it like any weight file."""
    return "keras_hub-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", preset).strip("_") + ".tar"


_DINOV2 = {"layer_scale_init_value": 1.0, "position_embedding_shape": (518, 518, 3), "use_mask_token": True}

# timm "resnet50" through keras_hub/src/utils/timm/convert_resnet.py
_RESNET50 = {
    "stackwise_num_filters": [64, 128, 256, 512],
    "stackwise_num_blocks": [3, 4, 6, 3],
    "stackwise_num_strides": [1, 2, 2, 2],
    "block_type": "bottleneck_block",
    "use_pre_activation": False,
    "input_conv_filters": [64],
    "input_conv_kernel_sizes": [7],
}

# timm "efficientnetv2_rw_s" through keras_hub/src/utils/timm/convert_efficientnet.py
_EFFICIENTNETV2_RW_S = {
    "stackwise_kernel_sizes": [3, 3, 3, 3, 3, 3],
    "stackwise_num_repeats": [2, 4, 4, 6, 9, 15],
    "stackwise_input_filters": [24, 24, 48, 64, 128, 160],
    "stackwise_output_filters": [24, 48, 64, 128, 160, 272],
    "stackwise_expansion_ratios": [1, 4, 4, 4, 6, 6],
    "stackwise_strides": [1, 2, 2, 2, 1, 2],
    "stackwise_block_types": ["fused", "fused", "fused", "unfused", "unfused", "unfused"],
    "min_depth": None,
    "include_stem_padding": True,
    "use_depth_divisor_as_min_depth": True,
    "cap_round_filter_decrease": True,
    "stem_conv_padding": "valid",
    "batch_norm_momentum": 0.9,
    "batch_norm_epsilon": 1e-05,
    "dropout": 0,
    "projection_activation": None,
    "stackwise_width_coefficients": [1.0] * 6,
    "stackwise_depth_coefficients": [1.0] * 6,
    "stackwise_squeeze_and_excite_ratios": [0, 0, 0, 0.25, 0.25, 0.25],
    "stackwise_force_input_filters": [0, 0, 0, 0, 0, 0],
    "stackwise_nores_option": [False] * 6,
    "activation": "silu",
    "num_features": 1792,
}

# timm "mobilenetv3_large_100" through keras_hub/src/utils/timm/convert_mobilenet.py
_MOBILENETV3_LARGE_100 = {
    "stackwise_num_blocks": [2, 3, 4, 2, 3],
    "stackwise_expansion": [[64, 72], [72, 120, 120], [240, 200, 184, 184], [480, 672], [672, 960, 960]],
    "stackwise_num_filters": [[24, 24], [40, 40, 40], [80, 80, 80, 80], [112, 112], [160, 160, 160]],
    "stackwise_kernel_size": [[3, 3], [5, 5, 5], [3, 3, 3, 3], [3, 3], [5, 5, 5]],
    "stackwise_num_strides": [[2, 1], [2, 1, 1], [2, 1, 1, 1], [1, 1], [2, 1, 1]],
    "stackwise_se_ratio": [
        [None, None],
        [0.25, 0.25, 0.25],
        [None, None, None, None],
        [0.25, 0.25],
        [0.25, 0.25, 0.25],
    ],
    "stackwise_activation": [
        ["relu", "relu"],
        ["relu", "relu", "relu"],
        ["hard_swish"] * 4,
        ["hard_swish"] * 2,
        ["hard_swish"] * 3,
    ],
    "stackwise_padding": [[1, 1], [2, 2, 2], [1, 1, 1, 1], [1, 1], [2, 2, 2]],
    "output_num_filters": 1024,
    "input_num_filters": 16,
    "depthwise_filters": 16,
    "depthwise_stride": 1,
    "depthwise_residual": True,
    "squeeze_and_excite": None,
    "last_layer_filter": 960,
    "input_activation": "hard_swish",
    "output_activation": "hard_swish",
}

CURATED: tuple[Curated, ...] = (
    Curated(
        name="dinov2_small",
        backbone="DINOV2Backbone",
        preset="dinov2_small",
        handle="kaggle://keras/dinov2/keras/dinov2_small/1",
        config={"patch_size": 14, "num_layers": 12, "hidden_dim": 384, "num_heads": 6, "intermediate_dim": 1536}
        | _DINOV2,
        default_size=224,
        patch=14,
        channels=384,
        param_count=22_155_264,
        family="dinov2",
        description="DINOv2 ViT-S/14 (Meta, self-supervised on LVD-142M; 81.1% ImageNet linear probe): "
        "strong frozen features, any size",
    ),
    Curated(
        name="dinov2_base",
        backbone="DINOV2Backbone",
        preset="dinov2_base",
        handle="kaggle://keras/dinov2/keras/dinov2_base/1",
        config={"patch_size": 14, "num_layers": 12, "hidden_dim": 768, "num_heads": 12, "intermediate_dim": 3072}
        | _DINOV2,
        default_size=224,
        patch=14,
        channels=768,
        param_count=86_777_856,
        family="dinov2",
        description="DINOv2 ViT-B/14 (Meta, self-supervised on LVD-142M; 84.5% ImageNet linear probe)",
    ),
    Curated(
        name="deit_small",
        backbone="DeiTBackbone",
        preset="deit_small_distilled_patch16_224_imagenet",
        handle="kaggle://keras/deit/keras/deit_small_distilled_patch16_224_imagenet/1",
        config={
            "patch_size": 16,
            "num_layers": 12,
            "num_heads": 6,
            "hidden_dim": 384,
            "intermediate_dim": 1536,
            "layer_norm_epsilon": 1e-12,
        },
        default_size=224,
        patch=16,
        fixed_size=True,
        channels=384,
        param_count=21_666_432,
        family="deit",
        description="DeiT-S/16 distilled (Meta, ImageNet-1k; 81.2% top-1): a small ViT, 224 px only",
    ),
    Curated(
        name="vit_base",
        backbone="ViTBackbone",
        preset="vit_base_patch16_224_imagenet",
        handle="kaggle://keras/vit/keras/vit_base_patch16_224_imagenet/4",
        config={"patch_size": 16, "num_layers": 12, "num_heads": 12, "hidden_dim": 768, "mlp_dim": 3072},
        default_size=224,
        patch=16,
        fixed_size=True,
        channels=768,
        param_count=85_798_656,
        family="vit",
        preprocessing=TF,
        description="ViT-B/16 (Google, ImageNet-21k then 1k), 224 px only",
    ),
    Curated(
        name="efficientnetv2_rw_s",
        backbone="EfficientNetBackbone",
        preset="efficientnet2_rw_s_ra2_imagenet",
        handle="kaggle://keras/efficientnet/keras/efficientnet2_rw_s_ra2_imagenet/2",
        config=_EFFICIENTNETV2_RW_S,
        repair={"num_features": 1792},  # keras-hub 0.32's EfficientNetBackbone.get_config omits it
        default_size=288,
        channels=1792,
        param_count=22_309_144,
        family="efficientnet",
        description="EfficientNetV2-S (timm's rw variant, RandAugment 2; 83.8% ImageNet top-1 at 384 px)",
    ),
    Curated(
        name="resnet50_a1",
        backbone="ResNetBackbone",
        preset="timm/resnet50.a1_in1k",
        handle="hf://timm/resnet50.a1_in1k",
        config=_RESNET50,
        default_size=224,
        channels=2048,
        param_count=23_561_152,
        family="resnet",
        description="ResNet-50 trained by timm's 'ResNet strikes back' A1 recipe (80.4% ImageNet top-1), "
        "read from timm's checkpoint",
    ),
    Curated(
        name="mobilenetv3_large_100",
        backbone="MobileNetBackbone",
        preset="mobilenet_v3_large_100_imagenet",
        handle="kaggle://keras/mobilenetv3/keras/mobilenet_v3_large_100_imagenet/1",
        config=_MOBILENETV3_LARGE_100,
        default_size=224,
        channels=960,
        param_count=2_996_352,
        family="mobilenet",
        description="MobileNetV3-Large 1.0 (timm weights, 75.8% ImageNet top-1); KerasHub builds its depthwise "
        "convolutions as grouped Conv2D, which Keras runs through XLA on CPU: slow there, no ONNX Runtime",
    ),
)

#: Curated rows by their (grid) base name.
BY_NAME: dict[str, Curated] = {c.name: c for c in CURATED}

#: The name suffix of a transformer's pooled variant, and of a hub: name asking for it.
POOLED_SUFFIX = "_pooled"
HUB_POOLED_SUFFIX = "+pooled"
HUB_PREFIX = "hub:"

__all__ = ["BY_NAME", "CURATED", "Curated", "HUB_POOLED_SUFFIX", "HUB_PREFIX", "POOLED_SUFFIX", "archive_name"]
