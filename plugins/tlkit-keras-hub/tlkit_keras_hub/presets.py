"""KerasHub presets on disk, without Keras: a folder's architecture, its preprocessing, offline archives.

A *preset* is what ``Backbone.save_to_preset`` writes (``config.json``, ``model.weights.h5``,
``metadata.json``, optionally ``image_converter.json``) or a checkpoint folder KerasHub's
converters read (timm's ``config.json`` + ``model.safetensors``; Hugging Face transformers'
``config.json`` + ``model.safetensors`` + ``preprocessor_config.json``).

For offline use a preset is packed into **one file** in Keras's cache,
``$KERAS_HOME/models/keras_hub-<preset>.tar`` (an uncompressed tar of the folder), so that
``tlkit weights list / download / import`` and weight bundles carry it like any weight file.

Nothing here imports Keras, TensorFlow or keras_hub: it runs while a configuration is resolved.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tarfile
from pathlib import Path
from typing import Any

from tlkit import TlkitError

CONFIG = "config.json"
CONVERTER = "image_converter.json"  # KerasHub's ImageConverter.save_to_preset
HF_PREPROCESSOR = "preprocessor_config.json"  # Hugging Face image processors
METADATA = "metadata.json"

#: Handle schemes ``Backbone.from_preset`` reads (gs:// through TensorFlow's file systems).
SCHEMES = ("kaggle", "hf", "modelscope", "gs")
_HOSTS = {"kaggle": "www.kaggle.com", "hf": "huggingface.co", "modelscope": "www.modelscope.cn"}

# timm architectures and transformers model types → the KerasHub backbone class that loads them
# (as keras_hub/src/utils/timm/preset_loader.py and transformers/preset_loader.py dispatch).
_TIMM = (
    ("resnet", "ResNetBackbone"),
    ("csp", "CSPNetBackbone"),
    ("dark", "CSPNetBackbone"),
    ("densenet", "DenseNetBackbone"),
    ("mobilenetv5", "MobileNetV5Backbone"),
    ("mobilenet", "MobileNetBackbone"),
    ("vgg", "VGGBackbone"),
    ("efficientnet", "EfficientNetBackbone"),
    ("hgnetv2", "HGNetV2Backbone"),
)
_TRANSFORMERS = {
    "dinov2": "DINOV2Backbone",
    "dinov2_with_registers": "DINOV2Backbone",
    "dinov3_vit": "DINOV3Backbone",
    "vit": "ViTBackbone",
    "deit": "DeiTBackbone",
    "swin": "SwinTransformerBackbone",
}
#: Backbones whose position embeddings are not interpolated: their weights fit one input size only.
FIXED_SIZE = ("ViTBackbone", "DeiTBackbone")


def keras_cache_dir() -> Path:
    """Keras's weight cache: ``$KERAS_HOME/models`` (default ``~/.keras/models``), where tlkit looks for weights."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models"


# -- reading a preset's files (a folder or an archive) -------------------------------------------


