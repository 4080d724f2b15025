"""Explanations: Grad-CAM heatmaps of where in an image the model found its class.

>>> result = tlkit.explain("runs/20261128-101500-mobilenet_v2-dense256", ["photos/"], output="why")
>>> for e in result.explanations:
...     print(e.path, e.label, e.prob, e.file)     # why/<image>-gradcam.png

Grad-CAM (Selvaraju et al., 2017) weighs each channel of a convolutional
feature map by the mean gradient of the class's score over the map, sums
the channels, keeps the positive part and normalises it to 0…1: the bright
regions are those that raised the score.  The feature map is the base's
output (the last convolutional block of every headless ``keras.applications``
base), or the layer a base's spec names in ``BaseSpec.explain_layer``.

The class's score is its log-probability minus the mean log-probability of
all classes, which equals its logit minus the mean logit: what the softmax
output determines exactly, with no saturation when the model is sure (for a
multi-label run's sigmoid outputs: the label's logit, ``log p − log(1 − p)``).

:func:`explain` writes one overlay PNG per image (the heatmap in colour over
the image, at the image's own size) and ``explanations.json`` (an index) into
a new folder, published whole (written to a temporary folder beside it and
renamed), so a folder that exists is complete.  :func:`explain_mistakes` is
what the HTML report uses for its "Why these mistakes" figure.

TensorFlow is imported only when a model is run.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from tlkit.data.decode import none_readable_message
from tlkit.errors import TlkitError
from tlkit.evaluation.evaluate import thumbnail
from tlkit.evaluation.figures import heatmap_overlay
from tlkit.inference.prediction import decoded_batches, open_model, resolve_paths
from tlkit.io.files import publish_folder, staging_folder, write_json
from tlkit.model.builder import base_layer
from tlkit.registry.manager import get_registry
from tlkit.suggest import closest
from tlkit.version import __version__

__all__ = ["INDEX", "ExplainResult", "Explanation", "GradCam", "explain", "explain_mistakes", "explanation_layer"]

INDEX = "explanations.json"
"""The index file in an ``explain`` output folder."""

SUFFIX = "-gradcam.png"
"""Each overlay is ``<image stem>-gradcam.png`` (``-2``, ``-3`` … added when two images share a stem)."""

MAX_OVERLAY_SIZE = 1024
"""Overlays keep the image's size, shrunk (aspect kept) to at most this many pixels on the longest side."""


# --------------------------------------------------------------------------- results


@dataclass
class Explanation:
    """One image's Grad-CAM: the class explained, what the model predicted, the heatmap and its overlay file."""

    path: str
    label: str  # the class explained (the predicted one unless a class was asked for)
    prob: float  # the model's probability of ``label``
    predicted: str
    predicted_prob: float
    heatmap: np.ndarray  # (h, w) float32 in 0…1, at the explained feature map's resolution
    file: str | None = None  # the overlay PNG, when written

    def as_dict(self) -> dict[str, Any]:
        return {
            "image": self.path,
            "label": self.label,
            "prob": self.prob,
            "predicted": self.predicted,
            "predicted_prob": self.predicted_prob,
            "file": Path(self.file).name if self.file else None,
        }


@dataclass
class ExplainResult:
    """What :func:`explain` did: an :class:`Explanation` per readable image, and what it skipped."""

    model: str
    run_dir: str | None
    layer: str  # "<base model name>/<layer name>"
    class_name: str | None  # the class asked for, or None (each image's predicted class)
    explanations: list[Explanation] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)  # unreadable images: path, reason
    notes: list[str] = field(default_factory=list)
    output: Path | None = None
    seconds: float = 0.0

    @property
    def index(self) -> Path | None:
        """``explanations.json`` in the output folder (None when nothing was written)."""
        return self.output / INDEX if self.output else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "run_dir": self.run_dir,
            "method": "grad-cam",
            "layer": self.layer,
            "class": self.class_name,
            "images": [e.as_dict() for e in self.explanations],
            "skipped_images": list(self.skipped),
            "notes": list(self.notes),
            "seconds": round(self.seconds, 2),
            "tlkit_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }


# --------------------------------------------------------------------------- Grad-CAM on a tlkit model


def explanation_layer(config: dict[str, Any]) -> tuple[str, str | None]:
    """``(layer, note)``: the base spec's ``explain_layer`` for a run's ``config`` ("" = the base's output).

    When the run's base is not registered here (its plugin is not installed)
    the base's output is used, and ``note`` says so.
    """
    name = config.get("base")
    if not name:
        return "", None

    try:
        return get_registry().base(str(name)).explain_layer, None
    except TlkitError:
        return "", f"base {name!r} is not registered here: explaining the base's output feature map"


