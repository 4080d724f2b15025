"""Figures, in one consistent style.

Every figure tlkit draws comes from here — training curves, the confusion
heatmap, the grid of mistakes, the overlay of several runs — so they share
one look (:data:`STYLE`, :data:`COLORS`).  Figures are drawn with
matplotlib's non-interactive Agg backend (no display needed) and written
atomically.  matplotlib is imported inside the functions, never at import.

"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from tlkit.evaluation.fonts import quiet_glyphs, text_fonts
from tlkit.evaluation.history import best_epoch as best_of
from tlkit.io.files import atomic_path

COLORS = {
    "train": "#1f77b4",
    "val": "#d62728",
    "best": "#2ca02c",
    "boundary": "#7f7f7f",
    "mistake": "#b2182b",
    "text": "#222222",
}
"""The colours shared by every figure (train, validation, best epoch, stage boundary, ...)."""

RUN_COLORS = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#ff7f0e",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
"""One colour per run in overlay plots (cycled)."""

STYLE: dict[str, Any] = {
    "figure.dpi": 110,
    "savefig.dpi": 110,
    "figure.facecolor": "white",
    "axes.facecolor": "white",
    "font.size": 10,
    "axes.titlesize": 12,
    "axes.titleweight": "bold",
    "axes.labelsize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linestyle": "-",
    "legend.frameon": False,
    "legend.fontsize": 9,
    "lines.linewidth": 1.8,
    "lines.markersize": 3.5,
}
"""matplotlib rcParams applied (temporarily) to every tlkit figure."""

_CURVES = (("accuracy", "Accuracy", max), ("loss", "Loss", min))


def _pyplot():
    import matplotlib  # lazy: matplotlib is slow to import; only drawing a figure needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: matplotlib is slow to import; only drawing a figure needs it

    return plt


def _save(fig, path: Path) -> Path:
    plt = _pyplot()
    with atomic_path(path) as tmp, quiet_glyphs():
        fig.savefig(tmp, format="png", bbox_inches="tight")
    plt.close(fig)
    return path


def figure_png(fig) -> bytes:
    """The figure as PNG bytes (and closed): for inlining into HTML."""
    plt = _pyplot()
    buffer = io.BytesIO()
    with quiet_glyphs():
        fig.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


# --------------------------------------------------------------------------- training curves


def _stage_spans(stages: Sequence[str]) -> list[tuple[str, int, int]]:
    """``[(stage, first_epoch, last_epoch), ...]`` (1-based) for consecutive runs of a stage."""
    spans: list[tuple[str, int, int]] = []
    for epoch, stage in enumerate(stages, start=1):
        if spans and spans[-1][0] == stage:
            spans[-1] = (stage, spans[-1][1], epoch)
        else:
            spans.append((stage, epoch, epoch))
    return spans


def history_figure(
    history: dict[str, list[float]],
    metric: str,
    *,
    title: str,
    stages: Sequence[str] | None = None,
    best_epoch: int | None = None,
    epochs: Sequence[int] | None = None,
):
    """One training-curve figure (train vs validation ``metric`` per epoch), or None if no data.

    Draws a vertical boundary with the stage's name where ``stages`` changes
    (e.g. ``head`` → ``fine_tune``) and marks ``best_epoch`` (default: the
    epoch with the best validation accuracy) on the validation curve.
    """
    plt = _pyplot()
    label = dict((m, lbl) for m, lbl, _ in _CURVES).get(metric, metric.replace("_", " ").capitalize())
    train = list(history.get(metric) or [])
    val = list(history.get(f"val_{metric}") or [])
    if not train and not val:
        return None
    n = max(len(train), len(val))
    xs = list(epochs) if epochs is not None and len(epochs) == n else list(range(1, n + 1))
    if best_epoch is None:
        best_epoch = best_of(history)

    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(7, 4.2))
        if train:
            ax.plot(xs[: len(train)], train, marker="o", color=COLORS["train"], label="train")
        if val:
            ax.plot(xs[: len(val)], val, marker="o", color=COLORS["val"], label="validation")
        if stages and len(stages) == n:
            spans = _stage_spans(stages)
            if len(spans) > 1:
                for _stage, first, _last in spans[1:]:
                    x = xs[first - 1] - 0.5
                    ax.axvline(x, color=COLORS["boundary"], linestyle="--", linewidth=1.2)
                for stage, first, last in spans:
                    ax.text(
                        (xs[first - 1] + xs[last - 1]) / 2,
                        1.0,
                        stage.replace("_", "-"),
                        transform=ax.get_xaxis_transform(),
                        ha="center",
                        va="bottom",
                        fontsize=9,
                        color=COLORS["boundary"],
                        style="italic",
                    )
        if best_epoch is not None and 1 <= best_epoch <= n:
            bx = xs[best_epoch - 1]
            ax.axvline(bx, color=COLORS["best"], linestyle=":", linewidth=1.4)
            text = f"best epoch {bx}"
            if val and best_epoch <= len(val) and not math.isnan(val[best_epoch - 1]):
                by = val[best_epoch - 1]
                ax.scatter([bx], [by], s=110, facecolors="none", edgecolors=COLORS["best"], linewidths=2, zorder=4)
                text += f": val {metric.replace('_', ' ')} {by:.4f}"
            ax.plot([], [], color=COLORS["best"], linestyle=":", label=text)  # legend entry
        ax.set_title(f"{label} — {title}", pad=16 if stages and len(set(stages)) > 1 else 6)
        ax.set_xlabel("Epoch")
        ax.set_ylabel(label)
        ax.xaxis.get_major_locator().set_params(integer=True)
        bounded = (
            metric.endswith("accuracy") or metric in ("f1", "precision", "recall", "auc") or metric.startswith("fbeta")
        )
        if bounded:  # a fraction: the full 0–1 range shows how good it is at a glance
            ax.set_ylim(-0.02, 1.02)
        ax.legend(loc="lower right" if bounded else "upper right")
        fig.tight_layout()
    return fig


def plot_history(
    history: dict[str, list[float]],
    plots_dir: str | Path,
    *,
    title: str,
    stages: list[str] | None = None,
    best_epoch: int | None = None,
) -> list[Path]:
    """Write ``accuracy.png`` and ``loss.png`` (train vs validation per epoch); return their paths.

    Args:
        history: Keras-style ``{"loss": [...], "val_loss": [...], ...}``, one value per epoch.
        plots_dir: folder for the PNGs (created if missing).
        title: shown after the metric's name, e.g. ``"mobilenet_v2 + dense256"``.
        stages: the training stage of each epoch (``["head", "head", "fine_tune", ...]``);
            a labelled boundary is drawn where it changes.
        best_epoch: 1-based epoch to mark; default the best validation accuracy.
    """
    plots_dir = Path(plots_dir)
    written = []
    for metric, _label, _best in _CURVES:
        fig = history_figure(history, metric, title=title, stages=stages, best_epoch=best_epoch)
        if fig is not None:
            written.append(_save(fig, plots_dir / f"{metric}.png"))
    return written


# --------------------------------------------------------------------------- evaluation figures


def confusion_figure(counts, classes: Sequence[str], *, title: str = "Confusion matrix"):
    """Heatmap of the row-normalised confusion matrix, annotated with counts and percentages.

    Rows are the true classes, columns the predicted ones.
    """
    plt = _pyplot()
    counts = np.asarray(counts, dtype=np.int64)
    n = len(classes)
    totals = counts.sum(axis=1, keepdims=True)
    norm = np.divide(counts, totals, out=np.zeros(counts.shape, dtype=float), where=totals > 0)
    side = min(max(4.5, 0.55 * n + 2.5), 24)
    fonts, shown = text_fonts(classes, STYLE)
    classes = [shown(name) for name in classes]
    with plt.rc_context({**STYLE, "axes.grid": False, **fonts}), quiet_glyphs():
        fig, ax = plt.subplots(figsize=(side + 1.2, side))
        image = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        colorbar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        colorbar.set_label("fraction of the true class")
        ax.set_xticks(
            range(n),
            labels=list(classes),
            rotation=45 if n > 3 else 0,
            ha="right" if n > 3 else "center",
            rotation_mode="anchor",
        )
        ax.set_yticks(range(n), labels=list(classes))
        ax.set_xlabel("Predicted class")
        ax.set_ylabel("True class")
        ax.set_title(title)
        if n <= 30:
            size = 9 if n <= 12 else 7
            for i in range(n):
                for j in range(n):
                    if counts[i, j] == 0 and i != j:
                        continue
                    color = "white" if norm[i, j] > 0.6 else COLORS["text"]
                    text = f"{counts[i, j]}\n{norm[i, j]:.0%}" if n <= 15 else f"{counts[i, j]}"
                    ax.text(j, i, text, ha="center", va="center", fontsize=size, color=color)
        fig.tight_layout()
    return fig


def plot_confusion(counts, classes: Sequence[str], path: str | Path, *, title: str = "Confusion matrix") -> Path:
    """Write the confusion heatmap (see :func:`confusion_figure`) to ``path``."""
    return _save(confusion_figure(counts, classes, title=title), Path(path))


def mistakes_figure(items: Sequence[dict[str, Any]], *, title: str = "Most confident mistakes", columns: int = 5):
    """A grid of images, each captioned ``true: X / predicted: Y (p)``.

    ``items`` are dicts with ``image`` (an ``(h, w, 3)`` uint8 array), ``true``,
    ``predicted`` and ``probability``.  With no items, a figure saying so.
    """
    plt = _pyplot()
    fonts, shown = text_fonts([str(item[key]) for item in items for key in ("true", "predicted")], STYLE)
    with plt.rc_context({**STYLE, "axes.grid": False, **fonts}), quiet_glyphs():
        if not items:
            fig, ax = plt.subplots(figsize=(6, 1.6))
            ax.axis("off")
            ax.text(
                0.5,
                0.5,
                "No mistakes: every image was classified correctly.",
                ha="center",
                va="center",
                fontsize=12,
                color=COLORS["best"],
                transform=ax.transAxes,
            )
            ax.set_title(title)
            return fig
        columns = max(1, min(columns, len(items)))
        rows = math.ceil(len(items) / columns)
        fig, axes = plt.subplots(rows, columns, figsize=(2.3 * columns, 2.75 * rows + 0.5), squeeze=False)
        for ax in axes.flat:
            ax.axis("off")
        for ax, item in zip(axes.flat, items):
            ax.imshow(item["image"])
            ax.set_title(
                f"true: {shown(str(item['true']))}\npredicted: {shown(str(item['predicted']))}\n"
                f"p = {item['probability']:.2f}",
                fontsize=8.5,
                fontweight="normal",
                color=COLORS["mistake"],
                linespacing=1.3,
            )
        fig.suptitle(title, fontsize=STYLE["axes.titlesize"], fontweight="bold")
        fig.tight_layout()
    return fig


def plot_mistakes(
    items: Sequence[dict[str, Any]], path: str | Path, *, title: str = "Most confident mistakes", columns: int = 5
) -> Path:
    """Write the mistakes grid (see :func:`mistakes_figure`) to ``path``."""
    return _save(mistakes_figure(items, title=title, columns=columns), Path(path))


# --------------------------------------------------------------------------- comparing runs


def compare_figure(runs: Sequence[dict[str, Any]], *, title: str = "Validation curves"):
    """Overlay of several runs' validation accuracy and loss per epoch.

    ``runs`` are dicts with ``label``, ``epochs``, ``val_accuracy``, ``val_loss``
    (lists; either may be empty) and optionally ``best_epoch``.
    """
    plt = _pyplot()
    fonts, shown = text_fonts([str(run["label"]) for run in runs], STYLE)
    with plt.rc_context({**STYLE, **fonts}), quiet_glyphs():
        fig, (acc_ax, loss_ax) = plt.subplots(1, 2, figsize=(12, 4.6))
        for i, run in enumerate(runs):
            color = RUN_COLORS[i % len(RUN_COLORS)]
            epochs = list(run.get("epochs") or [])
            for ax, key in ((acc_ax, "val_accuracy"), (loss_ax, "val_loss")):
                values = list(run.get(key) or [])
                if not values:
                    continue
                xs = epochs if len(epochs) == len(values) else list(range(1, len(values) + 1))
                ax.plot(xs, values, marker="o", color=color, label=shown(str(run["label"])))
                best = run.get("best_epoch")
                if best and best in xs:
                    k = xs.index(best)
                    ax.scatter([best], [values[k]], s=90, facecolors="none", edgecolors=color, linewidths=1.8, zorder=4)
        for ax, name in ((acc_ax, "Validation accuracy"), (loss_ax, "Validation loss")):
            ax.set_title(name)
            ax.set_xlabel("Epoch")
            ax.set_ylabel(name.split()[-1].capitalize())
            ax.xaxis.get_major_locator().set_params(integer=True)
        acc_ax.set_ylim(-0.02, 1.02)
        handles, labels = acc_ax.get_legend_handles_labels()
        if not handles:
            handles, labels = loss_ax.get_legend_handles_labels()
        if handles:
            fig.legend(
                handles,
                labels,
                loc="lower center",
                ncol=min(3, len(labels)),
                bbox_to_anchor=(0.5, -0.02 - 0.045 * math.ceil(len(labels) / 3)),
            )
        fig.suptitle(f"{title} (circles: best epoch)", fontsize=STYLE["axes.titlesize"], fontweight="bold")
        fig.tight_layout()
    return fig


def plot_compare(runs: Sequence[dict[str, Any]], path: str | Path, *, title: str = "Validation curves") -> Path:
    """Write the overlay of several runs' validation curves (see :func:`compare_figure`)."""
    return _save(compare_figure(runs, title=title), Path(path))


