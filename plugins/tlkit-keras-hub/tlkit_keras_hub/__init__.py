"""tlkit-keras-hub: KerasHub's image backbones as tlkit bases, offline from local presets.

Registered through the ``tlkit`` entry-point group::

    [project.entry-points.tlkit]
    keras_hub = "tlkit_keras_hub"

- ``register_bases``: the curated bases of :mod:`tlkit_keras_hub.catalog` (DINOv2 small/base,
  DeiT-S, ViT-B/16, EfficientNetV2-rw-S, timm's ResNet-50 A1, MobileNetV3-Large), plus a
  ``<name>_pooled`` variant of each transformer (``CLS ⊕ mean of the patch tokens``).
- ``resolve_base``: ``hub:<preset-or-handle>[+pooled]`` for any other KerasHub image backbone — a
  KerasHub preset name (``hub:dinov2_large``), a handle (``hub:hf://timm/convnext_tiny.fb_in1k``,
  ``hub:kaggle://…``) or a preset folder (``hub:/abs/path``).

``--weights``: ``imagenet`` (the preset's pretrained weights: ``keras_hub-<preset>.tar`` in Keras's
cache, else downloaded and kept there), ``none``, a preset folder, or a handle.

Importing this module imports neither Keras nor TensorFlow nor keras_hub: the specs are metadata,
and ``build``/``preprocess`` import KerasHub when a model is built.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import tlkit
from tlkit_keras_hub import presets
from tlkit_keras_hub.catalog import (
    BY_NAME,
    CURATED,
    HUB_POOLED_SUFFIX,
    HUB_PREFIX,
    POOLED_SUFFIX,
    Curated,
    archive_name,
)

try:
    from importlib.metadata import PackageNotFoundError, version

    __version__ = version("tlkit-keras-hub")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0+unknown"

_TRANSFORMERS = ("DINOV2Backbone", "DINOV3Backbone", "ViTBackbone", "DeiTBackbone")
_POOLED_TEXT = "CLS ⊕ mean of the patch tokens, as a 1×1 map"


def _build_curated(name: str, pooled: bool, input_shape: tuple[int, int, int], weights: str | None = None) -> Any:
    from tlkit_keras_hub import backbones  # lazy: KerasHub imports TensorFlow

    return backbones.build_curated(BY_NAME[name], pooled, input_shape, weights)


def _check_curated(name: str, weights: str) -> None:
    """A preset folder must hold the curated base's backbone class (handles are checked when loaded)."""
    if "://" not in weights and Path(weights).is_dir():
        presets.check_preset(Path(weights), BY_NAME[name].backbone, name)


def curated_spec(entry: Curated, pooled: bool = False) -> tlkit.BaseSpec:
    """The tlkit base of a curated row (its ``_pooled`` variant with ``pooled``)."""
    name = entry.name + (POOLED_SUFFIX if pooled else "")
    if pooled:
        feature_shape = f"1×1×{2 * entry.channels} ({_POOLED_TEXT})"
    else:
        side = entry.default_size // (entry.patch or 32)
        what = " patch tokens" if entry.transformer else ""
        feature_shape = f"{side}×{side}×{entry.channels}{what} at {entry.default_size} px"
    return tlkit.BaseSpec(
        name=name,
        build=functools.partial(_build_curated, entry.name, pooled),
        preprocess=entry.preprocessing.layers,
        description=entry.description + (f"; pooled: {_POOLED_TEXT}" if pooled else ""),
        family=entry.family,
        default_size=entry.default_size,
        min_size=max(entry.min_size, entry.patch),
        weights_sizes=(entry.default_size,) if entry.fixed_size else (),
        param_count=entry.param_count,
        preprocessing=entry.preprocessing.description,
        weights_file=entry.archive,
        feature_shape=feature_shape,
        explain_layer="patch_grid" if pooled else "",
        weight_folders=True,
        weight_schemes=presets.SCHEMES,
        check_weights=functools.partial(_check_curated, entry.name),
        weights_source=f"{entry.handle} (KerasHub {entry.backbone}, preset {entry.preset})",
    )


# -- hub:<preset-or-handle> --------------------------------------------------------------------------


