"""Export a trained run for deployment — SavedModel, TFLite (float16 / dynamic / int8), ONNX — parity-checked.

>>> result = tlkit.export("runs/20261128-101500-mobilenet_v2-dense256", "tflite", quantize="int8")
>>> result.path, result.parity["top1_agreement"]

Every artefact takes what ``model.keras`` takes — raw 0–255 RGB pixels,
float32, ``(batch, size, size, 3)`` — and returns class probabilities: the
preprocessing stays inside.  The augmentation layers (no-ops at inference)
are left out of the exported graph.

Before an export is kept, the artefact is run — through the same loader
``tlkit predict`` uses — on the run's validation images next to
``model.keras``; top-1 agreement, max |Δprob| and both accuracies go into
``export.json``.  Below :data:`MIN_AGREEMENT` the export fails (nothing is
left behind) unless ``force=True``.

An export directory explains itself::

    <run>/export/tflite-int8[-N]/
      model.tflite | model.onnx | saved_model/    the artefact
      classes.json                                class names; index = output index
      export.json                                 format, quantization, input spec, versions, parity, source
      README.md                                   a model card: classes, input, metrics, how to load it

It is built in a hidden temporary folder next to its final place and renamed
into place, and never replaces an earlier export (a ``-2``, ``-3``… suffix is
added).  This module also loads exported artefacts for ``tlkit predict`` and
``tlkit evaluate`` (:func:`locate_artifact`, :func:`load_artifact`).

TensorFlow is imported only when a model is converted or loaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tlkit.errors import TlkitError
from tlkit.prediction import Predictor, decode_stream, load_keras_model
from tlkit.rundir import RunDir, read_classes_file, write_json, write_text
from tlkit.suggest import closest

__all__ = [
    "ARTIFACTS",
    "DEFAULT_CALIBRATION_IMAGES",
    "FORMATS",
    "MIN_AGREEMENT",
    "QUANTIZATIONS",
    "SUPPORTED",
    "Artifact",
    "ExportResult",
    "export",
    "inference_model",
    "load_artifact",
    "locate_artifact",
    "recorded_data",
]

FORMATS = ("savedmodel", "tflite", "onnx")
QUANTIZATIONS = ("none", "float16", "dynamic", "int8")
#: What each format can hold.  ONNX ``dynamic`` is ONNX Runtime's dynamic quantization (uint8 weights).
SUPPORTED: dict[str, tuple[str, ...]] = {
    "savedmodel": ("none",),
    "tflite": ("none", "float16", "dynamic", "int8"),
    "onnx": ("none", "dynamic"),
}
#: The least top-1 agreement with ``model.keras`` (fraction of validation images) an export must reach.
MIN_AGREEMENT: dict[str, float] = {"none": 0.995, "float16": 0.99, "dynamic": 0.97, "int8": 0.97}
DEFAULT_CALIBRATION_IMAGES = 100

# The export directory's layout (its own; the run directory's names come from RunDir).
EXPORT_JSON = "export.json"
MODEL_CARD = "README.md"
ARTIFACTS = {"savedmodel": "saved_model", "tflite": "model.tflite", "onnx": "model.onnx"}
INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
_SAVED_MODEL_PB = "saved_model.pb"
_MAX_DISAGREEMENTS = 20
_STRIP_TOLERANCE = 1e-4  # max |Δprob| allowed between model.keras and its augmentation-free graph

_TITLES = {"savedmodel": "TensorFlow SavedModel", "tflite": "TFLite", "onnx": "ONNX"}
_QUANT_TEXT = {
    ("tflite", "none"): "float32",
    ("tflite", "float16"): "float16 weights (computed in float32 on CPU)",
    ("tflite", "dynamic"): "dynamic range: int8 weights, float activations",
    ("tflite", "int8"): "full integer int8 (weights and activations), float32 input/output",
    ("onnx", "none"): "float32",
    ("onnx", "dynamic"): "ONNX Runtime dynamic quantization: uint8 weights, activations quantized per call",
    ("savedmodel", "none"): "float32",
}


# --------------------------------------------------------------------------- result


@dataclass
class ExportResult:
    """What :func:`export` made: the export directory, the artefact in it and ``export.json``'s content."""

    path: Path
    artifact: Path
    format: str
    quantization: str
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def parity(self) -> dict[str, Any]:
        """Top-1 agreement, max |Δprob|, accuracies, threshold, passed/forced (see ``export.json``)."""
        return self.info.get("parity", {})

    @property
    def size_bytes(self) -> int:
        return int(self.info.get("artifact_bytes", 0))

    def as_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "artifact_path": str(self.artifact), **self.info}


# --------------------------------------------------------------------------- checks (no TensorFlow)


