"""Built-in bases: the ImageNet backbones of ``keras.applications``, headless.

Every base is one ``tlkit.keras_application_base(...)`` row of the table below,
registered through the ``register_bases`` hook exactly as a third-party plugin
would do it, with the same public helpers (:mod:`tlkit.bases`).  Nothing here
imports Keras at import time, so listing bases stays fast and TensorFlow-free.

The preprocessing of each row (``CAFFE``, ``TF``, ``TORCH`` or ``INTERNAL``,
described in :mod:`tlkit.bases`) matches
``keras.applications.<module>.preprocess_input`` of its Keras module to float32
rounding.
"""

from __future__ import annotations

from collections.abc import Callable

import tlkit
from tlkit.bases import CAFFE, INTERNAL, TF, TORCH

# Parameter counts are ``count_params()`` of the include_top=False model
# (input-size independent); weight files are the "notop" names keras.applications
# caches in ~/.keras/models/ (for MobileNet v1/v2, the one for the default size).
# The newer Keras applications rescale raw pixels themselves only when asked to.
_RESCALE_INSIDE = {"include_preprocessing": True}

BASES: tuple[tlkit.BaseSpec, ...] = (
    # -- ResNet v1 (caffe) ---------------------------------------------------
    tlkit.keras_application_base(
        "resnet50",
        "ResNet50",
        family="resnet",
        preprocessing=CAFFE,
        param_count=23_587_712,
        weights_file="resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        feature_shape="7×7×2048 at 224 px",
        description="ResNet-50 (residual CNN, 2015), 74.9% ImageNet top-1; the classic transfer-learning default",
    ),
    tlkit.keras_application_base(
        "resnet101",
        "ResNet101",
        family="resnet",
        preprocessing=CAFFE,
        param_count=42_658_176,
        weights_file="resnet101_weights_tf_dim_ordering_tf_kernels_notop.h5",
        feature_shape="7×7×2048 at 224 px",
        description="ResNet-101, 76.4% ImageNet top-1; deeper ResNet, ~2× ResNet-50's cost",
    ),
    tlkit.keras_application_base(
        "resnet152",
        "ResNet152",
        family="resnet",
        preprocessing=CAFFE,
        param_count=58_370_944,
        weights_file="resnet152_weights_tf_dim_ordering_tf_kernels_notop.h5",
        feature_shape="7×7×2048 at 224 px",
        description="ResNet-152, 76.6% ImageNet top-1; the deepest classic ResNet, slow on CPU",
    ),
    # -- ResNet v2 (tf) ------------------------------------------------------
    tlkit.keras_application_base(
        "resnet50_v2",
        "ResNet50V2",
        family="resnet",
        preprocessing=TF,
        param_count=23_564_800,
        weights_file="resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
        feature_shape="7×7×2048 at 224 px",
        description="ResNet-50 v2 (pre-activation), 76.0% ImageNet top-1; ResNet-50 accuracy bump at the same cost",
    ),
    tlkit.keras_application_base(
        "resnet101_v2",
        "ResNet101V2",
        family="resnet",
        preprocessing=TF,
        param_count=42_626_560,
        weights_file="resnet101v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
        feature_shape="7×7×2048 at 224 px",
        description="ResNet-101 v2 (pre-activation), 77.2% ImageNet top-1; deeper ResNet v2",
    ),
    tlkit.keras_application_base(
        "resnet152_v2",
        "ResNet152V2",
        family="resnet",
        preprocessing=TF,
        param_count=58_331_648,
        weights_file="resnet152v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
        feature_shape="7×7×2048 at 224 px",
        description="ResNet-152 v2 (pre-activation), 78.0% ImageNet top-1; the most accurate ResNet here, slow on CPU",
    ),
    # -- VGG (caffe) ---------------------------------------------------------
    tlkit.keras_application_base(
        "vgg16",
        "VGG16",
        family="vgg",
        preprocessing=CAFFE,
        param_count=14_714_688,
        weights_file="vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
        feature_shape="7×7×512 at 224 px",
        description="VGG-16 (plain 3×3 conv stack, 2014), 71.3% ImageNet top-1; simple baseline, heavy compute",
        explain_layer="block5_conv3",  # the base ends in a max-pooling; Grad-CAM explains the last conv
    ),
    tlkit.keras_application_base(
        "vgg19",
        "VGG19",
        family="vgg",
        preprocessing=CAFFE,
        param_count=20_024_384,
        weights_file="vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
        feature_shape="7×7×512 at 224 px",
        description="VGG-19, 71.3% ImageNet top-1; deeper VGG, the slowest base here",
        explain_layer="block5_conv4",
    ),
    # -- MobileNet -----------------------------------------------------------
    tlkit.keras_application_base(
        "mobilenet",
        "MobileNet",
        family="mobilenet",
        preprocessing=TF,
        param_count=3_228_864,
        weights_sizes=(128, 160, 192, 224),
        weights_file="mobilenet_1_0_224_tf_no_top.h5",
        feature_shape="7×7×1024 at 224 px",
        description="MobileNet v1 (depthwise-separable convs), 70.4% ImageNet top-1; small and fast, for CPU/mobile",
    ),
    tlkit.keras_application_base(
        "mobilenet_v2",
        "MobileNetV2",
        family="mobilenet",
        preprocessing=TF,
        param_count=2_257_984,
        weights_sizes=(96, 128, 160, 192, 224),
        weights_file="mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
        feature_shape="7×7×1280 at 224 px",
        description="MobileNetV2 (inverted residuals), 71.3% ImageNet top-1; the fast CPU/mobile default",
    ),
    tlkit.keras_application_base(
        "mobilenet_v3_small",
        "MobileNetV3Small",
        family="mobilenet",
        preprocessing=INTERNAL,
        param_count=939_120,
        quiet_size_warning=True,
        options=_RESCALE_INSIDE,
        weights_file="weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
        feature_shape="7×7×576 at 224 px",
        description="MobileNetV3-Small, 68.1% ImageNet top-1; the smallest, fastest base, for edge devices",
    ),
    tlkit.keras_application_base(
        "mobilenet_v3_large",
        "MobileNetV3Large",
        family="mobilenet",
        preprocessing=INTERNAL,
        param_count=2_996_352,
        quiet_size_warning=True,
        options=_RESCALE_INSIDE,
        weights_file="weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5",
        feature_shape="7×7×960 at 224 px",
        description="MobileNetV3-Large, 75.6% ImageNet top-1; best accuracy per CPU millisecond among the MobileNets",
    ),
    # -- EfficientNet (internal) ---------------------------------------------
    tlkit.keras_application_base(
        "efficientnet_b0",
        "EfficientNetB0",
        family="efficientnet",
        preprocessing=INTERNAL,
        param_count=4_049_571,
        weights_file="efficientnetb0_notop.h5",
        feature_shape="7×7×1280 at 224 px",
        description="EfficientNet-B0 (compound-scaled MBConv), 77.1% ImageNet top-1; "
        "strong accuracy per FLOP, a good general choice",
    ),
    tlkit.keras_application_base(
        "efficientnet_b1",
        "EfficientNetB1",
        family="efficientnet",
        preprocessing=INTERNAL,
        param_count=6_575_239,
        default_size=240,
        weights_file="efficientnetb1_notop.h5",
        feature_shape="8×8×1280 at 240 px",
        description="EfficientNet-B1, 79.1% ImageNet top-1; a step up from B0 at 240 px",
    ),
    tlkit.keras_application_base(
        "efficientnet_b2",
        "EfficientNetB2",
        family="efficientnet",
        preprocessing=INTERNAL,
        param_count=7_768_569,
        default_size=260,
        weights_file="efficientnetb2_notop.h5",
        feature_shape="9×9×1408 at 260 px",
        description="EfficientNet-B2, 80.1% ImageNet top-1; mid-size EfficientNet at 260 px",
    ),
    tlkit.keras_application_base(
        "efficientnet_b3",
        "EfficientNetB3",
        family="efficientnet",
        preprocessing=INTERNAL,
        param_count=10_783_535,
        default_size=300,
        weights_file="efficientnetb3_notop.h5",
        feature_shape="10×10×1536 at 300 px",
        description="EfficientNet-B3, 81.6% ImageNet top-1; the most accurate EfficientNet here, 300 px",
    ),
    tlkit.keras_application_base(
        "efficientnet_v2_b0",
        "EfficientNetV2B0",
        family="efficientnet",
        preprocessing=INTERNAL,
        param_count=5_919_312,
        options=_RESCALE_INSIDE,
        weights_file="efficientnetv2-b0_notop.h5",
        feature_shape="7×7×1280 at 224 px",
        description="EfficientNetV2-B0 (fused-MBConv), 78.7% ImageNet top-1; faster to fine-tune than EfficientNet-B0",
    ),
    # -- others --------------------------------------------------------------
    tlkit.keras_application_base(
        "densenet121",
        "DenseNet121",
        family="densenet",
        preprocessing=TORCH,
        param_count=7_037_504,
        weights_file="densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",
        feature_shape="7×7×1024 at 224 px",
        description="DenseNet-121 (densely connected CNN), 75.0% ImageNet top-1; compact, popular for medical imaging",
    ),
    tlkit.keras_application_base(
        "inception_v3",
        "InceptionV3",
        family="inception",
        preprocessing=TF,
        param_count=21_802_784,
        default_size=299,
        min_size=75,
        weights_file="inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
        feature_shape="8×8×2048 at 299 px",
        description="Inception v3 (multi-branch CNN), 77.9% ImageNet top-1; mid-size, 299 px",
    ),
    tlkit.keras_application_base(
        "xception",
        "Xception",
        family="xception",
        preprocessing=TF,
        param_count=20_861_480,
        default_size=299,
        min_size=71,
        weights_file="xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
        feature_shape="10×10×2048 at 299 px",
        description="Xception (depthwise-separable Inception), 79.0% ImageNet top-1; accurate, 299 px",
    ),
    tlkit.keras_application_base(
        "convnext_tiny",
        "ConvNeXtTiny",
        family="convnext",
        preprocessing=INTERNAL,
        param_count=27_820_128,
        options=_RESCALE_INSIDE,
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
