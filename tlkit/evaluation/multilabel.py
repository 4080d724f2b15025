"""Multi-label classification (``--multi-label``): sigmoid outputs, thresholds, per-label metrics.

An image may carry any number of labels, zero included.  The head's last
layer gets a sigmoid instead of a softmax (:func:`use_sigmoid`), training
minimises binary cross-entropy, and a label is predicted when its probability
reaches its threshold: one ``--threshold`` for every label (default 0.5), or
``--threshold tuned``, where each label's threshold is the one that maximises
its F1 on the validation images (:func:`tune_thresholds`).  The thresholds are
written to the run directory (``RunDir.thresholds_path``) and used by
``tlkit evaluate`` and ``tlkit predict``.

Metrics (numpy only): per-label precision, recall, F1 and support (images that
have the label), their micro average (over every image × label decision),
macro average (plain mean over labels) and weighted average (by support);
subset accuracy (images whose predicted set equals the true set), Hamming
accuracy (share of correct image × label decisions) and the mean binary
cross-entropy.  A label never predicted has precision 0, as scikit-learn's
``zero_division=0`` gives.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tlkit.errors import TlkitError
from tlkit.inference.thresholds import is_multi_label, run_thresholds
from tlkit.model.builder import use_sigmoid
from tlkit.version import __version__

__all__ = [
    "MultiLabelEvaluation",
    "binary_counts",
    "decide",
    "is_multi_label",
    "map_multi_hot",
    "mistakes_of",
    "multi_label_result",
    "multilabel_metrics",
    "run_thresholds",
    "thresholds_for_run",
    "tune_thresholds",
    "use_sigmoid",
]


# --------------------------------------------------------------------------- thresholds


def binary_counts(probs: np.ndarray, truth: np.ndarray, thresholds: np.ndarray) -> dict[str, np.ndarray]:
    """Per-label ``tp``, ``fp``, ``fn`` (int64 arrays) of the decisions ``probs >= thresholds``."""
    predicted = decide(probs, thresholds)
    truth = np.asarray(truth, dtype=bool)
    return {
        "tp": (predicted & truth).sum(axis=0).astype(np.int64),
        "fp": (predicted & ~truth).sum(axis=0).astype(np.int64),
        "fn": (~predicted & truth).sum(axis=0).astype(np.int64),
    }


def decide(probs: np.ndarray, thresholds: np.ndarray | float) -> np.ndarray:
    """The predicted labels as a boolean (n, C) matrix: probability ≥ the label's threshold."""
    return np.asarray(probs, dtype=np.float64) >= np.asarray(thresholds, dtype=np.float64)


def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    tp, fp, fn = (np.asarray(v, dtype=np.float64) for v in (tp, fp, fn))
    denominator = 2 * tp + fp + fn
    return np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)


def tune_thresholds(probs: np.ndarray, truth: np.ndarray, *, default: float = 0.5) -> np.ndarray:
    """Each label's threshold that maximises its F1 on ``(probs, truth)`` (e.g. the validation images).

    The candidates are the label's own probabilities (each one a threshold that
    changes the decisions); among equally good ones the midpoint between the
    chosen probability and the next lower one is taken, so a threshold sits
    between the classes rather than on an image.  A label with no positive
    image keeps ``default`` (its F1 is 0 whatever the threshold).
    """
    probs = np.asarray(probs, dtype=np.float64)
    truth = np.asarray(truth, dtype=bool)
    if probs.shape != truth.shape or probs.ndim != 2:
        raise ValueError(f"probs {probs.shape} and truth {truth.shape} must be equal (n, C) shapes")
    thresholds = np.full(probs.shape[1], float(default))
    for label in range(probs.shape[1]):
        p, t = probs[:, label], truth[:, label]
        positives = int(t.sum())
        if positives == 0:
            continue
        order = np.argsort(-p, kind="stable")
        p_sorted, t_sorted = p[order], t[order]
        tp = np.cumsum(t_sorted)  # predicting the top k+1 images as positive
        fp = np.cumsum(~t_sorted)
        # Only the last index of a run of equal probabilities is a reachable cut.
        last = np.r_[p_sorted[1:] != p_sorted[:-1], True]
        f1 = np.where(last, _f1(tp, fp, positives - tp), -1.0)
        best = int(np.argmax(f1))
        below = p_sorted[best + 1] if best + 1 < len(p_sorted) else 0.0
        thresholds[label] = float((p_sorted[best] + below) / 2) if below < p_sorted[best] else float(p_sorted[best])
    return thresholds


