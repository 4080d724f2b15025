"""Turning a trained Keras model into each export format: SavedModel, TFLite (float16 / dynamic / int8), ONNX.

Every artefact takes what ``model.keras`` takes — raw 0–255 RGB pixels,
float32, ``(batch, size, size, 3)`` — and returns class probabilities: the
preprocessing stays inside.  The augmentation layers (no-ops at inference)
are left out of the exported graph (:func:`inference_model`, checked on sample
images).

:data:`WRITERS` maps each format to its writer
``(model, path, size, quantize, calibration)``.  A converter's failure becomes
one line naming the ops it could not translate and the layer that holds them
(a plugin's layer is called out as such), with the formats to try instead.

TensorFlow and the converters are imported only when a model is converted.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from tlkit.errors import TlkitError
from tlkit.features.onnx_export import export_onnx
from tlkit.inference.artifacts import FORMATS, INPUT_NAME, OUTPUT_NAME, first_line
from tlkit.io.native import quiet_native
from tlkit.io.tfenv import import_tensorflow

__all__ = ["ONNX_DYNAMIC_OPS", "TITLES", "WRITERS", "inference_model"]

#: Each format's name for people (messages, the model card).
TITLES = {"savedmodel": "TensorFlow SavedModel", "tflite": "TFLite", "onnx": "ONNX"}
#: The ONNX ops ``--format onnx --quantize dynamic`` quantizes: the dense layers; convolutions stay float32.
ONNX_DYNAMIC_OPS = ("MatMul", "Gemm")
_STRIP_TOLERANCE = 1e-4  # max |Δprob| allowed between model.keras and its augmentation-free graph


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
    import keras  # lazy: Keras imports TensorFlow; only an export needs it

    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    if augmentations >= len(layers):
        raise TlkitError(
            f"the run lists {augmentations} augmentation(s) but its model has only {len(layers)} "
            f"layers; it was not built by tlkit"
        )
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


def _write_savedmodel(model: Any, path: Path, size: int, quantize: str = "none", calibration: Any = None) -> None:
    """A SavedModel whose ``serving_default`` signature maps ``image`` to ``probabilities``.

    Written with ``tf.saved_model.save`` on a ``tf.Module`` that tracks the
    model's underlying ``tf.Variable``s, not with ``keras.export.ExportArchive``
    (``model.export``): that stores every weight twice — once per Keras variable
    wrapper, once per raw variable its traced endpoint captures — doubling the
    folder and the memory of whoever loads it (keras-team/keras#23553).
    """
    tf = import_tensorflow()
    module = tf.Module()
    # The traced function captures these very tf.Variables, so each is saved once.
    module.weights = [getattr(v, "value", v) for v in model.variables]
    spec = tf.TensorSpec((None, size, size, 3), tf.float32, name=INPUT_NAME)
    module.serve = tf.function(lambda image: {OUTPUT_NAME: model(image, training=False)}, input_signature=[spec])
    try:
        with quiet_native():
            tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    except Exception as exc:  # noqa: BLE001 - e.g. a plugin layer holding an untracked resource
        raise TlkitError(f"cannot write a SavedModel of this model: {first_line(str(exc))}") from exc


def _write_tflite(model: Any, path: Path, size: int, quantize: str, calibration: np.ndarray | None) -> None:
    """Convert through a temporary SavedModel (Keras 3 models convert reliably only that way)."""
    tf = import_tensorflow()
    if not hasattr(tf, "lite") or not hasattr(tf.lite, "TFLiteConverter"):
        raise TlkitError(
            "this TensorFlow has no TFLite converter (tf.lite.TFLiteConverter); install a "
            "TensorFlow that has one, or export --format savedmodel/onnx"
        )
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
            with quiet_native():
                flatbuffer = converter.convert()
        except Exception as exc:  # noqa: BLE001 - ConverterError, RuntimeError, ValueError...
            raise TlkitError(_conversion_error("TFLite", quantize, str(exc), model)) from exc
    with open(path, "wb") as fh:
        fh.write(flatbuffer)


def _write_onnx(model: Any, path: Path, size: int, quantize: str, calibration: Any = None) -> None:
    """tf2onnx with captured constants folded (:func:`tlkit.features.onnx_export.export_onnx`), checked, output renamed."""
    import onnx  # lazy: onnx only for an ONNX export

    plain = path if quantize == "none" else path.with_name(f".float-{path.name}")
    try:
        with quiet_native():
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
        # lazy: onnxruntime only for a quantized ONNX export
        from onnxruntime.quantization import QuantType, quantize_dynamic

        dense = sum(node.op_type in ONNX_DYNAMIC_OPS for node in proto.graph.node)
        if not dense:
            plain.unlink(missing_ok=True)
            raise TlkitError(
                f"--format onnx --quantize dynamic quantizes the dense layers ({'/'.join(ONNX_DYNAMIC_OPS)}) and "
                f"this model has none; export --format onnx --quantize none, or --format tflite --quantize dynamic"
            )
        try:
            with quiet_native():
                # Only the dense layers (the head: for dense256 most of the bytes).  Quantizing the
                # convolutions too (ConvInteger, activations quantized per call and per tensor) cost the
                # demo run 14 points of top-1 agreement and made it 10x slower (bench/README.md).
                # uint8 weights: MatMulInteger's combination that every ONNX Runtime version runs.
                quantize_dynamic(
                    str(plain), str(path), weight_type=QuantType.QUInt8, op_types_to_quantize=list(ONNX_DYNAMIC_OPS)
                )
        except Exception as exc:  # noqa: BLE001
            raise TlkitError(
                f"ONNX Runtime could not quantize the model ({first_line(str(exc))}); "
                f"export --format onnx --quantize none or --format tflite --quantize dynamic"
            ) from exc
        finally:
            plain.unlink(missing_ok=True)


#: Each format's writer: ``(model, path, size, quantize, calibration)`` → the artefact at ``path``.
WRITERS: dict[str, Callable[..., None]] = {
    "savedmodel": _write_savedmodel,
    "tflite": _write_tflite,
    "onnx": _write_onnx,
}


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
    import onnx.defs  # lazy: onnx only for an ONNX export

    bad = [
        (node.op_type, node.name)
        for node in proto.graph.node
        if node.domain in ("", "ai.onnx", "ai.onnx.ml") and not onnx.defs.has(node.op_type, node.domain or "")
    ]
    if bad:
        raise TlkitError(
            _unsupported_message("ONNX", [(op, name) for op, name in bad], model, "tf2onnx has no ONNX translation for")
        )


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
    alternatives = [f for f in FORMATS if TITLES[f] != target]
    return (
        f"cannot export to {target}: {verb} {'; '.join(parts)}; export --format "
        f"{' or '.join(alternatives)} instead, or replace that layer with standard Keras layers"
    )


def _conversion_error(target: str, quantize: str, text: str, model: Any) -> str:
    """One line from a converter's (often huge) error: which ops, in which layer, and what to do."""
    # TFLite's MLIR errors locate each op as  fused["Op:", "model_1/layer_1/Op@__inference_..."].
    located = dict(re.findall(r'fused\["(\w+):", "([^"@]+)@', text))
    names: list[str] = re.findall(r"'tf\.(\w+)' op is neither a custom op nor a flex op", text)
    for listed in re.findall(r"(?:Custom|Flex) ops: ([\w, ]+)", text):
        names += [op.strip() for op in listed.split(",") if op.strip()]
    if not names:  # other per-op failures: the ops on the lines that report an error
        names = [
            op
            for line in text.splitlines()
            if "error:" in line
            for op in re.findall(r'fused\["(\w+):", "[^"@]+@', line)[:1]
        ]
    names = list(dict.fromkeys(n for n in names if n not in ("StatefulPartitionedCall", "PartitionedCall")))
    if names:
        verb = "TFLite's int8 converter cannot handle" if quantize == "int8" else f"{target} has no kernel for"
        return _unsupported_message(target, [(op, located.get(op, "")) for op in names], model, verb)
    unsupported_quant = re.search(r"Quantization not yet supported for op: '?([\w.]+)'?", text)
    if unsupported_quant:
        return (
            f"cannot export to {target} int8: op {unsupported_quant.group(1)} has no int8 kernel; "
            f"use --quantize dynamic or float16"
        )
    return f"cannot export to {target} ({quantize}): {first_line(text)}"