# --------------------------------------------------------------------------- learning-rate finder


def lr_find_figure(
    lrs: Sequence[float],
    losses: Sequence[float],
    smoothed: Sequence[float],
    *,
    suggestion: float,
    suggestion_label: str,
    minimum_lr: float,
    title: str,
):
    """Loss vs learning rate (log x): each step's loss, the smoothed loss, the suggestion marked.

    The y range shows the smoothed curve's fall to its minimum and a rise after it of at most as
    much again, so a diverging end does not flatten the part that matters (and a flat curve
    looks flat: the range is at least 2 % of the loss).
    """
    plt = _pyplot()
    lowest = min(range(len(smoothed)), key=smoothed.__getitem__)
    bottom, fallen_from = smoothed[lowest], max(smoothed[: lowest + 1])
    top = min(max(smoothed), fallen_from + (fallen_from - bottom))
    span = max(top - bottom, abs(bottom) * 0.02, 1e-6)
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(7, 4.2))
        ax.plot(lrs, losses, color=COLORS["train"], alpha=0.3, linewidth=1.0, label="loss per step")
        ax.plot(lrs, smoothed, color=COLORS["train"], label="smoothed loss")
        ax.set_xscale("log")
        ax.axvline(suggestion, color=COLORS["best"], linestyle="--", linewidth=1.4, label=suggestion_label)
        at = min(range(len(lrs)), key=lambda i: abs(math.log(lrs[i]) - math.log(suggestion)))
        if abs(math.log(lrs[at]) - math.log(suggestion)) < 1e-9:
            ax.scatter(
                [lrs[at]], [smoothed[at]], s=110, facecolors="none", edgecolors=COLORS["best"], linewidths=2, zorder=4
            )
        ax.axvline(
            minimum_lr, color=COLORS["boundary"], linestyle=":", linewidth=1.2, label=f"lowest loss {minimum_lr:.2g}"
        )
        ax.set_ylim(bottom - 0.1 * span, bottom + 1.1 * span)
        ax.set_title(f"Learning-rate finder — {title}")
        ax.set_xlabel("Learning rate (log scale)")
        ax.set_ylabel("Training loss")
        ax.legend(loc="upper left")
        fig.tight_layout()
    return fig


