"""The training configuration: every option declared once, TOML files, and merging CLI overrides.

Each :class:`TrainConfig` field is declared with :func:`option`, which attaches
an :class:`Option` (help text, CLI flag, allowed values, help panel) to the
field; its allowed values are a :class:`tlkit.registry.params.Rule`, the
vocabulary (``choices``, ``ge``/``gt``/``le``/``lt``) of a plugin's parameters
too.  Everything else is generated from that one declaration: the validation
in :meth:`TrainConfig.validate`, the options of ``tlkit train``
(:mod:`tlkit.cli.train`) and the option reference ``docs/options.md``
(:func:`options_markdown`).

``config.toml`` in a run directory is the fully resolved configuration;
``tlkit train --config runs/X/config.toml`` reproduces that run.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tlkit.errors import TlkitError
from tlkit.io.toml import read_toml, toml_text
from tlkit.io.urls import has_password, mask_password
from tlkit.registry.params import Rule
from tlkit.suggest import closest

# The help panels of `tlkit train`, in display order.
PANELS = ("Data", "Model", "Optimization", "Stopping", "Fine-tuning", "Speed", "Scale", "Run")


@dataclass(frozen=True)
class Option(Rule):
    """What one :class:`TrainConfig` field means outside Python: its flag, rule, help and panel.

    The rule — ``help``, ``choices`` and the bounds ``ge``/``gt``/``le``/``lt``
    — is a :class:`~tlkit.registry.params.Rule`, the vocabulary plugin
    parameters are declared with too, checked and described by the same code.
    ``name`` is filled in from the field once :class:`TrainConfig` is defined;
    everything else comes from :func:`option`.
    """

    default: Any
    panel: str
    name: str = ""
    flag: str = ""
    separator: str | None = None
    path: bool = False
    error: str | None = None

    def __post_init__(self) -> None:
        self._validate()

    @property
    def kind(self) -> type:
        """The value's type: ``bool``, ``int``, ``float``, ``str``, ``list`` or ``dict``."""
        return type(self.default)

    @property
    def flags(self) -> str:
        """The flag declaration as Typer takes it (``--x`` or, for booleans, ``--x/--no-x``)."""
        if self.flag:
            return self.flag
        dashed = "--" + self.name.replace("_", "-")
        return f"{dashed}/--no-{dashed[2:]}" if self.kind is bool else dashed

    @property
    def cli_flag(self) -> str:
        """The main flag (``--skip-bad-images``): what error messages name."""
        return self.flags.split("/")[0]

    def check(self, value: Any) -> None:
        """Raise TlkitError (naming the flag) unless ``value`` is of the right type and allowed.

        The message is the rule's (:meth:`~tlkit.registry.params.Rule.complaint`,
        as for a plugin parameter) unless the option has its own ``error``.
        """
        number = self.kind if self.kind in (int, float) else None
        for item in value if self.kind is list else [value]:
            problem = self.complaint(self.cli_flag, item, number)
            if problem and self.error:
                problem = self.error.format(
                    flag=self.cli_flag,
                    value=item,
                    choices=", ".join(self.choices),
                    suggestion=closest(str(item), self.choices),
                )
            if problem:
                raise TlkitError(problem)

    def default_text(self) -> str:
        """The default as a user types it (``""`` for an empty list or table)."""
        value = self.default
        if self.kind is bool:
            return "on" if value else "off"
        if self.kind is float:
            return f"{value:g}"
        if self.kind is list:
            return (self.separator or ", ").join(value)
        if self.kind is dict:
            return ", ".join(f"{k}={v}" for k, v in value.items())
        return str(value)

    def allowed_text(self) -> str:
        """The allowed values in words, from the rule (``"integer ≥ 1"``, ``"0 < x < 1"``, …)."""
        if self.choices:
            listed = ", ".join(f"`{c}`" for c in self.choices)
            return f"any of {listed}{self._list_how()}" if self.kind is list else listed
        if self.kind in (list, dict):
            return _KIND_WORDS[self.kind] + self._list_how()
        if self.has_range:
            return self.range_text("integer" if self.kind is int else "number")
        return _KIND_WORDS["path" if self.path else self.kind]

    def _list_how(self) -> str:
        if self.separator is None:
            return ", repeat the flag"
        return ", comma-separated" if self.separator == "," else f", separated by `{self.separator}`"


