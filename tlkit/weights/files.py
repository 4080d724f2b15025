"""Loading a user's Keras weight file (``--weights PATH``) into a base, strictly.

Keras 3 silently ignores layers a file has in excess and only warns about
some it cannot load; tlkit inspects the file with h5py first and refuses one
that does not fit, naming the first mismatching layer and both shapes.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

from tlkit.errors import TlkitError, first_line
from tlkit.registry.specs import BaseSpec

WEIGHT_FILE_SUFFIXES = (".weights.h5", ".h5")


def check_weight_file(base: BaseSpec, path: Path) -> None:
    """Refuse, without building anything, a weights file that is missing, unreadable or of a format
    neither Keras nor ``base`` reads.  (Whether its layers fit is checked by
    :func:`build_with_weight_file`.)  Nothing here imports TensorFlow."""
    own = tuple(base.weight_file_suffixes)
    accepted = ", ".join(WEIGHT_FILE_SUFFIXES + own)
    if not path.is_file():
        raise TlkitError(
            f"weights file {str(path)!r} does not exist; pass an existing weights file "
            f"({accepted}), 'imagenet' or 'none' to --weights"
        )
    try:
        with open(path, "rb") as fh:
            fh.read(1)
    except OSError as exc:
        raise TlkitError(
            f"weights file {str(path)!r} cannot be read ({exc.strerror or exc}); "
            f"check its permissions or pass another --weights"
        ) from None
    if own and path.name.lower().endswith(own):
        return  # the plugin reads its own format when it builds
    if not path.name.endswith(WEIGHT_FILE_SUFFIXES):
        also = f" nor a file base {base.name!r} reads itself ({', '.join(own)})" if own else ""
        raise TlkitError(
            f"weights file {str(path)!r} is not a Keras weights file ({', '.join(WEIGHT_FILE_SUFFIXES)}){also}"
        )
    _weight_file_layout(path, f"weights file {str(path)!r}")


def build_with_weight_file(base: BaseSpec, input_shape: tuple[int, int, int], path: Path):
    """Build ``base`` with random weights, then load a Keras weight file into it, strictly.

    The file is inspected with h5py first: a file that is not HDF5, or whose
    layers or weight shapes do not match the model, is refused with a message
    naming the first mismatching layer.  Warnings Keras raises while loading
    (which would otherwise leave some layers at their random initial values)
    are errors too.  Suffixes in ``base.weight_file_suffixes`` go to the
    plugin's own ``build``.
    """
    own = tuple(base.weight_file_suffixes)
    accepted = ", ".join(WEIGHT_FILE_SUFFIXES + own)
    if not path.is_file():
        raise TlkitError(
            f"weights file {str(path)!r} does not exist; pass an existing weights file "
            f"({accepted}), 'imagenet' or 'none' to --weights"
        )
    if own and path.name.lower().endswith(own):
        return base.build(input_shape, str(path))  # the plugin reads its own format
    if not path.name.endswith(WEIGHT_FILE_SUFFIXES):
        also = f" nor a file base {base.name!r} reads itself ({', '.join(own)})" if own else ""
        raise TlkitError(
            f"weights file {str(path)!r} is not a Keras weights file ({', '.join(WEIGHT_FILE_SUFFIXES)}){also}"
        )
    label = f"weights file {str(path)!r}"
    layout = _weight_file_layout(path, label)
    model = base.build(input_shape, None)
    try:
        problem = _weight_file_mismatch(model, path, layout)
    except (OSError, KeyError, ValueError, TypeError, AttributeError) as exc:
        raise TlkitError(f"{label} is not a readable HDF5 weights file ({first_line(exc, 200)})") from exc
    if problem:
        raise TlkitError(f"{label} does not fit base {base.name!r}: {problem}")
    _load_weights_strictly(model, path, layout, f"{label} does not fit base {base.name!r}")
    return model


def _weight_file_layout(path: Path, label: str) -> str:
    """``"keras3"`` (``model.save_weights``'s ``.weights.h5``) or ``"legacy"`` (Keras 2 ``.h5``)."""
    import h5py  # lazy: h5py only when a .h5 weight file is inspected

    try:
        with h5py.File(path, "r") as f:
            if "layer_names" in f.attrs:
                return "legacy"
            if "model_weights" in f and "layer_names" in f["model_weights"].attrs:
                return "legacy"  # a whole Keras 2 model saved as .h5
            if "layers" in f or "vars" in f or "_layer_checkpoint_dependencies" in f:
                return "keras3"
    except (OSError, KeyError, ValueError) as exc:
        raise TlkitError(
            f"{label} is not a readable HDF5 weights file ({first_line(exc, 200)}); "
            f"pass a file written by model.save_weights(...) (.weights.h5) or a Keras .h5 weights file"
        ) from exc
    raise TlkitError(
        f"{label} is an HDF5 file but holds no Keras weights (no 'layers' group as "
        f"model.save_weights writes, no 'layer_names' attribute as legacy .h5 files have)"
    )


def _shape_text(shape) -> str:
    return str(tuple(int(d) for d in shape))


def _own_variables(layer) -> list:
    """The variables a layer saves itself (not its sub-layers'), in Keras's saving order."""
    return list(getattr(layer, "_trainable_variables", [])) + list(getattr(layer, "_non_trainable_variables", []))


def _is_graph_model(layer) -> bool:
    try:
        return layer._obj_type() in ("Functional", "Sequential")
    except Exception:
        return False


def _snake_case(name: str) -> str:
    # keras.src.utils.naming.to_snake_case: how .weights.h5 names container entries.
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    name = re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()
    return name if name[0] != "_" else "private" + name


def _compare_layer(layer, what: str, model_vars: list, file_shapes: list[tuple]) -> str | None:
    """The first difference between a layer's variables and the file's arrays for it, or None."""
    model_shapes = [tuple(int(d) for d in v.shape) for v in model_vars]
    name = f"layer {layer.name!r}{what}"
    if not file_shapes:
        listed = ", ".join(f"{v.name} {_shape_text(v.shape)}" for v in model_vars)
        return f"{name} has no weights in the file (the model has {listed})"
    if len(model_shapes) != len(file_shapes):
        listed = ", ".join(f"{v.name} {_shape_text(v.shape)}" for v in model_vars)
        in_file = ", ".join(str(s) for s in file_shapes)
        return f"{name} has weights {listed} in the model but {in_file} in the file"
    for var, model_shape, file_shape in zip(model_vars, model_shapes, file_shapes):
        if model_shape != file_shape:
            return f"{name} {var.name} has shape {model_shape} in the model but {file_shape} in the file"
    return None


def _weight_file_mismatch(model, path: Path, layout: str) -> str | None:
    """Why the file at ``path`` does not fit ``model`` (first mismatch), or None if it fits."""
    import h5py  # lazy: h5py only when a .h5 weight file is inspected

    with h5py.File(path, "r") as f:
        if layout == "legacy":
            return _legacy_mismatch(model, f)
        return _keras3_mismatch(model, f)


def _keras3_mismatch(model, f) -> str | None:
    # model.save_weights walks Functional/Sequential models' ``layers`` and stores
    # each layer's own variables at layers/<snake_case class name>[_N]/vars/<i>
    # (numbered per class, in layer order — not by layer name).
    layers_key = "layers"
    if "layers" not in f and "_layer_checkpoint_dependencies" in f:
        layers_key = "_layer_checkpoint_dependencies"  # files from Keras 2.13

    def file_shapes(inner: str) -> list[tuple]:
        key = f"{inner}/vars" if inner else "vars"
        if key not in f:
            return []
        group = f[key]
        return [tuple(int(d) for d in group[k].shape) for k in sorted(group, key=_numeric_key)]

    expected: list[tuple[Any, str]] = []  # (layer, inner path) of every layer with variables
    file_layers: list[str] = []  # inner paths the file has variables at, on the same levels

    def walk(layer, inner: str) -> None:
        if _own_variables(layer):
            expected.append((layer, inner))
        if not _is_graph_model(layer):
            return
        prefix = f"{inner}/{layers_key}" if inner else layers_key
        if prefix in f:
            for key in f[prefix]:
                if file_shapes(f"{prefix}/{key}"):
                    file_layers.append(f"{prefix}/{key}")
        used: dict[str, int] = {}
        for child in layer.layers:
            base_name = _snake_case(type(child).__name__)
            if base_name in used:
                used[base_name] += 1
                name = f"{base_name}_{used[base_name]}"
            else:
                used[base_name] = 0
                name = base_name
            walk(child, f"{prefix}/{name}")

    walk(model, "")
    if file_shapes(""):
        file_layers.insert(0, "")
    in_file = len(file_layers)
    counts = ""
    if in_file != len(expected):
        counts = f"the file has {in_file} layers with weights, the model {len(expected)}"
        known = {inner for _layer, inner in expected}
        extra = next((key for key in file_layers if key not in known), None)
        if extra and in_file > len(expected):
            counts += f"; {extra!r} in the file has no counterpart in the model"
    for layer, inner in expected:
        problem = _compare_layer(layer, "", _own_variables(layer), file_shapes(inner))
        if problem:
            return f"{problem} ({counts})" if counts else problem
    return counts or None


def _numeric_key(key: str):
    return (0, int(key), "") if key.isdigit() else (1, 0, key)


def _h5_names(group, name: str) -> list[str]:
    """A (possibly chunked: name0, name1, ...) string-list attribute of a legacy .h5 group."""
    if name in group.attrs:
        values = list(group.attrs[name])
    else:
        values, chunk = [], 0
        while f"{name}{chunk}" in group.attrs:
            values.extend(group.attrs[f"{name}{chunk}"])
            chunk += 1
    return [v.decode("utf8") if hasattr(v, "decode") else str(v) for v in values]


def _legacy_mismatch(model, f) -> str | None:
    # Legacy .h5 files (keras.applications' *_notop.h5) are loaded by order:
    # the k-th layer with weights in the file goes into the k-th in the model.
    group = f if "layer_names" in f.attrs else f["model_weights"]
    saved = []
    for name in _h5_names(group, "layer_names"):
        weight_names = _h5_names(group[name], "weight_names")
        if weight_names:
            saved.append((name, [tuple(int(d) for d in group[name][w].shape) for w in weight_names]))
    layers = [
        (layer, layer.trainable_weights + layer.non_trainable_weights)
        for layer in model.layers
        if layer.trainable_weights + layer.non_trainable_weights
    ]
    counts = ""
    if len(saved) != len(layers):
        counts = f"the file has {len(saved)} layers with weights, the model {len(layers)}"
    for (file_name, shapes), (layer, variables) in zip(saved, layers):
        what = f" (layer {file_name!r} in the file)" if file_name != layer.name else ""
        problem = _compare_layer(layer, what, variables, shapes)
        if problem:
            return f"{problem} ({counts})" if counts else problem
    return counts or None


def _load_weights_strictly(model, path: Path, layout: str, refusal: str) -> None:
    """``model.load_weights`` with Keras's loading warnings turned into a TlkitError."""
    # Keras picks the reader from the suffix; a file whose content is the other
    # format is loaded through a link with the right suffix.
    wanted = ".weights.h5" if layout == "keras3" else ".h5"
    named_right = path.name.endswith(".weights.h5") == (layout == "keras3")
    with tempfile.TemporaryDirectory(prefix="tlkit-weights-") as tmp:
        source = path
        if not named_right:
            source = Path(tmp) / f"weights{wanted}"
            try:
                os.symlink(path.resolve(), source)
            except OSError:
                shutil.copyfile(path, source)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                model.load_weights(str(source))
            except Exception as exc:
                raise TlkitError(f"{refusal}: {first_line(exc, 200)}") from exc
    problems = []
    for warning in caught:
        from_keras = f"{os.sep}keras{os.sep}" in (warning.filename or "")
        if issubclass(warning.category, UserWarning) and from_keras:
            problems.append(warning)
        elif not issubclass(warning.category, DeprecationWarning):
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    if problems:
        raise TlkitError(
            f"{refusal}: Keras could not load every layer ({first_line(str(problems[0].message), 200)}"
            + (f"; and {len(problems) - 1} more warnings" if len(problems) > 1 else "")
            + ")"
        )
