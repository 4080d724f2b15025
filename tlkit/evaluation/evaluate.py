"""How good is the model, and where does it fail: metrics, confusion matrix, mistakes.

>>> result = tlkit.evaluate("runs/20261128-101500-mobilenet_v2-dense256")   # the run's val data
>>> result.accuracy, result.macro["f1"], result.per_class["cat"].recall

Metrics are computed with numpy (no scikit-learn): accuracy, top-k accuracy,
log loss, per-class precision / recall / F1 / support, their macro (plain
mean over classes) and weighted (by support) averages, and the confusion
matrix (rows: true class, columns: predicted class) as counts and
row-normalised.  A class that is never predicted has precision 0 (and F1 0),
as scikit-learn's ``zero_division=0`` gives.

:func:`evaluate` writes ``<run>/evaluation/metrics.json``,
``confusion_matrix.png`` and ``mistakes.png`` (the training ``metrics.json``
of the run is never touched).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image

from tlkit.data import decode
from tlkit.data import folders as datamod
from tlkit.data.labels_csv import scan_for_config
from tlkit.errors import TlkitError
from tlkit.evaluation.figures import plot_confusion, plot_mistakes
from tlkit.evaluation.multilabel import MultiLabelEvaluation, map_multi_hot, multi_label_result
from tlkit.inference.prediction import ModelSource, Predictor, decoded_batches, open_model
from tlkit.inference.tta import TTA, parse_tta, summary
from tlkit.io.files import write_json
from tlkit.io.rundir import RunDir
from tlkit.tracking.runs import check_evaluation, track_evaluation
from tlkit.version import __version__

__all__ = [
    "ClassMetrics",
    "EvaluationResult",
    "Mistake",
    "classification_metrics",
    "compute_metrics",
    "confusion_matrix",
    "evaluate",
    "select_data",
    "thumbnail",
]

SPLITS = ("val", "train", "all")
_MAX_MISTAKES_SAVED = 100


# --------------------------------------------------------------------------- metrics (numpy)


def confusion_matrix(
    y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, num_classes: int
) -> np.ndarray:
    """``(num_classes, num_classes)`` int64 counts: ``[i, j]`` = images of class i predicted as j."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError("y_true and y_pred must have the same length")
    flat = np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def _safe_divide(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return np.divide(a, b, out=np.zeros_like(a), where=b > 0)


def classification_metrics(confusion: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class ``precision``, ``recall``, ``f1`` (float arrays) and ``support`` (int) from counts."""
    confusion = np.asarray(confusion, dtype=np.int64)
    tp = np.diag(confusion).astype(np.float64)
    predicted = confusion.sum(axis=0)
    support = confusion.sum(axis=1)
    precision = _safe_divide(tp, predicted)
    recall = _safe_divide(tp, support)
    f1 = _safe_divide(2 * precision * recall, precision + recall)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support}


def compute_metrics(
    probs: np.ndarray, labels: Sequence[int] | np.ndarray, classes: Sequence[str], *, top_k: int = 5
) -> dict[str, Any]:
    """All metrics of predicted probabilities ``probs`` (n, C) against true ``labels`` (n,), as a dict.

    Keys: ``num_images``, ``accuracy``, ``top_k``, ``top_k_accuracy``,
    ``log_loss``, ``per_class`` ({class: {precision, recall, f1, support}}),
    ``macro_avg`` and ``weighted_avg`` ({precision, recall, f1}),
    ``confusion_matrix`` ({labels, counts, row_normalized}).
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    n, num_classes = probs.shape
    if n == 0:
        raise TlkitError("no images to evaluate")
    if num_classes != len(classes):
        raise ValueError(f"probs has {num_classes} columns for {len(classes)} classes")
    predicted = probs.argmax(axis=1)
    k = max(1, min(top_k, num_classes))
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    counts = confusion_matrix(labels, predicted, num_classes)
    per = classification_metrics(counts)
    support = per["support"]
    total = support.sum()
    averages = {}
    for name, weights in (("macro_avg", None), ("weighted_avg", support)):
        averages[name] = {
            key: float(np.average(per[key], weights=weights) if weights is None or total else 0.0)
            for key in ("precision", "recall", "f1")
        }
    true_probs = np.clip(probs[np.arange(n), labels], 1e-7, 1.0)
    rows = counts.sum(axis=1, keepdims=True)
    return {
        "num_images": int(n),
        "accuracy": float((predicted == labels).mean()),
        "top_k": int(k),
        "top_k_accuracy": float((top == labels[:, None]).any(axis=1).mean()),
        "log_loss": float(-np.log(true_probs).mean()),
        "per_class": {
            name: {
                "precision": float(per["precision"][i]),
                "recall": float(per["recall"][i]),
                "f1": float(per["f1"][i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(classes)
        },
        **averages,
        "confusion_matrix": {
            "labels": list(classes),
            "counts": counts.tolist(),
            "row_normalized": [[round(float(v), 6) for v in row] for row in _safe_divide(counts, rows)],
        },
    }


# --------------------------------------------------------------------------- results


@dataclass
class ClassMetrics:
    """Precision, recall, F1 and support (number of true images) of one class."""

    name: str
    precision: float
    recall: float
    f1: float
    support: int

    def as_dict(self) -> dict[str, Any]:
        return {"precision": self.precision, "recall": self.recall, "f1": self.f1, "support": self.support}


@dataclass
class Mistake:
    """A misclassified image: its true class, the predicted one and that prediction's probability."""

    path: str
    true: str
    predicted: str
    probability: float

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "true": self.true, "predicted": self.predicted, "probability": self.probability}


@dataclass
class EvaluationResult:
    """What :func:`evaluate` measured; ``as_dict()`` is what ``metrics.json`` holds."""

    model: str
    run_dir: str | None
    data: str
    split: str
    classes: list[str]
    num_images: int
    accuracy: float
    top_k: int
    top_k_accuracy: float
    log_loss: float
    per_class: dict[str, ClassMetrics]
    macro: dict[str, float]
    weighted: dict[str, float]
    confusion: list[list[int]]
    confusion_normalized: list[list[float]]
    mistakes: list[Mistake]  # every mistake, most confident first
    skipped: list[dict[str, str]] = field(default_factory=list)  # unreadable images: path, reason
    notes: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    # test-time augmentation: {"setting", "views", "without_tta": {...}, "with_tta": {...}} (see tlkit.inference.tta.summary);
    # when set, every metric above (and the confusion matrix and mistakes) is of the TTA-averaged probabilities
    tta: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "run_dir": self.run_dir,
            "data": self.data,
            "split": self.split,
            "num_images": self.num_images,
            "classes": list(self.classes),
            "accuracy": self.accuracy,
            "top_k": self.top_k,
            "top_k_accuracy": self.top_k_accuracy,
            "log_loss": self.log_loss,
            "per_class": {name: m.as_dict() for name, m in self.per_class.items()},
            "macro_avg": dict(self.macro),
            "weighted_avg": dict(self.weighted),
            "confusion_matrix": {
                "labels": list(self.classes),
                "counts": self.confusion,
                "row_normalized": self.confusion_normalized,
            },
            "num_mistakes": len(self.mistakes),
            "mistakes": [m.as_dict() for m in self.mistakes[:_MAX_MISTAKES_SAVED]],
            "skipped_images": list(self.skipped),
            "notes": list(self.notes),
            "files": dict(self.files),
            "seconds": round(self.seconds, 2),
            "tta": self.tta,
            "tlkit_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }


# --------------------------------------------------------------------------- data selection


@dataclass
class EvalData:
    """The images to evaluate on: files, their class indices into ``classes``, and a description."""

    root: Path
    classes: list[str]
    files: list[Path]
    labels: np.ndarray
    description: str  # e.g. "val split of /data (val/ folder)"
    split: str


def select_data(
    source: ModelSource, data: str | Path | None = None, split: str = "val", labels: str | Path | None = None
) -> EvalData:
    """The labelled images to evaluate ``source`` on.

    - ``data`` None: the run's own validation data (``config.data`` split as in training,
      from its ``--labels`` CSV when it was trained on one);
    - ``labels`` a labels CSV (:mod:`tlkit.data.labels_csv`; paths relative to ``data``, default
      the run's data folder): its ``split`` (a CSV without a split column is split as training splits);
    - ``data`` a dataset folder with ``train/`` (and maybe ``val/``): its ``split``
      (``val`` as training splits it with the run's seed and val_split, ``train``, or ``all``);
    - ``data`` a folder of class sub-folders (``data/test``): all of its images.
    """
    if split not in SPLITS:
        raise TlkitError(f"--split must be one of {', '.join(SPLITS)}, not {split!r}")
    config = source.config
    if data is None:
        if source.run_dir is None and not config.get("data"):  # an export knows its run's data
            raise TlkitError(
                f"{source.model_path} is a model file, not a run directory: pass --data DIR "
                f"(a dataset with train/ [val/], or a folder of class sub-folders)"
            )
        if not config.get("data"):
            raise TlkitError(
                f"{RunDir(source.run_dir or source.model_path.parent).config_path} names no data "
                f"folder; pass --data DIR"
            )
        root = Path(config["data"])
        if not root.is_dir():
            raise TlkitError(f"the run's data folder {root} no longer exists; pass --data DIR")
    else:
        root = Path(data).expanduser()
        if not root.is_dir():
            raise TlkitError(f"--data {root} is not a folder")

    csv_file = labels or (config.get("labels") if data is None else None)
    if csv_file or (root / "train").is_dir():
        if csv_file:  # a labels CSV (tlkit.data.labels_csv), e.g. the run's own --labels
            scan = scan_for_config({**config, "data": str(root), "labels": str(csv_file)})
        else:
            scan = datamod.scan_dataset(
                root, val_split=float(config.get("val_split", 0.2)), seed=int(config.get("seed", 0))
            )
        if split == "all":
            files = scan.train.files + scan.val.files
            label_ids = np.concatenate([scan.train.labels, scan.val.labels])
            description = f"all images of {root} (train and validation)"
        else:
            chosen = scan.val if split == "val" else scan.train
            files, label_ids = chosen.files, chosen.labels
            description = (
                f"validation images of {root} ({scan.val_source})" if split == "val" else f"training images of {root}"
            )
        classes = scan.classes
    else:
        # A folder of class sub-folders, e.g. data/test/<class>/*: every image in it.
        folder = datamod._scan_split_folder(root)
        classes = sorted(folder.files_by_class)
        chosen = datamod._split_from_folders(folder.files_by_class, classes)
        files, label_ids, split = chosen.files, chosen.labels, "all"
        description = f"all images of {root} (one sub-folder per class)"
    if not files:
        raise TlkitError(f"no images to evaluate in {description}")
    return EvalData(
        root=root,
        classes=list(classes),
        files=list(files),
        labels=np.asarray(label_ids, dtype=np.int64),
        description=description,
        split=split,
    )


def _map_labels(source: ModelSource, data: EvalData) -> tuple[np.ndarray, list[str]]:
    """Data labels as model output indices, checking that the classes match; also the class names."""
    model_classes = source.classes
    if data.labels.ndim == 2:  # multi-label (n, C) multi-hot: columns in the model's label order
        return map_multi_hot(data.labels, data.classes, model_classes, str(data.root)), list(model_classes)
    if not source.classes_known:
        if len(data.classes) != len(model_classes):
            raise TlkitError(
                f"the model has {len(model_classes)} outputs but {data.root} has {len(data.classes)} "
                f"classes ({', '.join(data.classes)}); evaluate on data with the model's classes"
            )
        source.notes.append(
            f"no {RunDir.CLASSES}: assumed the data's sorted class folders ({', '.join(data.classes)}) "
            f"are outputs 0..{len(data.classes) - 1}"
        )
        return data.labels, list(data.classes)
    missing = sorted(set(model_classes) - set(data.classes))
    extra = sorted(set(data.classes) - set(model_classes))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"the data lacks {', '.join(missing)}")
        if extra:
            parts.append(f"the model does not know {', '.join(extra)}")
        raise TlkitError(
            f"the model's classes ({len(model_classes)}) do not match those of {data.root} "
            f"({len(data.classes)}): {'; '.join(parts)}"
        )
    index = np.asarray([model_classes.index(name) for name in data.classes], dtype=np.int64)
    return index[data.labels], list(model_classes)


# --------------------------------------------------------------------------- evaluate


def thumbnail(path: str | Path | IO[bytes], size: int = 160) -> np.ndarray:
    """An RGB uint8 thumbnail (aspect kept, longest side ``size``) of a file or an open binary stream,
    decoded like training decodes."""
    with Image.open(path) as img:
        img.draft("RGB", (size, size))
        img.load()
        rgb = decode._to_rgb(decode._apply_exif_orientation(img))
        rgb.thumbnail((size, size), Image.Resampling.BILINEAR)
        return np.asarray(rgb, dtype=np.uint8)


def default_output_dir(source: ModelSource) -> Path:
    """``<run>/evaluation`` for a run, ``<model's folder>/evaluation`` for a bare model file."""
    return RunDir(source.run_dir or source.model_path.parent).evaluation_dir


def evaluate(
    run_or_model: str | Path,
    data: str | Path | None = None,
    *,
    top_k: int = 5,
    batch_size: int = 32,
    split: str = "val",
    output_dir: str | Path | None = None,
    max_mistakes: int = 15,
    write: bool = True,
    model: Any = None,
    progress: Callable[[int], None] | None = None,
    on_start: Callable[[int], None] | None = None,
    probabilities: Mapping[str, np.ndarray] | None = None,
    tta: str | int | TTA | None = None,
    labels: str | Path | None = None,
    track: bool | None = None,
) -> EvaluationResult | MultiLabelEvaluation:
    """Evaluate a run's model (or a ``.keras`` file) on labelled images; return an :class:`EvaluationResult`.

    Args:
        run_or_model: a run directory or a ``.keras`` file.
        data: see :func:`select_data`; default the run's validation data.
        top_k: k of the top-k accuracy (capped at the number of classes).
        batch_size: images per model call.
        split: ``val`` (default), ``train`` or ``all`` for a dataset folder with ``train/``.
        output_dir: where to write ``metrics.json``, ``confusion_matrix.png`` and
            ``mistakes.png``; default ``<run>/evaluation``.
        max_mistakes: how many of the most confident mistakes ``mistakes.png`` shows.
        write: False computes only (nothing is written).
        model: an already loaded ``keras.Model`` to use instead of loading the file.
        progress: called with the number of images done since the last call.
        on_start: called once with the number of images, before reading them.
        probabilities: the model's class probabilities already known for some
            images, by path (training passes the head's on cached features);
            those images are neither decoded nor run through the model.
        tta: test-time augmentation, ``"flips"`` or a number of views (2..12;
            see :mod:`tlkit.inference.tta`): the metrics, confusion matrix and mistakes are
            those of the probabilities averaged over the views, and ``result.tta``
            holds the headline metrics without and with TTA side by side.
        labels: a labels CSV to evaluate on (see :func:`select_data`); a multi-label
            run returns a :class:`tlkit.evaluation.multilabel.MultiLabelEvaluation`.
        track: add the metrics and files to the run's tracked run (``tlkit train --track``): None
            when it was tracked, False never, True or a TlkitError; a tracker's failure is a note.

    Unreadable images are skipped and listed in ``skipped``.

    Raises:
        TlkitError: not a run/model, classes that do not match the data's
            (the difference is named), no readable images.
    """
    started = time.perf_counter()
    if batch_size < 1:
        raise TlkitError(f"--batch-size (batch_size) must be at least 1, got {batch_size}")
    if top_k < 1:
        raise TlkitError(f"--top-k (top_k) must be at least 1, got {top_k}")
    views = parse_tta(tta)
    if views is not None and probabilities:
        raise TlkitError("probabilities= are the plain model's, tta= must run every view of every image: pass one")
    source = open_model(run_or_model, model=model)
    check_evaluation(source.run_dir, track)
    chosen = select_data(source, data, split, labels)
    if chosen.labels.ndim == 1 and source.config.get("multi_label"):
        raise TlkitError(
            f"{source.name} is a multi-label run: evaluate it on a labels CSV (--labels FILE.csv with a labels column)"
        )
    label_ids, classes = _map_labels(source, chosen)
    if on_start is not None:
        on_start(len(chosen.files))

    known = probabilities or {}
    by_index: dict[int, np.ndarray] = {}
    plain_by_index: dict[int, np.ndarray] = {}  # with TTA: the original view's probabilities
    skipped: list[dict[str, str]] = []
    for i, path in enumerate(chosen.files):
        if str(path) in known:
            by_index[i] = np.asarray(known[str(path)], dtype=np.float64)
    if progress and by_index:
        progress(len(by_index))
    to_run = [i for i in range(len(chosen.files)) if i not in by_index]
    if to_run:
        run = Predictor(source.model)
        files_to_run = [chosen.files[i] for i in to_run]
        for indices, pixels in decoded_batches(files_to_run, source.image_size, batch_size, skipped=skipped):
            if views is None:
                rows = run(pixels)
            else:
                plain_rows, rows = views.predict(run, pixels)
                for i, row in zip(indices, plain_rows):
                    plain_by_index[to_run[i]] = row
            for i, row in zip(indices, rows):
                by_index[to_run[i]] = row
            if progress:
                progress(len(indices))
    kept = sorted(by_index)
    if not kept:
        raise TlkitError(
            decode.none_readable_message(
                skipped, len(chosen.files), f"images in {chosen.description}", "nothing to evaluate"
            )
        )

    probs = np.stack([by_index[i] for i in kept])
    true = label_ids[kept]
    files = [chosen.files[i] for i in kept]
    if true.ndim == 2:  # multi-label (tlkit.evaluation.multilabel): per-label metrics at the run's thresholds
        ml_result = multi_label_result(source, chosen, probs, true, files, classes, skipped)
        ml_result.seconds = time.perf_counter() - started
        if views is not None:  # averaged over the views; the side-by-side without/with TTA is single-label only
            ml_result.notes.append(f"test-time augmentation {views.describe()}: metrics of the averaged probabilities")
        if write:
            target = Path(output_dir) if output_dir else default_output_dir(source)
            ml_result.files = {"metrics": str(target / RunDir.EVALUATION_FILES["metrics"])}
            try:
                write_json(target / RunDir.EVALUATION_FILES["metrics"], ml_result.as_dict())
            except OSError as exc:
                raise TlkitError(
                    f"cannot write the evaluation into {target}: {exc.strerror or exc}; pass --output DIR"
                ) from exc
            ml_result.notes += track_evaluation(source.run_dir, ml_result.as_dict(), ml_result.files, track)
        return ml_result
    metrics = compute_metrics(probs, true, classes, top_k=top_k)

    predicted = probs.argmax(axis=1)
    wrong = np.flatnonzero(predicted != true)
    wrong = wrong[np.argsort(-probs[wrong, predicted[wrong]], kind="stable")]
    mistakes = [
        Mistake(
            path=str(files[i]),
            true=classes[true[i]],
            predicted=classes[predicted[i]],
            probability=float(probs[i, predicted[i]]),
        )
        for i in wrong
    ]
    notes = list(source.notes)
    if skipped:
        notes.append(f"{len(skipped)} unreadable image(s) skipped")
    tta_metrics = None
    if views is not None:
        plain = compute_metrics(np.stack([plain_by_index[i] for i in kept]), true, classes, top_k=top_k)
        tta_metrics = {**views.as_dict(), "without_tta": summary(plain), "with_tta": summary(metrics)}
        notes.append(
            f"test-time augmentation {views.describe()}: the metrics, confusion matrix and mistakes are of the "
            f"averaged probabilities (accuracy {metrics['accuracy']:.4f}; without TTA {plain['accuracy']:.4f})"
        )
    result = EvaluationResult(
        model=str(source.model_path),
        run_dir=str(source.run_dir) if source.run_dir else None,
        data=str(chosen.root),
        split=chosen.description,
        classes=classes,
        num_images=metrics["num_images"],
        accuracy=metrics["accuracy"],
        top_k=metrics["top_k"],
        top_k_accuracy=metrics["top_k_accuracy"],
        log_loss=metrics["log_loss"],
        per_class={name: ClassMetrics(name=name, **values) for name, values in metrics["per_class"].items()},
        macro=metrics["macro_avg"],
        weighted=metrics["weighted_avg"],
        confusion=metrics["confusion_matrix"]["counts"],
        confusion_normalized=metrics["confusion_matrix"]["row_normalized"],
        mistakes=mistakes,
        skipped=skipped,
        notes=notes,
        tta=tta_metrics,
    )
    result.seconds = time.perf_counter() - started
    if write:
        target = Path(output_dir) if output_dir else default_output_dir(source)
        try:
            write_evaluation(result, target, max_mistakes=max_mistakes)
        except OSError as exc:
            raise TlkitError(
                f"cannot write the evaluation into {target}: {exc.strerror or exc}; pass --output DIR"
            ) from exc
        result.notes += track_evaluation(source.run_dir, result.as_dict(), result.files, track)
    return result


def write_evaluation(result: EvaluationResult, output_dir: str | Path, *, max_mistakes: int = 15) -> dict[str, str]:
    """Write ``metrics.json``, ``confusion_matrix.png`` and ``mistakes.png`` into ``output_dir``."""
    FILES = RunDir.EVALUATION_FILES
    output_dir = Path(output_dir)
    title_source = Path(result.run_dir).name if result.run_dir else Path(result.model).name
    confusion_png = plot_confusion(
        result.confusion,
        result.classes,
        output_dir / FILES["confusion_matrix"],
        title=f"Confusion matrix — {result.num_images} images, accuracy {result.accuracy:.1%}"
        + (f" (TTA {result.tta['setting']})" if result.tta else ""),
    )
    items = []
    for mistake in result.mistakes[: max(0, max_mistakes)]:
        try:
            image = thumbnail(mistake.path)
        except Exception:  # noqa: BLE001 - it was readable a moment ago; show the rest
            continue
        items.append(
            {"image": image, "true": mistake.true, "predicted": mistake.predicted, "probability": mistake.probability}
        )
    shown = f"{len(items)} of {len(result.mistakes)}" if len(result.mistakes) > len(items) else f"{len(items)}"
    mistakes_png = plot_mistakes(
        items,
        output_dir / FILES["mistakes"],
        title=f"Most confident mistakes ({shown}) — {title_source}" if items else f"Mistakes — {title_source}",
    )
    result.files = {
        "metrics": str(output_dir / FILES["metrics"]),
        "confusion_matrix": str(confusion_png),
        "mistakes": str(mistakes_png),
    }
    write_json(output_dir / FILES["metrics"], result.as_dict())
    return result.files
