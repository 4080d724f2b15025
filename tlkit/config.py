"""The training configuration: defaults, TOML files, and merging CLI overrides.

``config.toml`` in a run directory is the fully resolved configuration;
``tlkit train --config runs/X/config.toml`` reproduces that run.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from tlkit.errors import TlkitError
from tlkit.suggest import closest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

OPTIMIZERS = ("adam", "sgd", "rmsprop", "adamw")
LOSSES = ("categorical_crossentropy", "focal", "mean_squared_error")
SCHEDULES = ("constant", "cosine", "exponential", "step")
METRICS = ("accuracy", "top_k", "precision", "recall", "f1", "fbeta")
MONITORS = ("val_accuracy", "val_loss", "val_f1")
ENGINES = ("auto", "onnxruntime", "tensorflow")


@dataclass
class TrainConfig:
    """Everything that defines a training run.  Defaults reproduce the classic recipe."""

    data: str = "data"
    base: str = "resnet50"
    head: str = "dense256"
    head_params: dict[str, Any] = field(default_factory=dict)
    augmentations: list[str] = field(default_factory=list)
    epochs: int = 10
    batch_size: int = 32
    optimizer: str = "adam"
    lr: float = 1e-3
    loss: str = "categorical_crossentropy"
    image_size: int = 0  # 0: the base's default size
    weights: str = "imagenet"
    seed: int = 0
    val_split: float = 0.2
    skip_bad_images: bool = False
    output: str = "runs"
    feature_cache: bool = True  # train the head on cached base features when the base is frozen
    aug_views: int = 0  # with augmentations: cache this many augmented views (0: end-to-end)
    engine: str = "auto"  # feature engine: auto, onnxruntime, tensorflow
    # optimizer details and learning-rate schedule
    momentum: float = 0.9  # sgd only
    nesterov: bool = False  # sgd only
    weight_decay: float = 0.0
    schedule: str = "constant"
    warmup_epochs: int = 0
    decay_rate: float = 0.5  # exponential: factor per epoch; step: factor every decay_epochs
    decay_epochs: int = 3
    # loss and metrics
    label_smoothing: float = 0.0
    focal_gamma: float = 2.0
    metrics: list[str] = field(default_factory=lambda: ["accuracy", "f1"])
    top_k: int = 5
    fbeta: float = 2.0
    class_weight: str = "none"  # none, balanced, or a JSON file {class: weight}
    # stopping and model selection
    monitor: str = "val_accuracy"
    patience: int = 0  # early stopping after this many epochs without improvement (0: off)
    reduce_lr_patience: int = 0  # halve-on-plateau after this many epochs (0: off)
    reduce_lr_factor: float = 0.5
    # fine-tuning stage
    fine_tune_epochs: int = 0
    unfreeze: str = "all"  # K (top K layers), all, or from:LAYER_NAME
    fine_tune_lr: float = 1e-5
    deterministic: bool = False

    def validate(self) -> None:
        """Check every value's range; raise TlkitError naming the bad option."""
        _positive_int("epochs", self.epochs)
        _positive_int("batch-size", self.batch_size)
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not (
            self.lr > 0 and math.isfinite(self.lr)
        ):
            raise TlkitError(f"--lr must be a positive number, got {self.lr!r}")
        if self.optimizer not in OPTIMIZERS:
            raise TlkitError(
                f"unknown optimizer {self.optimizer!r}{closest(self.optimizer, OPTIMIZERS)} "
                f"(choose from {', '.join(OPTIMIZERS)})"
            )
        if self.loss not in LOSSES:
            raise TlkitError(
                f"unknown loss {self.loss!r}{closest(self.loss, LOSSES)} "
                f"(choose from {', '.join(LOSSES)})"
            )
        if not isinstance(self.image_size, int) or self.image_size < 0:
            raise TlkitError(f"--image-size must be a positive integer, got {self.image_size!r}")
        if not (0 < self.val_split < 1):
            raise TlkitError(f"--val-split must be between 0 and 1 (exclusive), got {self.val_split!r}")
        if isinstance(self.aug_views, bool) or not isinstance(self.aug_views, int) or self.aug_views < 0:
            raise TlkitError(f"--aug-views must be 0 or a positive integer, got {self.aug_views!r}")
        if self.engine not in ENGINES:
            raise TlkitError(
                f"unknown --engine {self.engine!r}{closest(self.engine, ENGINES)} "
                f"(choose from {', '.join(ENGINES)})"
            )
        for flag, value in (("warmup-epochs", self.warmup_epochs), ("patience", self.patience),
                            ("reduce-lr-patience", self.reduce_lr_patience),
                            ("fine-tune-epochs", self.fine_tune_epochs)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise TlkitError(f"--{flag} must be 0 or a positive integer, got {value!r}")
        _positive_int("decay-epochs", self.decay_epochs)
        _positive_int("top-k", self.top_k)
        _choice("schedule", self.schedule, SCHEDULES)
        _choice("monitor", self.monitor, MONITORS)
        for metric in self.metrics:
            _choice("metrics", metric, METRICS)
        for flag, value, low, high in (("fine-tune-lr", self.fine_tune_lr, 0, math.inf),
                                       ("weight-decay", self.weight_decay, -1e-300, math.inf),
                                       ("momentum", self.momentum, -1e-300, 1.0),
                                       ("label-smoothing", self.label_smoothing, -1e-300, 1.0),
                                       ("decay-rate", self.decay_rate, 0, 1.0),
                                       ("reduce-lr-factor", self.reduce_lr_factor, 0, 1.0 - 1e-9),
                                       ("fbeta", self.fbeta, 0, math.inf),
                                       ("focal-gamma", self.focal_gamma, -1e-300, math.inf)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (low < value <= high) \
                    or not math.isfinite(value):
                raise TlkitError(f"--{flag} is out of range: {value!r}")
        if self.monitor == "val_f1" and "f1" not in self.metrics:
            raise TlkitError("--monitor val_f1 needs the f1 metric: add f1 to --metrics")
        if self.reduce_lr_patience and (self.schedule != "constant" or self.warmup_epochs):
            raise TlkitError(
                "--reduce-lr-patience works with --schedule constant and no warm-up; "
                f"got --schedule {self.schedule} --warmup-epochs {self.warmup_epochs}"
            )
        if self.class_weight not in ("none", "balanced") and not self.class_weight.endswith(".json"):
            raise TlkitError(
                f"--class-weight must be none, balanced or a .json file, got {self.class_weight!r}"
            )
        if not isinstance(self.seed, int) or self.seed < 0:
            raise TlkitError(f"--seed must be a non-negative integer, got {self.seed!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _choice(flag: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise TlkitError(
            f"unknown --{flag} {value!r}{closest(str(value), choices)} (choose from {', '.join(choices)})"
        )


def _positive_int(flag: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise TlkitError(f"--{flag} must be a positive integer, got {value!r}")


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def config_from_mapping(values: Mapping[str, Any], source: str = "config") -> TrainConfig:
    """Build a TrainConfig from a mapping, refusing unknown keys and wrong types."""
    config = TrainConfig()
    return merge(config, values, source)


def merge(config: TrainConfig, values: Mapping[str, Any], source: str = "options") -> TrainConfig:
    """A copy of ``config`` with ``values`` applied (``None`` values are ignored)."""
    updates: dict[str, Any] = {}
    for key, value in values.items():
        if key not in FIELDS:
            raise TlkitError(f"unknown key {key!r} in {source}{closest(key, FIELDS)}")
        if value is None:
            continue
        updates[key] = _coerce(key, value, source)
    return dataclasses.replace(config, **updates)


def _coerce(key: str, value: Any, source: str) -> Any:
    default = getattr(TrainConfig(), key)
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, list):
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
        value = list(value) if ok else value
    elif isinstance(default, dict):
        ok = isinstance(value, Mapping)
        value = dict(value) if ok else value
    else:
        ok = isinstance(value, str)
    if not ok:
        kind = _KIND_NAMES[type(default)]
        raise TlkitError(f"{key} in {source} must be {kind}, got {value!r}")
    return value


_KIND_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
               list: "a list of strings", dict: "a table"}


def load_config_file(path: str | Path) -> TrainConfig:
    """Read a TOML config (e.g. a run's ``config.toml``)."""
    path = Path(path)
    if not path.is_file():
        raise TlkitError(f"config file {str(path)!r} does not exist")
    try:
        values = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise TlkitError(f"config file {str(path)!r} is not valid TOML: {exc}") from None
    values.pop("tlkit", None)  # provenance table written by tlkit itself
    return config_from_mapping(values, source=str(path))


# -- TOML writing (tomllib only reads; the config is flat enough to write by hand)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        escaped = (
            value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
        )
        return f'"{escaped}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else _toml_value(key)


def to_toml(config: TrainConfig, provenance: Mapping[str, Any] | None = None) -> str:
    """Serialise ``config`` as TOML; ``provenance`` goes into a ``[tlkit]`` table."""
    lines = ["# tlkit training configuration (fully resolved).",
             "# Reproduce this run with:  tlkit train --config <this file>", ""]
    tables = {}
    for key, value in config.to_dict().items():
        if isinstance(value, dict):
            tables[key] = value
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    for name, table in tables.items():
        lines += ["", f"[{name}]"] + [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in table.items()]
    if provenance:
        lines += ["", "[tlkit]"] + [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in provenance.items()]
    return "\n".join(lines) + "\n"


def read_toml(path: str | Path) -> dict[str, Any]:
    """A TOML file as a dict; a one-line TlkitError when it cannot be read or parsed."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise TlkitError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise TlkitError(f"{path} is not valid TOML ({exc})") from exc