def check_choice(fmt: str, quantize: str) -> tuple[str, str]:
    """``(format, quantization)`` normalised, or a one-line TlkitError naming what is supported."""
    fmt, quantize = str(fmt).lower(), str(quantize).lower()
    if fmt not in FORMATS:
        raise TlkitError(f"unknown --format {fmt!r}; choose from {', '.join(FORMATS)}{closest(fmt, FORMATS)}")
    if quantize not in QUANTIZATIONS:
        raise TlkitError(f"unknown --quantize {quantize!r}; choose from {', '.join(QUANTIZATIONS)}"
                         f"{closest(quantize, QUANTIZATIONS)}")
    if quantize not in SUPPORTED[fmt]:
        others = [f for f in FORMATS if quantize in SUPPORTED[f]]
        raise TlkitError(
            f"--format {fmt} cannot hold --quantize {quantize}: {fmt} supports {', '.join(SUPPORTED[fmt])}; "
            f"for {quantize} use --format {' or '.join(others)}"
        )
    return fmt, quantize


def _default_name(fmt: str, quantize: str) -> str:
    return fmt if quantize == "none" else f"{fmt}-{quantize}"


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


# --------------------------------------------------------------------------- export


def export(
    run_dir: str | Path,
    format: str,  # noqa: A002 - the CLI option's name
    *,
    quantize: str = "none",
    output: str | Path | None = None,
    data: str | Path | None = None,
    calibration_images: int = DEFAULT_CALIBRATION_IMAGES,
    parity_images: int | None = None,
    force: bool = False,
    batch_size: int = 32,
    on_step: Callable[[str], None] | None = None,
) -> ExportResult:
    """Export a run's model to ``format`` and check it against ``model.keras``; return an :class:`ExportResult`.

    Args:
        run_dir: a run directory made by ``tlkit train`` (it must hold ``model.keras``).
        format: ``"savedmodel"``, ``"tflite"`` or ``"onnx"``.
        quantize: ``"none"``; TFLite also ``"float16"``, ``"dynamic"``, ``"int8"``; ONNX also ``"dynamic"``.
        output: the export directory to create (it must not exist, or be empty); default
            ``<run>/export/<format>[-<quantize>]`` with ``-2``, ``-3``… when taken.
        data: the dataset folder for the parity check and int8 calibration; default the run's
            own data (validation images for parity, training images for calibration).
        calibration_images: int8 only: how many training images (class-balanced, seeded)
            calibrate the activation ranges.
        parity_images: check parity on at most this many validation images (class-balanced,
            seeded); default all of them.
        force: keep the export even when parity is below :data:`MIN_AGREEMENT` (recorded as forced).
        batch_size: images per model call in the parity check.
        on_step: called with a short message as each step starts (the CLI shows it).

    Raises:
        TlkitError: an unsupported format/quantization, a run without a model, data that
            cannot be read or does not match the run's classes, a layer the converter
            cannot translate (named), or failed parity without ``force``.  Nothing is
            left behind on failure.
    """
    started = time.perf_counter()
    fmt, quantize = check_choice(format, quantize)
    if quantize == "int8" and calibration_images < 1:
        raise TlkitError(f"--calibration-images must be at least 1, got {calibration_images}")
    if parity_images is not None and parity_images < 1:
        raise TlkitError(f"--parity-images must be at least 1, got {parity_images}")
    if batch_size < 1:
        raise TlkitError(f"batch_size must be at least 1, got {batch_size}")
    step = on_step or (lambda message: None)

    run = RunDir.open(run_dir)
    model_path = run.require_model()
    config = run.read_config()
    classes = run.read_classes()
    data_root, scan = _parity_data(run, config, classes, data)

    explicit = output is not None
    if explicit:
        target = Path(output).expanduser()
        if target.exists() and (not target.is_dir() or any(target.iterdir())):
            raise TlkitError(f"--output {target} already exists and is not empty; tlkit never overwrites an "
                             f"export: pick another --output or remove it")
    else:
        target = run.export_dir / _default_name(fmt, quantize)
    for folder in {data_root, Path(config.get("data") or data_root)}:
        if _inside(target, folder):
            raise TlkitError(f"--output {target} is inside the data folder {folder}; tlkit never writes there: "
                             f"pick another --output")

    step(f"loading {model_path}")
    model = load_keras_model(model_path)
    size = _image_size(model, model_path)
    augmentations = list(config.get("augmentations") or [])
    val_files, val_labels = _subset(scan.val.files, scan.val.labels, parity_images, int(config.get("seed", 0)))
    sample = _decode_some(val_files[:8], size)
    inference, stripped = inference_model(model, len(augmentations), sample)

    calibration: dict[str, Any] | None = None
    calibration_pixels = None
    if quantize == "int8":
        step(f"decoding up to {calibration_images} training images for int8 calibration")
        cal_files, _ = _subset(scan.train.files, scan.train.labels, calibration_images, int(config.get("seed", 0)))
        calibration_pixels = _decode_some(cal_files, size)
        if len(calibration_pixels) == 0:
            raise TlkitError(f"none of the training images of {data_root} could be read for int8 calibration")
        calibration = {"images": len(calibration_pixels), "requested": calibration_images,
                       "available": len(scan.train.files),
                       "source": f"training images of {data_root}, class-balanced, seed {config.get('seed', 0)}"}

    made_parent = not target.parent.exists()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        artifact_tmp = tmp / ARTIFACTS[fmt]
        title = f"{_TITLES[fmt]}" + ("" if quantize == "none" else f" ({quantize})")
        step(f"converting to {title}" + (f" with {len(calibration_pixels)} calibration images"
                                         if calibration_pixels is not None else ""))
        _WRITERS[fmt](inference, artifact_tmp, size, quantize, calibration_pixels)

        step(f"checking parity with {RunDir.MODEL} on {len(val_files)} validation images")
        exported = load_artifact(artifact_tmp, fmt)
        parity = _measure_parity(model, exported, val_files, val_labels, size, batch_size, classes)
        parity["data"] = f"validation images of {data_root} ({scan.val_source})"
        threshold = MIN_AGREEMENT[quantize]
        parity["min_agreement"] = threshold
        parity["passed"] = parity["top1_agreement"] >= threshold
        parity["forced"] = bool(force and not parity["passed"])
        if not parity["passed"] and not force:
            raise TlkitError(
                f"parity check failed for {fmt} {quantize}: top-1 agreement with {RunDir.MODEL} "
                f"{_pct(parity['top1_agreement'])} ({parity['agreeing']} of {parity['images']} validation images) "
                f"is below the required {_pct(threshold)}; max |Δprob| {parity['max_abs_prob_diff']:.4f}, "
                f"accuracy {_pct(parity['accuracy_original'])} → {_pct(parity['accuracy_exported'])}. "
                f"Nothing was written; rerun with --force to keep it anyway"
                + (", or try a milder --quantize" if quantize != "none" else "")
            )

        info = _export_info(
            run=run, config=config, classes=classes, fmt=fmt, quantize=quantize, size=size,
            artifact=artifact_tmp, engine=exported, parity=parity, calibration=calibration,
            stripped=stripped, model_path=model_path, seconds=time.perf_counter() - started,
        )
        write_json(tmp / RunDir.CLASSES, list(classes))
        write_json(tmp / EXPORT_JSON, info)
        write_text(tmp / MODEL_CARD, _model_card(info, classes))
        final = _publish(tmp, target, explicit)
        return ExportResult(path=final, artifact=final / ARTIFACTS[fmt], format=fmt, quantization=quantize,
                            info=info)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if made_parent:
            with contextlib.suppress(OSError):
                target.parent.rmdir()  # only succeeds when empty: a failed first export leaves nothing


