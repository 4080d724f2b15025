"""One vocabulary for declared parameters: a marker, its bounds, and the words for both.

A training option (:class:`tlkit.config.options.Option`) and a head's or
augmentation's ``build()`` parameter (:class:`ParamSpec`) are declared with the
same words — ``help``, ``choices`` and the bounds ``ge``, ``gt``, ``le``,
``lt`` (≥, >, ≤, <) — and checked and described by the same code
(:class:`Rule`), so ``--epochs 0`` and ``--head-param units=0`` are refused
with the same sentence.

Plugin authors write the marker, :class:`Param` (``tlkit.Param``), where
``build`` declares a parameter, in its type or as its default::

    def build(features, num_classes, *,
              units: Annotated[int, tlkit.Param("hidden width", ge=1)] = 256,
              dropout: float = tlkit.param(0.5, ge=0, lt=1, help="dropout rate")):

:func:`param` (``tlkit.param``) is the default-value form: the same marker,
carrying the default.  :func:`params_from_signature` reads either into
:class:`ParamSpec` records (``tlkit.ParamSpec``), and :func:`resolve_params`
checks a user's values against them.

Old spellings keep working with a DeprecationWarning: ``min=``/``max=`` (now
``ge=``/``le=``), ``tlkit.param(help, ...)`` inside ``Annotated`` (now
``tlkit.Param(help, ...)``) and ``tlkit.Param(name, default, ...)`` describing a
whole parameter (now ``tlkit.ParamSpec``).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import operator
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from typing import Annotated, Any, Literal, get_args, get_origin

from tlkit.errors import TlkitError
from tlkit.suggest import closest


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


#: "No default given" (``None`` is a legitimate default).
MISSING: Any = _Missing()

#: The bound names, as Python's ``operator`` names them, with their symbols.
BOUNDS = {"ge": (">=", operator.ge), "gt": (">", operator.gt), "le": ("<=", operator.le), "lt": ("<", operator.lt)}

#: The kinds of a plugin parameter; ``ints``/``floats`` are comma-separated lists on the command line.
KINDS = ("int", "float", "str", "bool", "ints", "floats")
_NUMBER_OF_KIND: dict[str, type] = {"int": int, "ints": int, "float": float, "floats": float}


@dataclass(frozen=True, kw_only=True)
class Rule:
    """What a declared value means and allows: ``help``, ``choices`` and the bounds ``ge``/``gt``/``le``/``lt``.

    The base of the marker (:class:`Param`), of a plugin parameter's record
    (:class:`ParamSpec`) and of a training option
    (:class:`tlkit.config.options.Option`): one set of names, one check
    (:meth:`complaint`) and one description (:meth:`range_text`).
    """

    help: str = ""
    choices: tuple[Any, ...] = ()
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def _validate(self) -> None:
        """Normalise ``choices`` to a tuple; refuse bounds that are not finite numbers, or two on one side."""
        object.__setattr__(self, "choices", tuple(self.choices))
        for name in BOUNDS:
            bound = getattr(self, name)
            if bound is not None and not _is_number(bound, float):
                raise TypeError(f"bound {name}={bound!r} is not a finite number")
        if self.ge is not None and self.gt is not None or self.le is not None and self.lt is not None:
            raise TypeError("give one lower bound (ge or gt) and one upper bound (le or lt) at most")

    @property
    def has_range(self) -> bool:
        return any(getattr(self, name) is not None for name in BOUNDS)

    def broken_bounds(self, number: float) -> list[str]:
        """The bounds ``number`` breaks, as text (``[">= 1"]``); empty when it is in range."""
        return [
            f"{symbol} {getattr(self, name):g}"
            for name, (symbol, holds) in BOUNDS.items()
            if getattr(self, name) is not None and not holds(number, getattr(self, name))
        ]

    def complaint(self, subject: str, value: Any, number: type | None = None) -> str | None:
        """Why ``value`` is not allowed, as one sentence about ``subject`` (a flag, a parameter); None if it is.

        ``number`` is ``int`` or ``float`` when the value must be one (a float
        must be finite; a bool is never a number).
        """
        if self.choices and value not in self.choices:
            listed = ", ".join(str(choice) for choice in self.choices)
            suggestion = closest(str(value), [str(choice) for choice in self.choices])
            return f"unknown {subject} {value!r}{suggestion} (choose from {listed})"
        if number is None:
            return None
        if not _is_number(value, number, finite=False):
            return f"{subject} must be {'an integer' if number is int else 'a number'}, got {value!r}"
        if number is float and not math.isfinite(value):
            return f"{subject} is out of range: {value!r} (must be finite)"
        broken = self.broken_bounds(value)
        if not broken:
            return None
        if number is int and self.ge in (0, 1) and (self.gt, self.le, self.lt) == (None, None, None):
            return f"{subject} must be {'a' if self.ge == 1 else '0 or a'} positive integer, got {value!r}"
        return f"{subject} is out of range: {value!r} (must be {' and '.join(broken)})"

    def _repr(self, *positional: str) -> str:
        """``Name('a', 1, help='x', ge=1)``: the positional fields, then the keyword ones that are set."""
        args = [repr(getattr(self, name)) for name in positional]
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.repr and f.name not in positional and value != f.default and value is not MISSING:
                args.append(f"{f.name}={value!r}")
        return f"{type(self).__name__}({', '.join(args)})"

    def range_text(self, noun: str) -> str:
        """The range in words, for references (``"integer ≥ 1"``, ``"number, 0 < x < 1"``)."""
        low = (self.gt, "<") if self.gt is not None else (self.ge, "≤") if self.ge is not None else None
        high = (self.lt, "<") if self.lt is not None else (self.le, "≤") if self.le is not None else None
        if low and high:  # "0 < x < 1"
            return f"{noun}, {low[0]:g} {low[1]} x {high[1]} {high[0]:g}"
        if low:  # "> 0", "≥ 1"
            return f"{noun} {'>' if low[1] == '<' else '≥'} {low[0]:g}"
        if high:
            return f"{noun} {high[1]} {high[0]:g}"
        return noun


def _is_number(value: Any, kind: type, finite: bool = True) -> bool:
    """``value`` is a ``kind`` (an int also counts as a float; a bool never as a number)."""
    if isinstance(value, bool):
        return False
    if kind is int:
        return isinstance(value, int)
    return isinstance(value, (int, float)) and (not finite or math.isfinite(value))


# -- the marker ----------------------------------------------------------------------------------
_MARKER_KEYWORDS = ("help", "choices", "ge", "gt", "le", "lt", "kind")


@dataclass(frozen=True, init=False)
class Param(Rule):
    """The marker of a declared parameter: its help, choices and bounds (and, rarely, its kind).

    In a ``build`` signature, in the type or, through :func:`param`, as the default::

        units: Annotated[int, tlkit.Param("hidden width", ge=1)] = 256
        units: int = tlkit.param(256, ge=1, help="hidden width")

    ``kind`` is needed only when the type does not say it (see
    :func:`params_from_signature`).  A keyword it does not know is reported,
    naming the parameter, when the signature is read.
    """

    kind: str = ""
    default: Any = field(default=MISSING, init=False)  # set by param(), the default-value form
    unknown: tuple[str, ...] = field(default=(), init=False, repr=False, compare=False)

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        if cls is Param and (len(args) >= 2 or "name" in kwargs or "default" in kwargs):
            warnings.warn(
                "tlkit.Param(name, default, ...) describing a parameter is now tlkit.ParamSpec(name, default, ...), "
                "with min=/max= renamed ge=/le=; tlkit.Param is the marker of Annotated[type, tlkit.Param(...)]",
                DeprecationWarning,
                stacklevel=2,
            )
            return ParamSpec.from_old_arguments(*args, **kwargs)
        return super().__new__(cls)

    def __init__(
        self,
        help: str = "",
        *,
        choices: Iterable[Any] = (),
        ge: float | None = None,
        gt: float | None = None,
        le: float | None = None,
        lt: float | None = None,
        kind: str = "",
        min: float | None = None,
        max: float | None = None,
        **unknown: Any,
    ) -> None:
        ge, le = _renamed_bounds("tlkit.Param", min, max, ge, le)
        values = {"help": help, "choices": tuple(choices), "ge": ge, "gt": gt, "le": le, "lt": lt, "kind": kind}
        for name, value in values.items():
            object.__setattr__(self, name, value)
        object.__setattr__(self, "default", MISSING)
        object.__setattr__(self, "unknown", tuple(unknown))

    def __repr__(self) -> str:
        return self._repr()

    @property
    def has_rule(self) -> bool:
        """It says more than a default: help, choices, bounds or a kind."""
        return bool(self.help or self.choices or self.has_range or self.kind)

    def check_keywords(self) -> None:
        """Refuse keywords the marker does not know (kept until the parameter's name is known)."""
        if self.unknown:
            key = self.unknown[0]
            raise TypeError(
                f"tlkit.Param got an unknown keyword {key!r}{closest(key, _MARKER_KEYWORDS)} "
                f"(it takes {', '.join(_MARKER_KEYWORDS)})"
            )


def param(
    default: Any = MISSING,
    *,
    help: str = "",
    choices: Iterable[Any] = (),
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    kind: str = "",
    min: float | None = None,
    max: float | None = None,
    **unknown: Any,
) -> Any:
    """A parameter's default value, marked with its help, choices and bounds: :class:`Param`'s default-value form::

        def build(features, num_classes, *, units: int = tlkit.param(256, ge=1, help="hidden width")):

    tlkit always passes every parameter to ``build``, so the marker never
    reaches the function's body through tlkit (call ``build`` yourself with the
    defaults of ``spec.params``).  Deprecated: ``min=``/``max=`` (now
    ``ge=``/``le=``) and the old form ``tlkit.param(help, min=..., max=...)``
    inside ``Annotated`` (now ``tlkit.Param(help, ge=..., le=...)``).
    """
    if (min is not None or max is not None) and isinstance(default, str) and not help:
        help, default = default, MISSING  # the old signature: param(help, *, choices, min, max, kind)
    ge, le = _renamed_bounds("tlkit.param", min, max, ge, le)
    marker = Param(help, choices=choices, ge=ge, gt=gt, le=le, lt=lt, kind=kind, **unknown)
    object.__setattr__(marker, "default", default)
    return marker


def _renamed_bounds(
    what: str, min: float | None, max: float | None, ge: float | None, le: float | None, stacklevel: int = 3
) -> tuple[float | None, float | None]:
    """``(ge, le)`` with the old ``min``/``max`` folded in, warning that they are deprecated."""
    if min is None and max is None:
        return ge, le
    warnings.warn(
        f"{what}(min=..., max=...) is deprecated: the bounds are ge= (>=) and le= (<=), as for every "
        "tlkit option (also gt= and lt=)",
        DeprecationWarning,
        stacklevel=stacklevel,
    )
    if (min is not None and ge is not None) or (max is not None and le is not None):
        raise TypeError(f"{what}: give ge/le or the deprecated min/max, not both")
    return (min if min is not None else ge), (max if max is not None else le)


# -- the record --------------------------------------------------------------------------------
@dataclass(frozen=True)
class ParamSpec(Rule):
    """One declared parameter of a head or augmentation: name, default, kind, help, choices, bounds.

    ``kind`` is one of ``int``, ``float``, ``str``, ``bool``, ``ints`` or
    ``floats`` (the last two are comma-separated lists on the command line,
    e.g. ``units=512,256``); empty, it is inferred from the default.  Usually
    read from a ``build`` signature (:func:`params_from_signature`); a spec's
    ``params=(tlkit.ParamSpec(...), ...)`` declares them explicitly.
    """

    name: str
    default: Any
    _: KW_ONLY
    kind: str = ""

    def __post_init__(self) -> None:
        self._validate()
        if not self.kind:
            object.__setattr__(self, "kind", _infer_kind(self.default))
        if self.kind not in KINDS:
            raise ValueError(f"parameter {self.name!r}: unknown kind {self.kind!r} (use one of {', '.join(KINDS)})")

    def __repr__(self) -> str:
        return self._repr("name", "default")

    @classmethod
    def from_old_arguments(
        cls,
        name: str,
        default: Any,
        help: str = "",
        kind: str = "",
        choices: Iterable[Any] = (),
        min: float | None = None,
        max: float | None = None,
    ) -> ParamSpec:
        """The record the old ``tlkit.Param(name, default, help, kind, choices, min, max)`` described."""
        return cls(name, default, help=help, kind=kind, choices=tuple(choices), ge=min, le=max)

    def parse(self, text: str) -> Any:
        """Convert a command-line string into a checked value of this parameter."""
        try:
            if self.kind in _NUMBER_OF_KIND:
                cast = _NUMBER_OF_KIND[self.kind]
                parts = text.split(",") if self.kind.endswith("s") else [text]
                value: Any = tuple(cast(part) for part in parts if part.strip())
                value = value if self.kind.endswith("s") else value[0]
            elif self.kind == "bool":
                lowered = text.strip().lower()
                if lowered not in {"true", "false", "1", "0", "yes", "no"}:
                    raise ValueError(text)
                value = lowered in {"true", "1", "yes"}
            else:
                value = text
        except (ValueError, IndexError):
            raise TlkitError(f"{self.name}={text!r} is not a valid {self.kind}") from None
        return self.check(value)

    def check(self, value: Any) -> Any:
        """Validate an already-typed value (e.g. one read from a config file); return it normalised."""
        number = _NUMBER_OF_KIND.get(self.kind)
        if self.kind in ("ints", "floats"):
            if _is_number(value, float, finite=False):
                value = (value,)
            if not isinstance(value, (list, tuple)) or not value:
                raise TlkitError(f"{self.name} needs a non-empty list of numbers, got {value!r}")
            assert number is not None  # every list kind has its item type in _NUMBER_OF_KIND
            if not all(_is_number(item, number, finite=False) for item in value):
                raise TlkitError(f"{self.name}={value!r} is not a valid {self.kind}")
            value = tuple(number(item) for item in value)
            items = value
        elif self.kind == "float" and _is_number(value, int):
            value = float(value)
            items = (value,)
        else:
            expected = {"int": int, "float": float, "str": str, "bool": bool}[self.kind]
            if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
                raise TlkitError(f"{self.name}={value!r} is not a valid {self.kind}")
            items = (value,)
        for item in items:
            problem = self.complaint(self.name, item, number)
            if problem:
                raise TlkitError(problem)
        return value


def _infer_kind(default: Any) -> str:
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, int):
        return "int"
    if isinstance(default, float):
        return "float"
    if isinstance(default, (tuple, list)):
        return "floats" if any(isinstance(v, float) for v in default) else "ints"
    return "str"


