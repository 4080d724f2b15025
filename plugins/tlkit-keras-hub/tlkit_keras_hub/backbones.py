"""KerasHub backbones as tlkit bases: loading (random, a preset archive, a folder, a hub handle) and
the headless model tlkit freezes (a feature map, a patch-token grid, or a pooled vector).

A transformer's output is a token sequence ``(batch, prefix + h·w, C)`` — the CLS token (plus
DeiT's distillation token or DINOv2's register tokens), then the patch tokens in row order.
tlkit's heads and Grad-CAM take a ``(batch, h, w, C)`` map, so:

- **grid** (``dinov2_small``, ``hub:…``): the prefix tokens dropped, the patch tokens reshaped to
  ``(size/p, size/p, C)`` — ``Cropping1D`` then ``Reshape`` (layers ``patch_tokens``, ``patch_grid``);
- **pooled** (``dinov2_small_pooled``, ``hub:…+pooled``): ``CLS ⊕ mean(patch tokens)``, the vector
  DINOv2's authors probe linearly, as a ``(1, 1, 2C)`` map (just the mean when there is no CLS).
  Grad-CAM explains its ``patch_grid`` (the gradient through the mean of the patches).

The model is flat: the backbone's own layers (KerasHub's registered serializable layers) plus
standard Keras layers, so ``model.keras`` loads with ``keras.saving.load_model`` wherever
``keras_hub`` is installed (Keras imports it by itself), and ``--unfreeze`` sees its layers.
"""

from __future__ import annotations

import inspect
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tlkit import TlkitError
from tlkit.bases import TF, TORCH
from tlkit.errors import first_line
from tlkit_keras_hub import presets
from tlkit_keras_hub.catalog import Curated


def _keras_hub():
    import keras_hub  # lazy: KerasHub imports TensorFlow and Keras; only building a base needs it

    return keras_hub


# -- loading ---------------------------------------------------------------------------------------


def load(
    *,
    base: str,
    backbone_class: str | None,
    handle: str,
    archive: str,
    size: int,
    weights: str | None,
    config: dict[str, Any] | None = None,
    repair: dict[str, Any] | None = None,
) -> Any:
    """The KerasHub backbone for ``base`` at ``size`` px.

    ``weights``: None (random: ``config``, or the architecture of ``handle`` when it can be read),
    ``"imagenet"`` (``archive`` in Keras's cache, else downloaded from ``handle`` and archived),
    a preset folder, or a hub handle.  ``backbone_class``: the class the preset must hold (None:
    any image backbone).  ``repair``: constructor arguments to give again when loading the base's
    own preset (those KerasHub's ``get_config`` drops).
    """
    hub = _keras_hub()
    cls = getattr(hub.models, backbone_class) if backbone_class else hub.models.Backbone
    shape = (size, size, 3)
    if weights is None:
        if config is not None:
            return cls(**{**config, **_shape_kwargs(cls, shape)})
        source = _local_source(handle, archive)
        with _opened(source) as folder:
            return _from_preset(cls, folder or handle, base, shape, load_weights=False)
    if weights == "imagenet":
        if "://" not in handle and Path(handle).is_dir():  # hub:/path/to/preset: the folder is the weights
            return _from_preset(cls, handle, base, shape)
        local = presets.locate(archive)
        if local is None:
            return download(base=base, cls=cls, handle=handle, archive=archive, shape=shape, repair=repair or {})
        with _opened(local) as folder:
            return _from_preset(cls, folder, base, shape, label=str(local), extra=repair)
    if "://" in weights and (reason := presets.unreachable(weights)) is not None:
        raise TlkitError(
            f"--weights {weights} cannot be fetched ({reason}); on a machine with internet save it as a folder "
            f"(keras_hub.models.Backbone.from_preset({weights!r}).save_to_preset(DIR)) and pass --weights DIR"
        )
    return _from_preset(cls, weights, base, shape)


def _local_source(handle: str, archive: str) -> Path | None:
    """Where the architecture of ``handle`` can be read offline: the folder itself, or its archive."""
    if "://" not in handle and Path(handle).is_dir():
        return Path(handle)
    return presets.locate(archive)


@contextmanager
def _opened(source: Path | None) -> Iterator[str | None]:
    """A preset folder for ``source``: the folder itself, or an archive extracted to a temporary folder."""
    if source is None or source.is_dir():
        yield str(source) if source is not None else None
        return
    with tempfile.TemporaryDirectory(prefix="tlkit-keras-hub-") as tmp:
        yield str(presets.unpack(source, Path(tmp)))


def _shape_kwargs(cls: Any, shape: tuple[int, int, int]) -> dict[str, Any]:
    """The constructor argument fixing ``cls``'s input shape: ``image_shape`` for most KerasHub
    backbones, ``input_shape`` for EfficientNet (an unknown argument would be ignored, leaving the
    input size open)."""
    parameters = inspect.signature(cls.__init__).parameters
    return (
        {"input_shape": shape}
        if "input_shape" in parameters and "image_shape" not in parameters
        else {"image_shape": shape}
    )


