"""What an export folder says about itself: ``export.json`` (for scripts) and the ``README.md`` model card.

:func:`export_info` gathers the facts (format, input and output, parity, calibration,
the source run, tool versions); :func:`model_card` renders them for people.  Called by
:func:`tlkit.exporting.exporter.export` once the artefact has passed its parity check.
"""

from __future__ import annotations

import time
from importlib import metadata
from pathlib import Path
from typing import Any

from tlkit.exporting.formats import TITLES
from tlkit.exporting.stability import kept_text, noise_text
from tlkit.inference.artifacts import ARTIFACTS, EXPORT_JSON, INPUT_NAME, OUTPUT_NAME
from tlkit.io.hashing import sha256_file
from tlkit.io.rundir import RunDir
from tlkit.version import __version__

__all__ = ["export_info", "model_card", "model_packages", "pct"]

_QUANT_TEXT = {
    ("tflite", "none"): "float32",
    ("tflite", "float16"): "float16 weights (computed in float32 on CPU)",
    ("tflite", "dynamic"): "dynamic range: int8 weights, float activations",
    ("tflite", "int8"): "full integer int8 (weights and activations), float32 input/output",
    ("onnx", "none"): "float32",
    ("onnx", "dynamic"): "ONNX Runtime dynamic quantization of the dense layers (MatMul/Gemm): uint8 weights, "
    "their inputs quantized per call; the convolutions stay float32",
    ("savedmodel", "none"): "float32",
}


def pct(value: float) -> str:
    """A fraction as a percentage with one decimal: ``0.9876`` → ``"98.8 %"``."""
    return f"{100 * value:.1f} %"


