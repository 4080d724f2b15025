"""From what a user typed to what a run uses: names → specs, parameters checked, paths absolute.

Nothing here imports TensorFlow or reads images: resolving a configuration is
instant, so every mistake in it is reported before any work starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tlkit.config.options import TrainConfig, merge
from tlkit.config.preflight import check_output
from tlkit.data.imbalance import read_class_weights
from tlkit.data.mixing import check_batch_mixing
from tlkit.errors import TlkitError
from tlkit.model.builder import AugmentationChoice
from tlkit.registry.manager import get_registry
from tlkit.registry.specs import BaseSpec, HeadSpec, format_choice, parse_choice, resolve_params
from tlkit.weights.files import check_weight_file


def resolve_head(name: str, params: dict[str, Any] | None) -> tuple[HeadSpec, dict[str, Any]]:
    """The head spec and its parameters with defaults filled in and values checked."""
    spec = get_registry().head(name)
    return spec, resolve_params(f"head {name!r}", spec.params, params or {})


def resolve_augmentations(choices: list[str] | tuple[str, ...]) -> list[AugmentationChoice]:
    """Parse ``NAME[:k=v,...]`` strings into specs with checked parameters."""
    resolved = []
    registry = get_registry()
    for text in choices:
        name, given = parse_choice(text, "--aug")
        spec = registry.augmentation(name)
        params = resolve_params(f"augmentation {name!r}", spec.params, given)
        resolved.append(AugmentationChoice(spec, params))
    return resolved


def resolve_weights(weights: str | None, base: BaseSpec | None = None) -> str | None:
    """``"imagenet"``, ``None`` (for ``"none"``) or an absolute path to an existing file; also, for a
    ``base`` that declares it reads them (``weight_folders``, ``weight_schemes``), an absolute path
    to a folder or a ``scheme://…`` handle (returned as given)."""
    if weights is None or weights.lower() == "none":
        return None
    if weights.lower() == "imagenet":
        return "imagenet"
    reads = _weights_base_reads(base)  # ["'imagenet'", "'none'", "an existing file", ...]
    listed = ", ".join(reads[:-1]) + " or " + reads[-1]
    scheme = weights.split("://", 1)[0] if "://" in weights else ""
    if scheme:
        if base is not None and scheme.lower() in {s.lower() for s in base.weight_schemes}:
            return weights
        which = f"base {base.name!r}" if base is not None else "this base"
        raise TlkitError(f"--weights {weights!r} is a {scheme}:// handle, which {which} does not read; pass {listed}")
    path = Path(weights).expanduser()
    if path.is_dir():
        if base is not None and base.weight_folders:
            return str(path.resolve())
        which = f"base {base.name!r}" if base is not None else "this base"
        raise TlkitError(f"--weights {weights!r} is a folder, which {which} does not read; pass {listed}")
    if not path.is_file():
        neither = ", ".join(reads[:-1]) + " nor " + reads[-1]
        raise TlkitError(f"--weights {weights!r} is neither {neither}; pass one of those")
    return str(path.resolve())


def _weights_base_reads(base: BaseSpec | None) -> list[str]:
    """What ``--weights`` may be for ``base``, for messages."""
    kinds = ["'imagenet'", "'none'", "an existing file"]
    if base is not None and base.weight_folders:
        kinds.append("a weights folder")
    if base is not None and base.weight_schemes:
        kinds.append("a " + ", ".join(f"{s}://" for s in base.weight_schemes) + " handle")
    return kinds


def _check_class_weight_file(setting: str) -> None:
    """A ``--class-weight FILE.json`` must be readable now (its classes are checked against the
    data's once the data is scanned)."""
    if setting not in ("none", "balanced"):
        read_class_weights(setting)


def _resolve_labels(labels: str) -> str:
    """``--labels FILE.csv`` as an absolute path to an existing file ("" for class folders)."""
    if not labels:
        return ""
    path = Path(labels).expanduser()
    if not path.is_file():
        raise TlkitError(f"--labels {labels} is not a file; pass a CSV with a header row path,label[,split]")
    return str(path.resolve())


def _resolve_trackers(names: list[str]) -> list[str]:
    """``--track`` names, each registered and with its library installed (checked without importing
    it), duplicates dropped."""
    registry = get_registry()
    for name in names:
        registry.tracker(name).check_available()
    return list(dict.fromkeys(names))


def resolve_config(config: TrainConfig | None = None, **options: Any) -> TrainConfig:
    """Apply ``options`` over ``config`` (or the defaults) and validate every value and name.

    The result is fully resolved (image size, head parameters, augmentation
    parameters, absolute paths), as written to a run's ``config.toml``.
    """
    threshold = options.get("threshold")
    if isinstance(threshold, (int, float)) and not isinstance(threshold, bool):  # threshold=0.3 from Python
        options = {**options, "threshold": repr(float(threshold))}
    config = merge(config or TrainConfig(), options, source="options")
    config.validate()
    base = get_registry().base(config.base)
    _, head_params = resolve_head(config.head, config.head_params)
    augs = resolve_augmentations(config.augmentations)
    check_batch_mixing(
        [a.spec.name for a in augs if a.spec.mixes_batch], config.aug_views, getattr(config, "multi_label", False)
    )
    weights = resolve_weights(config.weights, base)
    if weights is not None and weights != "imagenet":
        # Readable and of a known format now; whether it fits the base is checked when the base
        # is built, which is still before the run directory exists.
        if Path(weights).is_file():
            check_weight_file(base, Path(weights))
        if base.check_weights is not None:  # the plugin's own light check (a folder's architecture...)
            base.check_weights(weights)
    _check_class_weight_file(config.class_weight)
    track = _resolve_trackers(config.track)
    size = config.image_size or base.default_size
    base.check_size(size, weights)
    output = Path(config.output).expanduser().resolve()
    # Before any data is scanned: a wrong --output is the user's mistake, not a crash later on.
    check_output(output)
    return merge(
        config,
        {
            "data": str(Path(config.data).expanduser().resolve()),
            "labels": _resolve_labels(config.labels),
            "output": str(output),
            "image_size": size,
            "head_params": head_params,
            "augmentations": [format_choice(a.spec.name, a.params) for a in augs],
            "weights": weights or "none",
            "track": track,
        },
    )


__all__ = ["resolve_augmentations", "resolve_config", "resolve_head", "resolve_weights"]
