"""Training-curve plots, in one consistent style.

Figures are drawn with matplotlib's non-interactive Agg backend (no display
needed) and written atomically.
"""

from __future__ import annotations

from pathlib import Path

from tlkit.rundir import atomic_path

_TRAIN_COLOR = "#1f77b4"
_VAL_COLOR = "#d62728"


def plot_history(history: dict[str, list[float]], plots_dir: str | Path, *, title: str) -> list[Path]:
    """Write ``accuracy.png`` and ``loss.png`` (train vs validation per epoch); return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots_dir = Path(plots_dir)
    written = []
    for metric, label, best in (("accuracy", "Accuracy", max), ("loss", "Loss", min)):
        train = history.get(metric)
        val = history.get(f"val_{metric}")
        if not train and not val:
            continue
        fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
        if train:
            ax.plot(range(1, len(train) + 1), train, marker="o", ms=3, color=_TRAIN_COLOR, label="train")
        if val:
            epochs = range(1, len(val) + 1)
            ax.plot(epochs, val, marker="o", ms=3, color=_VAL_COLOR, label="validation")
            best_value = best(val)
            best_epoch = val.index(best_value) + 1
            ax.scatter([best_epoch], [best_value], s=90, facecolors="none", edgecolors=_VAL_COLOR,
                       linewidths=1.5, zorder=3, label=f"best val: {best_value:.4f} (epoch {best_epoch})")
        ax.set_title(f"{label} — {title}")
        ax.set_xlabel("Epoch")
        ax.set_ylabel(label)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = plots_dir / f"{metric}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
        plt.close(fig)
        written.append(path)
    return written