def thresholds_for_run(setting: str, probs: np.ndarray | None, truth: np.ndarray | None, num_labels: int) -> np.ndarray:
    """The thresholds of a run: ``--threshold`` for every label, or tuned on the validation images."""
    if str(setting).strip() == "tuned":
        if probs is None or truth is None:
            raise TlkitError("--threshold tuned needs the validation images' probabilities")
        return tune_thresholds(probs, truth)
    return np.full(num_labels, float(setting))


# --------------------------------------------------------------------------- metrics


def multilabel_metrics(
    probs: np.ndarray, truth: np.ndarray, classes: Sequence[str], thresholds: np.ndarray | float
) -> dict[str, Any]:
    """Every multi-label metric of ``probs`` (n, C) against the multi-hot ``truth`` (n, C), as a dict.

    Keys: ``num_images``, ``subset_accuracy``, ``hamming_accuracy``, ``log_loss``
    (mean binary cross-entropy), ``per_class`` ({label: {precision, recall, f1,
    support, threshold}}), ``micro_avg``, ``macro_avg``, ``weighted_avg``
    ({precision, recall, f1}).
    """
    probs = np.asarray(probs, dtype=np.float64)
    truth = np.asarray(truth, dtype=bool)
    n, num_labels = probs.shape
    if n == 0:
        raise TlkitError("no images to evaluate")
    if num_labels != len(classes) or truth.shape != probs.shape:
        raise ValueError(f"probs {probs.shape} / truth {truth.shape} do not fit {len(classes)} labels")
    thresholds = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (num_labels,))
    counts = binary_counts(probs, truth, thresholds)
    tp, fp, fn = (counts[k].astype(np.float64) for k in ("tp", "fp", "fn"))
    precision = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=(tp + fp) > 0)
    recall = np.divide(tp, tp + fn, out=np.zeros_like(tp), where=(tp + fn) > 0)
    f1 = _f1(tp, fp, fn)
    support = truth.sum(axis=0).astype(np.int64)
    total_tp, total_fp, total_fn = tp.sum(), fp.sum(), fn.sum()
    micro_p = total_tp / (total_tp + total_fp) if total_tp + total_fp else 0.0
    micro_r = total_tp / (total_tp + total_fn) if total_tp + total_fn else 0.0
    predicted = decide(probs, thresholds)
    clipped = np.clip(probs, 1e-7, 1 - 1e-7)
    bce = -(truth * np.log(clipped) + (~truth) * np.log(1 - clipped)).mean()

    def average(weights: np.ndarray | None) -> dict[str, float]:
        if weights is not None and not weights.sum():
            return {"precision": 0.0, "recall": 0.0, "f1": 0.0}
        return {
            k: float(np.average(v, weights=weights))
            for k, v in (("precision", precision), ("recall", recall), ("f1", f1))
        }

    return {
        "num_images": int(n),
        "subset_accuracy": float((predicted == truth).all(axis=1).mean()),
        "hamming_accuracy": float((predicted == truth).mean()),
        "log_loss": float(bce),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
                "threshold": float(thresholds[i]),
            }
            for i, name in enumerate(classes)
        },
        "micro_avg": {
            "precision": float(micro_p),
            "recall": float(micro_r),
            "f1": float(_f1(total_tp, total_fp, total_fn)),
        },
        "macro_avg": average(None),
        "weighted_avg": average(support),
    }