# -- reading a build() signature ---------------------------------------------------------------
_TYPE_KINDS: dict[Any, str] = {bool: "bool", int: "int", float: "float", str: "str"}
_SEQUENCES = (tuple, list, Sequence)


def params_from_signature(build: Callable[..., Any], what: str = "") -> tuple[ParamSpec, ...]:
    """The parameters (:class:`ParamSpec`) that ``build`` declares as keyword-only arguments.

    Each keyword-only argument (after ``*``) is one parameter: its default is
    the Python default (or the one :func:`param` marks), its kind comes from the
    type (``int``, ``float``, ``str``, ``bool``, ``Literal["a", "b"]`` (a ``str``
    with those choices), ``tuple[int, ...]`` or ``tuple[float, ...]``;
    unannotated: inferred from the default), and its help and bounds from a
    :class:`Param` marker — in ``Annotated[type, tlkit.Param(...)]`` or as the
    default ``tlkit.param(default, ...)`` — or a string in ``Annotated``.  The
    default is checked against them, so a bad declaration fails when the plugin
    registers, not when a user trains.  ``what`` names the owner in errors
    (e.g. ``"head 'mlp'"``); an error also names the parameter.
    """
    try:
        signature = inspect.signature(build)
    except (TypeError, ValueError):  # a builtin or C callable: nothing to read
        return ()
    owner = what or getattr(build, "__name__", "build")
    found = []
    for arg in signature.parameters.values():
        if arg.kind is not arg.KEYWORD_ONLY:
            continue
        where = f"{owner}: parameter {arg.name!r} of build()"
        if arg.default is arg.empty or (isinstance(arg.default, Param) and arg.default.default is MISSING):
            raise ValueError(f"{where} needs a default value (`= default` or `= tlkit.param(default, ...)`)")
        try:
            found.append(_spec_from_argument(build, arg))
        except TypeError as exc:
            raise TypeError(f"{where}: {exc}") from None
        except (TlkitError, ValueError, NameError, SyntaxError) as exc:
            raise ValueError(f"{where}: {exc}") from None
    return tuple(found)


