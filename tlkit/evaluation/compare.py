"""Compare runs: one row per run (what was trained, how well, how fast) and their validation curves.

>>> comparison = tlkit.compare(["runs/a", "runs/b"], plot_path="compare.png")
>>> comparison.rows[0]["best_val_accuracy"], comparison.plot

Also home of :func:`read_run`, which reads everything a run directory holds
(config, classes, history, training metrics, evaluation) for the report.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tlkit.errors import TlkitError, first_line
from tlkit.evaluation.figures import plot_compare
from tlkit.evaluation.history import best_epoch
from tlkit.io.rundir import RunDir

__all__ = ["Comparison", "RunInfo", "compare", "read_run"]


@dataclass
class RunInfo:
    """What a run directory holds, read without TensorFlow (missing parts are empty)."""

    run_dir: Path
    config: dict[str, Any]
    classes: list[str]
    history: dict[str, list[float]]
    stages: list[str]
    epochs: list[int]
    metrics: dict[str, Any]  # the training metrics.json
    evaluation: dict[str, Any] | None  # evaluation/metrics.json, if evaluated

    @property
    def name(self) -> str:
        return self.run_dir.name

    @property
    def best_epoch(self) -> int | None:
        """The best epoch as training recorded it, else the best validation accuracy in the history."""
        best = self.metrics.get("best_epoch")
        if isinstance(best, int) and best >= 1:
            return best
        index = best_epoch(self.history, self.config.get("monitor") or "val_accuracy")
        return self.epochs[index - 1] if index is not None and index <= len(self.epochs) else None

    def value_at_best(self, key: str) -> float | None:
        """``history[key]`` at the best epoch (None if unknown)."""
        best = self.best_epoch
        values = self.history.get(key) or []
        if best is None or best not in self.epochs:
            return None
        i = self.epochs.index(best)
        return None if i >= len(values) or math.isnan(values[i]) else float(values[i])


def read_run(run_dir: str | Path) -> RunInfo:
    """Read a run directory (see :class:`RunInfo`); a folder that is not a run is a TlkitError.

    A damaged file (not UTF-8, not CSV, a JSON file that is not an object) is a one-line
    TlkitError naming it: a report or comparison built on a half-read run would mislead.
    """
    run = RunDir.open(run_dir)
    for path in (run.metrics_path, run.evaluation_metrics_path):
        _require_json_object(path)
    try:
        history, stages, epochs = run.read_history()
    except (OSError, UnicodeDecodeError, csv.Error, ValueError) as exc:
        raise TlkitError(
            f"{run.history_path} is damaged ({first_line(exc, 200)}); delete it to report the run without curves"
        ) from None
    return RunInfo(
        run_dir=run.path,
        config=run.read_config(),
        classes=run.read_classes() if run.classes_path.is_file() else [],
        history=history,
        stages=stages,
        epochs=epochs,
        metrics=run.read_metrics(),
        evaluation=run.read_evaluation(),
    )


def _require_json_object(path: Path) -> None:
    """A present JSON file of the run must hold an object (RunDir's reader treats other values as absent)."""
    if not path.is_file():
        return
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise TlkitError(
            f"{path} is damaged ({first_line(exc, 200)}); delete it or copy it back from a backup"
        ) from None
    if not isinstance(value, dict):
        raise TlkitError(
            f"{path} is damaged (it holds a JSON {type(value).__name__}, not an object); "
            f"delete it or copy it back from a backup"
        )


def summary_row(run: RunInfo) -> dict[str, Any]:
    """One row of the comparison table for ``run``."""
    config, metrics = run.config, run.metrics
    best_acc = metrics.get("best_val_accuracy")
    if best_acc is None:
        best_acc = run.value_at_best("val_accuracy")
    f1_source: str | None
    if run.evaluation and run.evaluation.get("macro_avg"):
        f1, f1_source = run.evaluation["macro_avg"].get("f1"), "evaluation (macro)"
    else:
        f1 = run.value_at_best("val_f1")
        f1_source = "history (best epoch)" if f1 is not None else None
    stages = sorted(set(run.stages), key=run.stages.index) if run.stages else []
    return {
        "run": run.name,
        "run_dir": str(run.run_dir),
        "base": config.get("base"),
        "head": config.get("head"),
        "augmentations": list(config.get("augmentations") or []),
        "epochs": metrics.get("epochs_run", len(run.epochs)),
        "stages": stages,
        "best_epoch": run.best_epoch,
        "best_val_accuracy": best_acc,
        "val_f1": f1,
        "val_f1_source": f1_source,
        "eval_accuracy": run.evaluation.get("accuracy") if run.evaluation else None,
        "train_time_s": metrics.get("train_time_s"),
        "finished": RunDir(run.run_dir).has_model() and bool(metrics),
    }


@dataclass
class Comparison:
    """The result of :func:`compare`: one row per run, and the overlay plot (if drawn)."""

    rows: list[dict[str, Any]]
    plot: Path | None = None
    runs: list[RunInfo] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {"runs": self.rows, "plot": str(self.plot) if self.plot else None}


def _check_plot_path(path: Path) -> None:
    """``--plot`` must name a file that can be written (checked before any run is read)."""
    if path.is_dir():
        raise TlkitError(f"--plot {path} is a folder; pass a file name such as {path / 'compare.png'}")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise TlkitError(f"--plot {path}: {parent} is a file, so the plot cannot be written there; pass another --plot")


def compare(run_dirs: Iterable[str | Path], *, plot_path: str | Path | None = None) -> Comparison:
    """Compare runs: a row per run (base, head, augmentations, epochs, best val accuracy,
    val F1, train time, ...) and, with ``plot_path``, an overlay of their validation curves.

    Raises:
        TlkitError: no runs given, or a folder is not a run directory.
    """
    run_dirs = list(run_dirs)
    if not run_dirs:
        raise TlkitError("no run directories to compare; pass one or more, e.g. runs/*/")
    if plot_path is not None:
        _check_plot_path(Path(plot_path))
    runs = [read_run(path) for path in run_dirs]
    rows = [summary_row(run) for run in runs]
    plot = None
    if plot_path is not None:
        names = [run.name for run in runs]
        curves = []
        for run in runs:
            label = run.name if names.count(run.name) == 1 else str(run.run_dir)
            curves.append(
                {
                    "label": label,
                    "epochs": run.epochs,
                    "val_accuracy": run.history.get("val_accuracy", []),
                    "val_loss": run.history.get("val_loss", []),
                    "best_epoch": run.best_epoch,
                }
            )
        plot = plot_compare(curves, plot_path, title=f"Validation curves of {len(runs)} run(s)")
    return Comparison(rows=rows, plot=plot, runs=runs)
