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

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_dir": str(self.run_dir),
            "model": str(self.model_path),
            "plots": [str(p) for p in self.plots],
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
    **options: Any,
) -> TrainResult:
    """Train a classifier and write a complete run directory; return a :class:`TrainResult`.

    Options are the fields of :class:`tlkit.config.TrainConfig` (``data``,
    ``base``, ``head``, ``epochs``, ``batch_size``, ``lr``, ...), given as a
    config object, keyword arguments, or both (keywords win).  Progress goes
    to ``console`` (a ``rich.console.Console``; stderr by default) unless
    ``verbose`` is False.
    """
    from tlkit import data as datamod

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
    run_dir = create_run_dir(config.output, config.base, config.head)
    console.print(f"Run directory: [bold]{run_dir}[/bold]")
    from tlkit import __version__

    write_text(
        run_dir / "config.toml",
        to_toml(config, {"version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}),
    )
    write_json(run_dir / "classes.json", scan.classes)

    with tempfile.TemporaryDirectory(prefix="tlkit-pixels-") as workdir:
        train_px, val_px = _decode(console, datamod, scan, config, workdir)
        return _fit_and_save(console, config, base, head, scan.classes, train_px, val_px, run_dir,
                             verbose=verbose)


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


def _fit_and_save(console, config, base, head, classes, train_px, val_px, run_dir: Path, *, verbose: bool):
    import keras

    from tlkit import builder, training
    from tlkit.callbacks import HistoryWriter, RichProgress
    from tlkit.reporting import plot_history

    keras.utils.set_random_seed(config.seed)
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
    path, why = training_path(config)
    console.print(f"Training path: [bold]{path}[/bold] — {why}")

    features_summary = None
    if path == "features":
        run_features = _features(console, config, base, parts, train_px, val_px, verbose=verbose)
        features_summary = run_features.summary()
        train_ds, val_ds = training.feature_datasets(run_features, config, len(classes))
        fit_model = parts.head
    else:
        train_ds, val_ds = training.pixel_datasets(train_px, val_px, config, len(classes))
        fit_model = model
    with training.distribution_strategy().scope():
        training.compile_model(fit_model, config)

    steps = -(-len(train_px.labels) // config.batch_size)
    callbacks = [HistoryWriter(run_dir / "history.csv")]
    if verbose:
        callbacks.append(RichProgress(console, steps=steps, epochs=config.epochs))
    started = time.perf_counter()
    history = training.fit_head(fit_model, train_ds, val_ds, config=config, callbacks=callbacks)
    train_time = time.perf_counter() - started

    model_path = run_dir / "model.keras"
    with atomic_path(model_path, suffix=".keras") as tmp:
        model.save(tmp)  # always the whole model: raw pixels in, probabilities out
    best, _ = training.best_epoch(history)
    metrics = {
        "best_epoch": best,
        "best_val_accuracy": history["val_accuracy"][best - 1] if history.get("val_accuracy") else None,
        "best_val_loss": history["val_loss"][best - 1] if history.get("val_loss") else None,
        "final": {key: values[-1] for key, values in history.items()},
        "epochs_run": len(history.get("loss", [])),
        "train_time_s": round(train_time, 2),
        "num_classes": len(classes),
        "num_train": int(len(train_px.labels)),
        "num_val": int(len(val_px.labels)),
        "skipped_bad_images": [str(p) for p, _ in train_px.bad + val_px.bad],
        "saved_model": "final epoch",
        "training_path": path,
        "training_path_reason": why,
        "features": features_summary,
    }
    write_json(run_dir / "metrics.json", metrics)
    plots = plot_history(history, run_dir / "plots", title=f"{base.name} + {head.name}")
    return TrainResult(run_dir=run_dir, config=config, classes=list(classes), history=history,
                       metrics=metrics, model_path=model_path, plots=plots)


def _features(console, config, base, parts, train_px, val_px, *, verbose: bool):
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
            augmentations=config.augmentations, seed=config.seed, batch_size=config.batch_size,
            progress=make_callback,
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