def _spec_from_argument(build: Callable[..., Any], arg: inspect.Parameter) -> ParamSpec:
    annotation = _evaluate(build, arg.annotation)
    default, from_default = arg.default, None
    if isinstance(default, Param):  # units: int = tlkit.param(256, ge=1)
        default, from_default = default.default, default
    marker, text = None, ""
    if get_origin(annotation) is Annotated:
        annotation, *extras = get_args(annotation)
        for extra in extras:  # other libraries' metadata is left alone
            if isinstance(extra, str):
                text = extra
            elif isinstance(extra, Param):
                marker = _annotated_marker(build, arg.name, extra)
            elif isinstance(extra, ParamSpec):
                raise TypeError("tlkit.ParamSpec describes a whole parameter; Annotated takes the marker tlkit.Param")
    if from_default is not None and (from_default.has_rule or from_default.unknown):
        if marker is not None:
            raise TypeError("it has a tlkit.Param in its type and a tlkit.param(...) default: declare it once")
        marker = from_default
    marker = marker or Param()
    marker.check_keywords()
    kind, choices = marker.kind, marker.choices
    if not kind and annotation is not arg.empty:
        kind, literal = _kind_of(annotation)
        choices = choices or literal
    bounds = {name: getattr(marker, name) for name in BOUNDS}
    declared = ParamSpec(arg.name, default, help=marker.help or text, kind=kind, choices=choices, **bounds)
    # Checking the default also normalises it (a list becomes a tuple, 0 for a float 0.0).
    return dataclasses.replace(declared, default=declared.check(default))