def model_packages(model: Any) -> list[str]:
    """The Python packages other than Keras that define layers of ``model`` (e.g. ``keras_hub`` for a
    KerasHub base): loading its ``.keras`` file needs them installed.  Nested models included."""
    found: set[str] = set()
    stack = [model]
    while stack:
        layer = stack.pop()
        package = (type(layer).__module__ or "").split(".")[0]
        if package and package not in ("keras", "tensorflow", "tf_keras", "builtins"):
            found.add(package)
        stack.extend(getattr(layer, "layers", None) or [])
    return sorted(found)


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def export_info(
    *,
    run: RunDir,
    config: dict[str, Any],
    classes: list[str],
    fmt: str,
    quantize: str,
    size: int,
    artifact: Path,
    engine: Any,
    parity: dict[str, Any],
    calibration: dict[str, Any] | None,
    stripped: list[str],
    model_path: Path,
    seconds: float,
    keras_packages: list[str] | None = None,
) -> dict[str, Any]:
    """The facts of an export (``export.json``).  ``keras_packages``: what loading the run's
    ``model.keras`` needs besides Keras (:func:`model_packages`)."""
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
        "input": {
            "name": INPUT_NAME,
            "shape": [None, size, size, 3],
            "dtype": "float32",
            "layout": "NHWC",
            "channels": "RGB",
            "range": [0, 255],
            "resize": f"bilinear to {size}x{size}, squashed (no crop), as tlkit.data.decode.load_image",
            "preprocessing": "inside the model: feed raw pixels",
        },
        "output": {
            "name": OUTPUT_NAME,
            "shape": [None, len(classes)],
            "dtype": "float32",
            "meaning": f"class probabilities (softmax); index i is the i-th name in {RunDir.CLASSES}",
        },
        "runtime": engine.engine,
        "parity": parity,
        "calibration": calibration,
        "stripped_layers": stripped,
        "source": {
            "run_dir": str(run.path.resolve()),
            "model": str(model_path.resolve()),
            "model_sha256": sha256_file(model_path),
            "model_needs": list(keras_packages or []),
            "base": config.get("base"),
            "head": config.get("head"),
            "image_size": size,
            "best_val_accuracy": metrics.get("best_val_accuracy"),
            "config": {
                k: config[k]
                for k in ("data", "val_split", "seed", "base", "head", "image_size", "augmentations")
                if k in config
            },
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


def _needs_row(packages: list[str], fmt: str) -> list[str]:
    """The card's row saying what loading the run's ``model.keras`` needs besides Keras (none: no row)."""
    if not packages:
        return []
    listed = ", ".join(f"`{p}`" for p in packages)
    return [
        f"| `{RunDir.MODEL}` of the run | loads with plain `keras.saving.load_model` once {listed} "
        f"{'is' if len(packages) == 1 else 'are'} installed (the base's layers come from there); "
        f"this {TITLES[fmt]} artefact needs none of them |"
    ]


def model_card(info: dict[str, Any], classes: list[str]) -> str:
    """The export folder's README.md: what it is, what goes in and out, how good it is, how to load it."""
    fmt, size, parity, source = info["format"], info["input"]["shape"][1], info["parity"], info["source"]
    shown = ", ".join(f"`{c}`" for c in classes[:30]) + (f" … ({len(classes)} in all)" if len(classes) > 30 else "")
    calibration = info.get("calibration")
    run_acc = source.get("best_val_accuracy")
    lines = [
        f"# {Path(source['run_dir']).name} — {TITLES[fmt]}, {info['quantization']}",
        "",
        f"Exported by tlkit {info['versions']['tlkit']} on {info['created']} from the run `{source['run_dir']}` "
        f"(base `{source.get('base')}`, head `{source.get('head')}`).",
        "",
        "| | |",
        "|---|---|",
        f"| artefact | `{info['artifact']}` ({info['artifact_bytes'] / 1e6:.1f} MB), {TITLES[fmt]} |",
        f"| quantization | {info['quantization']}: {info['quantization_detail']}"
        + (f"; calibrated on {calibration['images']} training images" if calibration else "")
        + " |",
        f"| input | `{INPUT_NAME}`: float32 `(batch, {size}, {size}, 3)`, RGB, **raw 0–255 pixels** (resize "
        f"bilinearly to {size}×{size}, no crop); the preprocessing is inside the model |",
        f"| output | `{OUTPUT_NAME}`: float32 `(batch, {len(classes)})`, softmax; index = position in "
        f"`{RunDir.CLASSES}` |",
        f"| classes | {shown} |",
        *_needs_row(source.get("model_needs") or [], fmt),
        f"| augmentation left out | {', '.join(f'`{n}`' for n in info['stripped_layers']) or '—'} "
        f"(no-ops at inference) |",
        "",
        f"## Parity with `{RunDir.MODEL}`",
        "",
        f"Measured at export time on {parity['images']} {parity['data']}, with the same decoding as `tlkit predict`:",
        "",
        "| | value |",
        "|---|---|",
        f"| top-1 agreement | {pct(parity['top1_agreement'])} ({parity['agreeing']} of {parity['images']}; "
        f"required ≥ {pct(parity['min_agreement'])}) |",
        f"| max / mean \\|Δprob\\| | {parity['max_abs_prob_diff']:.4g} / {parity['mean_abs_prob_diff']:.3g} |",
        f"| accuracy, `{RunDir.MODEL}` | {pct(parity['accuracy_original'])} |",
        f"| accuracy, this export | {pct(parity['accuracy_exported'])} |",
    ]
    if run_acc is not None:
        lines.append(f"| best validation accuracy during training | {pct(float(run_acc))} |")
    steady = parity.get("stability")
    if steady:  # measured after the failed check
        lines.append(
            f"| `{RunDir.MODEL}`'s own answers kept under {noise_text(steady)} grey levels of pixel noise | "
            f"{kept_text(steady)} |"
        )
    if parity.get("forced"):
        lines += ["", "**Warning:** this export did *not* reach the required agreement and was kept with `--force`."]
    lines += [
        "",
        "## Use it",
        "",
        "In Python, from inside this folder (nothing from tlkit needed):",
        "",
        "```python",
        "import json, numpy as np",
        "from PIL import Image",
        f'classes = json.load(open("{RunDir.CLASSES}"))',
        f'x = np.asarray(Image.open("photo.jpg").convert("RGB").resize(({size}, {size}), Image.BILINEAR), '
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
