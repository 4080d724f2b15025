"""Plugin specs: cheap, frozen metadata plus a lazy builder.

A spec never imports TensorFlow or Keras itself; only calling its ``build``
function does.  That keeps ``tlkit list-bases`` and friends fast.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args, get_origin

from tlkit.errors import TlkitError

_PARAM_KINDS = ("int", "float", "str", "bool", "ints", "floats")


@dataclass(frozen=True)
class Param:
    """One user-settable parameter of a head or augmentation.

    ``kind`` is one of ``int``, ``float``, ``str``, ``bool``, ``ints`` or
    ``floats`` (the last two are comma-separated lists on the command line,
    e.g. ``units=512,256``).  ``choices`` restricts ``str`` values.
    """

    name: str
    default: Any
    help: str = ""
    kind: str = ""
    choices: tuple[str, ...] = ()
    min: float | None = None
    max: float | None = None

    def __post_init__(self) -> None:
        if not self.kind:
            object.__setattr__(self, "kind", _infer_kind(self.default))
        if self.kind not in _PARAM_KINDS:
            raise ValueError(f"Param {self.name!r}: unknown kind {self.kind!r}")

    def parse(self, text: str) -> Any:
        """Convert a command-line string into a checked value of this parameter."""
        try:
            if self.kind == "int":
                value: Any = int(text)
            elif self.kind == "float":
                value = float(text)
            elif self.kind == "bool":
                lowered = text.strip().lower()
                if lowered not in {"true", "false", "1", "0", "yes", "no"}:
                    raise ValueError(text)
                value = lowered in {"true", "1", "yes"}
            elif self.kind == "ints":
                value = tuple(int(part) for part in text.split(",") if part.strip())
            elif self.kind == "floats":
                value = tuple(float(part) for part in text.split(",") if part.strip())
            else:
                value = text
        except ValueError:
            raise TlkitError(f"parameter {self.name}={text!r} is not a valid {self.kind}") from None
        return self.check(value)

    def check(self, value: Any) -> Any:
        """Validate an already-typed value (e.g. one read from a config file)."""
        if self.kind in ("ints", "floats"):
            if isinstance(value, (int, float)):
                value = (value,)
            if not isinstance(value, (list, tuple)) or not value:
                raise TlkitError(f"parameter {self.name} needs a non-empty list of numbers")
            cast = int if self.kind == "ints" else float
            value = tuple(cast(item) for item in value)
            items = value
        elif self.kind == "float" and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
            items = (value,)
        else:
            expected = {"int": int, "float": float, "str": str, "bool": bool}[self.kind]
            if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
                raise TlkitError(f"parameter {self.name}={value!r} is not a valid {self.kind}")
            items = (value,)
        if self.choices and value not in self.choices:
            raise TlkitError(f"parameter {self.name}={value!r} must be one of: {', '.join(self.choices)}")
        for item in items:
            if self.min is not None and item < self.min:
                raise TlkitError(f"parameter {self.name}={item!r} must be >= {self.min}")
            if self.max is not None and item > self.max:
                raise TlkitError(f"parameter {self.name}={item!r} must be <= {self.max}")
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


@dataclass(frozen=True)
class ParamInfo:
    """Help and limits of a parameter declared in a ``build`` signature; made by :func:`param`."""

    help: str = ""
    kind: str = ""
    choices: tuple[str, ...] = ()
    min: float | None = None
    max: float | None = None


def param(
    help: str = "",
    *,
    choices: Iterable[str] = (),
    min: float | None = None,
    max: float | None = None,
    kind: str = "",
) -> ParamInfo:
    """Describe a head or augmentation parameter where its ``build`` function declares it.

    Put it in the parameter's ``Annotated`` type; the Python default is the
    parameter's default::

        def build(features, num_classes, *,
                  units: Annotated[int, tlkit.param("hidden width", min=1)] = 256,
                  pooling: Annotated[Literal["avg", "max"], "how to pool"] = "avg"):

    A plain string in ``Annotated`` is the help alone.  ``kind`` is needed only
    when the type does not say it (see :func:`params_from_signature`).
    """
    return ParamInfo(help, kind, tuple(choices), min, max)


_TYPE_KINDS: dict[Any, str] = {bool: "bool", int: "int", float: "float", str: "str"}
_SEQUENCES = (tuple, list, Sequence)


def params_from_signature(build: Callable[..., Any], what: str = "") -> tuple[Param, ...]:
    """The parameters (:class:`Param`) that ``build`` declares as keyword-only arguments.

    Each keyword-only argument (after ``*``) is one parameter: its default is
    the Python default, its kind comes from the type (``int``, ``float``,
    ``str``, ``bool``, ``Literal["a", "b"]`` (a ``str`` with those choices),
    ``tuple[int, ...]`` or ``tuple[float, ...]``; unannotated: inferred from the
    default), and its help and limits from a :func:`param` or a string in
    ``Annotated[type, ...]``.  The default is checked against them, so a bad
    declaration fails when the plugin registers, not when a user trains.
    ``what`` names the owner in errors (e.g. ``"head 'mlp'"``).
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
        if arg.default is arg.empty:
            raise ValueError(f"{owner}: parameter {arg.name!r} of build() needs a default value")
        try:
            found.append(_param_from_argument(build, arg))
        except (TlkitError, TypeError, ValueError, NameError, SyntaxError) as exc:
            raise ValueError(f"{owner}: parameter {arg.name!r} of build(): {exc}") from None
    return tuple(found)