def _publish(tmp: Path, target: Path, explicit: bool) -> Path:
    """Rename the finished ``tmp`` folder into place without ever replacing an earlier export."""
    candidates = [target] if explicit else [target] + [target.with_name(f"{target.name}-{n}") for n in range(2, 10_000)]
    for candidate in candidates:
        try:
            candidate.mkdir()  # atomic reservation: fails if the name is taken
        except FileExistsError:
            if explicit and candidate.is_dir() and not any(candidate.iterdir()):
                pass  # an empty folder the user named: ours to fill
            else:
                continue
        # Renaming onto an empty folder replaces it atomically (POSIX), so a reader sees
        # either nothing or the complete export.
        os.rename(tmp, candidate)
        return candidate
    raise TlkitError(f"--output {target} already exists; tlkit never overwrites an export: pick another --output")


def _pct(value: float) -> str:
    return f"{100 * value:.1f} %"


def _image_size(model: Any, path: Path) -> int:
    shape = getattr(model, "input_shape", None)
    if not shape or isinstance(shape, list) or len(shape) != 4 or not shape[1] or shape[1] != shape[2] \
            or shape[3] != 3:
        raise TlkitError(f"{path} does not take square RGB images (its input is {shape}); tlkit cannot export it")
    return int(shape[1])


# --------------------------------------------------------------------------- data


def _parity_data(run: RunDir, config: dict[str, Any], classes: list[str], data: str | Path | None):
    """``(data root, scan)`` — the images parity and calibration use, labels as the model's output indices."""
    from tlkit import data as datamod

    if data is None:
        if not config.get("data"):
            raise TlkitError(f"{run.config_path} names no data folder; pass --data DIR (a dataset with "
                             f"train/ [val/] and the run's classes) to check parity on")
        root = Path(config["data"])
        if not root.is_dir():
            raise TlkitError(f"the run's data folder {root} no longer exists; pass --data DIR (a dataset with "
                             f"train/ [val/] and the run's classes): parity is measured on its validation images")
    else:
        root = Path(data).expanduser()
        if not root.is_dir():
            raise TlkitError(f"--data {root} is not a folder")
    scan = datamod.scan_dataset(root, val_split=float(config.get("val_split", 0.2)), seed=int(config.get("seed", 0)))
    if sorted(scan.classes) != sorted(classes):
        missing = sorted(set(classes) - set(scan.classes))
        extra = sorted(set(scan.classes) - set(classes))
        parts = ([f"it lacks {', '.join(missing)}"] if missing else []) + \
                ([f"the model does not know {', '.join(extra)}"] if extra else [])
        raise TlkitError(f"the classes of {root} differ from the run's ({'; '.join(parts)}); pass --data DIR "
                         f"with the run's classes")
    if not scan.val.files:
        raise TlkitError(f"{root} has no validation images to check parity on; pass --data DIR with a val/ folder")
    # Re-index the scan's labels as the model's output indices (the same names, maybe another order).
    index = np.asarray([classes.index(name) for name in scan.classes], dtype=np.int64)
    scan.train.labels = index[np.asarray(scan.train.labels, dtype=np.int64)]
    scan.val.labels = index[np.asarray(scan.val.labels, dtype=np.int64)]
    return root, scan


