"""Export a trained run for deployment — SavedModel, TFLite (float16 / dynamic / int8), ONNX — parity-checked.

>>> result = tlkit.export("runs/20261128-101500-mobilenet_v2-dense256", "tflite", quantize="int8")
>>> result.path, result.parity["top1_agreement"]

Every artefact takes what ``model.keras`` takes — raw 0–255 RGB pixels,
float32, ``(batch, size, size, 3)`` — and returns class probabilities: the
preprocessing stays inside (the conversion itself is :mod:`tlkit.exporting.formats`).

Before an export is kept, the artefact is run — through the same loader
``tlkit predict`` uses — on the run's validation images next to
``model.keras``; top-1 agreement, max |Δprob| and both accuracies go into
``export.json``.  Below :data:`MIN_AGREEMENT` the export fails (nothing is
left behind) unless ``force=True``.

The export directory's layout (the artefact, ``classes.json``, ``export.json``,
a ``README.md`` model card) is :mod:`tlkit.inference.artifacts`'s, which also loads
exported artefacts for ``tlkit predict`` and ``tlkit evaluate``
(:func:`locate_artifact`, :func:`load_artifact`; importable from here too).
This module orchestrates: it checks the choice of format, converts, measures
parity, writes ``export.json`` and the model card (:mod:`tlkit.exporting.card`), and publishes
the folder.
It is built in a hidden temporary folder next to its final place and renamed
into place, and never replaces an earlier export (a ``-2``, ``-3``… suffix is
added).

TensorFlow is imported only when a model is converted or loaded.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tlkit.data import folders as datamod
from tlkit.data.decode import none_readable_message
from tlkit.data.labels_csv import scan_for_config
from tlkit.data.mixing import batch_mixing_names
from tlkit.errors import TlkitError
from tlkit.exporting.card import export_info, model_card, model_packages, pct
from tlkit.exporting.formats import TITLES, WRITERS, inference_model
from tlkit.exporting.stability import measure_stability, stability_sentence
from tlkit.inference.artifacts import (
    ARTIFACTS,
    EXPORT_JSON,
    FORMATS,
    MODEL_CARD,
    Artifact,
    load_artifact,
    locate_artifact,
    recorded_data,
)
from tlkit.inference.prediction import Predictor, decode_stream, decoded_batches, load_keras_model
from tlkit.io.files import publish_folder, staging_folder, write_json, write_text
from tlkit.io.rundir import RunDir
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
_MAX_DISAGREEMENTS = 20
#: The end of a failed parity check's message: what to try instead.
_MILDER = {
    ("tflite", "float16"): ", or try --quantize none",
    ("tflite", "dynamic"): ", or try --quantize float16",
    ("onnx", "dynamic"): ", or try --quantize none",
    # Full-integer int8 also rounds every activation to 8 bits (per tensor); on some models the error
    # adds up layer after layer (docs/export.md, "When int8 fails").  dynamic keeps activations float.
    ("tflite", "int8"): ", or use --quantize dynamic (8-bit weights, float activations: the same size; "
    "docs/export.md, 'When int8 fails')",
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
        raise TlkitError(
            f"unknown --quantize {quantize!r}; choose from {', '.join(QUANTIZATIONS)}{closest(quantize, QUANTIZATIONS)}"
        )
    if quantize not in SUPPORTED[fmt]:
        others = [f for f in FORMATS if quantize in SUPPORTED[f]]
        raise TlkitError(
            f"--format {fmt} cannot hold --quantize {quantize}: {fmt} supports {', '.join(SUPPORTED[fmt])}; "
            f"for {quantize} use --format {' or '.join(others)}"
        )
    return fmt, quantize


def _default_name(fmt: str, quantize: str) -> str:
    return fmt if quantize == "none" else f"{fmt}-{quantize}"


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
    if config.get("multi_label"):  # parity and the model card measure single-label (top-1) agreement
        raise TlkitError(
            f"{run.path} is a --multi-label run, which tlkit export does not support yet; use its "
            f"{RunDir.MODEL} (sigmoid outputs) with its {RunDir.THRESHOLDS}"
        )
    classes = run.read_classes()
    data_root, scan = _parity_data(run, config, classes, data)

    explicit = output is not None
    if output is not None:
        target = Path(output).expanduser()
        if target.exists() and (not target.is_dir() or any(target.iterdir())):
            raise TlkitError(
                f"--output {target} already exists and is not empty; tlkit never overwrites an "
                f"export: pick another --output or remove it"
            )
    else:
        target = run.export_dir / _default_name(fmt, quantize)
    for folder in {data_root, Path(config.get("data") or data_root)}:
        if target.resolve().is_relative_to(folder.resolve()):
            raise TlkitError(
                f"--output {target} is inside the data folder {folder}; tlkit never writes there: pick another --output"
            )

    step(f"loading {model_path}")
    model = load_keras_model(model_path)
    size = _image_size(model, model_path)
    augmentations = list(config.get("augmentations") or [])
    val_files, val_labels = _subset(scan.val.files, scan.val.labels, parity_images, int(config.get("seed", 0)))
    sample = _decode_some(val_files[:8], size)
    # mixup/cutmix are not layers of the model
    in_model = len(augmentations) - len(batch_mixing_names(augmentations))
    inference, stripped = inference_model(model, in_model, sample)

    calibration: dict[str, Any] | None = None
    calibration_pixels = None
    if quantize == "int8":
        step(f"decoding up to {calibration_images} training images for int8 calibration")
        cal_files, _ = _subset(scan.train.files, scan.train.labels, calibration_images, int(config.get("seed", 0)))
        unreadable: list[dict[str, str]] = []
        calibration_pixels = _decode_some(cal_files, size, unreadable)
        if len(calibration_pixels) == 0:
            raise TlkitError(
                none_readable_message(
                    unreadable, len(cal_files), f"training images of {data_root}", "int8 needs them for calibration"
                )
            )
        calibration = {
            "images": len(calibration_pixels),
            "requested": calibration_images,
            "available": len(scan.train.files),
            "source": f"training images of {data_root}, class-balanced, seed {config.get('seed', 0)}",
        }

    made_parent = not target.parent.exists()
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with staging_folder(target) as tmp:
            artifact_tmp = tmp / ARTIFACTS[fmt]
            title = f"{TITLES[fmt]}" + ("" if quantize == "none" else f" ({quantize})")
            step(
                f"converting to {title}"
                + (f" with {len(calibration_pixels)} calibration images" if calibration_pixels is not None else "")
            )
            WRITERS[fmt](inference, artifact_tmp, size, quantize, calibration_pixels)

            step(f"checking parity with {RunDir.MODEL} on {len(val_files)} validation images")
            exported = load_artifact(artifact_tmp, fmt)
            parity, (kept_files, top_original) = _measure_parity(
                model, exported, val_files, val_labels, size, batch_size, classes
            )
            parity["data"] = f"validation images of {data_root} ({scan.val_source})"
            threshold = MIN_AGREEMENT[quantize]
            parity["min_agreement"] = threshold
            parity["passed"] = parity["top1_agreement"] >= threshold
            parity["forced"] = bool(force and not parity["passed"])
            why = ""
            if not parity["passed"] and quantize != "none":
                # Is it the rounding or the model?  Only worth a pass of model.keras when the check failed.
                step(f"measuring how steady {RunDir.MODEL} is under pixel noise")
                parity["stability"] = measure_stability(model, kept_files, top_original, size, batch_size)
                why = "; " + stability_sentence(
                    parity["stability"], parity["top1_agreement"], threshold, f"{fmt} {quantize}"
                )
            if not parity["passed"] and not force:
                raise TlkitError(
                    f"parity check failed for {fmt} {quantize}: top-1 agreement with {RunDir.MODEL} "
                    f"{pct(parity['top1_agreement'])} ({parity['agreeing']} of {parity['images']} validation images) "
                    f"is below the required {pct(threshold)}; max |Δprob| {parity['max_abs_prob_diff']:.4f}, "
                    f"accuracy {pct(parity['accuracy_original'])} → {pct(parity['accuracy_exported'])}{why}. "
                    f"Nothing was written; rerun with --force to keep it anyway" + _MILDER.get((fmt, quantize), "")
                )

            info = export_info(
                run=run,
                config=config,
                classes=classes,
                fmt=fmt,
                quantize=quantize,
                size=size,
                artifact=artifact_tmp,
                engine=exported,
                parity=parity,
                calibration=calibration,
                stripped=stripped,
                model_path=model_path,
                seconds=time.perf_counter() - started,
                keras_packages=model_packages(model),
            )
            write_json(tmp / RunDir.CLASSES, list(classes))
            write_json(tmp / EXPORT_JSON, info)
            write_text(tmp / MODEL_CARD, model_card(info, classes))
            final = publish_folder(
                tmp,
                target,
                numbered=not explicit,
                taken=f"--output {target} already exists; tlkit never overwrites an export: pick another --output",
            )
            return ExportResult(
                path=final, artifact=final / ARTIFACTS[fmt], format=fmt, quantization=quantize, info=info
            )
    finally:
        if made_parent:
            with contextlib.suppress(OSError):
                target.parent.rmdir()  # only succeeds when empty: a failed first export leaves nothing


def _image_size(model: Any, path: Path) -> int:
    shape = getattr(model, "input_shape", None)
    if not shape or isinstance(shape, list) or len(shape) != 4 or not shape[1] or shape[1] != shape[2] or shape[3] != 3:
        raise TlkitError(f"{path} does not take square RGB images (its input is {shape}); tlkit cannot export it")
    return int(shape[1])


# --------------------------------------------------------------------------- data


def _parity_data(run: RunDir, config: dict[str, Any], classes: list[str], data: str | Path | None):
    """``(data root, scan)`` — the images parity and calibration use, labels as the model's output indices."""
    if data is None:
        if not config.get("data"):
            raise TlkitError(
                f"{run.config_path} names no data folder; pass --data DIR (a dataset with "
                f"train/ [val/] and the run's classes) to check parity on"
            )
        root = Path(config["data"])
        if not root.is_dir():
            raise TlkitError(
                f"the run's data folder {root} no longer exists; pass --data DIR (a dataset with "
                f"train/ [val/] and the run's classes): parity is measured on its validation images"
            )
    else:
        root = Path(data).expanduser()
        if not root.is_dir():
            raise TlkitError(f"--data {root} is not a folder")
    if data is None and config.get("labels"):  # the run's --labels CSV (tlkit.data.labels_csv)
        scan = scan_for_config(config)
    else:
        scan = datamod.scan_dataset(
            root, val_split=float(config.get("val_split", 0.2)), seed=int(config.get("seed", 0))
        )
    if sorted(scan.classes) != sorted(classes):
        missing = sorted(set(classes) - set(scan.classes))
        extra = sorted(set(scan.classes) - set(classes))
        parts = ([f"it lacks {', '.join(missing)}"] if missing else []) + (
            [f"the model does not know {', '.join(extra)}"] if extra else []
        )
        raise TlkitError(
            f"the classes of {root} differ from the run's ({'; '.join(parts)}); pass --data DIR with the run's classes"
        )
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