def _from_preset(
    cls: Any,
    preset: str,
    base: str,
    shape: tuple[int, int, int],
    *,
    load_weights: bool = True,
    label: str = "",
    extra: dict[str, Any] | None = None,
) -> Any:
    """``cls.from_preset(preset)`` at input ``shape``, with KerasHub's errors as one line."""
    where = label or preset
    if "://" not in preset and Path(preset).is_dir():
        config = presets.check_preset(Path(preset), None if cls.__name__ == "Backbone" else cls.__name__, base)
        if cls.__name__ == "Backbone":  # a hub: name: the folder says which class it is
            cls = getattr(_keras_hub().models, presets.backbone_class(config) or "Backbone", cls)
        fixed = presets.fixed_size(config)
        if fixed and load_weights and fixed != shape[0]:
            raise TlkitError(
                f"the {presets.backbone_class(config)} in {where} takes {fixed} px images only (its position "
                f"embeddings are not interpolated); pass --image-size {fixed}"
            )
    elif (reason := presets.unreachable(preset)) is not None:
        raise TlkitError(
            f"KerasHub preset {preset} cannot be fetched for base {base!r} ({reason}); on a machine with internet "
            f"run `tlkit weights download {base} --to BUNDLE`, then here `tlkit weights import BUNDLE`"
        )
    try:
        return cls.from_preset(preset, load_weights=load_weights, **_shape_kwargs(cls, shape), **(extra or {}))
    except TlkitError:
        raise
    except Exception as exc:  # KerasHub raises ValueError, FileNotFoundError, ImportError, requests' errors...
        raise TlkitError(f"KerasHub could not load {where} for base {base!r}: {first_line(exc, 200)}") from exc


def download(
    *, base: str, cls: Any, handle: str, archive: str, shape: tuple[int, int, int], repair: dict[str, Any]
) -> Any:
    """Fetch ``handle`` (needs internet), keep it as ``archive`` in Keras's cache, return the backbone.

    ``repair`` is given to ``from_preset`` and written into the archive's ``config.json`` when
    ``save_to_preset`` leaves it out, so that the archive loads back.
    """
    target = presets.keras_cache_dir() / archive
    reason = presets.unreachable(handle)
    if reason is not None:
        raise TlkitError(
            f"the pretrained weights of base {base!r} are KerasHub preset {handle}, which is neither in {target} "
            f"nor downloadable here ({reason}); on a machine with internet run `tlkit weights download {base} "
            f"--to BUNDLE`, then here `tlkit weights import BUNDLE`; or pass --weights PRESET_FOLDER, or --weights none"
        )
    try:
        backbone = cls.from_preset(handle, **repair)
    except Exception as exc:  # network, authentication (gated models), a handle of another class...
        raise TlkitError(
            f"could not download KerasHub preset {handle} for base {base!r}: {first_line(exc, 200)}; on a machine "
            f"with internet run `tlkit weights download {base} --to BUNDLE`, then here `tlkit weights import BUNDLE`"
        ) from exc
    with tempfile.TemporaryDirectory(prefix="tlkit-keras-hub-") as tmp:
        backbone.save_to_preset(tmp)
        if repair:
            presets.add_to_config(Path(tmp), repair)
        try:  # the preset's preprocessing, for hub: names (curated ones have their own)
            _keras_hub().layers.ImageConverter.from_preset(handle).save_to_preset(tmp)
        except Exception:  # noqa: BLE001 - a backbone without an image converter
            pass
        presets.pack(Path(tmp), target)
    with _opened(target) as folder:  # at the requested size (the download is at the preset's own)
        return _from_preset(cls, folder, base, shape, label=str(target), extra=repair)


# -- the headless model ------------------------------------------------------------------------------


def headless(backbone: Any, size: int, *, pooled: bool, name: str) -> Any:
    """The model tlkit freezes: ``backbone``'s feature map, patch-token grid or pooled vector."""
    import keras  # lazy: only building a base needs Keras

    inputs = backbone.inputs[0]
    output = backbone.output
    if not hasattr(output, "shape") or len(output.shape) not in (3, 4):
        raise TlkitError(
            f"base {name!r}: {type(backbone).__name__} gives {type(output).__name__} outputs, not a feature "
            f"map or a token sequence tlkit can put a head on"
        )
    if len(output.shape) == 4:
        if None in tuple(inputs.shape[1:3]):  # a backbone whose input size is still open: fix it here
            inputs = keras.Input((size, size, 3), name="images")
            output = backbone(inputs)
        if pooled:
            raise TlkitError(
                f"base {name!r}: a pooled variant is for transformers; {type(backbone).__name__} gives a feature "
                f"map, which a pooling head (--head linear) pools"
            )
        return keras.Model(inputs, output, name=name)
    seq, channels = int(output.shape[1]), int(output.shape[2])
    prefix, rows, cols = token_layout(backbone, size, seq)
    patches = keras.layers.Cropping1D((prefix, 0), name="patch_tokens")(output)
    grid = keras.layers.Reshape((rows, cols, channels), name="patch_grid")(patches)
    if not pooled:
        return keras.Model(inputs, grid, name=name)
    mean = keras.layers.GlobalAveragePooling2D(keepdims=True, name="patch_mean")(grid)
    if prefix == 0:
        return keras.Model(inputs, mean, name=name)
    cls_token = keras.layers.Cropping1D((0, seq - 1), name="cls_token")(output)
    cls_map = keras.layers.Reshape((1, 1, channels), name="cls_map")(cls_token)
    vector = keras.layers.Concatenate(axis=-1, name="cls_patch_mean")([cls_map, mean])
    return keras.Model(inputs, vector, name=name)