def _subset(files: Sequence[Path], labels: np.ndarray, limit: int | None, seed: int) -> tuple[list[Path], np.ndarray]:
    """At most ``limit`` files, class-balanced and seeded (all of them, in order, when ``limit`` is None/large)."""
    labels = np.asarray(labels, dtype=np.int64)
    if limit is None or limit >= len(files):
        return list(files), labels
    rng = np.random.default_rng(seed)
    # Shuffle each class, then take them round-robin: every class is represented even for small limits.
    per_class = [list(rng.permutation(np.flatnonzero(labels == c))) for c in np.unique(labels)]
    chosen: list[int] = []
    while len(chosen) < limit:
        for queue in per_class:
            if queue and len(chosen) < limit:
                chosen.append(int(queue.pop(0)))
    chosen.sort()
    return [files[i] for i in chosen], labels[chosen]


def _decode_some(files: Sequence[Path], size: int) -> np.ndarray:
    """The readable ones of ``files`` as a float32 ``(n, size, size, 3)`` array (unreadable ones skipped)."""
    pixels = [p for _, p, _ in decode_stream(list(files), size) if p is not None]
    if not pixels:
        return np.zeros((0, size, size, 3), dtype=np.float32)
    return np.stack(pixels).astype(np.float32)


# --------------------------------------------------------------------------- the inference graph


def _all_layers(model: Any) -> Iterator[Any]:
    for layer in getattr(model, "layers", []):
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)


def inference_model(model: Any, augmentations: int, sample: np.ndarray | None = None) -> tuple[Any, list[str]]:
    """``model`` without its first ``augmentations`` layers (raw pixels → preprocessing → base → head).

    tlkit's builder puts one layer per augmentation right after the input,
    then preprocessing, the nested base and the nested head, in a chain.  The
    augmentation layers are identities at inference, so leaving them out changes
    nothing but the graph a converter sees; on ``sample`` (float32 pixels) the
    result is checked against ``model`` to prove it.  Returns the model and the
    names of the layers left out.
    """
    import keras

    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    if augmentations >= len(layers):
        raise TlkitError(f"the run lists {augmentations} augmentation(s) but its model has only {len(layers)} "
                         f"layers; it was not built by tlkit")
    stripped, kept = layers[:augmentations], layers[augmentations:]
    inputs = keras.Input(shape=tuple(model.input_shape[1:]), dtype="float32", name=INPUT_NAME)
    x = inputs
    for layer in kept:
        x = layer(x)
    inference = keras.Model(inputs, x, name=f"{model.name}_inference")
    if sample is not None and len(sample):
        want = np.asarray(model(sample, training=False))
        got = np.asarray(inference(sample, training=False))
        if want.shape != got.shape or float(np.max(np.abs(want - got))) > _STRIP_TOLERANCE:
            raise TlkitError(
                f"leaving out the augmentation layers ({', '.join(layer.name for layer in stripped) or 'none'}) changed "
                f"the model's output; this model is not laid out as tlkit builds it, so it cannot be exported"
            )
    return inference, [layer.name for layer in stripped]


# --------------------------------------------------------------------------- writers


@contextlib.contextmanager
def _quiet_native() -> Iterator[None]:
    """Silence the converters' native and Python chatter (MLIR, absl, tf2onnx logs) while they run.

    Their real errors arrive as exceptions, which the callers turn into one line.
    ``TLKIT_TF_LOGS=1`` shows everything (as for TensorFlow's start-up, see :mod:`tlkit.tfenv`).
    """
    import sys

    if os.environ.get("TLKIT_TF_LOGS"):
        yield
        return
    previous_disable = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as sink, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
    finally:
        os.close(saved)
        logging.disable(previous_disable)


