"""The Python API: what the CLI calls, and what notebooks and scripts use.

>>> import tlkit
>>> result = tlkit.train(data="data", base="mobilenet_v2", head="dense256", epochs=5)
>>> result.run_dir, result.metrics["best_val_accuracy"]

A thin façade over the packages (training, config, evaluation, ...); TensorFlow is imported
inside the functions that need it, never at import.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tlkit.auditing.options import DEFAULT_OUTPUT as AUDIT_OUTPUT
from tlkit.auditing.result import AuditResult
from tlkit.config.options import TrainConfig
from tlkit.config.resolve import resolve_augmentations, resolve_config, resolve_head, resolve_weights
from tlkit.errors import TlkitError

# Re-exported: the evaluation side of the API (all light to import).
from tlkit.evaluation.compare import Comparison, compare
from tlkit.evaluation.evaluate import EvaluationResult, evaluate
from tlkit.evaluation.gradcam import ExplainResult, explain
from tlkit.evaluation.report import write_report
from tlkit.exporting.exporter import ExportResult, export
from tlkit.inference.prediction import Prediction, predict
from tlkit.io.rundir import RunDir
from tlkit.io.tfenv import import_tensorflow
from tlkit.model import builder
from tlkit.observer import TrainingObserver
from tlkit.registry.manager import get_registry, list_specs
from tlkit.registry.specs import BaseSpec
from tlkit.serving.server import serve as serve_model
from tlkit.training.finish import TrainResult
from tlkit.training.lr_finder import DEFAULT_END_LR, DEFAULT_OUTPUT, DEFAULT_START_LR, LRFindResult, find_lr
from tlkit.training.run import TrainingRun, training_path
from tlkit.tuning.result import TuneResult


def build_model(
    base: str = "resnet50",
    head: str = "dense256",
    num_classes: int = 2,
    *,
    image_size: int | None = None,
    weights: str | None = "imagenet",
    head_params: dict[str, Any] | None = None,
    augmentations: list[str] | tuple[str, ...] = (),
    seed: int = 0,
    multi_label: bool = False,
):
    """Build the end-to-end ``keras.Model`` (raw 0–255 pixels in, class probabilities out).

    ``weights``: ``"imagenet"``, ``"none"``/None or a weights file.  Augmentations are ``"name"`` or
    ``"name:key=value,..."``; batch-mixing ones (mixup, cutmix) are left out (they mix labels too).
    ``multi_label`` ends the head in a sigmoid (one independent probability per label).
    """
    import_tensorflow()
    base_spec: BaseSpec = get_registry().base(base)
    head_spec, params = resolve_head(head, head_params)
    return builder.build_model(
        base_spec,
        head_spec,
        num_classes,
        image_size=image_size,
        weights=resolve_weights(weights, base_spec),
        head_params=params,
        augmentations=resolve_augmentations(augmentations),
        seed=seed,
        multi_label=multi_label,
    )


def train(
    config: TrainConfig | None = None,
    *,
    observer: TrainingObserver | None = None,
    console: Any = None,
    verbose: bool = True,
    resume: str | Path | None = None,
    **options: Any,
) -> TrainResult:
    """Train a classifier and write a complete run directory; return a :class:`TrainResult`.

    Options are the fields of :class:`tlkit.config.options.TrainConfig` (``data``, ``base``, ``head``,
    ``epochs``, ``lr``, ...), as a config object, keywords, or both (keywords win).  ``resume=RUN_DIR``
    continues an interrupted run from its last checkpoint, with that run's configuration.

    Progress goes to ``observer`` (a :class:`tlkit.TrainingObserver`); without one, it is drawn with
    rich on ``console`` (stderr by default) when ``verbose`` is true, else nothing is printed.
    """
    if observer is None:
        observer = _default_observer(console, verbose)
    if resume is not None:
        if config is not None or options:
            raise TlkitError(f"--resume continues a run with its own {RunDir.CONFIG}; drop the other options")
        run = TrainingRun.resume(resume, observer)
    else:
        run = TrainingRun.start(resolve_config(config, **options), observer)
    return run.execute()


def lr_find(
    config: TrainConfig | None = None,
    *,
    output: str | Path = DEFAULT_OUTPUT,
    start_lr: float = DEFAULT_START_LR,
    end_lr: float = DEFAULT_END_LR,
    steps: int | None = None,
    observer: TrainingObserver | None = None,
    console: Any = None,
    verbose: bool = True,
    **options: Any,
) -> LRFindResult:
    """Sweep the head's learning rate on cached features and suggest one (:mod:`tlkit.training.lr_finder`);
    options are :func:`train`'s (``output``: where the sweep's folder goes)."""
    observer = observer or _default_observer(console, verbose)
    config = resolve_config(config, **options)
    return find_lr(config, output=output, start_lr=start_lr, end_lr=end_lr, steps=steps, observer=observer)


def audit(
    config: TrainConfig | None = None,
    *,
    output: str | Path | None = AUDIT_OUTPUT,
    observer: TrainingObserver | None = None,
    console: Any = None,
    verbose: bool = True,
    **options: Any,
) -> AuditResult:
    """Audit a data set before training: label errors, duplicates, leaks, outliers (:mod:`tlkit.auditing.run`)."""
    from tlkit.auditing.run import audit as run_audit  # lazy: cleanlab, scikit-learn and pandas load only to audit

    return run_audit(config, output=output, observer=observer or _default_observer(console, verbose), **options)


def tune(
    config: TrainConfig | None = None,
    *,
    train_best: bool = False,
    observer: TrainingObserver | None = None,
    console: Any = None,
    verbose: bool = True,
    **options: Any,
) -> TuneResult:
    """Search head, base and recipe on cached features with Optuna (options: :func:`tlkit.tuning.study.tune`'s
    and train's); ``train_best`` then trains the best configuration as a normal run."""
    from tlkit.tuning.study import tune as run_tune  # lazy: Optuna and SQLAlchemy load only to tune

    result = run_tune(config, observer=(observer := observer or _default_observer(console, verbose)), **options)
    if train_best and result.best_config is not None:
        result.best_run = train(result.best_config, observer=observer).run_dir
    return result


def serve(source: str | Path, *, observer: Any = None, console: Any = None, verbose: bool = True, **options: Any):
    """Serve a run or an exported model over HTTP until stopped (:func:`tlkit.serving.server.serve`, its options)."""
    serve_model(source, observer=observer or _default_observer(console, verbose), **options)


def _default_observer(console: Any, verbose: bool) -> TrainingObserver:
    if not verbose:
        return TrainingObserver()
    from tlkit.rich_observer import RichObserver  # lazy: rich only when the caller passes no observer of its own

    return RichObserver(console)


__all__ = [
    "AuditResult",
    "Comparison",
    "EvaluationResult",
    "ExplainResult",
    "ExportResult",
    "LRFindResult",
    "Prediction",
    "TrainConfig",
    "TrainResult",
    "TrainingObserver",
    "TuneResult",
    "audit",
    "build_model",
    "compare",
    "evaluate",
    "explain",
    "export",
    "list_specs",
    "lr_find",
    "predict",
    "resolve_augmentations",
    "resolve_config",
    "resolve_head",
    "resolve_weights",
    "train",
    "training_path",
    "tune",
    "write_report",
]
