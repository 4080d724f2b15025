"""The search space of ``tlkit tune``: ``--search`` strings or a ``[search]`` table, parsed and checked.

Grammar, one dimension per entry::

    NAME=LOW..HIGH          a number drawn uniformly (an integer when the option is one)
    NAME=LOW..HIGH:log      the same, drawn uniformly in log space (LOW > 0)
    NAME=a,b,c              one of the listed values

``NAME`` is a training option a head-stage trial can vary (:data:`SEARCHABLE`: ``lr``,
``weight_decay``, ``batch_size``, ``optimizer``, ``class_weight``, ``head``, ``base``,
``image_size``...) or ``head.<param>``, a parameter the head declares (``head.dropout``): it is
drawn only in trials whose head declares it.  A ``[search]`` table takes the same strings, or a
list of values for a choice (``head = ["linear", "dense256"]``).  Every bad entry is refused with
one line naming it, before any work.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tlkit.config.options import OPTIONS, TrainConfig
from tlkit.config.resolve import resolve_config
from tlkit.errors import TlkitError
from tlkit.registry.manager import get_registry
from tlkit.registry.params import ParamSpec
from tlkit.suggest import closest

#: Training options a trial (a head trained on cached features) can vary.
SEARCHABLE = (
    "lr",
    "weight_decay",
    "batch_size",
    "epochs",
    "optimizer",
    "momentum",
    "label_smoothing",
    "loss",
    "focal_gamma",
    "class_weight",
    "schedule",
    "warmup_epochs",
    "decay_rate",
    "head",
    "base",
    "image_size",
)
HEAD_PARAM = "head."
GRAMMAR = "NAME=LOW..HIGH[:log] or NAME=a,b,c"
_NUMERIC_KINDS = {"int": int, "ints": int, "float": float, "floats": float}

Kind = Literal["int", "float", "categorical"]


@dataclass(frozen=True)
class Dimension:
    """One searched value: a numeric range (``int``/``float``, maybe log-scaled) or a list of choices."""

    name: str  # "lr", "head", "head.dropout"
    spec: str  # as given after "=" ("1e-4..1e-2:log", "linear,dense256")
    kind: Kind
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    @property
    def head_param(self) -> str | None:
        """The head parameter's name for ``head.<param>``, else None."""
        return self.name[len(HEAD_PARAM) :] if self.name.startswith(HEAD_PARAM) else None

    @property
    def text(self) -> str:
        """``name=spec``: the entry as a ``--search`` flag takes it."""
        return f"{self.name}={self.spec}"

    def applies_to(self, head: str) -> bool:
        """True unless this is a parameter that ``head`` does not declare."""
        param = self.head_param
        return param is None or any(p.name == param for p in get_registry().head(head).params)

    def suggest(self, trial: Any) -> Any:
        """The value Optuna's ``trial`` draws for this dimension."""
        if self.kind == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)  # type: ignore[arg-type]
        return trial.suggest_float(self.name, float(self.low), float(self.high), log=self.log)  # type: ignore[arg-type]


def _refuse(entry: str, why: str) -> TlkitError:
    return TlkitError(f"--search {entry!r}: {why}")


def _number(entry: str, text: str, integer: bool) -> int | float:
    text = text.strip()
    try:
        value: int | float = int(text) if integer else float(text)
    except ValueError:
        raise _refuse(entry, f"{text!r} is not {'an integer' if integer else 'a number'}") from None
    if not math.isfinite(value):
        raise _refuse(entry, f"{text!r} is not a finite number")
    return value


def _declaring_heads(param: str, heads: Sequence[str]) -> list[ParamSpec]:
    registry = get_registry()
    return [p for head in heads for p in registry.head(head).params if p.name == param]


