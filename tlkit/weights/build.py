"""A base built with its weights: ImageNet (downloaded by Keras, or an actionable offline message), a user's file, or none."""

from __future__ import annotations

from pathlib import Path

from tlkit.errors import TlkitError, first_line
from tlkit.io.tfenv import import_tensorflow
from tlkit.registry.specs import BaseSpec
from tlkit.weights.files import build_with_weight_file
from tlkit.weights.local import download_size, keras_cache_dir, keras_download_dirs, locate


def _offline_message(base: BaseSpec, reason: str) -> str:
    cache = keras_cache_dir()
    return (
        f"could not get ImageNet weights for base {base.name!r} ({reason}). "
        f"To proceed: on a machine with internet run "
        f"`tlkit train --base {base.name} --weights imagenet ...` (or build the Keras model once) "
        f"and copy {base.weights_file or 'the weight file'} into {cache}/ here; "
        f"or pass --weights PATH to a local .weights.h5/.h5 file; "
        f"or use --weights none to start from random weights"
    )


def build_base(base: BaseSpec, image_size: int, weights: str | None):
    """Build the headless base with ``weights``: ``"imagenet"``, ``None``, a file path, or a folder or
    hub handle the base reads itself."""
    input_shape = (image_size, image_size, 3)
    if weights is None or weights == "none":
        return base.build(input_shape, None)
    if weights == "imagenet":
        try:
            return base.build(input_shape, "imagenet")
        except TlkitError:
            raise
        except Exception as exc:  # Keras raises a bare Exception on download failure
            reason = first_line(exc, 160)
            raise TlkitError(_offline_message(base, reason)) from exc
    if "://" in weights or Path(weights).is_dir():
        # A hub handle or a weights folder, which config.resolve let through only for a base that
        # declares it reads them (BaseSpec.weight_schemes / weight_folders): the plugin reads it.
        return base.build(input_shape, weights)
    return build_with_weight_file(base, input_shape, Path(weights))


def fetch(spec: BaseSpec) -> Path:
    """Make ``spec``'s ImageNet weights local and return their path.

    Already local: no network, no TensorFlow.  Otherwise the base is built
    once with ``weights="imagenet"`` so Keras downloads the file into its cache
    (with its own progress bar); offline this raises the builder's TlkitError,
    which says how to proceed.
    """
    found = locate(spec)
    if found is not None:
        return found
    if not spec.weights_file and spec.locate_weights is None:
        raise TlkitError(
            f"base {spec.name!r} (plugin {spec.plugin or '?'}) does not say which file holds "
            f"its ImageNet weights (no weights_file or locate_weights in its BaseSpec), so tlkit "
            f"cannot download or bundle them; ask the plugin's author to declare one"
        )
    import_tensorflow()
    import keras  # lazy: building a base loads Keras; listing and status never do

    build_base(spec, download_size(spec), "imagenet")
    keras.backend.clear_session()
    found = locate(spec)
    if found is None and spec.weights_file and spec.locate_weights is None:
        found = next(
            (d / spec.weights_file for d in keras_download_dirs() if (d / spec.weights_file).is_file()),
            None,
        )
    if found is None:
        raise TlkitError(
            f"base {spec.name!r} was built with ImageNet weights, but its weight file "
            f"{spec.weights_file or '(unnamed)'} is not in {keras_cache_dir()}; if KERAS_HOME was "
            f"changed while tlkit ran, set it before starting tlkit"
        )
    return found


__all__ = ["build_base", "fetch"]
