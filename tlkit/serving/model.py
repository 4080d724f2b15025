"""The model being served: loaded once, through the same loaders as ``tlkit predict``.

:meth:`ServedModel.load` opens a run directory, a ``.keras`` file or an exported
artefact (TFLite, ONNX, SavedModel or a ``tlkit export`` folder) with
:func:`tlkit.inference.prediction.open_model`, reads a multi-label run's
thresholds as ``predict`` does, and — for a Keras model made by tlkit — prepares
Grad-CAM (:class:`tlkit.evaluation.gradcam.GradCam`) for ``POST /explain``.
Probabilities become answers with :func:`tlkit.inference.prediction.ranked`, the
function ``tlkit predict`` uses, so ``/predict`` and ``tlkit predict --json``
give the same objects for the same images.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from tlkit.errors import TlkitError
from tlkit.evaluation.evaluate import thumbnail
from tlkit.evaluation.figures import heatmap_overlay
from tlkit.evaluation.gradcam import GradCam, explanation_layer
from tlkit.inference.artifacts import Artifact, locate_artifact
from tlkit.inference.prediction import ModelSource, Prediction, open_model, ranked
from tlkit.inference.thresholds import run_thresholds
from tlkit.version import __version__

__all__ = ["OVERLAY_SIZE", "ServedModel"]

OVERLAY_SIZE = 384
"""Grad-CAM overlays are drawn on the uploaded image shrunk to at most this many pixels on its longest side."""


@dataclass
class ServedModel:
    """A loaded model with what serving it needs; :meth:`load` makes one."""

    location: Path
    source: ModelSource
    kind: str  # "run", "model" (a bare .keras file) or "export"
    format: str  # "keras", "tflite", "onnx" or "savedmodel"
    thresholds: np.ndarray | None = None  # a multi-label model's, in class order
    explainer: GradCam | None = None
    explain_note: str | None = None  # why there is no Grad-CAM, or what limits it
    export_info: dict[str, Any] = field(default_factory=dict)  # export.json of an exported artefact
    _call: Callable[[np.ndarray], Any] | None = field(default=None, repr=False)  # a Keras model's one-trace call

    @classmethod
    def load(cls, location: str | Path) -> ServedModel:
        """Open and load what ``tlkit serve`` was given.

        Raises:
            TlkitError: the path does not exist or is no run, model or export; the model cannot be loaded.
        """
        path = Path(location).expanduser()
        if not path.exists():
            raise TlkitError(
                f"{path} does not exist; pass a run directory, a .keras model file or an exported model "
                "(.tflite, .onnx, SavedModel or `tlkit export` folder)"
            )
        artifact: Artifact | None = locate_artifact(path)
        source = open_model(path)
        served = cls(
            location=path,
            source=source,
            kind="export" if artifact else ("run" if source.run_dir else "model"),
            format=artifact.format if artifact else "keras",
            thresholds=run_thresholds(source),
            export_info=dict(artifact.info) if artifact else {},
        )
        if artifact is None:
            served._call = _one_trace(source.model, source.image_size)
            served._prepare_explainer()
        else:
            served.explain_note = "Grad-CAM needs the Keras model: serve the run directory to see overlays"
        served.predict(np.zeros((1, served.image_size, served.image_size, 3), np.uint8))  # warm up before binding
        return served

    def _prepare_explainer(self) -> None:
        layer, note = explanation_layer(self.source.config)
        try:
            self.explainer = GradCam(self.source.model, layer, multi_label=self.multi_label)
        except TlkitError as exc:
            self.explain_note = str(exc)
            return
        if self.explainer.map_size == (1, 1):
            note = (
                f"{self.explainer.layer_name} is a 1×1 map at {self.image_size} px, so each heatmap is uniform; "
                "train at a larger --image-size to localise"
            )
        self.explain_note = note

    # ------------------------------------------------------------------ what it is

    @property
    def classes(self) -> list[str]:
        return self.source.classes

    @property
    def image_size(self) -> int:
        return self.source.image_size

    @property
    def multi_label(self) -> bool:
        return self.thresholds is not None or bool(self.source.config.get("multi_label"))

    @property
    def engine(self) -> str:
        return str(getattr(self.source.model, "engine", "keras"))

    def metadata(self) -> dict[str, Any]:
        """What ``GET /metadata`` answers about the model (the app adds limits and stats)."""
        config = self.source.config
        origin = self.export_info.get("source") or {}
        return {
            "source": str(self.location),
            "kind": self.kind,
            "format": self.format,
            "engine": self.engine,
            "model_path": str(self.source.model_path),
            "run_dir": str(self.source.run_dir) if self.source.run_dir else origin.get("run_dir"),
            "export": {k: self.export_info.get(k) for k in ("format", "quantization", "artifact", "created")}
            if self.export_info
            else None,
            "base": config.get("base") or origin.get("base"),
            "head": config.get("head") or origin.get("head"),
            "image_size": self.image_size,
            "classes": list(self.classes),
            "classes_known": self.source.classes_known,
            "multi_label": self.multi_label,
            "thresholds": dict(zip(self.classes, map(float, self.thresholds))) if self.thresholds is not None else None,
            "explain": self.explainer is not None,
            "explain_note": self.explain_note,
            "notes": list(self.source.notes),
            "tlkit_version": __version__,
        }

    # ------------------------------------------------------------------ using it

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        """Probabilities ``(n, classes)`` of uint8 ``pixels`` ``(n, size, size, 3)`` (one model call)."""
        call = self._call or self.source.model.predict_on_batch
        return np.asarray(call(pixels.astype(np.float32)), dtype=np.float64)

    def answer(self, name: str, row: np.ndarray, top_k: int) -> Prediction:
        """One image's answer from its probabilities, as ``tlkit predict`` makes it."""
        return ranked(name, row, self.classes, min(top_k, len(self.classes)), self.thresholds)

    def explain(self, name: str, pixels: np.ndarray, data: bytes) -> dict[str, Any]:
        """Grad-CAM of one image (its model-size ``pixels`` and its original bytes ``data``): the class
        explained (the predicted one), its probability, and the overlay as a PNG ``data:`` URL."""
        if self.explainer is None:
            raise TlkitError(self.explain_note or "Grad-CAM is not available for this model")
        heatmaps, probs, targets = self.explainer(pixels[None])
        heatmap, row, c = heatmaps[0], probs[0], int(targets[0])
        try:
            image = thumbnail(io.BytesIO(data), OVERLAY_SIZE)
        except Exception:  # noqa: BLE001 - it decoded a moment ago; the model's view will do
            image = pixels
        buffer = io.BytesIO()
        Image.fromarray(heatmap_overlay(image, heatmap)).save(buffer, format="PNG")
        return {
            "path": name,
            "label": self.classes[c],
            "prob": float(row[c]),
            "layer": self.explainer.layer_name,
            "flat": not heatmap.any(),
            "overlay": "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii"),
        }


def _one_trace(model: Any, size: int) -> Callable[[np.ndarray], Any]:
    """The Keras model as one ``tf.function`` for every batch size: batches of 1 to ``--max-batch-size`` images
    would each trace ``predict_on_batch`` anew (a second or more for a real base) while requests wait."""
    import tensorflow as tf  # lazy: already loaded with the Keras model; exported models need none of it

    spec = tf.TensorSpec([None, size, size, 3], tf.float32)
    function = tf.function(lambda x: model(x, training=False), input_signature=[spec])
    return lambda pixels: function(tf.constant(pixels)).numpy()