def _write_savedmodel(model: Any, path: Path, size: int, quantize: str = "none", calibration: Any = None) -> None:
    """A SavedModel whose ``serving_default`` signature maps ``image`` to ``probabilities``.

    Written with ``tf.saved_model.save`` on a ``tf.Module`` that tracks the
    model's underlying ``tf.Variable``s, not with ``keras.export.ExportArchive``
    (``model.export``): that stores every weight twice — once per Keras variable
    wrapper, once per raw variable its traced endpoint captures — doubling the
    folder and the memory of whoever loads it (keras-team/keras#23553).
    """
    from tlkit.tfenv import import_tensorflow

    tf = import_tensorflow()
    module = tf.Module()
    # The traced function captures these very tf.Variables, so each is saved once.
    module.weights = [getattr(v, "value", v) for v in model.variables]
    spec = tf.TensorSpec((None, size, size, 3), tf.float32, name=INPUT_NAME)
    module.serve = tf.function(lambda image: {OUTPUT_NAME: model(image, training=False)}, input_signature=[spec])
    try:
        with _quiet_native():
            tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    except Exception as exc:  # noqa: BLE001 - e.g. a plugin layer holding an untracked resource
        raise TlkitError(f"cannot write a SavedModel of this model: {_first_line(str(exc))}") from exc


def _write_tflite(model: Any, path: Path, size: int, quantize: str, calibration: np.ndarray | None) -> None:
    """Convert through a temporary SavedModel (Keras 3 models convert reliably only that way)."""
    from tlkit.tfenv import import_tensorflow

    tf = import_tensorflow()
    if not hasattr(tf, "lite") or not hasattr(tf.lite, "TFLiteConverter"):
        raise TlkitError("this TensorFlow has no TFLite converter (tf.lite.TFLiteConverter); install a "
                         "TensorFlow that has one, or export --format savedmodel/onnx")
    with tempfile.TemporaryDirectory(prefix=".savedmodel-", dir=path.parent) as staging:
        _write_savedmodel(model, Path(staging) / "sm", size)
        converter = tf.lite.TFLiteConverter.from_saved_model(str(Path(staging) / "sm"))
        if quantize != "none":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantize == "float16":
            converter.target_spec.supported_types = [tf.float16]
        elif quantize == "int8":
            pixels = np.asarray(calibration, dtype=np.float32)

            def representative() -> Iterator[list[np.ndarray]]:
                for row in pixels:
                    yield [row[None]]

            converter.representative_dataset = representative
            # Full integer: every op int8 (an op without an int8 kernel is an error, not a silent float
            # fallback).  Input and output stay float32, so the model still takes raw pixels and the
            # quantize/dequantize steps live inside it.
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        try:
            with _quiet_native():
                flatbuffer = converter.convert()
        except Exception as exc:  # noqa: BLE001 - ConverterError, RuntimeError, ValueError...
            raise TlkitError(_conversion_error("TFLite", quantize, str(exc), model)) from exc
    with open(path, "wb") as fh:
        fh.write(flatbuffer)


def _write_onnx(model: Any, path: Path, size: int, quantize: str, calibration: Any = None) -> None:
    """tf2onnx with captured constants folded (:func:`tlkit.features.export_onnx`), checked, output renamed."""
    import onnx

    from tlkit.features import export_onnx

    plain = path if quantize == "none" else path.with_name(f".float-{path.name}")
    try:
        with _quiet_native():
            export_onnx(model, plain, size)
    except TlkitError:
        raise
    except Exception as exc:  # noqa: BLE001 - tf2onnx raises many types
        raise TlkitError(_conversion_error("ONNX", quantize, str(exc), model)) from exc
    proto = onnx.load(str(plain))
    _check_onnx_ops(proto, model)
    _rename_output(proto, OUTPUT_NAME)
    onnx.save(proto, str(plain))
    if quantize == "dynamic":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        try:
            with _quiet_native():
                # uint8 weights: ONNX Runtime's CPU ConvInteger kernel is implemented for uint8
                # weights in every version tlkit supports (int8 weights only in recent ones).
                quantize_dynamic(str(plain), str(path), weight_type=QuantType.QUInt8)
        except Exception as exc:  # noqa: BLE001
            raise TlkitError(f"ONNX Runtime could not quantize the model ({_first_line(str(exc))}); "
                             f"export --format onnx --quantize none or --format tflite --quantize dynamic") from exc
        finally:
            plain.unlink(missing_ok=True)


_WRITERS: dict[str, Callable[..., None]] = {"savedmodel": _write_savedmodel, "tflite": _write_tflite,
                                            "onnx": _write_onnx}


def _rename_output(proto: Any, name: str) -> None:
    """Give the graph's single output a readable name (tf2onnx calls it e.g. ``Identity:0``)."""
    if len(proto.graph.output) != 1:
        return
    old = proto.graph.output[0].name
    if old == name:
        return
    for node in proto.graph.node:
        for i, value in enumerate(node.output):
            if value == old:
                node.output[i] = name
        for i, value in enumerate(node.input):
            if value == old:
                node.input[i] = name
    for info in proto.graph.value_info:
        if info.name == old:
            info.name = name
    proto.graph.output[0].name = name


def _check_onnx_ops(proto: Any, model: Any) -> None:
    """Refuse a graph holding ops ONNX does not define (tf2onnx leaves untranslatable TF ops in as they were)."""
    import onnx.defs

    bad = [(node.op_type, node.name) for node in proto.graph.node
           if node.domain in ("", "ai.onnx", "ai.onnx.ml") and not onnx.defs.has(node.op_type, node.domain or "")]
    if bad:
        raise TlkitError(_unsupported_message("ONNX", [(op, name) for op, name in bad], model,
                                              "tf2onnx has no ONNX translation for"))