def _param_from_argument(build: Callable[..., Any], arg: inspect.Parameter) -> Param:
    annotation = _evaluate(build, arg.annotation)
    info = ParamInfo()
    if get_origin(annotation) is Annotated:
        annotation, *extras = get_args(annotation)
        for extra in extras:
            if isinstance(extra, ParamInfo):
                info = extra
            elif isinstance(extra, str):
                info = dataclasses.replace(info, help=extra)
    kind, choices = info.kind, info.choices
    if not kind and annotation is not arg.empty:
        kind, literal = _kind_of(annotation)
        choices = choices or literal
    declared = Param(arg.name, arg.default, info.help, kind, choices, info.min, info.max)
    # Checking the default also normalises it (a list becomes a tuple, 0 for a float 0.0).
    return dataclasses.replace(declared, default=declared.check(arg.default))


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


def resolve_params(what: str, declared: tuple[Param, ...], given: Mapping[str, Any]) -> dict[str, Any]:
    """Merge user-given parameters over the declared defaults, checking each.

    ``what`` names the owner in error messages (e.g. ``"head 'mlp'"``).
    String values are parsed (they come from the command line); typed values
    (from a TOML config or the Python API) are checked as they are.
    """
    by_name = {p.name: p for p in declared}
    resolved = {p.name: p.default for p in declared}
    for key, raw in given.items():
        if key not in by_name:
            from tlkit.suggest import closest

            known = ", ".join(by_name) or "none"
            raise TlkitError(f"{what} has no parameter {key!r}{closest(key, by_name)} (its parameters: {known})")
        param = by_name[key]
        try:
            if isinstance(raw, str) and param.kind != "str":
                resolved[key] = param.parse(raw)
            else:
                resolved[key] = param.check(raw)
        except TlkitError as exc:
            raise TlkitError(f"{what}: {exc}") from None
    return resolved


def parse_assignments(text: str, what: str) -> dict[str, str]:
    """Parse ``k=v,k2=v2`` (a value may itself hold commas: ``units=512,256``)."""
    result: dict[str, str] = {}
    last = None
    for part in text.split(","):
        if "=" in part:
            key, _, value = part.partition("=")
            key = key.strip()
            if not key:
                raise TlkitError(f"{what}: empty parameter name in {text!r}; expected key=value")
            result[key] = value.strip()
            last = key
        elif last is not None and part.strip():
            result[last] += "," + part.strip()
        elif part.strip():
            raise TlkitError(f"{what}: {part.strip()!r} is not key=value (in {text!r})")
    return result


def parse_choice(text: str, what: str) -> tuple[str, dict[str, str]]:
    """Parse ``name`` or ``name:k=v,...`` (the ``--aug`` syntax)."""
    name, _, rest = text.partition(":")
    name = name.strip()
    if not name:
        raise TlkitError(f"{what}: missing name in {text!r}; expected NAME[:key=value,...]")
    return name, parse_assignments(rest, f"{what} {name!r}") if rest else {}


def format_choice(name: str, params: Mapping[str, Any]) -> str:
    """The inverse of :func:`parse_choice` for resolved parameters."""
    if not params:
        return name
    parts = []
    for key, value in params.items():
        if isinstance(value, (tuple, list)):
            value = ",".join(str(v) for v in value)
        elif isinstance(value, bool):
            value = "true" if value else "false"
        parts.append(f"{key}={value}")
    return f"{name}:{','.join(parts)}"


