"""From what a user typed to what a run uses: names → specs, parameters checked, paths absolute.

Nothing here imports TensorFlow or reads images: resolving a configuration is
instant, so every mistake in it is reported before any work starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tlkit.builder import AugmentationChoice
from tlkit.config import TrainConfig, merge
from tlkit.errors import TlkitError
from tlkit.registry import get_registry
from tlkit.specs import HeadSpec, format_choice, parse_choice, resolve_params


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


def resolve_weights(weights: str | None) -> str | None:
    """``"imagenet"``, ``None`` (for ``"none"``) or an absolute path to an existing file."""
    if weights is None or weights.lower() == "none":
        return None
    if weights.lower() == "imagenet":
        return "imagenet"
    path = Path(weights).expanduser()
    if not path.is_file():
        raise TlkitError(
            f"--weights {weights!r} is neither 'imagenet', 'none' nor an existing file; pass one of those"
        )
    return str(path.resolve())


def resolve_config(config: TrainConfig | None = None, **options: Any) -> TrainConfig:
    """Apply ``options`` over ``config`` (or the defaults) and validate every value and name.

    The result is fully resolved (image size, head parameters, augmentation
    parameters, absolute paths), as written to a run's ``config.toml``.
    """
    config = merge(config or TrainConfig(), options, source="options")
    config.validate()
    base = get_registry().base(config.base)
    _, head_params = resolve_head(config.head, config.head_params)
    augs = resolve_augmentations(config.augmentations)
    weights = resolve_weights(config.weights)
    size = config.image_size or base.default_size
    base.check_size(size, weights)
    return merge(
        config,
        {
            "data": str(Path(config.data).expanduser().resolve()),
            "output": str(Path(config.output).expanduser().resolve()),
            "image_size": size,
            "head_params": head_params,
            "augmentations": [format_choice(a.spec.name, a.params) for a in augs],
            "weights": weights or "none",
        },
    )


__all__ = ["resolve_augmentations", "resolve_config", "resolve_head", "resolve_weights"]
