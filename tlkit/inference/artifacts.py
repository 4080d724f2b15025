"""An export directory's layout, and loading what ``tlkit export`` wrote, for ``tlkit predict`` and ``tlkit evaluate``.

>>> artifact = locate_artifact("runs/20261128-101500-mobilenet_v2-dense256/export/tflite-int8")
>>> model = artifact.load()  # predict_on_batch(x), input_shape, output_shape, engine
>>> model.predict_on_batch(pixels)  # float32 raw 0–255 RGB (batch, size, size, 3) → probabilities

An export directory explains itself::

    <run>/export/tflite-int8[-N]/
      model.tflite | model.onnx | saved_model/    the artefact
      classes.json                                class names; index = output index
      export.json                                 format, quantization, input spec, versions, parity, source
      README.md                                   a model card: classes, input, metrics, how to load it

:func:`locate_artifact` accepts such a folder, or a bare ``.tflite`` / ``.onnx``
file or SavedModel folder (classes from a ``classes.json`` beside it);
:func:`load_artifact` wraps each runtime (the TFLite interpreter, ONNX Runtime,
TensorFlow) in an object with the small interface ``Predictor`` and
``evaluate`` use.  The names here are the layout both sides share:
:mod:`tlkit.exporting.exporter` writes it, this module reads it.

TensorFlow (or a runtime) is imported only when a model is loaded.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tlkit.errors import TlkitError
from tlkit.errors import first_line as _error_line
from tlkit.io.native import quiet_native
from tlkit.io.rundir import RunDir, read_classes_file
from tlkit.io.tfenv import import_tensorflow

__all__ = [
    "ARTIFACTS",
    "EXPORT_JSON",
    "FORMATS",
    "INPUT_NAME",
    "MODEL_CARD",
    "OUTPUT_NAME",
    "Artifact",
    "OnnxModel",
    "SavedModelModel",
    "TFLiteModel",
    "first_line",
    "load_artifact",
    "locate_artifact",
    "recorded_data",
]

FORMATS = ("savedmodel", "tflite", "onnx")

# The export directory's layout (its own; the run directory's names come from RunDir).
EXPORT_JSON = "export.json"
MODEL_CARD = "README.md"
ARTIFACTS = {"savedmodel": "saved_model", "tflite": "model.tflite", "onnx": "model.onnx"}
INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
_SAVED_MODEL_PB = "saved_model.pb"


# --------------------------------------------------------------------------- runtime helpers (shared with the writers)


def first_line(text: str) -> str:
    """The first line of a runtime's or converter's (often huge) error text (:func:`tlkit.errors.first_line`),
    or "no details"."""
    return _error_line(text) or "no details"


# --------------------------------------------------------------------------- loading artefacts


@dataclass
class Artifact:
    """An exported model found on disk: the artefact, its format, its folder and ``export.json`` ({} if none)."""

    path: Path
    format: str
    folder: Path  # where classes.json (and export.json) are looked for
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def classes_path(self) -> Path:
        return self.folder / RunDir.CLASSES

    def classes(self) -> list[str] | None:
        return read_classes_file(self.classes_path) if self.classes_path.is_file() else None

    def load(self) -> Any:
        return load_artifact(self.path, self.format)


def _read_export_json(folder: Path) -> dict[str, Any]:
    path = folder / EXPORT_JSON
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TlkitError(f"cannot read {path}: {exc}") from exc
    return value if isinstance(value, dict) else {}


def _is_saved_model(path: Path) -> bool:
    return path.is_dir() and (path / _SAVED_MODEL_PB).is_file()


def locate_artifact(path: str | Path) -> Artifact | None:
    """The exported model ``path`` names — a ``.tflite`` or ``.onnx`` file, a SavedModel folder or an
    export folder (with ``export.json``) — or None when it is none of these (e.g. a run directory)."""
    path = Path(path).expanduser()
    if path.is_dir() and (path / EXPORT_JSON).is_file():
        info = _read_export_json(path)
        fmt, name = info.get("format"), info.get("artifact")
        if fmt not in FORMATS or not isinstance(name, str):
            raise TlkitError(f"{path / EXPORT_JSON} names no artefact; re-export with `tlkit export`")
        artifact = path / name
        if not artifact.exists():
            raise TlkitError(
                f"the export folder {path} has no {name} (its {EXPORT_JSON} names it); re-export with `tlkit export`"
            )
        return Artifact(artifact, fmt, path, info)
    if path.is_file() and path.suffix.lower() in (".tflite", ".onnx"):
        fmt, folder = path.suffix.lower()[1:], path.parent
    elif _is_saved_model(path):
        # classes.json inside the SavedModel folder, else beside it (an export folder's layout).
        fmt, folder = "savedmodel", path if (path / RunDir.CLASSES).is_file() else path.parent
    else:
        return None
    info = _read_export_json(folder)
    if info.get("artifact") and (folder / str(info["artifact"])).resolve() != path.resolve():
        info = {}  # another artefact's export.json
    return Artifact(path, fmt, folder, info)


def recorded_data(path: str | Path) -> str | None:
    """The source run's data folder recorded in an export's ``export.json`` (None when absent or gone)."""
    try:
        artifact = locate_artifact(path)
    except TlkitError:
        return None
    data = ((artifact.info.get("source") or {}).get("config") or {}).get("data") if artifact else None
    return str(data) if data and Path(data).is_dir() else None


def load_artifact(path: str | Path, fmt: str | None = None) -> Any:
    """Load an exported model behind the small interface ``Predictor`` and ``evaluate`` use.

    The returned object has ``predict_on_batch(x)`` (float32 pixels → probabilities),
    ``input_shape`` and ``output_shape`` (batch dimension None) and ``engine``.
    """
    path = Path(path)
    if fmt is None:
        found = locate_artifact(path)
        if found is None:
            raise TlkitError(f"{path} is not an exported model (.tflite, .onnx or a SavedModel folder)")
        path, fmt = found.path, found.format
    loaders = {"tflite": TFLiteModel, "onnx": OnnxModel, "savedmodel": SavedModelModel}
    return loaders[fmt](path)


def _shape(values: Sequence[Any]) -> tuple[int | None, ...]:
    """A shape with the batch dimension as None (runtimes spell it -1, 'unk__1', None...)."""
    dims = [int(v) if isinstance(v, (int, np.integer)) and int(v) > 0 else None for v in values]
    return (None, *dims[1:])


class TFLiteModel:
    """A ``.tflite`` model on the TFLite interpreter (LiteRT's ``ai_edge_litert`` when installed)."""

    def __init__(self, path: Path) -> None:
        interpreter, self.engine = _tflite_interpreter()
        try:
            with quiet_native():
                self._it = interpreter(model_path=str(path), num_threads=os.cpu_count() or 1)
        except (ValueError, RuntimeError) as exc:
            raise TlkitError(f"cannot load the TFLite model {path}: {first_line(str(exc))}") from exc
        inputs, outputs = self._it.get_input_details(), self._it.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise TlkitError(f"{path} has {len(inputs)} inputs and {len(outputs)} outputs; tlkit expects one of each")
        self._in, self._out = inputs[0], outputs[0]
        self.input_shape = _shape(self._in.get("shape_signature", self._in["shape"]))
        self.output_shape = _shape(self._out.get("shape_signature", self._out["shape"]))
        self._batch: int | None = None

    def predict_on_batch(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if self._batch != len(x):
            self._it.resize_tensor_input(self._in["index"], list(x.shape))
            with quiet_native():
                self._it.allocate_tensors()
            self._batch = len(x)
        dtype = np.dtype(self._in["dtype"])
        if dtype != np.float32:  # an integer-input model made elsewhere: quantize as it asks
            scale, zero = self._in["quantization"]
            info = np.iinfo(dtype)
            x = np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)
        self._it.set_tensor(self._in["index"], x)
        self._it.invoke()
        y = self._it.get_tensor(self._out["index"])
        if np.dtype(self._out["dtype"]) != np.float32:
            scale, zero = self._out["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        return np.array(y, dtype=np.float32)


def _tflite_interpreter() -> tuple[Any, str]:
    """The TFLite ``Interpreter`` class: LiteRT's when installed, else TensorFlow's (deprecated there)."""
    try:
        from ai_edge_litert.interpreter import Interpreter  # lazy: LiteRT (optional) only to run a .tflite artifact

        return Interpreter, "ai_edge_litert"
    except ImportError:
        pass

    tf = import_tensorflow()
    interpreter = getattr(getattr(tf, "lite", None), "Interpreter", None)
    if interpreter is None:
        raise TlkitError("running a .tflite model needs the TFLite interpreter: pip install ai-edge-litert")

    def make(**kwargs: Any) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "tf.lite.Interpreter is deprecated": it still works here
            return interpreter(**kwargs)

    return make, "tf.lite"


class OnnxModel:
    """A ``.onnx`` model on ONNX Runtime (CPU)."""

    engine = "onnxruntime"

    def __init__(self, path: Path) -> None:
        try:
            import onnxruntime as ort  # lazy: onnxruntime (optional, slow to import) only to run an ONNX artifact
        except ImportError as exc:
            raise TlkitError("running a .onnx model needs ONNX Runtime: pip install onnxruntime") from exc
        options = ort.SessionOptions()
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - ORT raises its own types
            raise TlkitError(f"ONNX Runtime cannot load {path}: {first_line(str(exc))}") from exc
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise TlkitError(f"{path} has {len(inputs)} inputs and {len(outputs)} outputs; tlkit expects one of each")
        self._input = inputs[0].name
        self.input_shape = _shape(inputs[0].shape)
        self.output_shape = _shape(outputs[0].shape)

    def predict_on_batch(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self._session.run(None, {self._input: np.asarray(x, dtype=np.float32)})[0])


class SavedModelModel:
    """A SavedModel folder, run through its ``serving_default`` signature."""

    engine = "tensorflow"

    def __init__(self, path: Path) -> None:
        tf = import_tensorflow()
        self._tf = tf
        try:
            self._loaded = tf.saved_model.load(str(path))
        except Exception as exc:  # noqa: BLE001
            raise TlkitError(f"cannot load the SavedModel {path}: {first_line(str(exc))}") from exc
        signature = self._loaded.signatures.get("serving_default")
        if signature is None:
            raise TlkitError(f"the SavedModel {path} has no serving_default signature")
        _, inputs = signature.structured_input_signature
        outputs = signature.structured_outputs
        if len(inputs) != 1 or len(outputs) != 1:
            raise TlkitError(
                f"{path}'s serving_default has {len(inputs)} inputs and {len(outputs)} outputs; "
                f"tlkit expects one of each"
            )
        (self._input, in_spec), (self._output, out_spec) = next(iter(inputs.items())), next(iter(outputs.items()))
        self._fn = signature
        self.input_shape = _shape(in_spec.shape.as_list())
        self.output_shape = _shape(out_spec.shape.as_list())

    def predict_on_batch(self, x: np.ndarray) -> np.ndarray:
        result = self._fn(**{self._input: self._tf.constant(np.asarray(x, dtype=np.float32))})
        return np.asarray(result[self._output])
