"""The Python API: what the CLI calls, and what notebooks and scripts use.

>>> import tlkit
>>> result = tlkit.train(data="data", base="mobilenet_v2", head="dense256", epochs=5)
>>> result.run_dir, result.metrics["best_val_accuracy"]

TensorFlow is imported inside the functions that need it, never at import.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tlkit.builder import AugmentationChoice
# Re-exported: the evaluation side of the API (all light to import).
from tlkit.comparison import Comparison, compare  # noqa: F401
from tlkit.evaluation import EvaluationResult, evaluate  # noqa: F401
from tlkit.prediction import Prediction, predict  # noqa: F401
from tlkit.report import write_report
from tlkit.config import TrainConfig, merge, to_toml
from tlkit.errors import TlkitError
from tlkit.registry import KINDS, get_registry
from tlkit.rundir import atomic_path, create_run_dir, write_json, write_text
from tlkit.tfenv import import_tensorflow
from tlkit.specs import BaseSpec, HeadSpec, format_choice, parse_choice, resolve_params


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


# -- resolving names ---------------------------------------------------------


def list_specs(kind: str) -> list[Any]:
    """All registered specs of ``kind`` (``"base"``, ``"head"`` or ``"augmentation"``), by name."""
    if kind not in KINDS:
        raise TlkitError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    specs = get_registry().specs[kind]
    return [specs[name] for name in sorted(specs)]


def resolve_head(name: str, params: dict[str, Any] | None) -> tuple[HeadSpec, dict[str, Any]]:
    """The head spec and its parameters with defaults filled in and values checked."""
    spec = get_registry().head(name)
    return spec, resolve_params(f"head {name!r}", spec.params, params or {})


def resolve_augmentations(choices: list[str] | tuple[str, ...]) -> list[AugmentationChoice]:
    """Parse ``NAME[:k=v,...]`` strings into specs with checked parameters."""
    resolved = []
    registry = get_registry()
    for text in choices:
        name, given = parse_choice(text, "--aug")
        spec = registry.augmentation(name)
        params = resolve_params(f"augmentation {name!r}", spec.params, given)
        resolved.append(AugmentationChoice(spec, params))
    return resolved


def resolve_weights(weights: str | None) -> str | None:
    """``"imagenet"``, ``None`` (for ``"none"``) or an absolute path to an existing file."""
    if weights is None or weights.lower() == "none":
        return None
    if weights.lower() == "imagenet":
        return "imagenet"
    path = Path(weights).expanduser()
    if not path.is_file():
        raise TlkitError(
            f"--weights {weights!r} is neither 'imagenet', 'none' nor an existing file; "
            f"pass one of those"
        )
    return str(path.resolve())


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
):
    """Build the end-to-end ``keras.Model`` (raw 0–255 pixels in, class probabilities out).

    ``weights`` is ``"imagenet"``, ``"none"``/None or a path to a weights file.
    Augmentations are ``"name"`` or ``"name:key=value,..."`` strings.
    """
    from tlkit import builder

    import_tensorflow()
    base_spec: BaseSpec = get_registry().base(base)
    head_spec, params = resolve_head(head, head_params)
    augs = resolve_augmentations(augmentations)
    return builder.build_model(
        base_spec, head_spec, num_classes, image_size=image_size, weights=resolve_weights(weights),
        head_params=params, augmentations=augs, seed=seed,
    )


# -- training ----------------------------------------------------------------


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def _make_console(console, verbose: bool):
    from rich.console import Console

    if console is not None:
        return console
    return Console(stderr=True, quiet=not verbose)


def resolve_config(config: TrainConfig | None = None, **options: Any) -> TrainConfig:
    """Apply ``options`` over ``config`` (or the defaults) and validate every value and name.

    Nothing heavy happens here: no TensorFlow, no image reading.  The result
    is fully resolved (image size, head parameters, augmentation parameters,
    absolute paths), as written to a run's ``config.toml``.
    """
    config = merge(config or TrainConfig(), options, source="options")
    config.validate()
    base = get_registry().base(config.base)
    _, head_params = resolve_head(config.head, config.head_params)
    augs = resolve_augmentations(config.augmentations)
    weights = resolve_weights(config.weights)
    size = config.image_size or base.default_size
    base.check_size(size, weights)
    return merge(
        config,
        {
            "data": str(Path(config.data).expanduser().resolve()),
            "output": str(Path(config.output).expanduser().resolve()),
            "image_size": size,
            "head_params": head_params,
            "augmentations": [format_choice(a.spec.name, a.params) for a in augs],
            "weights": weights or "none",
        },
    )


def train(
    config: TrainConfig | None = None,
    *,
    console: Any = None,
    verbose: bool = True,
    resume: str | Path | None = None,
    **options: Any,
) -> TrainResult:
    """Train a classifier and write a complete run directory; return a :class:`TrainResult`.

    Options are the fields of :class:`tlkit.config.TrainConfig` (``data``,
    ``base``, ``head``, ``epochs``, ``batch_size``, ``lr``, ...), given as a
    config object, keyword arguments, or both (keywords win).  Progress goes
    to ``console`` (a ``rich.console.Console``; stderr by default) unless
    ``verbose`` is False.  ``resume=RUN_DIR`` continues an interrupted run from
    its last checkpoint, with that run's configuration.
    """
    from tlkit import checkpoints
    from tlkit import data as datamod
    from tlkit.config import load_config_file

    state = None
    if resume is not None:
        if config is not None or options:
            raise TlkitError("--resume continues a run with its own config.toml; drop the other options")
        run_dir, state = checkpoints.open_for_resume(resume)
        config = load_config_file(run_dir / "config.toml")
        config.validate()
    else:
        config = resolve_config(config, **options)
    console = _make_console(console, verbose)
    registry = get_registry()
    base = registry.base(config.base)
    head = registry.head(config.head)

    scan = datamod.scan_dataset(config.data, val_split=config.val_split, seed=config.seed)
    if len(scan.classes) < 2:
        raise TlkitError(f"{scan.root}/train holds only one class ({scan.classes[0]}); a classifier needs 2 or more")
    if _inside(Path(config.output), scan.root):
        raise TlkitError(
            f"--output {config.output} is inside the data folder {scan.root}; "
            f"tlkit never writes into the data folder — choose another --output"
        )
    _report_scan(console, scan)

    import_tensorflow()
    if resume is None:
        run_dir = create_run_dir(config.output, config.base, config.head)
        from tlkit import __version__

        write_text(
            run_dir / "config.toml",
            to_toml(config, {"version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}),
        )
        write_json(run_dir / "classes.json", scan.classes)
    else:
        import json

        known = json.loads((run_dir / "classes.json").read_text(encoding="utf-8"))
        if known != scan.classes:
            raise TlkitError(
                f"--resume {run_dir}: the data's classes changed since the run started "
                f"(run: {', '.join(known)}; now: {', '.join(scan.classes)}); start a new run instead"
            )
    console.print(f"Run directory: [bold]{run_dir}[/bold]" + (" (resuming)" if resume else ""))

    with tempfile.TemporaryDirectory(prefix="tlkit-pixels-") as workdir:
        try:
            train_px, val_px = _decode(console, datamod, scan, config, workdir)
            return _fit_and_save(console, config, base, head, scan.classes, train_px, val_px, run_dir,
                                 verbose=verbose, saved_state=state)
        except KeyboardInterrupt:
            from tlkit.training import TrainingInterrupted

            raise TrainingInterrupted(
                f"interrupted before the first epoch finished; resume with: tlkit train --resume {run_dir}"
            ) from None


def _report_scan(console, scan) -> None:
    skipped = []
    if scan.skipped_hidden:
        skipped.append(f"{scan.skipped_hidden} hidden")
    if scan.skipped_other:
        skipped.append(f"{scan.skipped_other} non-image")
    console.print(
        f"Data: {len(scan.classes)} classes, {len(scan.train.files)} train / {len(scan.val.files)} val "
        f"images (validation: {scan.val_source})"
        + (f"; skipped {' and '.join(skipped)} files" if skipped else "")
    )


def _decode(console, datamod, scan, config: TrainConfig, workdir: str):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    decoded = []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=console, transient=True) as progress:
        for name, split in (("train", scan.train), ("val", scan.val)):
            task = progress.add_task(f"decoding {name} images", total=len(split.files))
            result = datamod.decode_split(
                split, config.image_size, workdir, name=name, skip_bad_images=config.skip_bad_images,
                progress=lambda n, task=task: progress.advance(task, n),
            )
            if result.bad:
                console.print(
                    f"[yellow]Skipped {len(result.bad)} unreadable {name} image(s)[/yellow] "
                    f"(--skip-bad-images), e.g. {result.bad[0][0]}: {result.bad[0][1]}"
                )
            decoded.append(result)
    return decoded


FEATURE_BATCH = 32  # images per feature-engine call: near-best throughput, bounded activation memory


def training_path(config: TrainConfig) -> tuple[str, str]:
    """``("features" | "end-to-end", why)``: how the head will be trained, in words for the user."""
    if not config.feature_cache:
        return "end-to-end", "--no-feature-cache: the base runs on every image every epoch"
    if config.augmentations and config.aug_views == 0:
        return "end-to-end", (
            "augmentations change the base's input every epoch, so its features cannot be cached; "
            "--aug-views K caches K augmented views per image instead"
        )
    if config.augmentations:
        return "features", (
            f"{config.aug_views} augmented view(s) per training image are computed once and cached; "
            f"epoch e trains on view e mod {config.aug_views}"
        )
    return "features", "the base is frozen: its features are computed once per image and cached"


def _fit_and_save(console, config, base, head, classes, train_px, val_px, run_dir: Path, *, verbose: bool,
                  saved_state: dict | None):
    import keras

    from tlkit import builder, features, training
    from tlkit.callbacks import RichProgress
    from tlkit.figures import plot_history

    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    augs = resolve_augmentations(config.augmentations)
    weights = None if config.weights == "none" else config.weights
    with training.distribution_strategy().scope():
        parts = builder.assemble(
            base, head, len(classes), image_size=config.image_size, weights=weights,
            head_params=config.head_params, augmentations=augs, seed=config.seed,
        )
    model = parts.model
    trainable = sum(int(keras.ops.size(w)) for w in model.trainable_weights)
    console.print(
        f"Model: {base.name} (frozen, weights {config.weights if weights != 'imagenet' else 'ImageNet'}, "
        f"{config.image_size} px) + {head.name} head: {model.count_params():,} parameters, "
        f"{trainable:,} trainable"
    )

    fingerprints = {"train": features.files_fingerprint(train_px.files),
                    "val": features.files_fingerprint(val_px.files)}
    base_fp = features.weights_fingerprint(parts.backbone)
    state = _run_state(saved_state, fingerprints, base_fp, run_dir)
    class_weight = _class_balance(console, config, classes, train_px, val_px)

    path, why = training_path(config)
    console.print(f"Training path: [bold]{path}[/bold] — {why}")
    features_summary = run_features = None
    num_classes = len(classes)
    if path == "features" and state.stage == training.HEAD:
        run_features = _features(console, config, base, parts, train_px, val_px, verbose=verbose,
                                 weights_fp=base_fp)
        features_summary = run_features.summary()

        def head_data(first_pass: int):
            return training.feature_datasets(run_features, config, num_classes, first_pass)
    else:
        def head_data(first_pass: int):
            return training.pixel_datasets(train_px, val_px, config, num_classes, first_pass)

    def pixel_data(first_pass: int):
        return training.pixel_datasets(train_px, val_px, config, num_classes, first_pass)

    steps = -(-len(train_px.labels) // config.batch_size)

    def progress(stage):
        return [RichProgress(console, steps=steps, epochs=stage.end, stage=stage.name)] if verbose else []

    runner = training.StageRunner(
        run_dir=run_dir, config=config, parts=parts, num_classes=num_classes, class_weight=class_weight,
        head_data=head_data, pixel_data=pixel_data, head_on_features=path == "features",
        steps=steps, state=state, progress=progress, console=console,
    )
    started = time.perf_counter()
    state = runner.run()
    train_time = time.perf_counter() - started

    model_path = run_dir / "model.keras"
    with atomic_path(model_path, suffix=".keras") as tmp:
        _portable(model).save(tmp)
    history = training.history_from_rows(state.rows)
    metrics = _training_metrics(config, state, history, train_time, classes, train_px, val_px)
    metrics.update({"training_path": path, "training_path_reason": why, "features": features_summary})
    write_json(run_dir / "metrics.json", metrics)
    state.status = "done"  # only now: a run killed before this point can still be resumed
    from tlkit.checkpoints import write_state

    write_state(run_dir, state.as_dict())
    plots = plot_history(history, run_dir / "plots", title=f"{base.name} + {head.name}",
                         stages=[row["stage"] for row in state.rows], best_epoch=state.best_epoch)
    report = _write_report(console, run_dir, _evaluation_model(model, parts, run_features if features_summary else None))
    return TrainResult(run_dir=run_dir, config=config, classes=list(classes), history=history,
                       metrics=metrics, model_path=model_path, plots=plots, report=report)


def _evaluation_model(model, parts, run_features):
    """What the end-of-training evaluation runs: the base on the feature engine (ONNX Runtime,
    faster) plus the trained head when features were used, else the model itself."""
    from tlkit.features import FeatureClassifier

    if run_features is None or run_features.get_engine is None:
        return model
    try:
        return FeatureClassifier(run_features.get_engine(), parts.head, model)
    except Exception:  # noqa: BLE001 - any engine trouble: the Keras model is always right
        return model


def _write_report(console, run_dir: Path, model) -> Path | None:
    """The HTML report; a problem there never fails a finished training."""
    try:
        return write_report(run_dir, model=model)
    except Exception as exc:  # noqa: BLE001 - reported, training already succeeded
        console.print(f"[yellow]Warning:[/yellow] could not write the report ({type(exc).__name__}: {exc}); "
                      f"try: tlkit report {run_dir}")
        return None


def _portable(model):
    """An uncompiled copy of ``model`` with the same weights: no optimizer (and no tlkit-only
    schedule) inside ``model.keras``, so it loads cleanly with plain Keras."""
    import keras

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


def _run_state(saved: dict | None, fingerprints: dict[str, str], base_fp: str, run_dir: Path):
    """A fresh RunState, or the saved one after checking the data and base are unchanged."""
    from tlkit.training import RunState

    if saved is None:
        return RunState(data=fingerprints, base_weights=base_fp)
    state = RunState.from_dict(saved)
    changed = [name for name in ("train", "val") if state.data.get(name) != fingerprints[name]]
    if changed:
        raise TlkitError(
            f"--resume {run_dir}: the {' and '.join(changed)} images changed since the run started; "
            f"resuming needs the same data — start a new run instead"
        )
    if state.base_weights and state.base_weights != base_fp:
        raise TlkitError(
            f"--resume {run_dir}: the base's weights differ from the run's (the weights file changed?); "
            f"start a new run instead"
        )
    state.status = "running"
    return state


def _class_balance(console, config, classes, train_px, val_px):
    """Show the class distribution, warn on strong imbalance, return Keras class weights."""
    from tlkit import imbalance

    train_counts = imbalance.class_counts(train_px.labels, len(classes))
    val_counts = imbalance.class_counts(val_px.labels, len(classes))
    shown = ", ".join(f"{name} {t}/{v}" for name, t, v in zip(classes, train_counts, val_counts))
    console.print(f"Classes (train/val images): {shown}")
    ratio = imbalance.imbalance_ratio(train_counts)
    weights = imbalance.class_weights(config.class_weight, train_px.labels, classes)
    if ratio >= imbalance.IMBALANCE_WARNING_RATIO:
        advice = "" if weights else "; consider --class-weight balanced"
        console.print(
            f"[yellow]Warning:[/yellow] the training classes are imbalanced (largest/smallest = {ratio:.1f}×)"
            + advice
        )
    if weights:
        console.print("Class weights: " + ", ".join(f"{classes[i]} {w:.2f}" for i, w in weights.items()))
    return weights


def _training_metrics(config, state, history, train_time, classes, train_px, val_px) -> dict[str, Any]:
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
        "train_time_s": round(train_time, 2),
        "num_classes": len(classes),
        "num_train": int(len(train_px.labels)),
        "num_val": int(len(val_px.labels)),
        "skipped_bad_images": [str(p) for p, _ in train_px.bad + val_px.bad],
        "saved_model": f"best epoch by {config.monitor} (epoch {state.best_epoch}, {state.best_stage} stage)",
    }


def _features(console, config, base, parts, train_px, val_px, *, verbose: bool, weights_fp: str):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from tlkit import features

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=console,
                  transient=True, disable=not verbose) as progress:
        started: dict[int, float] = {}

        def make_callback(label: str, total: int):
            task = progress.add_task(f"computing {label}", total=total, rate="")

            def advance(n: int) -> None:
                started.setdefault(task, time.perf_counter())
                progress.advance(task, n)
                done = progress.tasks[task].completed
                elapsed = time.perf_counter() - started[task]
                if elapsed > 0:
                    progress.update(task, rate=f"{done / elapsed:.1f} img/s")

            return advance

        result = features.run_features(
            parts, base_name=base.name, image_size=config.image_size, engine_choice=config.engine,
            splits={"train": train_px, "val": val_px}, views=config.aug_views,
            augmentations=config.augmentations, seed=config.seed, batch_size=FEATURE_BATCH,
            progress=make_callback, weights_fp=weights_fp,
        )
    summary = result.summary()
    for name in ("train", "val"):
        info = summary[name]
        if info["cache"] == "hit":
            console.print(f"Features ({name}): reused from the cache ({info['entry']})")
        else:
            console.print(
                f"Features ({name}): computed with {result.engine} in {info['seconds']:.1f} s "
                f"({info['images_per_s']} images/s) and cached"
            )
    if result.engine != "cache":
        console.print(f"Feature engine: {result.engine_reason}")
    return result


__all__ = [
    "Comparison", "EvaluationResult", "Prediction", "TrainConfig", "TrainResult",
    "build_model", "compare", "evaluate", "list_specs", "predict", "resolve_config", "train",
    "training_path", "write_report",
]