def option(
    default: Any,
    *,
    help: str,
    panel: str,
    flag: str = "",
    choices: tuple[str, ...] = (),
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    separator: str | None = None,
    path: bool = False,
    error: str | None = None,
) -> Any:
    """Declare a :class:`TrainConfig` field with everything the CLI, validation and docs need.

    - ``help``: one sentence for ``tlkit train --help`` and the docs (the default
      and the choices are added from ``default`` and ``choices``; never write them here).
    - ``panel``: the help panel, one of :data:`PANELS`.
    - ``flag``: the CLI flag when it is not ``--`` + the name with dashes; for a
      boolean the ``--on/--off`` pair (default ``--x/--no-x``).
    - ``choices``: the allowed strings (for a list: of each item).
    - ``ge``/``gt``/``le``/``lt``: the numeric range (>=, >, <=, <; the names
      ``tlkit.Param`` uses for plugin parameters); floats must also be finite.
    - ``separator``: a list given on the CLI as one ``a,b`` value (else the flag repeats).
    - ``path``: the CLI value is a path.
    - ``error``: the message when the value breaks the rule, a template with
      ``{flag}``, ``{value}``, ``{choices}`` and ``{suggestion}`` (default: the
      rule's own sentence, the same as a plugin parameter's).
    """
    if panel not in PANELS:
        raise ValueError(f"unknown panel {panel!r}; expected one of {PANELS}")
    meta = Option(
        default=default,
        help=help,
        panel=panel,
        flag=flag,
        choices=tuple(choices),
        ge=ge,
        gt=gt,
        le=le,
        lt=lt,
        separator=separator,
        path=path,
        error=error,
    )
    metadata = {"option": meta}
    if isinstance(default, (list, dict)):  # a fresh copy per instance, as with any mutable default
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


_KIND_WORDS: dict[Any, str] = {
    bool: "on / off",
    int: "integer",
    float: "number",
    str: "text",
    "path": "path",
    list: "text",
    dict: "KEY=VALUE",
}