class GradCam:
    """Grad-CAM of a tlkit model (``raw pixels → augmentation → preprocessing → base → head``).

    ``model`` is a model :mod:`tlkit.model.builder` assembled, or its ``model.keras``
    loaded back; ``layer`` a layer inside the base ("" = the base's output).
    ``multi_label``: the model ends in a sigmoid (one independent probability
    per label); the score of label c is then its logit, ``log p_c − log(1 − p_c)``.
    Calling it on uint8 pixels ``(n, size, size, 3)`` returns
    ``(heatmaps (n, h, w) in 0…1, probabilities (n, classes), class indices (n,))``.

    Raises:
        TlkitError: ``model`` has no base and head to explain, or ``layer`` is not in the base.
    """

    def __init__(self, model: Any, layer: str = "", *, multi_label: bool = False) -> None:
        import keras  # lazy: Keras imports TensorFlow; only running Grad-CAM needs it

        self.model = model
        self.backbone = base_layer(model)
        stages = [lyr for lyr in model.layers if not isinstance(lyr, keras.layers.InputLayer)]
        if self.backbone is None or self.backbone not in stages:
            raise TlkitError(
                f"model {getattr(model, 'name', '?')!r} has no nested base model to explain; Grad-CAM "
                "needs a model made by tlkit (raw pixels → preprocessing → base → head)"
            )
        at = stages.index(self.backbone)
        self.before, self.after = stages[:at], stages[at + 1 :]
        if not self.after:
            raise TlkitError(f"model {model.name!r} has nothing after its base: no head to explain")
        self.layer = layer
        self.multi_label = multi_label
        self.inner = None
        if layer:
            try:
                target = self.backbone.get_layer(layer)
            except ValueError:
                names = [lyr.name for lyr in self.backbone.layers]
                raise TlkitError(
                    f"explain layer {layer!r} is not a layer of base {self.backbone.name!r}"
                    f"{closest(layer, names)} (its last layers: {', '.join(names[-4:])})"
                ) from None
            self.inner = keras.Model(self.backbone.inputs, [target.output, self.backbone.output])

    @property
    def map_size(self) -> tuple[int | None, int | None]:
        """``(height, width)`` of the explained feature map at the model's input size (None if unknown)."""
        tensor = self.inner.outputs[0] if self.inner is not None else self.backbone.output
        shape = tuple(tensor.shape)
        return (shape[1], shape[2]) if len(shape) == 4 else (None, None)

    @property
    def layer_name(self) -> str:
        """``<base model>/<layer>``, the feature map explained."""
        inner = self.layer or self.backbone.layers[-1].name
        return f"{self.backbone.name}/{inner}"

    def __call__(self, pixels: np.ndarray, class_index: int | None = None) -> tuple[np.ndarray, ...]:
        import tensorflow as tf  # lazy: Keras imports TensorFlow; only running Grad-CAM needs it

        x = tf.convert_to_tensor(np.asarray(pixels, dtype=np.float32))
        with tf.GradientTape(watch_accessed_variables=False) as tape:  # only what is watched below
            for stage in self.before:  # augmentation (identity at inference) and preprocessing
                x = stage(x, training=False)
            if self.inner is None:
                maps = features = self.backbone(x, training=False)
                tape.watch(maps)
            else:
                tape.watch(x)  # records the base, so the gradient can stop at an inner layer
                maps, features = self.inner(x, training=False)
            probs = features
            for stage in self.after:
                probs = stage(probs, training=False)
            probs = tf.cast(probs, tf.float32)
            if class_index is None:
                target = tf.argmax(probs, axis=-1, output_type=tf.int32)
            else:
                target = tf.fill([tf.shape(probs)[0]], tf.constant(class_index, tf.int32))
            chosen = tf.gather(probs, target, batch_dims=1)
            if self.multi_label:  # sigmoid: log p − log(1 − p) is the label's logit
                score = tf.math.log(tf.maximum(chosen, 1e-30)) - tf.math.log(tf.maximum(1.0 - chosen, 1e-30))
            else:  # softmax: log p_c − mean_j log p_j == z_c − mean_j z_j, the logit up to what softmax hides
                log_probs = tf.math.log(tf.maximum(probs, 1e-30))
                score = tf.gather(log_probs, target, batch_dims=1) - tf.reduce_mean(log_probs, axis=-1)
            total = tf.reduce_sum(score)  # images are independent (inference mode): one gradient call
        grads = tape.gradient(total, maps)
        if grads is None:
            raise TlkitError(f"no gradient reaches {self.layer_name}: it does not feed the model's output")
        maps = tf.cast(maps, tf.float32).numpy()
        grads = tf.cast(grads, tf.float32).numpy()
        if maps.ndim != 4:
            raise TlkitError(
                f"{self.layer_name} gives a {maps.ndim - 1}-d output, not a (height, width, channels) "
                "feature map; name a convolutional layer in the base spec's explain_layer"
            )
        weights = grads.mean(axis=(1, 2), keepdims=True)
        signed = (weights * maps).sum(axis=-1)
        cams = np.maximum(signed, 0.0)
        peaks = cams.max(axis=(1, 2), keepdims=True)
        # Positive rounding noise next to large negative evidence is no evidence: it would be stretched to 1.
        scale = np.abs(signed).max(axis=(1, 2), keepdims=True)
        shown = peaks > np.maximum(1e-4 * scale, 1e-12)
        cams = np.divide(cams, peaks, out=np.zeros_like(cams), where=shown).astype(np.float32)
        return cams, probs.numpy().astype(np.float64), target.numpy()


