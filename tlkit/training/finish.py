"""A trained run's last step: model.keras, metrics.json, thresholds, plots, then the run is
marked done and the report written (:meth:`tlkit.training.run.TrainingRun.finish`).

The run gives what it holds as :class:`FinishInputs`; :func:`finish_run` writes the files and
returns the :class:`TrainResult`.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tlkit.config.options import TrainConfig
from tlkit.evaluation.figures import plot_history
from tlkit.evaluation.history import history_from_rows
from tlkit.evaluation.multilabel import thresholds_for_run
from tlkit.evaluation.report import write_report
from tlkit.features.dataset import head_probabilities
from tlkit.inference.prediction import Predictor
from tlkit.io.files import atomic_path

if TYPE_CHECKING:
    from tlkit.data.decode import DecodedSplit
    from tlkit.features.plan import RunFeatures
    from tlkit.io.rundir import RunDir
    from tlkit.model.builder import ModelParts
    from tlkit.observer import TrainingObserver
    from tlkit.training.stages import RunState


@dataclass
class TrainResult:
    """What ``tlkit.train`` produced: where the run went and how it did."""

    run_dir: Path
    config: TrainConfig
    classes: list[str]
    history: dict[str, list[float]]
    metrics: dict[str, Any]
    model_path: Path
    plots: list[Path] = field(default_factory=list)
    report: Path | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_dir": str(self.run_dir),
            "model": str(self.model_path),
            "plots": [str(p) for p in self.plots],
            "report": str(self.report) if self.report else None,
            "classes": list(self.classes),
            "metrics": self.metrics,
            "config": self.config.to_dict(),
        }


@dataclass
class FinishInputs:
    """What the finish step works with: a trained run's model, data, state and run directory."""

    config: TrainConfig
    run_dir: RunDir
    parts: ModelParts
    state: RunState
    classes: list[str]
    train_px: DecodedSplit
    val_px: DecodedSplit
    run_features: RunFeatures | None  # the cached features, on the features route
    route: str  # "features" or "end-to-end" (tlkit.training.run.training_path)
    route_reason: str
    title: str  # "base + head", for the plots
    train_time: float  # seconds the stages took
    timings: dict[str, Any]  # the run's timings (written into metrics.json)
    observer: TrainingObserver
    timed: Callable[[str], AbstractContextManager[None]]  # adds a block's wall time to timings[phase]
    batch_size: int  # images per model call when the validation images go through the whole model


def finish_run(run: FinishInputs) -> TrainResult:
    """Write model.keras and metrics.json, mark the run done, draw the plots, write the report."""
    run_dir, state = run.run_dir, run.state
    with run.timed("save_model"):
        with atomic_path(run_dir.model_path, suffix=".keras") as tmp:
            _portable(run.parts.model).save(tmp)
    history = history_from_rows(state.rows)
    with run.timed("plots"):
        plots = plot_history(
            history,
            run_dir.plots_dir,
            title=run.title,
            stages=[row["stage"] for row in state.rows],
            best_epoch=state.best_epoch,
        )
    metrics = _metrics(run, history)
    run_dir.write_metrics(metrics)
    _write_thresholds(run)
    state.status = "done"  # only now: a run killed before this point can still be resumed
    run_dir.write_state(state.as_dict())
    report = _write_report(run)
    return TrainResult(
        run_dir=run_dir.path,
        config=run.config,
        classes=list(run.classes),
        history=history,
        metrics=metrics,
        model_path=run_dir.model_path,
        plots=plots,
        report=report,
    )


