"""The engines that run the frozen base over images: ONNX Runtime when installed, TensorFlow otherwise.

An engine is a callable ``engine(float32 batch) -> features`` with a ``name`` (part of the
cache key: engines differ by ~1e-6) and a preferred ``batch_size`` (None: the caller's).
Importing this module stays light: TensorFlow, Keras and ONNX Runtime are imported when an
engine is made.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from tlkit.config.options import ENGINES
from tlkit.errors import TlkitError, first_line
from tlkit.features.onnx_export import export_onnx


class TensorFlowEngine:
    """Runs the feature model as a compiled ``tf.function`` (faster than ``model.predict``)."""

    name = "tensorflow"
    batch_size: int | None = None  # the caller's

    def __init__(self, feature_model: Any) -> None:
        import tensorflow as tf  # lazy: only a feature pass on TensorFlow needs it

        self._fn = tf.function(lambda x: feature_model(x, training=False), reduce_retracing=True)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self._fn(batch), dtype=np.float32)  # float16/bfloat16 under mixed precision


class OnnxRuntimeEngine:
    """Runs the exported feature model with ONNX Runtime on all CPU cores."""

    name = "onnxruntime"
    #: Images per call.  On CPU small batches stay in cache: MobileNetV2 ran 278 / 263 / 249 /
    #: 236 img/s at batch 8 / 16 / 32 / 64 on 2 cores, ResNet50 was flat (bench/ort_throughput.py).
    batch_size: int | None = 8

    def __init__(self, onnx_path: Path) -> None:
        import onnxruntime as ort  # lazy: optional, and slow to import

        options = ort.SessionOptions()
        options.log_severity_level = 3
        self._session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            raise RuntimeError(f"exported model has {len(inputs)} inputs, expected 1")
        self._input = inputs[0].name

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self._session.run(None, {self._input: batch})[0]


def onnxruntime_available() -> bool:
    """True when onnxruntime and the exporter (tf2onnx, onnx) can be imported."""
    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "tf2onnx", "onnx"))


def mixed_precision_active() -> bool:
    """True under a Keras mixed-precision policy (the base then runs on TensorFlow: ONNX Runtime's
    CPU kernels have no bfloat16 and little float16)."""
    import keras  # lazy: Keras imports TensorFlow

    return keras.mixed_precision.global_policy().name != "float32"


def expected_engine(choice: str) -> str:
    """The name of the engine :func:`make_engine` would pick for ``choice``, unless the ONNX export fails."""
    if choice != "tensorflow" and onnxruntime_available() and not mixed_precision_active():
        return OnnxRuntimeEngine.name
    return TensorFlowEngine.name


def make_engine(feature_model: Any, choice: str, onnx_path: Path, sample: np.ndarray) -> tuple[Any, str]:
    """The engine to compute features with, and a sentence saying why it was chosen.

    ``sample`` (a couple of real images) checks ONNX Runtime against TensorFlow
    before it is trusted; on any export problem ``auto`` falls back to TensorFlow.
    The exported model is kept at ``onnx_path`` (reused by later runs).
    """
    if choice not in ENGINES:
        raise TlkitError(f"unknown --engine {choice!r}; choose from {', '.join(ENGINES)}")
    if choice == "tensorflow":
        return TensorFlowEngine(feature_model), "TensorFlow (--engine tensorflow)"
    if mixed_precision_active():
        return TensorFlowEngine(feature_model), "TensorFlow (mixed precision: ONNX Runtime is float32 here)"
    if not onnxruntime_available():
        if choice == "onnxruntime":
            raise TlkitError(
                "--engine onnxruntime needs the packages onnxruntime, tf2onnx and onnx; "
                "pip install onnxruntime tf2onnx onnx, or use --engine tensorflow"
            )
        return TensorFlowEngine(feature_model), "TensorFlow (onnxruntime is not installed)"
    try:
        if not onnx_path.exists():
            export_onnx(feature_model, onnx_path, int(sample.shape[1]))
        engine = OnnxRuntimeEngine(onnx_path)
        check = feature_model(sample[:2], training=False)
        got = engine(sample[:2])
        scale = float(np.max(np.abs(check))) or 1.0
        if float(np.max(np.abs(np.asarray(check) - got))) > 1e-3 * scale:
            raise RuntimeError("ONNX Runtime's features differ from TensorFlow's")
    except Exception as exc:
        onnx_path.unlink(missing_ok=True)
        if choice == "onnxruntime":
            raise TlkitError(f"ONNX export or check failed ({exc}); use --engine tensorflow") from exc
        return TensorFlowEngine(feature_model), f"TensorFlow (ONNX export failed: {first_line(exc, 240)})"
    return engine, "ONNX Runtime" + (" (--engine onnxruntime)" if choice == "onnxruntime" else "")


__all__ = [
    "OnnxRuntimeEngine",
    "TensorFlowEngine",
    "expected_engine",
    "make_engine",
    "mixed_precision_active",
    "onnxruntime_available",
]