# --------------------------------------------------------------------------- explain


def _check_output(output: Path) -> None:
    if output.exists() and not output.is_dir():
        raise TlkitError(f"--output {output} is a file; pass a new folder for the explanations")
    if output.is_dir() and any(output.iterdir()):
        raise TlkitError(
            f"--output {output} already exists and is not empty; pass a new folder (explanations are "
            "never written over earlier ones)"
        )


def _open(run_or_model: str | Path, model: Any) -> Any:
    source = open_model(run_or_model, model=model)
    import keras  # lazy: Keras imports TensorFlow; only running Grad-CAM needs it

    if not isinstance(source.model, keras.Model):
        raise TlkitError(
            f"{source.model_path} is an exported model; Grad-CAM needs the Keras model: pass the run "
            "directory or its .keras file"
        )
    return source


def _class_index(classes: Sequence[str], class_name: str | None) -> int | None:
    if class_name is None:
        return None
    if class_name in classes:
        return list(classes).index(class_name)

    raise TlkitError(
        f"--class {class_name!r} is not one of the model's {len(classes)} classes"
        f"{closest(class_name, classes)} (classes: {', '.join(list(classes)[:20])}"
        f"{' …' if len(classes) > 20 else ''})"
    )


def _original(path: Path, fallback: np.ndarray, size: int = MAX_OVERLAY_SIZE) -> np.ndarray:
    """The image as a person sees it (EXIF-oriented RGB, at most ``size`` px), else ``fallback``."""
    try:
        return thumbnail(path, size)
    except Exception:  # noqa: BLE001 - it was readable a moment ago; the model's view will do
        return fallback


def _file_name(path: Path, used: set[str]) -> str:
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in path.stem) or "image"
    name, n = f"{stem}{SUFFIX}", 1
    while name.lower() in used:
        n += 1
        name = f"{stem}-{n}{SUFFIX}"
    used.add(name.lower())
    return name


def _publish(staging: Path, output: Path) -> None:
    """Rename the finished ``staging`` folder to ``output`` (an empty ``output`` is replaced)."""
    _check_output(output)  # again, for its messages: another process may have filled it meanwhile
    publish_folder(
        staging,
        output,
        numbered=False,
        taken=f"--output {output} already exists and is not empty; pass a new folder (explanations are "
        "never written over earlier ones)",
    )