def _metrics(run: FinishInputs, history: dict[str, list[float]]) -> dict[str, Any]:
    config, state = run.config, run.state

    def at_best(key: str):
        values = history.get(key)
        return values[state.best_epoch - 1] if values and state.best_epoch else None

    return {
        "monitor": config.monitor,
        "best_epoch": state.best_epoch,
        "best_stage": state.best_stage,
        "best_value": state.best_value,
        "best_val_accuracy": at_best("val_accuracy"),
        "best_val_loss": at_best("val_loss"),
        "best_val_f1": at_best("val_f1"),
        "final": {key: values[-1] for key, values in history.items()},
        "epochs_run": state.epoch,
        "head_epochs": state.head_epochs,
        "fine_tune_epochs": state.epoch - state.head_epochs,
        "stopped_early": state.stopped_early,
        "train_time_s": round(run.train_time, 2),
        "num_classes": len(run.classes),
        "num_train": int(len(run.train_px.labels)),
        "num_val": int(len(run.val_px.labels)),
        "skipped_bad_images": [str(p) for p, _ in run.train_px.bad + run.val_px.bad],
        "saved_model": f"best epoch by {config.monitor} (epoch {state.best_epoch}, {state.best_stage} stage)",
        "training_path": run.route,
        "training_path_reason": run.route_reason,
        "features": run.run_features.summary() if run.run_features is not None else None,
        "timings": run.timings,  # seconds; the report's own time is not in it (it comes after)
    }


def _validation_probabilities(run: FinishInputs) -> dict[str, Any] | None:
    """The trained model's probabilities on the validation images, by path, from the cached
    features and the head alone (equal to the model's own up to the engine's ~1e-6) — so the
    end-of-training evaluation decodes no image and runs no base."""
    if run.run_features is None:
        return None
    probabilities = head_probabilities(run.parts.head_tail, run.run_features.val)
    return {str(path): row for path, row in zip(run.val_px.files, probabilities)}


def _write_thresholds(run: FinishInputs) -> None:
    """``--multi-label``: each label's decision threshold, into the run directory (tuned on the
    validation images with ``--threshold tuned``)."""
    if not run.config.multi_label:
        return

    tuned = run.config.threshold == "tuned"
    probs = None
    if tuned:
        if run.run_features is not None:
            probs = head_probabilities(run.parts.head_tail, run.run_features.val)
        else:
            predict, pixels, batch = Predictor(run.parts.model), run.val_px.pixels, run.batch_size
            assert pixels is not None  # decoded: the whole model trained on them
            probs = np.concatenate([predict(pixels[i : i + batch]) for i in range(0, len(pixels), batch)])
    values = thresholds_for_run(run.config.threshold, probs, run.val_px.labels, len(run.classes))
    source = "tuned: each label's F1 maximised on the validation images" if tuned else "--threshold"
    run.run_dir.write_thresholds(dict(zip(run.classes, values.tolist())), source)
    if tuned:
        shown = ", ".join(f"{name} {value:.2f}" for name, value in zip(run.classes, values))
        run.observer.message(f"Thresholds (tuned on validation): {shown}")


def _write_report(run: FinishInputs) -> Path | None:
    """The HTML report; a problem there never fails a finished training."""
    try:
        with run.timed("evaluate_and_report"):
            return write_report(run.run_dir.path, model=run.parts.model, probabilities=_validation_probabilities(run))
    except Exception as exc:  # noqa: BLE001 - reported, training already succeeded
        run.observer.message(
            f"could not write the report ({type(exc).__name__}: {exc}); try: tlkit report {run.run_dir}",
            level="warning",
        )
        return None


def _portable(model):
    """An uncompiled copy of ``model`` with the same weights: no optimizer (and no tlkit-only
    schedule) inside ``model.keras``, so it loads cleanly with plain Keras."""
    import keras  # lazy: Keras imports TensorFlow; only saving the trained model needs it

    def without_compile(obj):
        # A nested model that was trained alone (the head on cached features)
        # carries its compile config; drop it everywhere.
        if isinstance(obj, dict):
            return {k: without_compile(v) for k, v in obj.items() if k != "compile_config"}
        if isinstance(obj, list):
            return [without_compile(v) for v in obj]
        return obj

    fresh = keras.Model.from_config(without_compile(model.get_config()))
    fresh.set_weights(model.get_weights())
    return fresh


__all__ = ["FinishInputs", "TrainResult", "finish_run"]