def read_json(source: Path, name: str) -> dict[str, Any] | None:
    """File ``name`` of the preset folder or archive ``source`` as JSON (None when it has no such file)."""
    try:
        if source.is_dir():
            path = source / name
            return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
        with tarfile.open(source) as archive:
            member = _members(archive).get(name)
            if member is None:
                return None
            data = archive.extractfile(member)
            return json.loads(data.read().decode("utf-8")) if data is not None else None
    except (OSError, tarfile.TarError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TlkitError(f"KerasHub preset {source}: {name} is not readable JSON ({exc})") from None


def backbone_class(config: dict[str, Any]) -> str | None:
    """The KerasHub backbone class a preset's ``config.json`` loads as (None: not an image backbone we know)."""
    if "class_name" in config and "config" in config:  # save_to_preset: a serialized Keras object
        return str(config["class_name"])
    if "architecture" in config:  # a timm checkpoint
        arch = str(config["architecture"])
        return next((cls for prefix, cls in _TIMM if arch.startswith(prefix)), None)
    if "model_type" in config:  # a Hugging Face transformers checkpoint
        return _TRANSFORMERS.get(str(config["model_type"]))
    return None


def describe_config(config: dict[str, Any]) -> str:
    """What a preset's ``config.json`` is, in a few words (for messages)."""
    if "class_name" in config:
        return f"a KerasHub {config['class_name']}"
    if "architecture" in config:
        return f"timm architecture {config['architecture']!r}"
    if "model_type" in config:
        return f"transformers model type {config['model_type']!r}"
    return "an unknown config.json"


def fixed_size(config: dict[str, Any]) -> int | None:
    """The one input size a ViT/DeiT preset's position embeddings fit (None for the other backbones)."""
    if backbone_class(config) not in FIXED_SIZE:
        return None
    if "config" in config:
        shape = config["config"].get("image_shape") or [None]
        return int(shape[0]) if shape[0] else None
    size = config.get("image_size")
    return int(size) if size else None


def parameter_count(source: Path) -> int:
    """``parameter_count`` from a saved preset's ``metadata.json`` (0 when unknown)."""
    meta = read_json(source, METADATA) or {}
    count = meta.get("parameter_count")
    return int(count) if isinstance(count, int) else 0


def add_to_config(folder: Path, values: dict[str, Any]) -> None:
    """Write ``values`` into a saved preset's ``config.json`` where it lacks them (arguments KerasHub's
    ``get_config`` leaves out, without which the preset would not load back)."""
    path = folder / CONFIG
    config = json.loads(path.read_text(encoding="utf-8"))
    inner = config.setdefault("config", {})
    for key, value in values.items():
        inner.setdefault(key, value)
    path.write_text(json.dumps(config, indent=4), encoding="utf-8")


def check_preset(source: Path, expected: str | None, base: str) -> dict[str, Any]:
    """The ``config.json`` of preset folder (or archive) ``source``; a one-line TlkitError when it is
    not a preset, or not of the ``expected`` backbone class (any known image backbone for None)."""
    config = read_json(source, CONFIG)
    if config is None:
        raise TlkitError(
            f"{source} is not a KerasHub preset (no {CONFIG}); pass a folder written by "
            f"Backbone.save_to_preset, or a timm / Hugging Face checkpoint folder (config.json + model.safetensors)"
        )
    found = backbone_class(config)
    if expected is not None and found != expected:
        raise TlkitError(
            f"{source} holds {describe_config(config)}, not the {expected} base {base!r} is made of; "
            f"pass a {expected} preset, or use --base hub:{source} to take the folder's own architecture"
        )
    if expected is None and found is None:
        raise TlkitError(
            f"{source} holds {describe_config(config)}, which is not a KerasHub image backbone tlkit knows "
            f"(DINOv2/v3, ViT, DeiT, Swin, or a timm ResNet/EfficientNet/MobileNet/...)"
        )
    return config


# -- preprocessing from a preset -----------------------------------------------------------------


def scale_offset(source: Path) -> tuple[list[float], list[float]] | None:
    """``(scale, offset)`` per RGB channel (``x·scale + offset`` on 0–255 pixels) from the preset's
    image converter, timm's ``pretrained_cfg`` or a Hugging Face image processor; None when it has none."""
    converter = read_json(source, CONVERTER)
    if converter is not None:
        cfg = converter.get("config", converter)
        scale, offset = cfg.get("scale"), cfg.get("offset")
        if scale is None and offset is None:
            return None
        return _per_channel(1.0 if scale is None else scale), _per_channel(0.0 if offset is None else offset)
    config = read_json(source, CONFIG) or {}
    timm = config.get("pretrained_cfg") or {}
    if "mean" in timm and "std" in timm:
        return _mean_std(timm["mean"], timm["std"], 1 / 255)
    processor = read_json(source, HF_PREPROCESSOR)
    if processor and processor.get("image_mean") and processor.get("image_std"):
        factor = processor.get("rescale_factor", 1 / 255) if processor.get("do_rescale", True) else 1.0
        if not processor.get("do_normalize", True):
            return _per_channel(factor), _per_channel(0.0)
        return _mean_std(processor["image_mean"], processor["image_std"], factor)
    return None


def _per_channel(value: Any) -> list[float]:
    values = [float(v) for v in value] if isinstance(value, (list, tuple)) else [float(value)] * 3
    return values if len(values) == 3 else [values[0]] * 3


def _mean_std(mean: Any, std: Any, factor: float) -> tuple[list[float], list[float]]:
    mean, std = _per_channel(mean), _per_channel(std)
    return [factor / s for s in std], [-m / s for m, s in zip(mean, std)]


# -- archives in Keras's cache -------------------------------------------------------------------


def locate(archive: str) -> Path | None:
    """The archive ``archive`` in Keras's cache, or None."""
    path = keras_cache_dir() / archive
    return path if path.is_file() else None


def pack(folder: Path, target: Path) -> Path:
    """Pack preset ``folder`` into the tar ``target``, atomically (a temporary name, then a rename)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.part-{os.getpid()}")
    try:
        with tarfile.open(tmp, "w") as archive:
            for path in sorted(folder.iterdir()):
                if path.is_file():
                    archive.add(path, arcname=path.name)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _members(tar: tarfile.TarFile) -> dict[str, tarfile.TarInfo]:
    """The archive's plain files at its top level (``name`` or ``./name``, as ``tar -C DIR .`` writes), by name."""
    found = {}
    for member in tar.getmembers():
        name = member.name.removeprefix("./")
        if member.isfile() and name and "/" not in name and not name.startswith("."):
            found[name] = member
    return found


def unpack(archive: Path, folder: Path) -> Path:
    """Extract the preset archive into ``folder`` (its top-level plain files only: no links, no paths outside it)."""
    try:
        with tarfile.open(archive) as tar:
            members = _members(tar)
            if CONFIG not in members:
                raise TlkitError(f"{archive} holds no {CONFIG}: it is not a KerasHub preset archive; delete it")
            for name, member in members.items():
                data = tar.extractfile(member)
                if data is not None:
                    with open(folder / name, "wb") as out:
                        shutil.copyfileobj(data, out, 1 << 20)
    except (OSError, tarfile.TarError) as exc:
        raise TlkitError(f"{archive} is not a readable preset archive ({exc}); delete it and fetch it again") from None
    return folder


# -- the network ---------------------------------------------------------------------------------


def unreachable(handle: str) -> str | None:
    """Why ``handle``'s host cannot be reached (its name does not resolve), or None (it may be).

    A quick check before asking KerasHub, whose Hugging Face client retries for ~25 s offline.
    """
    scheme = handle.split("://", 1)[0].lower() if "://" in handle else "kaggle"  # preset names live on Kaggle
    host = _HOSTS.get(scheme)
    if host is None:
        return None
    try:
        socket.getaddrinfo(host, 443)
    except OSError as exc:
        return f"{host} cannot be reached: {exc.strerror or exc}"
    return None


__all__ = [
    "FIXED_SIZE",
    "add_to_config",
    "SCHEMES",
    "backbone_class",
    "check_preset",
    "describe_config",
    "fixed_size",
    "keras_cache_dir",
    "locate",
    "pack",
    "parameter_count",
    "read_json",
    "scale_offset",
    "unpack",
    "unreachable",
]