def explain(
    run_or_model: str | Path,
    images: Iterable[str | Path] | str | Path,
    *,
    output: str | Path | None = None,
    class_name: str | None = None,
    layer: str | None = None,
    batch_size: int = 16,
    model: Any = None,
) -> ExplainResult:
    """Grad-CAM heatmaps of images under a run's model; an :class:`ExplainResult`.

    Args:
        run_or_model: a run directory (or a ``.keras`` model file made by tlkit).
        images: files, folders (searched recursively) and globs, as for :func:`tlkit.predict`.
        output: a new (or empty) folder for one ``<image>-gradcam.png`` overlay per
            image and ``explanations.json``; None computes the heatmaps only.
        class_name: explain this class for every image (default: each image's predicted class).
        layer: a layer of the base to explain instead of the one the base spec
            declares (``BaseSpec.explain_layer``; default the base's output).
        batch_size: images per model call.
        model: an already loaded ``keras.Model`` to use instead of loading the file.

    Unreadable images are skipped and listed in ``skipped``.

    Raises:
        TlkitError: not a run or model, an exported model, an unknown class or
            layer, ``output`` not a new folder, no image found or none readable.
    """
    started = time.perf_counter()
    if isinstance(images, (str, Path)):
        images = [images]
    images = list(images)
    if batch_size < 1:
        raise TlkitError(f"--batch-size (batch_size) must be at least 1, got {batch_size}")
    target = Path(output).expanduser() if output is not None else None
    if target is not None:
        _check_output(target)
    source = _open(run_or_model, model)
    index = _class_index(source.classes, class_name)
    paths = list(resolve_paths(images))
    if not paths:
        shown = " ".join(str(p) for p in images[:5]) + (" …" if len(images) > 5 else "")
        raise TlkitError(f"no image files to explain: {shown or '(no paths given)'} matched nothing")
    notes = list(source.notes)
    if layer is None:
        layer, note = explanation_layer(source.config)
        if note:
            notes.append(note)
    cam = GradCam(source.model, layer, multi_label=bool(source.config.get("multi_label")))
    result = ExplainResult(
        model=str(source.model_path),
        run_dir=str(source.run_dir) if source.run_dir else None,
        layer=cam.layer_name,
        class_name=class_name,
        notes=notes,
    )
    with contextlib.ExitStack() as stack:
        staging = None
        if target is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
            staging = stack.enter_context(staging_folder(target))
        used: set[str] = set()
        for positions, pixels in decoded_batches(paths, source.image_size, batch_size, skipped=result.skipped):
            heatmaps, probs, targets = cam(pixels, index)
            for k, position in enumerate(positions):
                path, row, c = paths[position], probs[k], int(targets[k])
                top = int(np.argmax(row))
                item = Explanation(
                    path=str(path),
                    label=source.classes[c],
                    prob=float(row[c]),
                    predicted=source.classes[top],
                    predicted_prob=float(row[top]),
                    heatmap=heatmaps[k],
                )
                if staging is not None and target is not None:
                    name = _file_name(path, used)
                    _write_overlay(staging / name, _original(path, pixels[k]), heatmaps[k])
                    item.file = str(target / name)
                result.explanations.append(item)
        if not result.explanations:
            raise TlkitError(none_readable_message(result.skipped, len(paths), "image file(s)", "nothing to explain"))
        if result.skipped:
            result.notes.append(f"{len(result.skipped)} unreadable image(s) skipped")
        flat = sum(1 for e in result.explanations if not e.heatmap.any())
        if flat:
            result.notes.append(
                f"{flat} heatmap(s) are all zero: nothing in those images raised the score of the class explained"
            )
        if result.explanations[0].heatmap.size == 1:
            result.notes.append(
                f"{cam.layer_name} is a 1×1 map at {source.image_size} px, so each heatmap is uniform; "
                "explain an earlier layer (--layer) or train at a larger --image-size"
            )
        result.seconds = time.perf_counter() - started
        if staging is not None and target is not None:
            write_json(staging / INDEX, result.as_dict())
            _publish(staging, target)
            result.output = target
    return result


def _write_overlay(path: Path, image: np.ndarray, heatmap: np.ndarray) -> None:
    Image.fromarray(heatmap_overlay(image, heatmap)).save(path, format="PNG")


# --------------------------------------------------------------------------- the report's mistakes


def explain_mistakes(
    run_dir: str | Path, mistakes: Sequence[dict[str, Any]], *, limit: int = 6, model: Any = None
) -> tuple[list[dict[str, Any]], str | None]:
    """``(items, note)``: Grad-CAM overlays of the first ``limit`` readable ``mistakes`` (dicts with
    ``path``, ``true``, ``predicted``, ``probability``, most confident first), each explaining the
    wrongly predicted class.  Each item is the mistake's dict plus ``overlay``, a uint8 RGB array
    (at most 160 px), ``layer`` and ``flat`` (True: an all-zero heatmap, no evidence found).  With no items, ``note`` says why (no images here, a 1×1 feature map, …).
    """
    chosen = [m for m in mistakes if Path(str(m.get("path", ""))).is_file()][:limit]
    if not chosen:
        return [], "the images of the mistakes are not available here"
    try:
        source = _open(run_dir, model)
        layer, _ = explanation_layer(source.config)
        cam = GradCam(source.model, layer)
        if cam.map_size == (1, 1):
            return [], (
                f"the explained feature map ({cam.layer_name}) is 1×1 at {source.image_size} px, "
                "so there is nothing to localise"
            )
        result = explain(run_dir, [m["path"] for m in chosen], layer=layer, model=source.model)
    except TlkitError as exc:
        return [], str(exc)
    by_path = {e.path: e for e in result.explanations}
    items = []
    for m in chosen:
        found = by_path.get(str(m["path"]))
        if found is not None:
            pixels = _original(Path(found.path), np.zeros((8, 8, 3), np.uint8), size=160)
            overlay = heatmap_overlay(pixels, found.heatmap)
            items.append({**m, "overlay": overlay, "layer": result.layer, "flat": not found.heatmap.any()})
    return items, None if items else "none of the mistaken images could be read"