def _hub_preprocess(handle: str, archive: str) -> list[Any]:
    from tlkit_keras_hub import backbones  # lazy: KerasHub imports TensorFlow

    return backbones.preprocess_for(handle, archive)


def _build_hub(
    handle: str, archive: str, pooled: bool, name: str, input_shape: tuple[int, int, int], weights: str | None = None
) -> Any:
    from tlkit_keras_hub import backbones  # lazy: KerasHub imports TensorFlow

    return backbones.build_hub(handle, archive, pooled, name, input_shape, weights)


def _check_hub(name: str, weights: str) -> None:
    if "://" not in weights and Path(weights).is_dir():
        presets.check_preset(Path(weights), None, name)


def hub_spec(name: str) -> tlkit.BaseSpec:
    """The base ``hub:<preset-or-handle>[+pooled]``: any KerasHub image backbone, by preset name,
    handle or folder (what it is, when a folder or its offline archive is here, comes from its config)."""
    rest = name[len(HUB_PREFIX) :]
    pooled = rest.endswith(HUB_POOLED_SUFFIX)
    handle = rest[: -len(HUB_POOLED_SUFFIX)] if pooled else rest
    if not handle.strip():
        raise tlkit.TlkitError(
            f"base {name!r}: put a KerasHub preset, handle or preset folder after 'hub:', e.g. hub:dinov2_large, "
            f"hub:hf://timm/convnext_tiny.fb_in1k or hub:/path/to/preset"
        )
    is_path = "://" not in handle and (handle.startswith(("/", ".", "~")) or os.sep in handle)
    if is_path:
        folder = Path(handle).expanduser()
        if not folder.is_dir():
            raise tlkit.TlkitError(
                f"base {name!r}: {folder} is not a folder; pass a KerasHub preset folder after 'hub:'"
            )
        handle = str(folder.resolve())
        presets.check_preset(folder, None, name)
    archive = archive_name(handle)
    local = Path(handle) if is_path else presets.locate(archive)
    config = presets.read_json(local, presets.CONFIG) if local is not None else None
    cls = presets.backbone_class(config) if config else None
    fixed = presets.fixed_size(config) if config else None
    size = fixed or 224
    if pooled:
        feature_shape = f"1×1×2C ({_POOLED_TEXT})"
    elif cls in _TRANSFORMERS:
        feature_shape = "size/p × size/p × C patch tokens"
    else:
        feature_shape = "the backbone's feature map" if cls else "feature map or patch-token grid"
    what = f"KerasHub {cls}" if cls else "a KerasHub image backbone"
    return tlkit.BaseSpec(
        name=name,
        build=functools.partial(_build_hub, handle, archive, pooled, name),
        preprocess=functools.partial(_hub_preprocess, handle, archive),
        description=f"{what} from {handle}" + (f"; pooled: {_POOLED_TEXT}" if pooled else ""),
        family="keras_hub",
        default_size=size,
        weights_sizes=(size,) if fixed else (),
        param_count=presets.parameter_count(local) if local is not None else 0,
        preprocessing="the preset's image converter (x·scale + offset; ImageNet mean/std when it has none)",
        weights_file="" if is_path else archive,
        feature_shape=feature_shape,
        explain_layer="patch_grid" if pooled else "",
        weight_folders=True,
        weight_schemes=presets.SCHEMES,
        check_weights=functools.partial(_check_hub, name),
        weights_source=handle,
    )


# -- hooks ------------------------------------------------------------------------------------------------


@tlkit.hookimpl
def register_bases(register) -> None:
    """Register the curated KerasHub bases (and each transformer's ``_pooled`` variant)."""
    for entry in CURATED:
        register(curated_spec(entry))
        if entry.transformer:
            register(curated_spec(entry, pooled=True))


@tlkit.hookimpl
def resolve_base(name: str) -> tlkit.BaseSpec | None:
    """``hub:<preset-or-handle>[+pooled]``: any other KerasHub image backbone."""
    return hub_spec(name) if name.startswith(HUB_PREFIX) else None


__all__ = ["CURATED", "curated_spec", "hub_spec", "register_bases", "resolve_base", "__version__"]