def _first_line(text: str) -> str:
    for line in text.strip().splitlines():
        if line.strip():
            return line.strip()[:300]
    return "no details"


def _layer_for(path: str, model: Any) -> Any | None:
    """The deepest layer of ``model`` named in an op's scope path (``functional_1/my_layer_1/Op``)."""
    layers = {layer.name: layer for layer in _all_layers(model)}
    for part in reversed(path.split("/")[:-1]):
        for name in (part, re.sub(r"_\d+$", "", part)):
            if name in layers:
                return layers[name]
    return None


def _describe_layer(layer: Any) -> str:
    cls = type(layer)
    origin = cls.__module__ or ""
    plugin = "" if origin.startswith("keras") else ", not a Keras layer"
    return f"layer {layer.name!r} ({origin}.{cls.__qualname__}{plugin})"


def _unsupported_message(target: str, ops: list[tuple[str, str]], model: Any, verb: str) -> str:
    by_layer: dict[str, set[str]] = {}
    for op, path in ops:
        layer = _layer_for(path, model)
        by_layer.setdefault(_describe_layer(layer) if layer is not None else "", set()).add(op)
    parts = []
    for where, names in by_layer.items():
        parts.append(f"op {', '.join(sorted(names))}" + (f" in {where}" if where else ""))
    alternatives = [f for f in FORMATS if _TITLES[f] != target]
    return (f"cannot export to {target}: {verb} {'; '.join(parts)}; export --format "
            f"{' or '.join(alternatives)} instead, or replace that layer with standard Keras layers")


def _conversion_error(target: str, quantize: str, text: str, model: Any) -> str:
    """One line from a converter's (often huge) error: which ops, in which layer, and what to do."""
    # TFLite's MLIR errors locate each op as  fused["Op:", "model_1/layer_1/Op@__inference_..."].
    located = dict(re.findall(r'fused\["(\w+):", "([^"@]+)@', text))
    names: list[str] = re.findall(r"'tf\.(\w+)' op is neither a custom op nor a flex op", text)
    for listed in re.findall(r"(?:Custom|Flex) ops: ([\w, ]+)", text):
        names += [op.strip() for op in listed.split(",") if op.strip()]
    if not names:  # other per-op failures: the ops on the lines that report an error
        names = [op for line in text.splitlines() if "error:" in line
                 for op in re.findall(r'fused\["(\w+):", "[^"@]+@', line)[:1]]
    names = list(dict.fromkeys(n for n in names if n not in ("StatefulPartitionedCall", "PartitionedCall")))
    if names:
        verb = "TFLite's int8 converter cannot handle" if quantize == "int8" else f"{target} has no kernel for"
        return _unsupported_message(target, [(op, located.get(op, "")) for op in names], model, verb)
    unsupported_quant = re.search(r"Quantization not yet supported for op: '?([\w.]+)'?", text)
    if unsupported_quant:
        return (f"cannot export to {target} int8: op {unsupported_quant.group(1)} has no int8 kernel; "
                f"use --quantize dynamic or float16")
    return f"cannot export to {target} ({quantize}): {_first_line(text)}"


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
            raise TlkitError(f"the export folder {path} has no {name} (its {EXPORT_JSON} names it); "
                             f"re-export with `tlkit export`")
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
            with _quiet_native():
                self._it = interpreter(model_path=str(path), num_threads=os.cpu_count() or 1)
        except (ValueError, RuntimeError) as exc:
            raise TlkitError(f"cannot load the TFLite model {path}: {_first_line(str(exc))}") from exc
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
            with _quiet_native():
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
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "ai_edge_litert"
    except ImportError:
        pass
    from tlkit.tfenv import import_tensorflow

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
            import onnxruntime as ort
        except ImportError as exc:
            raise TlkitError("running a .onnx model needs ONNX Runtime: pip install onnxruntime") from exc
        options = ort.SessionOptions()
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - ORT raises its own types
            raise TlkitError(f"ONNX Runtime cannot load {path}: {_first_line(str(exc))}") from exc
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
        from tlkit.tfenv import import_tensorflow

        tf = import_tensorflow()
        self._tf = tf
        try:
            self._loaded = tf.saved_model.load(str(path))
        except Exception as exc:  # noqa: BLE001
            raise TlkitError(f"cannot load the SavedModel {path}: {_first_line(str(exc))}") from exc
        signature = self._loaded.signatures.get("serving_default")
        if signature is None:
            raise TlkitError(f"the SavedModel {path} has no serving_default signature")
        _, inputs = signature.structured_input_signature
        outputs = signature.structured_outputs
        if len(inputs) != 1 or len(outputs) != 1:
            raise TlkitError(f"{path}'s serving_default has {len(inputs)} inputs and {len(outputs)} outputs; "
                             f"tlkit expects one of each")
        (self._input, in_spec), (self._output, out_spec) = next(iter(inputs.items())), next(iter(outputs.items()))
        self._fn = signature
        self.input_shape = _shape(in_spec.shape.as_list())
        self.output_shape = _shape(out_spec.shape.as_list())

    def predict_on_batch(self, x: np.ndarray) -> np.ndarray:
        result = self._fn(**{self._input: self._tf.constant(np.asarray(x, dtype=np.float32))})
        return np.asarray(result[self._output])