def token_layout(backbone: Any, size: int, seq: int) -> tuple[int, int, int]:
    """``(prefix tokens, grid rows, grid cols)`` of a transformer's ``seq`` output tokens at ``size`` px."""
    patch = getattr(backbone, "patch_size", None)
    if patch is not None:
        ph, pw = (patch, patch) if isinstance(patch, int) else (int(patch[0]), int(patch[1]))
        rows, cols = size // ph, size // pw
        if 0 <= seq - rows * cols <= 8:  # CLS, distillation and register tokens
            return seq - rows * cols, rows, cols
    side = int(round(seq**0.5))
    if side * side == seq:  # no prefix (a Swin stage, a ViT without class token)
        return 0, side, side
    raise TlkitError(
        f"{type(backbone).__name__} gives {seq} tokens at {size} px, which tlkit cannot lay out as a grid of patches"
    )


# -- preprocessing ----------------------------------------------------------------------------------


def preprocess_layers(source: Path | None) -> list[Any]:
    """Layers mapping raw 0–255 RGB to the input of the preset at ``source`` (folder or archive): its
    image converter's ``x·scale + offset`` — tlkit's standard TORCH or TF layer when it is one of
    those — and ImageNet mean/std (TORCH) when it has none or is not on this machine."""
    found = presets.scale_offset(source) if source is not None else None
    if found is None:
        return TORCH.layers()
    scale, offset = found
    for standard, (s, o) in ((TORCH, _TORCH), (TF, _TF)):
        if _close(scale, s) and _close(offset, o):
            return standard.layers()
    import keras  # lazy: only building a base needs Keras

    return [keras.layers.Rescaling(scale, offset=offset, name="preprocess_hub", dtype="float32")]


_MEAN, _STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_TORCH = ([1 / 255 / s for s in _STD], [-m / s for m, s in zip(_MEAN, _STD)])
_TF = ([1 / 127.5] * 3, [-1.0] * 3)


def _close(a: list[float], b: list[float]) -> bool:
    return all(abs(x - y) <= 1e-4 * max(1.0, abs(y)) for x, y in zip(a, b))


def preprocess_for(handle: str, archive: str) -> list[Any]:
    """:func:`preprocess_layers` of a ``hub:`` handle: from its folder or archive, else from the hub
    (its image converter, when the network is there), else ImageNet mean/std."""
    source = _local_source(handle, archive)
    if source is not None or presets.unreachable(handle) is not None:
        return preprocess_layers(source)
    try:
        with tempfile.TemporaryDirectory(prefix="tlkit-keras-hub-") as tmp:
            _keras_hub().layers.ImageConverter.from_preset(handle).save_to_preset(tmp)
            return preprocess_layers(Path(tmp))
    except Exception:  # noqa: BLE001 - a preset without an image converter, a network error
        return preprocess_layers(None)


# -- curated ------------------------------------------------------------------------------------------


def build_curated(entry: Curated, pooled: bool, input_shape: tuple[int, int, int], weights: str | None) -> Any:
    """The headless model of curated base ``entry`` (see :func:`load` for ``weights``)."""
    size = int(input_shape[0])
    name = entry.name + ("_pooled" if pooled else "")
    if entry.fixed_size and weights is None and size % entry.patch:
        raise TlkitError(f"base {name!r} needs an image size divisible by {entry.patch} (got {size})")
    backbone = load(
        base=name,
        backbone_class=entry.backbone,
        handle=entry.handle,
        archive=entry.archive,
        size=size,
        weights=weights,
        config=dict(entry.config),
        repair=dict(entry.repair),
    )
    return headless(backbone, size, pooled=pooled, name=name)


def build_hub(
    handle: str, archive: str, pooled: bool, name: str, input_shape: tuple[int, int, int], weights: str | None
) -> Any:
    """The headless model of ``hub:<handle>`` (any KerasHub image backbone; see :func:`load`).
    ``handle`` is a preset name, a ``scheme://`` handle or an absolute folder path."""
    size = int(input_shape[0])
    backbone = load(base=name, backbone_class=None, handle=handle, archive=archive, size=size, weights=weights)
    return headless(backbone, size, pooled=pooled, name=re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_"))


__all__ = [
    "build_curated",
    "build_hub",
    "download",
    "headless",
    "load",
    "preprocess_for",
    "preprocess_layers",
    "token_layout",
]
