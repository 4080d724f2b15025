"""The engines that run the frozen base over images: ONNX Runtime when installed, TensorFlow otherwise.

An engine is a callable ``engine(float32 batch) -> features`` with a ``name`` (part of the
cache key: engines differ by ~1e-6) and a preferred ``batch_size`` (None: the caller's).
Importing this module stays light: TensorFlow, Keras and ONNX Runtime are imported when an
engine is made.

``--engine auto`` decides once per exported base and machine, and keeps the decision beside the
ONNX file (hidden, :meth:`FeatureStore.decision_path`; ``tlkit cache info`` shows it in the exported
base's row, ``tlkit cache clear`` removes it): ONNX Runtime, unless its export fails (not retried
until TensorFlow, tf2onnx, ONNX Runtime or tlkit change) or TensorFlow runs the base clearly
faster on the same images (some vision transformers: bench/README.md, "KerasHub bases").
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from tlkit.config.options import ENGINES
from tlkit.errors import TlkitError, first_line
from tlkit.features.onnx_export import export_onnx
from tlkit.features.store import FeatureStore
from tlkit.io.files import write_json
from tlkit.version import __version__

#: ``auto`` keeps ONNX Runtime unless TensorFlow computes the same images this many times faster.
TF_FASTER_BY = 1.25
#: Images per timed call when ``auto`` compares the engines (the sample, repeated).
_RACE_IMAGES = 8


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


def expected_engine(choice: str, onnx_path: Path | None = None) -> str:
    """The name of the engine :func:`make_engine` would pick for ``choice`` (with ``auto``, the
    decision kept beside ``onnx_path`` when there is one), unless the ONNX export fails."""
    if choice != "tensorflow" and onnxruntime_available() and not mixed_precision_active():
        kept = read_decision(onnx_path) if choice == "auto" and onnx_path is not None else None
        return kept["engine"] if kept else OnnxRuntimeEngine.name
    return TensorFlowEngine.name


def decision_path(onnx_path: Path) -> Path:
    """Where ``auto``'s decision for the base exported to ``onnx_path`` is kept (the store's rule)."""
    return FeatureStore.decision_path(onnx_path)


def _machine() -> dict[str, Any]:
    """What a decision holds for: the packages that convert and run the base, and the cores."""
    versions: dict[str, Any] = {"tlkit": __version__, "cpus": os.cpu_count()}
    for package in ("tensorflow", "tf2onnx", "onnxruntime"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def read_decision(onnx_path: Path) -> dict[str, Any] | None:
    """``auto``'s kept decision for this base (``engine``, ``reason``, …), or None when there is
    none, it cannot be read, or it was made with other packages or another number of cores."""
    try:
        kept = json.loads(decision_path(onnx_path).read_text())
    except (OSError, ValueError):
        return None
    ok = isinstance(kept, dict) and kept.get("machine") == _machine()
    return kept if ok and kept.get("engine") in (OnnxRuntimeEngine.name, TensorFlowEngine.name) else None


def _keep_decision(onnx_path: Path, engine: str, reason: str, **measured: float) -> None:
    record = {"engine": engine, "reason": reason, **measured, "decided": time.strftime("%Y-%m-%d")}
    try:
        onnx_path.parent.mkdir(parents=True, exist_ok=True)
        write_json(decision_path(onnx_path), {**record, "machine": _machine()})
    except OSError:
        pass  # a read-only cache: decided again next time


def _images_per_second(engine: Any, batch: np.ndarray) -> float:
    """The best of two timed calls after a warm-up one (which traces TensorFlow's function)."""
    engine(batch)
    best = float("inf")
    for _ in range(2):
        started = time.perf_counter()
        engine(batch)
        best = min(best, time.perf_counter() - started)
    return len(batch) / max(best, 1e-9)


def _race(feature_model: Any, onnx_engine: Any, onnx_path: Path, sample: np.ndarray) -> tuple[Any, str]:
    """The faster engine on ``sample`` (repeated to a batch), ONNX Runtime unless TensorFlow is
    :data:`TF_FASTER_BY` times faster; the decision is kept for later runs."""
    batch = np.resize(sample, (_RACE_IMAGES, *sample.shape[1:])).astype(np.float32)
    tf_engine = TensorFlowEngine(feature_model)
    tf_rate = _images_per_second(tf_engine, batch)
    ort_rate = _images_per_second(onnx_engine, batch)
    rates = f"{tf_rate:.1f} vs {ort_rate:.1f} images/s"
    if tf_rate >= TF_FASTER_BY * ort_rate:
        reason = f"{tf_rate / ort_rate:.1f}× faster than ONNX Runtime on this base here, {rates}"
        _keep_decision(onnx_path, TensorFlowEngine.name, reason, tensorflow_ips=tf_rate, onnxruntime_ips=ort_rate)
        return tf_engine, f"TensorFlow ({reason})"
    reason = f"TensorFlow is not {TF_FASTER_BY}× faster on this base here, {rates}"
    _keep_decision(onnx_path, OnnxRuntimeEngine.name, reason, tensorflow_ips=tf_rate, onnxruntime_ips=ort_rate)
    return onnx_engine, "ONNX Runtime"


def make_engine(
    feature_model: Any, choice: str, onnx_path: Path, sample: np.ndarray, *, race: bool = True
) -> tuple[Any, str]:
    """The engine to compute features with, and a sentence saying why it was chosen.

    ``sample`` (a couple of real images) checks ONNX Runtime against TensorFlow
    before it is trusted; on any export problem ``auto`` falls back to TensorFlow.
    The exported model is kept at ``onnx_path`` (reused by later runs).  With ``auto`` and
    ``race``, the first run on this machine also times both engines on the sample, and the
    decision is kept beside ``onnx_path`` (see the module).  Without ``race`` (the workers of a
    multi-worker run, which must all use one engine though their machines may keep different
    decisions) no decision is read or made: ONNX Runtime whenever its export works.
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
    kept = read_decision(onnx_path) if choice == "auto" and race else None
    if kept and kept["engine"] == TensorFlowEngine.name:
        where = decision_path(onnx_path).name
        return TensorFlowEngine(feature_model), f"TensorFlow ({kept['reason']}; decided {kept['decided']}, {where})"
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
        reason = f"ONNX export failed: {first_line(exc, 240)}"
        if race and not isinstance(exc, OSError):  # a full or read-only disk may be gone next time
            _keep_decision(onnx_path, TensorFlowEngine.name, reason)  # not tried again on every run
        return TensorFlowEngine(feature_model), f"TensorFlow ({reason})"
    if choice == "auto" and kept is None and race:
        return _race(feature_model, engine, onnx_path, sample)
    return engine, "ONNX Runtime" + (" (--engine onnxruntime)" if choice == "onnxruntime" else "")


__all__ = [
    "TF_FASTER_BY",
    "OnnxRuntimeEngine",
    "TensorFlowEngine",
    "decision_path",
    "expected_engine",
    "make_engine",
    "mixed_precision_active",
    "onnxruntime_available",
    "read_decision",
]