# --------------------------------------------------------------------------- parity


def _measure_parity(model: Any, exported: Any, files: Sequence[Path], labels: np.ndarray, size: int,
                    batch_size: int, classes: list[str]) -> dict[str, Any]:
    """Run ``model`` and ``exported`` on the same decoded images (as predict decodes them) and compare."""
    original, other = Predictor(model), Predictor(exported)
    want_parts, got_parts, kept, skipped = [], [], [], 0
    batch: list[np.ndarray] = []
    batch_index: list[int] = []

    def flush() -> None:
        pixels = np.stack(batch)
        want_parts.append(original(pixels))
        got_parts.append(other(pixels))
        kept.extend(batch_index)
        batch.clear()
        batch_index.clear()

    for index, (_, pixels, _) in enumerate(decode_stream(list(files), size, lookahead=batch_size)):
        if pixels is None:
            skipped += 1
            continue
        batch.append(pixels)
        batch_index.append(index)
        if len(batch) >= batch_size:
            flush()
    if batch:
        flush()
    if not kept:
        raise TlkitError(f"none of the {len(files)} validation images could be read; parity cannot be checked")
    want, got = np.concatenate(want_parts), np.concatenate(got_parts)
    if got.shape != want.shape:
        raise TlkitError(f"the exported model returns shape {got.shape[1:]} per batch, {RunDir.MODEL} "
                         f"{want.shape[1:]}; the export is broken")
    truth = np.asarray(labels, dtype=np.int64)[kept]
    top_want, top_got = want.argmax(axis=1), got.argmax(axis=1)
    agree = top_want == top_got
    diff = np.abs(want - got)
    disagreements = [
        {"path": str(files[kept[i]]), "label": classes[truth[i]], "original": classes[top_want[i]],
         "exported": classes[top_got[i]], "original_prob": round(float(want[i, top_want[i]]), 6),
         "exported_prob": round(float(got[i, top_got[i]]), 6)}
        for i in np.flatnonzero(~agree)[:_MAX_DISAGREEMENTS]
    ]
    return {
        "images": int(len(kept)),
        "agreeing": int(agree.sum()),
        "top1_agreement": float(agree.mean()),
        "max_abs_prob_diff": float(diff.max()),
        "mean_abs_prob_diff": float(diff.mean()),
        "accuracy_original": float((top_want == truth).mean()),
        "accuracy_exported": float((top_got == truth).mean()),
        "skipped_unreadable": int(skipped),
        "disagreements": disagreements,
    }


# --------------------------------------------------------------------------- export.json and the model card


def _version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _export_info(*, run: RunDir, config: dict[str, Any], classes: list[str], fmt: str, quantize: str, size: int,
                 artifact: Path, engine: Any, parity: dict[str, Any], calibration: dict[str, Any] | None,
                 stripped: list[str], model_path: Path, seconds: float) -> dict[str, Any]:
    from tlkit import __version__

    versions = {"tlkit": __version__, "tensorflow": _version("tensorflow"), "keras": _version("keras")}
    if fmt == "onnx":
        versions.update(onnx=_version("onnx"), tf2onnx=_version("tf2onnx"), onnxruntime=_version("onnxruntime"))
    if fmt == "tflite" and engine.engine == "ai_edge_litert":
        versions["ai-edge-litert"] = _version("ai-edge-litert")
    metrics = run.read_metrics()
    return {
        "format": fmt,
        "quantization": quantize,
        "quantization_detail": _QUANT_TEXT[(fmt, quantize)],
        "artifact": ARTIFACTS[fmt],
        "artifact_bytes": _size(artifact),
        "classes_file": RunDir.CLASSES,
        "num_classes": len(classes),
        "input": {"name": INPUT_NAME, "shape": [None, size, size, 3], "dtype": "float32", "layout": "NHWC",
                  "channels": "RGB", "range": [0, 255],
                  "resize": f"bilinear to {size}x{size}, squashed (no crop), as tlkit.data.load_image",
                  "preprocessing": "inside the model: feed raw pixels"},
        "output": {"name": OUTPUT_NAME, "shape": [None, len(classes)], "dtype": "float32",
                   "meaning": f"class probabilities (softmax); index i is the i-th name in {RunDir.CLASSES}"},
        "runtime": engine.engine,
        "parity": parity,
        "calibration": calibration,
        "stripped_layers": stripped,
        "source": {
            "run_dir": str(run.path.resolve()),
            "model": str(model_path.resolve()),
            "model_sha256": _sha256(model_path),
            "base": config.get("base"),
            "head": config.get("head"),
            "image_size": size,
            "best_val_accuracy": metrics.get("best_val_accuracy"),
            "config": {k: config[k] for k in ("data", "val_split", "seed", "base", "head", "image_size",
                                              "augmentations") if k in config},
        },
        "versions": versions,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": round(seconds, 2),
    }