def _annotated_marker(build: Callable[..., Any], name: str, marker: Param) -> Param:
    """A marker found in ``Annotated``; the old ``tlkit.param("help")`` there still means the help."""
    if marker.default is MISSING:
        return marker
    if not isinstance(marker.default, str) or marker.help:
        raise TypeError(
            "tlkit.param(default, ...) goes after `=`; in Annotated[type, ...] use tlkit.Param(help, ge=..., ...)"
        )
    code = getattr(inspect.unwrap(getattr(build, "func", build)), "__code__", None)
    warnings.warn_explicit(
        f"parameter {name!r}: tlkit.param({marker.default!r}) inside Annotated is deprecated; write "
        f"tlkit.Param({marker.default!r}, ...) there (tlkit.param's first argument is now the default value)",
        DeprecationWarning,
        filename=code.co_filename if code else "<build>",
        lineno=code.co_firstlineno if code else 0,
        module=getattr(build, "__module__", None) or "tlkit",
    )
    legacy = Param(marker.default, choices=marker.choices, kind=marker.kind, **{n: getattr(marker, n) for n in BOUNDS})
    object.__setattr__(legacy, "unknown", marker.unknown)
    return legacy


def _evaluate(build: Callable[..., Any], annotation: Any) -> Any:
    """A string annotation (``from __future__ import annotations``) as the type it names.

    Evaluated one parameter at a time in the build function's module, as
    ``typing.get_type_hints`` would do, so that an unrelated annotation (say
    ``features: keras.KerasTensor`` under ``TYPE_CHECKING``) cannot break it.
    """
    if not isinstance(annotation, str):
        return annotation
    target = inspect.unwrap(getattr(build, "func", build))  # functools.partial → the function
    return eval(annotation, dict(getattr(target, "__globals__", {})))