def plot_lr_find(
    lrs: Sequence[float],
    losses: Sequence[float],
    smoothed: Sequence[float],
    path: str | Path,
    **options: Any,
) -> Path:
    """Write the learning-rate finder's plot (see :func:`lr_find_figure`) to ``path``."""
    return _save(lr_find_figure(lrs, losses, smoothed, **options), Path(path))


# --------------------------------------------------------------------------- explanations (Grad-CAM)

HEATMAP_COLORMAP = "jet"
"""The colormap of Grad-CAM overlays: blue (no evidence) to red (most evidence)."""


def heatmap_overlay(image, heatmap, *, alpha: float = 0.45, colormap: str = HEATMAP_COLORMAP):
    """``image`` (``(H, W, 3)`` uint8) with ``heatmap`` (``(h, w)``, 0…1) in colour over it, as uint8 ``(H, W, 3)``.

    The heatmap is resized to the image bilinearly; ``alpha`` is the colour's weight.
    """
    from matplotlib import colormaps  # lazy: matplotlib only when an overlay is drawn

    image = np.asarray(image, dtype=np.uint8)
    height, width = image.shape[:2]
    heat = Image.fromarray(np.asarray(heatmap, dtype=np.float32)).resize((width, height), Image.Resampling.BILINEAR)
    colours = colormaps[colormap](np.clip(np.asarray(heat), 0.0, 1.0))[..., :3] * 255.0
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * colours
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)
