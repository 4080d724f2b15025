"""Plugin specs: cheap, frozen metadata plus a lazy builder.

A spec never imports TensorFlow or Keras itself; only calling its ``build``
function does.  That keeps ``tlkit list-bases`` and friends fast.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tlkit.errors import TlkitError
from tlkit.registry.params import MISSING, Param, ParamSpec, param, params_from_signature, resolve_params

# The parameters of a head or augmentation (ParamSpec, and the Param marker that declares one)
# live in tlkit.registry.params; they are imported here for the code that knew them from here.


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

    ``param_count`` is ``count_params()`` of the headless model (what
    ``tlkit list-bases`` shows); the old keyword ``params=`` still sets it,
    with a DeprecationWarning (a head's ``params`` are its parameters).

    ``explain_layer`` names the layer inside the base whose feature map
    ``tlkit explain`` (Grad-CAM) explains; empty (the default) means the base's
    output, which is the last convolutional block of a headless
    ``keras.applications`` model.  Set it when the base ends in something else
    (a pooling, a projection) or a larger, earlier map explains better.

    Weights that are not one file (a model hub's checkpoints): ``weight_folders``
    says ``build`` reads a weights *folder* itself (``--weights DIR``);
    ``weight_schemes`` lists the handle schemes it reads (``("kaggle", "hf")``
    for ``--weights kaggle://…`` or ``hf://…``).  ``check_weights(weights)``, when
    given, is called with every ``--weights`` value but ``imagenet`` and
    ``none`` while the configuration is resolved (before any work; it must not
    import TensorFlow) and raises :class:`TlkitError` when they do not fit the
    base.  ``weights_source`` says where the pretrained (``imagenet``) weights
    come from, e.g. a hub handle (``tlkit info`` shows it).
    """

    name: str
    build: Callable[..., Any]
    preprocess: Callable[[], list[Any]]
    description: str
    family: str = ""
    default_size: int = 224
    min_size: int = 32
    weights_sizes: tuple[int, ...] = ()
    param_count: int = 0
    preprocessing: str = ""
    weights_file: str = ""
    feature_shape: str = ""
    weight_file_suffixes: tuple[str, ...] = ()
    locate_weights: Callable[[], Any] | None = None
    explain_layer: str = ""
    weight_folders: bool = False
    weight_schemes: tuple[str, ...] = ()
    check_weights: Callable[[str], None] | None = None
    weights_source: str = ""
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

    @property
    def params(self) -> int:
        """Deprecated: the parameter count is :attr:`param_count`."""
        warnings.warn(_PARAMS_RENAMED, DeprecationWarning, stacklevel=2)
        return self.param_count


_PARAMS_RENAMED = (
    "BaseSpec.params (the parameter count) is now BaseSpec.param_count, so that it is not confused "
    "with HeadSpec.params and AugmentationSpec.params (the parameters)"
)


def _accept_params_keyword(init: Callable[..., None]) -> Callable[..., None]:
    """``BaseSpec(..., params=N)``, the old keyword of ``param_count``, still works, with a DeprecationWarning."""

    @functools.wraps(init)
    def __init__(self: BaseSpec, *args: Any, params: Any = MISSING, **kwargs: Any) -> None:
        if params is not MISSING:
            warnings.warn(_PARAMS_RENAMED, DeprecationWarning, stacklevel=2)
            if "param_count" in kwargs:
                raise TypeError("BaseSpec: give param_count (params is its deprecated name), not both")
            kwargs["param_count"] = params
        init(self, *args, **kwargs)

    return __init__


BaseSpec.__init__ = _accept_params_keyword(BaseSpec.__init__)  # type: ignore[method-assign]


@dataclass(frozen=True)
class HeadSpec:
    """A classification head put on top of the frozen base.

    ``build(features, num_classes, *, <params>)`` receives the base's output
    tensor (a spatial feature map, shape ``(batch, h, w, c)``) and returns the
    softmax output tensor, using Keras functional code and standard layers.

    ``params`` (:class:`~tlkit.registry.params.ParamSpec` records) are read
    from ``build``'s keyword-only arguments (see :func:`params_from_signature`)
    unless given explicitly; tlkit passes every one of them, resolved and
    checked, as a keyword argument.
    """

    name: str
    build: Callable[..., Any]
    description: str
    params: tuple[ParamSpec, ...] = ()
    plugin: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", _declared_params(self, f"head {self.name!r}"))


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
    params: tuple[ParamSpec, ...] = ()
    plugin: str = ""
    mixes_batch: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", _declared_params(self, f"augmentation {self.name!r}"))


@dataclass(frozen=True)
class TrackerSpec:
    """An experiment tracker: where ``--track NAME`` reports a run, a study's trials and evaluations.

    ``build(*, uri, register_model, **options)`` returns a :class:`tlkit.Tracker` (an observer of
    the run's events); ``uri`` is ``--track-uri`` and ``register_model`` is ``--register-model``
    (``""`` when not given).  It imports the tracker's library itself, so listing trackers stays
    light.

    ``requires`` names the module ``build`` imports (e.g. ``"mlflow"``); ``install`` is what to
    ``pip install`` when it is missing (e.g. ``"tlkit[mlflow]"``).  A run asking for a tracker
    whose module is not installed is refused before any work, with that command.
    """

    name: str
    build: Callable[..., Any]
    description: str
    requires: str = ""
    install: str = ""
    plugin: str = ""

    @property
    def available(self) -> bool:
        """True when ``requires`` is importable (checked without importing it)."""
        if not self.requires:
            return True
        try:
            return importlib.util.find_spec(self.requires) is not None
        except (ImportError, ValueError):
            return False

    def check_available(self) -> None:
        """A one-line TlkitError saying what to install when ``requires`` is missing."""
        if not self.available:
            raise TlkitError(
                f'--track {self.name} needs {self.requires}: pip install "{self.install or self.requires}"'
            )


def _declared_params(spec: HeadSpec | AugmentationSpec, what: str) -> tuple[ParamSpec, ...]:
    """The spec's explicit ``params`` (which must be ParamSpec records), else those of its ``build`` signature."""
    if not spec.params:
        return params_from_signature(spec.build, what)
    for declared in spec.params:
        if not isinstance(declared, ParamSpec):
            raise TypeError(
                f"{what}: params holds {declared!r}; give tlkit.ParamSpec(name, default, ...) records "
                "(tlkit.Param is the marker of a build() signature)"
            )
    return tuple(spec.params)


Spec = BaseSpec | HeadSpec | AugmentationSpec | TrackerSpec


def safe_name(name: str) -> str:
    """``name`` with every run of characters other than ``A-Za-z0-9_.-`` replaced by ``_``: usable in a
    file name and a Keras layer name (a base a plugin resolves, such as ``hub:kaggle://…``, holds ``:``
    and ``/``).  Registered names come back unchanged."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


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
    "ParamSpec",
    "param",
    "params_from_signature",
    "resolve_params",
    "safe_name",
    "TrackerSpec",
    "with_plugin",
]