def _parse_range(entry: str, name: str, spec: str, heads: Sequence[str]) -> Dimension:
    body, _, suffix = spec.partition(":")
    if suffix and suffix.strip() != "log":
        raise _refuse(entry, f"unknown suffix ':{suffix}' (only ':log'); expected {GRAMMAR}")
    low_text, _, high_text = body.partition("..")
    param = name[len(HEAD_PARAM) :] if name.startswith(HEAD_PARAM) else None
    if param is not None:
        declared = _declaring_heads(param, heads)
        kinds = {p.kind for p in declared}
        if not kinds <= set(_NUMERIC_KINDS):
            raise _refuse(entry, f"head parameter {param!r} is not a number; list its values instead (a,b,c)")
        integer = any(_NUMERIC_KINDS[k] is int for k in kinds)
        rules: list[tuple[str, Any]] = [(f"head parameter {param!r}", p) for p in declared]
    else:
        meta = OPTIONS[name]
        if meta.kind not in (int, float) or meta.choices:
            raise _refuse(entry, f"--{name.replace('_', '-')} is not a number; list its values instead (a,b,c)")
        integer = meta.kind is int
        rules = [(meta.cli_flag, meta)]
    low, high = _number(entry, low_text, integer), _number(entry, high_text, integer)
    if low >= high:
        raise _refuse(entry, f"the low end {low:g} must be below the high end {high:g}")
    log = bool(suffix)
    if log and low <= 0:
        raise _refuse(entry, f"a :log range needs a low end > 0, got {low:g}")
    for subject, rule in rules:
        broken = [b for end in (low, high) for b in rule.broken_bounds(end)]
        if broken:
            raise _refuse(
                entry, f"{subject} must be {' and '.join(dict.fromkeys(broken))}; the range {low:g}..{high:g} is not"
            )
    return Dimension(name, spec, "int" if integer else "float", low=low, high=high, log=log)


def _choice(entry: str, name: str, text: str, heads: Sequence[str]) -> Any:
    registry = get_registry()
    if name == "head":
        if text not in registry.heads:
            raise _refuse(entry, f"unknown head {text!r}{closest(text, registry.heads)} (tlkit list-heads)")
        return text
    if name == "base":
        if text not in registry.bases:
            raise _refuse(entry, f"unknown base {text!r}{closest(text, registry.bases)} (tlkit list-bases)")
        return text
    if name == "class_weight":
        if text not in ("none", "balanced") and not Path(text).expanduser().is_file():
            raise _refuse(entry, f"class weights {text!r} are none, balanced or an existing JSON file")
        return text
    param = name[len(HEAD_PARAM) :] if name.startswith(HEAD_PARAM) else None
    if param is not None:
        value: Any = None
        for declared in _declaring_heads(param, heads):
            if declared.kind in ("ints", "floats"):
                raise _refuse(
                    entry, f"head parameter {param!r} is a list; search it as a range (LOW..HIGH) of one value"
                )
            try:
                value = declared.parse(text)
            except TlkitError as exc:
                raise _refuse(entry, str(exc)) from None
        return value
    meta = OPTIONS[name]
    value = text
    if meta.kind in (int, float):
        value = _number(entry, text, meta.kind is int)
    try:
        meta.check(value)
    except TlkitError as exc:
        raise _refuse(entry, str(exc)) from None
    return value


def _parse_choices(entry: str, name: str, spec: str, heads: Sequence[str]) -> Dimension:
    texts = [t.strip() for t in spec.split(",") if t.strip()]
    if len(texts) < 2:
        raise _refuse(entry, f"a search needs two values or more (or LOW..HIGH); to fix one, pass --{name} instead")
    values = [_choice(entry, name, text, heads) for text in texts]
    if len(set(map(repr, values))) != len(values):
        raise _refuse(entry, "a value is listed twice")
    return Dimension(name, spec, "categorical", choices=tuple(values))


def _split(entry: Any) -> tuple[str, str]:
    if not isinstance(entry, str) or "=" not in entry:
        raise _refuse(str(entry), f"expected {GRAMMAR}")
    name, _, spec = entry.partition("=")
    name, spec = name.strip(), spec.strip()
    if not name or not spec:
        raise _refuse(entry, f"expected {GRAMMAR}")
    return name, spec