@dataclass(frozen=True)
class BaseSpec:
    """A pretrained backbone (``include_top=False``) that tlkit can freeze and train a head on.

    ``build(input_shape, weights)`` returns a headless ``keras.Model`` whose
    input is the *preprocessed* image; ``weights`` is ``"imagenet"`` or None.
    ``preprocess()`` returns the standard, serializable Keras layers that map
    raw 0–255 RGB pixels to what the base expects (an empty list when the base
    preprocesses inside itself).  Both import Keras lazily.

    ``weight_file_suffixes`` lists file suffixes (e.g. ``(".pth",)``) that
    ``build`` loads itself when ``weights`` is a path; any other weight file is
    loaded by tlkit with Keras's ``load_weights``.  ``locate_weights()``, when
    given, returns the local path of the ImageNet weights if they are available
    offline (None otherwise); without it tlkit looks for ``weights_file`` in
    Keras's cache.

    ``explain_layer`` names the layer inside the base whose feature map
    ``tlkit explain`` (Grad-CAM) explains; empty (the default) means the base's
    output, which is the last convolutional block of a headless
    ``keras.applications`` model.  Set it when the base ends in something else
    (a pooling, a projection) or a larger, earlier map explains better.
    """

    name: str
    build: Callable[..., Any]
    preprocess: Callable[[], list[Any]]
    description: str
    family: str = ""
    default_size: int = 224
    min_size: int = 32
    weights_sizes: tuple[int, ...] = ()
    params: int = 0
    preprocessing: str = ""
    weights_file: str = ""
    feature_shape: str = ""
    weight_file_suffixes: tuple[str, ...] = ()
    locate_weights: Callable[[], Any] | None = None
    explain_layer: str = ""
    plugin: str = ""

    def check_size(self, size: int, weights: str | None) -> None:
        """Refuse input sizes the base cannot take (or has no ImageNet weights for)."""
        if size < self.min_size:
            raise TlkitError(
                f"base {self.name!r} needs images of at least {self.min_size} px "
                f"(got --image-size {size}); default is {self.default_size}"
            )
        if weights == "imagenet" and self.weights_sizes and size not in self.weights_sizes:
            sizes = ", ".join(str(s) for s in self.weights_sizes)
            raise TlkitError(
                f"base {self.name!r} has ImageNet weights only for input sizes {sizes} "
                f"(got --image-size {size}); pick one of those or use --weights none"
            )


@dataclass(frozen=True)
class HeadSpec:
    """A classification head put on top of the frozen base.

    ``build(features, num_classes, *, <params>)`` receives the base's output
    tensor (a spatial feature map, shape ``(batch, h, w, c)``) and returns the
    softmax output tensor, using Keras functional code and standard layers.

    ``params`` are read from ``build``'s keyword-only arguments (see
    :func:`params_from_signature`) unless given explicitly; tlkit passes every
    one of them, resolved and checked, as a keyword argument.
    """

    name: str
    build: Callable[..., Any]
    description: str
    params: tuple[Param, ...] = ()
    plugin: str = ""

    def __post_init__(self) -> None:
        if not self.params:
            object.__setattr__(self, "params", params_from_signature(self.build, f"head {self.name!r}"))


@dataclass(frozen=True)
class AugmentationSpec:
    """A random image augmentation, active only while training.

    ``build(seed, *, <params>)`` returns one Keras layer (a preprocessing layer
    or a ``keras.Sequential`` of them) that maps a float batch of 0–255 pixels
    to a batch of the same shape, and is the identity when ``training=False``.
    ``params`` are read from ``build``'s keyword-only arguments, as for
    :class:`HeadSpec`.

    ``mixes_batch=True`` declares a batch-mixing augmentation (mixup, cutmix):
    it mixes images *and labels* within a training batch, so it cannot be a
    layer of the saved model.  Its ``build(seed, *, <params>)`` returns a
    function ``mix(images, labels, seed) -> (images, labels)`` of TensorFlow
    ops that tlkit applies in the training input pipeline, after batching:
    ``images`` float32 0–255 ``(b, h, w, 3)``, ``labels`` float32 one-hot
    ``(b, classes)``, ``seed`` a shape-``(2,)`` int64 tensor for
    ``tf.random.stateless_*`` ops (new for every batch, the same in every run
    with the same ``--seed``).  It returns the mixed images (same shape) and
    soft labels (each row still sums to 1).
    """

    name: str
    build: Callable[..., Any]
    description: str
    params: tuple[Param, ...] = ()
    plugin: str = ""
    mixes_batch: bool = False

    def __post_init__(self) -> None:
        if not self.params:
            object.__setattr__(self, "params", params_from_signature(self.build, f"augmentation {self.name!r}"))


Spec = BaseSpec | HeadSpec | AugmentationSpec


def with_plugin(spec: Spec, plugin: str) -> Spec:
    """Return a copy of ``spec`` stamped with the plugin that registered it."""
    return dataclasses.replace(spec, plugin=plugin)


__all__ = [
    "AugmentationSpec",
    "format_choice",
    "parse_assignments",
    "parse_choice",
    "BaseSpec",
    "HeadSpec",
    "Param",
    "ParamInfo",
    "param",
    "params_from_signature",
    "resolve_params",
    "with_plugin",
]