@dataclass
class MultiLabelEvaluation:
    """What :func:`tlkit.evaluate` measured on a multi-label run; ``as_dict()`` is ``metrics.json``.

    ``mistakes`` are the images whose predicted label set differs from the true
    one, the most confident wrong decision first (``probability`` is that label's).
    """

    model: str
    run_dir: str | None
    data: str
    split: str
    classes: list[str]
    thresholds: list[float]
    metrics: dict[str, Any]
    mistakes: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    multi_label = True

    @property
    def num_images(self) -> int:
        return int(self.metrics["num_images"])

    @property
    def per_class(self) -> dict[str, dict[str, Any]]:
        return self.metrics["per_class"]

    @property
    def micro(self) -> dict[str, float]:
        return self.metrics["micro_avg"]

    @property
    def macro(self) -> dict[str, float]:
        return self.metrics["macro_avg"]

    @property
    def weighted(self) -> dict[str, float]:
        return self.metrics["weighted_avg"]

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "run_dir": self.run_dir,
            "data": self.data,
            "split": self.split,
            "multi_label": True,
            "classes": list(self.classes),
            "thresholds": dict(zip(self.classes, self.thresholds)),
            **self.metrics,
            "num_mistakes": len(self.mistakes),
            "mistakes": self.mistakes[:100],
            "skipped_images": list(self.skipped),
            "notes": list(self.notes),
            "files": dict(self.files),
            "seconds": round(self.seconds, 2),
            "tlkit_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }


def mistakes_of(
    probs: np.ndarray, truth: np.ndarray, files: Sequence[Any], classes: Sequence[str], thresholds: np.ndarray
) -> list[dict[str, Any]]:
    """The images whose predicted label set differs from the true set, the most confident error first."""
    predicted = decide(probs, thresholds)
    truth = np.asarray(truth, dtype=bool)
    wrong = np.flatnonzero((predicted != truth).any(axis=1))
    margin = np.where(predicted != truth, np.abs(probs - thresholds), -1.0)
    worst = margin.argmax(axis=1)
    wrong = wrong[np.argsort(-margin[wrong, worst[wrong]], kind="stable")]

    def names(row: np.ndarray) -> str:
        return "|".join(classes[int(j)] for j in np.flatnonzero(row))

    return [
        {
            "path": str(files[int(i)]),
            "true": names(truth[i]),
            "predicted": names(predicted[i]),
            "label": classes[worst[i]],
            "probability": float(probs[i, worst[i]]),
        }
        for i in wrong
    ]


# --------------------------------------------------------------------------- runs: thresholds, evaluation


def map_multi_hot(truth: np.ndarray, data_labels: Sequence[str], model_labels: Sequence[str], where: str) -> np.ndarray:
    """The data's (n, C_data) multi-hot labels as (n, C_model) columns in the model's label order.

    A label of the model the data never names is simply absent from every image;
    a label the model does not know is refused.
    """
    unknown = sorted(set(data_labels) - set(model_labels))
    if unknown:
        raise TlkitError(
            f"the labels of {where} include {', '.join(unknown)}, which the model does not know "
            f"(its labels: {', '.join(model_labels)}); evaluate on data with the model's labels"
        )
    out = np.zeros((len(truth), len(model_labels)), dtype=np.int64)
    out[:, [list(model_labels).index(name) for name in data_labels]] = truth
    return out


def multi_label_result(
    source: Any,
    chosen: Any,
    probs: np.ndarray,
    truth: np.ndarray,
    files: Sequence[Any],
    classes: Sequence[str],
    skipped: list[dict[str, str]],
) -> MultiLabelEvaluation:
    """The :class:`MultiLabelEvaluation` of a model's probabilities on labelled images (see :func:`tlkit.evaluate`)."""
    thresholds = run_thresholds(source)
    if thresholds is None:
        thresholds = np.full(len(classes), 0.5)
    metrics = multilabel_metrics(probs, truth, classes, thresholds)
    notes = list(source.notes)
    if skipped:
        notes.append(f"{len(skipped)} unreadable image(s) skipped")
    return MultiLabelEvaluation(
        model=str(source.model_path),
        run_dir=str(source.run_dir) if source.run_dir else None,
        data=str(chosen.root),
        split=chosen.description,
        classes=list(classes),
        thresholds=[float(t) for t in thresholds],
        metrics=metrics,
        mistakes=mistakes_of(probs, truth, files, classes, thresholds),
        skipped=skipped,
        notes=notes,
    )