def _decode_some(files: Sequence[Path], size: int, unreadable: list[dict[str, str]] | None = None) -> np.ndarray:
    """The readable ones of ``files`` as a float32 ``(n, size, size, 3)`` array; unreadable ones are
    skipped (and recorded in ``unreadable`` as ``{"path", "reason"}``)."""
    pixels = []
    for path, decoded, error in decode_stream(list(files), size):
        if decoded is not None:
            pixels.append(decoded)
        elif unreadable is not None:
            unreadable.append({"path": str(path), "reason": error or "unreadable"})
    if not pixels:
        return np.zeros((0, size, size, 3), dtype=np.float32)
    return np.stack(pixels).astype(np.float32)


# --------------------------------------------------------------------------- parity


def _measure_parity(
    model: Any, exported: Any, files: Sequence[Path], labels: np.ndarray, size: int, batch_size: int, classes: list[str]
) -> tuple[dict[str, Any], tuple[list[Path], np.ndarray]]:
    """Run ``model`` and ``exported`` on the same decoded images (as predict decodes them) and compare.

    Returns the parity record and, for a second look, the readable files with ``model``'s top-1 answers.
    """
    original, other = Predictor(model), Predictor(exported)
    want_parts: list[np.ndarray] = []
    got_parts: list[np.ndarray] = []
    kept: list[int] = []
    unreadable: list[dict[str, str]] = []
    for indices, pixels in decoded_batches(files, size, batch_size, skipped=unreadable):
        want_parts.append(original(pixels))
        got_parts.append(other(pixels))
        kept.extend(indices)
    skipped = len(unreadable)
    if not kept:
        raise TlkitError(none_readable_message(unreadable, len(files), "validation images", "parity cannot be checked"))
    want, got = np.concatenate(want_parts), np.concatenate(got_parts)
    if got.shape != want.shape:
        raise TlkitError(
            f"the exported model returns shape {got.shape[1:]} per batch, {RunDir.MODEL} "
            f"{want.shape[1:]}; the export is broken"
        )
    truth = np.asarray(labels, dtype=np.int64)[kept]
    top_want, top_got = want.argmax(axis=1), got.argmax(axis=1)
    agree = top_want == top_got
    diff = np.abs(want - got)
    disagreements = [
        {
            "path": str(files[kept[i]]),
            "label": classes[truth[i]],
            "original": classes[top_want[i]],
            "exported": classes[top_got[i]],
            "original_prob": round(float(want[i, top_want[i]]), 6),
            "exported_prob": round(float(got[i, top_got[i]]), 6),
        }
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
    }, ([Path(files[i]) for i in kept], top_want)