@dataclass
class TrainConfig:
    """Everything that defines a training run.  Defaults reproduce the classic recipe.

    Each field is declared once, with :func:`option`; see :data:`OPTIONS`.
    """

    data: str = option("data", path=True, panel="Data", help="Folder with train/ (and val/), one sub-folder per class.")
    base: str = option("resnet50", panel="Model", help="Base model (tlkit list-bases).")
    head: str = option("dense256", panel="Model", help="Head (tlkit list-heads).")
    head_params: dict[str, Any] = option(
        {}, flag="--head-param", panel="Model", help="Head parameter KEY=VALUE (tlkit list-heads)."
    )
    augmentations: list[str] = option(
        [],
        flag="--aug",
        panel="Model",
        help="Augmentation NAME[:key=value,...], applied in the order given (tlkit list-augmentations).",
    )
    epochs: int = option(10, ge=1, panel="Optimization", help="Epochs of the head stage.")
    batch_size: int = option(32, ge=1, panel="Optimization", help="Batch size.")
    optimizer: str = option(
        "adam",
        choices=("adam", "sgd", "rmsprop", "adamw"),
        panel="Optimization",
        help="Optimizer.",
        error="unknown optimizer {value!r}{suggestion} (choose from {choices})",
    )
    lr: float = option(
        1e-3,
        gt=0,
        panel="Optimization",
        help="Learning rate of the head stage.",
        error="{flag} must be a positive number, got {value!r}",
    )
    loss: str = option(
        "categorical_crossentropy",
        choices=("categorical_crossentropy", "focal", "mean_squared_error"),
        panel="Optimization",
        help="Loss function.",
        error="unknown loss {value!r}{suggestion} (choose from {choices})",
    )
    image_size: int = option(
        0,
        ge=0,
        panel="Model",
        help="Input size in pixels, images are resized (0: the base's default size).",
        # kept from before the rules were generated (0 is allowed)
        error="{flag} must be a positive integer, got {value!r}",
    )
    weights: str = option(
        "imagenet",
        panel="Model",
        help="imagenet, none, a weights file of the base, or a weights folder or hub handle "
        "for bases that read them (tlkit info BASE).",
    )
    seed: int = option(
        0,
        ge=0,
        panel="Optimization",
        help="Random seed (data order, split, augmentation, initialisation).",
        error="{flag} must be a non-negative integer, got {value!r}",
    )
    val_split: float = option(
        0.2,
        gt=0,
        lt=1,
        panel="Data",
        help="Fraction of train/ held out when there is no val/.",
        error="{flag} must be between 0 and 1 (exclusive), got {value!r}",
    )
    skip_bad_images: bool = option(
        False,
        flag="--skip-bad-images/--stop-on-bad-images",
        panel="Data",
        help="Skip unreadable images instead of stopping.",
    )
    # datasets beyond class folders: see tlkit/data/labels_csv.py and docs/user-guide.md
    labels: str = option(
        "",
        path=True,
        panel="Data",
        help="A CSV of labels instead of class folders: columns path,label (or path,labels with "
        "--multi-label) and an optional split (train/val); paths relative to --data.",
    )
    multi_label: bool = option(
        False,
        panel="Data",
        help="Multi-label classification (needs --labels with a labels column): sigmoid outputs, "
        "binary cross-entropy, every label above --threshold predicted.",
    )
    label_sep: str = option("|", panel="Data", help="--multi-label: the separator of the CSV's labels column.")
    threshold: str = option(
        "0.5",
        panel="Data",  # checked in validate()
        help="--multi-label: the decision threshold, a number between 0 and 1, or tuned (each label's "
        "threshold maximises its F1 on the validation images).",
    )
    output: str = option("runs", path=True, panel="Run", help="Where run directories are created.")
    feature_cache: bool = option(
        True, panel="Speed", help="Train the head on the frozen base's cached features (computed once)."
    )
    aug_views: int = option(
        0,
        ge=0,
        panel="Speed",
        help="With --aug: cache K augmented views per image (one per epoch) instead of "
        "training end to end (0: end to end).",
    )
    engine: str = option(
        "auto",
        choices=("auto", "onnxruntime", "tensorflow"),
        panel="Speed",
        help="Feature engine (auto: ONNX Runtime when installed, unless TensorFlow runs the base clearly faster).",
    )
    feature_dtype: str = option(
        "float32",
        choices=("float32", "float16"),
        panel="Speed",
        help="How the feature cache stores features: float16 halves its size on disk and in "
        "memory (the head still trains in float32).",
    )
    # optimizer details and learning-rate schedule
    momentum: float = option(0.9, ge=0, le=1, panel="Optimization", help="SGD momentum.")
    nesterov: bool = option(False, panel="Optimization", help="SGD with Nesterov momentum.")
    weight_decay: float = option(0.0, ge=0, panel="Optimization", help="Decoupled weight decay (adamw: 0.004 when 0).")
    schedule: str = option(
        "constant",
        choices=("constant", "cosine", "exponential", "step"),
        panel="Optimization",
        help="Learning-rate schedule.",
    )
    warmup_epochs: int = option(0, ge=0, panel="Optimization", help="Linear warm-up epochs before the schedule.")
    decay_rate: float = option(
        0.5, gt=0, le=1, panel="Optimization", help="exponential: factor per epoch; step: factor per --decay-epochs."
    )
    decay_epochs: int = option(3, ge=1, panel="Optimization", help="step schedule: epochs between decays.")
    # loss and metrics
    label_smoothing: float = option(
        0.0, ge=0, le=1, panel="Optimization", help="Label smoothing for cross-entropy and focal loss."
    )
    focal_gamma: float = option(2.0, ge=0, panel="Optimization", help="Focusing parameter of the focal loss.")
    metrics: list[str] = option(
        ["accuracy", "f1"],
        separator=",",
        panel="Optimization",
        choices=("accuracy", "top_k", "precision", "recall", "f1", "fbeta"),
        help="Metrics tracked every epoch.",
    )
    top_k: int = option(5, ge=1, panel="Optimization", help="k of the top_k metric.")
    fbeta: float = option(2.0, gt=0, panel="Optimization", help="β of the fbeta metric (macro).")
    class_weight: str = option(
        "none",
        panel="Data",  # checked in validate()
        help="Class weights: none, balanced, or a JSON file {class: weight}.",
    )
    # stopping and model selection
    monitor: str = option(
        "val_accuracy",
        choices=("val_accuracy", "val_loss", "val_f1"),
        panel="Stopping",
        help="What picks the best epoch (the saved model).",
    )
    patience: int = option(
        0, ge=0, panel="Stopping", help="Stop a stage after this many epochs without improvement (0: never)."
    )
    reduce_lr_patience: int = option(
        0,
        ge=0,
        panel="Stopping",
        help="Multiply the learning rate by --reduce-lr-factor after this many flat epochs (0: off).",
    )
    reduce_lr_factor: float = option(0.5, gt=0, lt=1, panel="Stopping", help="Factor for --reduce-lr-patience.")
    # fine-tuning stage
    fine_tune_epochs: int = option(
        0, ge=0, panel="Fine-tuning", help="Epochs of a second stage that trains the top of the base too (0: none)."
    )
    unfreeze: str = option(
        "all",
        panel="Fine-tuning",  # checked when the fine-tuning stage starts
        help="What the fine-tuning stage trains: K (top K layers), all, or from:LAYER_NAME.",
    )
    fine_tune_lr: float = option(1e-5, gt=0, panel="Fine-tuning", help="Learning rate of the fine-tuning stage.")
    deterministic: bool = option(
        False, panel="Optimization", help="Deterministic ops: the same seed gives identical histories."
    )
    # scale-out: see docs/scaling.md
    strategy: str = option(
        "auto",
        choices=("auto", "default", "mirrored", "multi-worker"),
        panel="Scale",
        help="tf.distribute strategy: mirrored (the local GPUs), multi-worker (the cluster in "
        "TF_CONFIG or Slurm's environment), default (one device); auto picks mirrored with "
        "2+ GPUs and multi-worker when TF_CONFIG names a cluster.",
    )
    per_replica_batch: bool = option(
        True,
        flag="--per-replica-batch/--global-batch",
        panel="Scale",
        help="--batch-size is per replica (the global batch is it × replicas), or "
        "the global batch. The learning rate is never rescaled.",
    )
    precision: str = option(
        "float32",
        choices=("float32", "mixed_float16", "mixed_bfloat16"),
        panel="Scale",
        help="Keras mixed-precision policy of the base (the head, its softmax and the "
        "optimizer's variables stay float32; float16 uses loss scaling).",
    )
    # experiment tracking: see docs/tracking.md (none of these changes what is trained or cached)
    track: list[str] = option(
        [],
        flag="--track",
        panel="Run",
        help="Report the run to this experiment tracker, e.g. mlflow (tlkit list-trackers).",
    )
    track_uri: str = option(
        "",
        panel="Run",
        help="Where the trackers report (MLflow: a tracking URI; default: MLFLOW_TRACKING_URI, else "
        "sqlite:///mlflow.db in the current folder).",
    )
    register_model: str = option(
        "", panel="Run", help="With --track mlflow: register the trained model under this name in the model registry."
    )

    def validate(self) -> None:
        """Check every value against its option's rule, then the rules that tie options together.

        Raises TlkitError naming the bad option.
        """
        for name, meta in OPTIONS.items():
            meta.check(getattr(self, name))
        if self.monitor == "val_f1" and "f1" not in self.metrics:
            raise TlkitError("--monitor val_f1 needs the f1 metric: add f1 to --metrics")
        if self.reduce_lr_patience and (self.schedule != "constant" or self.warmup_epochs):
            raise TlkitError(
                "--reduce-lr-patience works with --schedule constant and no warm-up; "
                f"got --schedule {self.schedule} --warmup-epochs {self.warmup_epochs}"
            )
        for name in ("track_uri", "register_model"):
            if getattr(self, name) and not self.track:
                raise TlkitError(f"{OPTIONS[name].cli_flag} needs a tracker: add --track mlflow (tlkit list-trackers)")
        if has_password(self.track_uri):
            raise TlkitError(
                f"--track-uri {mask_password(self.track_uri)} holds a password, which would be written into the "
                "run directory and logged as a parameter: remove it from the URI and set "
                "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD instead (docs/tracking.md)"
            )
        if self.class_weight not in ("none", "balanced") and not self.class_weight.endswith(".json"):
            raise TlkitError(f"--class-weight must be none, balanced or a .json file, got {self.class_weight!r}")
        # lazy: labels_csv loads numpy; `tlkit --help` imports this module
        from tlkit.data.labels_csv import check_label_options

        check_label_options(self)

    def to_dict(self) -> dict[str, Any]:
        """The configuration as plain Python values (lists and dicts copied)."""
        return dataclasses.asdict(self)