def _kind_of(annotation: Any) -> tuple[str, tuple[str, ...]]:
    """``(kind, choices)`` for a parameter's type."""
    if annotation in _TYPE_KINDS:
        return _TYPE_KINDS[annotation], ()
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal and args and all(isinstance(a, str) for a in args):
        return "str", tuple(args)
    if origin in _SEQUENCES and args and args[0] in (int, float) and all(a in (args[0], Ellipsis) for a in args):
        return ("ints" if args[0] is int else "floats"), ()
    raise ValueError(
        f"type {annotation!r} is not supported; use int, float, str, bool, Literal['a', 'b'], "
        f"tuple[int, ...] or tuple[float, ...]"
    )


def resolve_params(what: str, declared: tuple[ParamSpec, ...], given: Mapping[str, Any]) -> dict[str, Any]:
    """Merge user-given parameters over the declared defaults, checking each.

    ``what`` names the owner in error messages (e.g. ``"head 'mlp'"``).
    String values are parsed (they come from the command line); typed values
    (from a TOML config or the Python API) are checked as they are.
    """
    by_name = {p.name: p for p in declared}
    resolved = {p.name: p.default for p in declared}
    for key, raw in given.items():
        if key not in by_name:
            known = ", ".join(by_name) or "none"
            raise TlkitError(f"{what} has no parameter {key!r}{closest(key, by_name)} (its parameters: {known})")
        spec = by_name[key]
        try:
            resolved[key] = spec.parse(raw) if isinstance(raw, str) and spec.kind != "str" else spec.check(raw)
        except TlkitError as exc:
            raise TlkitError(f"{what}: {exc}") from None
    return resolved


__all__ = [
    "BOUNDS",
    "KINDS",
    "MISSING",
    "Param",
    "ParamSpec",
    "Rule",
    "param",
    "params_from_signature",
    "resolve_params",
]