_LOADING = {
    "tflite": """\
from ai_edge_litert.interpreter import Interpreter   # or: Interpreter = tensorflow.lite.Interpreter
interpreter = Interpreter(model_path="model.tflite"); interpreter.allocate_tensors()
inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
interpreter.set_tensor(inp["index"], x); interpreter.invoke()
probs = interpreter.get_tensor(out["index"])[0]""",
    "onnx": """\
import onnxruntime as ort
session = ort.InferenceSession("model.onnx")
probs = session.run(None, {"image": x})[0][0]""",
    "savedmodel": """\
import tensorflow as tf
model = tf.saved_model.load("saved_model")
probs = model.signatures["serving_default"](image=tf.constant(x))["probabilities"].numpy()[0]""",
}


def _model_card(info: dict[str, Any], classes: list[str]) -> str:
    """The export folder's README.md: what it is, what goes in and out, how good it is, how to load it."""
    fmt, size, parity, source = info["format"], info["input"]["shape"][1], info["parity"], info["source"]
    shown = ", ".join(f"`{c}`" for c in classes[:30]) + (f" … ({len(classes)} in all)" if len(classes) > 30 else "")
    calibration = info.get("calibration")
    run_acc = source.get("best_val_accuracy")
    lines = [
        f"# {Path(source['run_dir']).name} — {_TITLES[fmt]}, {info['quantization']}",
        "",
        f"Exported by tlkit {info['versions']['tlkit']} on {info['created']} from the run `{source['run_dir']}` "
        f"(base `{source.get('base')}`, head `{source.get('head')}`).",
        "",
        "| | |",
        "|---|---|",
        f"| artefact | `{info['artifact']}` ({info['artifact_bytes'] / 1e6:.1f} MB), {_TITLES[fmt]} |",
        f"| quantization | {info['quantization']}: {info['quantization_detail']}"
        + (f"; calibrated on {calibration['images']} training images" if calibration else "") + " |",
        f"| input | `{INPUT_NAME}`: float32 `(batch, {size}, {size}, 3)`, RGB, **raw 0–255 pixels** (resize "
        f"bilinearly to {size}×{size}, no crop); the preprocessing is inside the model |",
        f"| output | `{OUTPUT_NAME}`: float32 `(batch, {len(classes)})`, softmax; index = position in "
        f"`{RunDir.CLASSES}` |",
        f"| classes | {shown} |",
        f"| augmentation left out | {', '.join(f'`{n}`' for n in info['stripped_layers']) or '—'} "
        f"(no-ops at inference) |",
        "",
        f"## Parity with `{RunDir.MODEL}`",
        "",
        f"Measured at export time on {parity['images']} {parity['data']}, with the same decoding as "
        f"`tlkit predict`:",
        "",
        "| | value |",
        "|---|---|",
        f"| top-1 agreement | {_pct(parity['top1_agreement'])} ({parity['agreeing']} of {parity['images']}; "
        f"required ≥ {_pct(parity['min_agreement'])}) |",
        f"| max / mean \\|Δprob\\| | {parity['max_abs_prob_diff']:.4g} / {parity['mean_abs_prob_diff']:.3g} |",
        f"| accuracy, `{RunDir.MODEL}` | {_pct(parity['accuracy_original'])} |",
        f"| accuracy, this export | {_pct(parity['accuracy_exported'])} |",
    ]
    if run_acc is not None:
        lines.append(f"| best validation accuracy during training | {_pct(float(run_acc))} |")
    if parity.get("forced"):
        lines += ["", "**Warning:** this export did *not* reach the required agreement and was kept with "
                      "`--force`."]
    lines += [
        "",
        "## Use it",
        "",
        "In Python, from inside this folder (nothing from tlkit needed):",
        "",
        "```python",
        "import json, numpy as np",
        "from PIL import Image",
        f"classes = json.load(open(\"{RunDir.CLASSES}\"))",
        f"x = np.asarray(Image.open(\"photo.jpg\").convert(\"RGB\").resize(({size}, {size}), Image.BILINEAR), "
        f"dtype=np.float32)[None]",
        _LOADING[fmt],
        "print(classes[int(probs.argmax())], float(probs.max()))",
        "```",
        "",
        "or with tlkit, passing this folder: `tlkit predict EXPORT_DIR photos/`, "
        "`tlkit evaluate EXPORT_DIR [--data DIR]`.",
        "",
        f"`{EXPORT_JSON}` holds all of the above (and the versions of the tools that made it) for scripts.",
        "",
    ]
    return "\n".join(lines)