def _bind(f: dataclasses.Field) -> Option:
    """The field's :class:`Option` with its name filled in; every field must have one."""
    if "option" not in f.metadata:
        raise TypeError(f"TrainConfig.{f.name} must be declared with option(...)")
    return dataclasses.replace(f.metadata["option"], name=f.name)


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
# Every training option, in field order (the order of config.toml).
OPTIONS: dict[str, Option] = {name: _bind(f) for name, f in FIELDS.items()}

# The allowed names other modules import; the field declarations are their one source.
OPTIMIZERS = OPTIONS["optimizer"].choices
LOSSES = OPTIONS["loss"].choices
MONITORS = OPTIONS["monitor"].choices
ENGINES = OPTIONS["engine"].choices


def options_markdown() -> str:
    """The reference of every training option as Markdown: one table per help panel.

    ``docs/options.md`` is this text (``docs/make_options_md.py`` writes it).
    """
    parts = []
    for panel in PANELS:
        rows = [meta for meta in OPTIONS.values() if meta.panel == panel]
        if not rows:
            continue
        parts += [f"## {panel}", "", "| flag | config key | default | allowed | meaning |", "|---|---|---|---|---|"]
        for meta in rows:
            default = f"`{meta.default_text()}`" if meta.default_text() else "—"
            cells = (f"`{meta.flags}`", f"`{meta.name}`", default, meta.allowed_text(), meta.help)
            parts.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
        parts.append("")
    return "\n".join(parts)


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
    default = OPTIONS[key].default
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
        if isinstance(value, os.PathLike):  # tlkit.train(data=Path("data")): paths are strings here
            value = os.fspath(value)
        ok = isinstance(value, str)
    if not ok:
        kind = _KIND_NAMES[type(default)]
        raise TlkitError(f"{key} in {source} must be {kind}, got {value!r}")
    return value


_KIND_NAMES = {
    bool: "true or false",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "a list of strings",
    dict: "a table",
}


def load_config_file(path: str | Path) -> TrainConfig:
    """Read a TOML config (e.g. a run's ``config.toml``)."""
    path = Path(path)
    if not path.is_file():
        raise TlkitError(f"config file {str(path)!r} does not exist")
    values = read_toml(path)
    values.pop("tlkit", None)  # provenance table written by tlkit itself
    return config_from_mapping(values, source=str(path))


def config_table(config: TrainConfig, provenance: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``config`` as a TOML-ready table; ``provenance`` goes into a ``[tlkit]`` table."""
    table = config.to_dict()
    if provenance:
        table["tlkit"] = dict(provenance)
    return table


CONFIG_HEADER = (
    "tlkit training configuration (fully resolved).\nReproduce this run with:  tlkit train --config <this file>"
)


def to_toml(config: TrainConfig, provenance: Mapping[str, Any] | None = None) -> str:
    """Serialise ``config`` as TOML; ``provenance`` goes into a ``[tlkit]`` table."""
    return toml_text(config_table(config, provenance), CONFIG_HEADER)