def parse_search(entries: Sequence[str], config: TrainConfig | None = None) -> list[Dimension]:
    """The dimensions of ``--search`` entries, every one checked (one-line TlkitError naming a bad one).

    ``config`` is the base configuration: its head is the one a ``head.<param>`` entry is checked
    against unless ``head`` itself is searched (then each searched head that declares it).
    """
    config = config or TrainConfig()
    split = [(entry, *_split(entry)) for entry in entries]
    seen: set[str] = set()
    for entry, name, _ in split:
        if name in seen:
            raise _refuse(entry, f"{name} is searched twice; give one entry per name")
        seen.add(name)
    dimensions: dict[str, Dimension] = {}
    heads: list[str] = [config.head]
    # Options first: the searched heads decide which head parameters may be searched.
    for entry, name, spec in sorted(split, key=lambda item: item[1].startswith(HEAD_PARAM)):
        if name.startswith(HEAD_PARAM):
            param = name[len(HEAD_PARAM) :]
            known = sorted({p.name for head in heads for p in get_registry().head(head).params})
            if param not in known:
                hint = closest(param, known)
                raise _refuse(
                    entry,
                    f"no searched head declares a parameter {param!r}{hint} (heads: {', '.join(heads)}; "
                    f"parameters: {', '.join(known) or 'none'})",
                )
        elif name not in SEARCHABLE:
            why = "is not an option a trial can vary" if name in OPTIONS else "is not a training option"
            raise _refuse(
                entry, f"{name} {why}{closest(name, SEARCHABLE)} (search: {', '.join(SEARCHABLE)}, head.<param>)"
            )
        if ".." in spec:
            dimension = _parse_range(entry, name, spec, heads)
        else:
            dimension = _parse_choices(entry, name, spec, heads)
        dimensions[name] = dimension
        if name == "head":
            heads = list(dimension.choices)
    if "base" in dimensions and config.weights not in ("imagenet", "none"):
        raise _refuse(
            dimensions["base"].text,
            f"--weights {config.weights} is one base's file; search bases with --weights imagenet or none",
        )
    return [dimensions[name] for _, name, _ in split]


def space_from_table(table: Mapping[str, Any], config: TrainConfig | None = None) -> list[Dimension]:
    """The dimensions of a TOML ``[search]`` table: ``name = "LOW..HIGH[:log]"``, ``"a,b"`` or ``["a", "b"]``."""
    entries = []
    for name, value in table.items():
        if isinstance(value, (list, tuple)):
            entries.append(f"{name}={','.join(_plain(v) for v in value)}")
        elif isinstance(value, str):
            entries.append(f"{name}={value}")
        else:
            raise _refuse(f"{name}={value!r}", f"a [search] value is a string ({GRAMMAR}) or a list of values")
    return parse_search(entries, config)


def _plain(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def sample(trial: Any, space: Sequence[Dimension], head: str) -> dict[str, Any]:
    """Draw a trial's values: the options first, then the parameters its head (``head`` unless
    searched) declares."""
    params: dict[str, Any] = {}
    for dimension in space:
        if dimension.head_param is None:
            params[dimension.name] = dimension.suggest(trial)
    chosen = params.get("head", head)
    for dimension in space:
        if dimension.head_param is not None and dimension.applies_to(chosen):
            params[dimension.name] = dimension.suggest(trial)
    return params


def config_for(base_config: TrainConfig, params: Mapping[str, Any]) -> TrainConfig:
    """``base_config`` (a resolved configuration) with a trial's ``params`` applied, resolved and checked.

    A new head starts from its own parameter defaults; ``head.<param>`` values go to the head when
    it declares them.  A new base gets its own default size unless the old size was not the old
    base's default (an explicit ``--image-size``) or ``image_size`` is searched too.
    """
    registry = get_registry()
    updates: dict[str, Any] = {k: v for k, v in params.items() if not k.startswith(HEAD_PARAM)}
    head = updates.get("head", base_config.head)
    head_params = dict(base_config.head_params) if head == base_config.head else {}
    declared = {p.name for p in registry.head(head).params}
    head_params.update(
        {
            k[len(HEAD_PARAM) :]: v
            for k, v in params.items()
            if k[len(HEAD_PARAM) :] in declared and k.startswith(HEAD_PARAM)
        }
    )
    base = updates.get("base", base_config.base)
    if base != base_config.base and "image_size" not in updates:
        if base_config.image_size in (0, registry.base(base_config.base).default_size):
            updates["image_size"] = 0
    updates = {k: v for k, v in updates.items() if k not in ("head_params",)}
    return resolve_config(dataclasses.replace(base_config, head_params=head_params), **updates)


def default_params(space: Sequence[Dimension], config: TrainConfig) -> dict[str, Any]:
    """The base configuration's own values of the searched names (what trial "defaults" means)."""
    params: dict[str, Any] = {}
    for dimension in space:
        param = dimension.head_param
        if param is None:
            params[dimension.name] = getattr(config, dimension.name)
        elif param in config.head_params:
            params[dimension.name] = config.head_params[param]
    return params


__all__ = [
    "GRAMMAR",
    "SEARCHABLE",
    "Dimension",
    "config_for",
    "default_params",
    "parse_search",
    "sample",
    "space_from_table",
]
