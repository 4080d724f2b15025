"""``tlkit train``: parse the options, call :func:`tlkit.train`, render the result."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, List, Optional

import typer
from rich.console import Console
from rich.table import Table

from tlkit.cli.common import err, handles_errors, out, print_json
from tlkit.errors import TlkitError


@handles_errors
def train(
    data: Optional[Path] = typer.Option(None, "--data", help="Folder with train/ (and val/), one sub-folder per class. (default: data)", rich_help_panel="Data"),
    val_split: Optional[float] = typer.Option(None, "--val-split", help="Fraction of train/ held out when there is no val/. (default: 0.2)", rich_help_panel="Data"),
    skip_bad_images: Optional[bool] = typer.Option(None, "--skip-bad-images/--stop-on-bad-images", help="Skip unreadable images instead of stopping. (default: stop)", rich_help_panel="Data"),
    class_weight: Optional[str] = typer.Option(None, "--class-weight", help="none, balanced, or a JSON file {class: weight}. (default: none)", rich_help_panel="Data"),
    base: Optional[str] = typer.Option(None, "--base", help="Base model (tlkit list-bases). (default: resnet50)", rich_help_panel="Model"),
    weights: Optional[str] = typer.Option(None, "--weights", help="imagenet, none, or a weights file of the base. (default: imagenet)", rich_help_panel="Model"),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Input size in pixels (images are resized). (default: the base's)", rich_help_panel="Model"),
    head: Optional[str] = typer.Option(None, "--head", help="Head (tlkit list-heads). (default: dense256)", rich_help_panel="Model"),
    head_param: Optional[List[str]] = typer.Option(None, "--head-param", help="Head parameter KEY=VALUE (repeatable).", rich_help_panel="Model"),
    aug: Optional[List[str]] = typer.Option(None, "--aug", help="Augmentation NAME[:key=value,...] (repeatable; tlkit list-augmentations).", rich_help_panel="Model"),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Epochs of the head stage. (default: 10)", rich_help_panel="Optimization"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Batch size. (default: 32)", rich_help_panel="Optimization"),
    optimizer: Optional[str] = typer.Option(None, "--optimizer", help="adam, sgd, rmsprop or adamw. (default: adam)", rich_help_panel="Optimization"),
    lr: Optional[float] = typer.Option(None, "--lr", help="Learning rate of the head stage. (default: 0.001)", rich_help_panel="Optimization"),
    momentum: Optional[float] = typer.Option(None, "--momentum", help="SGD momentum. (default: 0.9)", rich_help_panel="Optimization"),
    nesterov: Optional[bool] = typer.Option(None, "--nesterov/--no-nesterov", help="SGD with Nesterov momentum. (default: off)", rich_help_panel="Optimization"),
    weight_decay: Optional[float] = typer.Option(None, "--weight-decay", help="Decoupled weight decay (adamw: 0.004 when 0). (default: 0)", rich_help_panel="Optimization"),
    schedule: Optional[str] = typer.Option(None, "--schedule", help="Learning-rate schedule: constant, cosine, exponential or step. (default: constant)", rich_help_panel="Optimization"),
    warmup_epochs: Optional[int] = typer.Option(None, "--warmup-epochs", help="Linear warm-up epochs before the schedule. (default: 0)", rich_help_panel="Optimization"),
    decay_rate: Optional[float] = typer.Option(None, "--decay-rate", help="exponential: factor per epoch; step: factor per --decay-epochs. (default: 0.5)", rich_help_panel="Optimization"),
    decay_epochs: Optional[int] = typer.Option(None, "--decay-epochs", help="step schedule: epochs between decays. (default: 3)", rich_help_panel="Optimization"),
    loss: Optional[str] = typer.Option(None, "--loss", help="categorical_crossentropy, focal or mean_squared_error. (default: categorical_crossentropy)", rich_help_panel="Optimization"),
    label_smoothing: Optional[float] = typer.Option(None, "--label-smoothing", help="Label smoothing for cross-entropy and focal loss. (default: 0)", rich_help_panel="Optimization"),
    focal_gamma: Optional[float] = typer.Option(None, "--focal-gamma", help="Focusing parameter of the focal loss. (default: 2)", rich_help_panel="Optimization"),
    metrics: Optional[str] = typer.Option(None, "--metrics", help="Comma-separated: accuracy, top_k, precision, recall, f1, fbeta. (default: accuracy,f1)", rich_help_panel="Optimization"),
    top_k: Optional[int] = typer.Option(None, "--top-k", help="k of the top_k metric. (default: 5)", rich_help_panel="Optimization"),
    fbeta: Optional[float] = typer.Option(None, "--fbeta", help="β of the fbeta metric (macro). (default: 2)", rich_help_panel="Optimization"),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed (data order, split, augmentation, initialisation). (default: 0)", rich_help_panel="Optimization"),
    deterministic: Optional[bool] = typer.Option(None, "--deterministic/--no-deterministic", help="Deterministic ops: the same seed gives identical histories. (default: off)", rich_help_panel="Optimization"),
    monitor: Optional[str] = typer.Option(None, "--monitor", help="What picks the best epoch (the saved model): val_accuracy, val_loss or val_f1. (default: val_accuracy)", rich_help_panel="Stopping"),
    patience: Optional[int] = typer.Option(None, "--patience", help="Stop a stage after this many epochs without improvement (0: never). (default: 0)", rich_help_panel="Stopping"),
    reduce_lr_patience: Optional[int] = typer.Option(None, "--reduce-lr-patience", help="Multiply the learning rate by --reduce-lr-factor after this many flat epochs (0: off). (default: 0)", rich_help_panel="Stopping"),
    reduce_lr_factor: Optional[float] = typer.Option(None, "--reduce-lr-factor", help="Factor for --reduce-lr-patience. (default: 0.5)", rich_help_panel="Stopping"),
    fine_tune_epochs: Optional[int] = typer.Option(None, "--fine-tune-epochs", help="Epochs of a second stage that trains the top of the base too (0: none). (default: 0)", rich_help_panel="Fine-tuning"),
    unfreeze: Optional[str] = typer.Option(None, "--unfreeze", help="What the fine-tuning stage trains: K (top K layers), all, or from:LAYER_NAME. (default: all)", rich_help_panel="Fine-tuning"),
    fine_tune_lr: Optional[float] = typer.Option(None, "--fine-tune-lr", help="Learning rate of the fine-tuning stage. (default: 1e-05)", rich_help_panel="Fine-tuning"),
    feature_cache: Optional[bool] = typer.Option(None, "--feature-cache/--no-feature-cache", help="Train the head on the frozen base's cached features (computed once). (default: on)", rich_help_panel="Speed"),
    aug_views: Optional[int] = typer.Option(None, "--aug-views", help="With --aug: cache K augmented views per image (one per epoch) instead of training end to end. (default: 0)", rich_help_panel="Speed"),
    engine: Optional[str] = typer.Option(None, "--engine", help="Feature engine: auto (ONNX Runtime when installed), onnxruntime or tensorflow. (default: auto)", rich_help_panel="Speed"),
    output: Optional[Path] = typer.Option(None, "--output", help="Where run directories are created. (default: runs)", rich_help_panel="Run"),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML file with any of these options (flags override it), e.g. a run's config.toml.", rich_help_panel="Run"),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue an interrupted run from its last checkpoint (with its own config).", rich_help_panel="Run"),
    print_config: bool = typer.Option(False, "--print-config", help="Print the resolved configuration as TOML and exit.", rich_help_panel="Run"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output; print only the run directory.", rich_help_panel="Run"),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout (progress goes to stderr).", rich_help_panel="Run"),
) -> None:
    """Train a classifier: frozen pretrained base + a new head (+ optional fine-tuning), on DATA/train, validated on DATA/val."""
    from tlkit import api
    from tlkit.config import load_config_file, to_toml
    from tlkit.specs import parse_assignments

    base_config = load_config_file(config) if config else None
    overrides: dict[str, Any] = {
        "data": str(data) if data else None, "base": base, "head": head, "epochs": epochs,
        "batch_size": batch_size, "optimizer": optimizer, "lr": lr, "loss": loss,
        "image_size": image_size, "weights": weights, "seed": seed, "val_split": val_split,
        "skip_bad_images": skip_bad_images, "output": str(output) if output else None,
        "augmentations": list(aug) if aug else None,
        "feature_cache": feature_cache, "aug_views": aug_views, "engine": engine,
        "momentum": momentum, "nesterov": nesterov, "weight_decay": weight_decay, "schedule": schedule,
        "warmup_epochs": warmup_epochs, "decay_rate": decay_rate, "decay_epochs": decay_epochs,
        "label_smoothing": label_smoothing, "focal_gamma": focal_gamma,
        "metrics": [m.strip() for m in metrics.split(",") if m.strip()] if metrics else None,
        "top_k": top_k, "fbeta": fbeta, "class_weight": class_weight, "monitor": monitor,
        "patience": patience, "reduce_lr_patience": reduce_lr_patience, "reduce_lr_factor": reduce_lr_factor,
        "fine_tune_epochs": fine_tune_epochs, "unfreeze": unfreeze, "fine_tune_lr": fine_tune_lr,
        "deterministic": deterministic,
    }
    if head_param:
        params: dict[str, Any] = dict(base_config.head_params) if base_config and (head is None or head == base_config.head) else {}
        for text in head_param:
            params.update(parse_assignments(text, "--head-param"))
        overrides["head_params"] = params
    elif base_config and head is not None and head != base_config.head:
        overrides["head_params"] = {}  # the config's params belong to another head
    console = Console(stderr=True, quiet=quiet, highlight=False) if (as_json or quiet) else err
    if resume is not None:
        given = [key for key, value in overrides.items() if value is not None]
        if given or config or print_config:
            raise TlkitError(
                "--resume continues a run with its own config.toml; drop the other options "
                f"({', '.join(given) or '--config/--print-config'})"
            )
        result = api.train(console=console, verbose=not quiet, resume=resume)
    else:
        if print_config:
            out.print(to_toml(api.resolve_config(base_config, **overrides)), markup=False, end="")
            return
        result = api.train(base_config, console=console, verbose=not quiet, **overrides)
    if as_json:
        return print_json(result.as_dict())
    if quiet:
        sys.stdout.write(f"{result.run_dir}\n")
        return
    _print_summary(result)



def _print_summary(result) -> None:
    m = result.metrics
    table = Table(title="Training finished", show_header=False, title_justify="left")
    table.add_column("", style="bold", no_wrap=True)
    table.add_column("", overflow="fold")
    stage = " — fine-tuning stage" if m.get("best_stage") == "fine_tune" else ""
    table.add_row("saved model", f"epoch {m['best_epoch']} of {m['epochs_run']}, best by {m['monitor']}{stage}")
    for key, label in (("best_val_accuracy", "val accuracy"), ("best_val_f1", "val F1 (macro)"),
                       ("best_val_loss", "val loss")):
        if m.get(key) is not None:
            table.add_row(label, f"{m[key]:.4f}")
    if m.get("fine_tune_epochs"):
        table.add_row("stages", f"head {m['head_epochs']} epochs, fine-tuning {m['fine_tune_epochs']} epochs")
    if m.get("stopped_early"):
        table.add_row("early stopping", ", ".join(m["stopped_early"]))
    table.add_row("final train accuracy", f"{m['final'].get('accuracy', float('nan')):.4f}")
    table.add_row("training time", f"{m['train_time_s']:.1f} s")
    table.add_row("images", f"{m['num_train']} train / {m['num_val']} val, {m['num_classes']} classes")
    table.add_row("run directory", str(result.run_dir))
    table.add_row("model", str(result.model_path))
    table.add_row("plots", "\n".join(str(p) for p in result.plots))
    if result.report:
        table.add_row("report", str(result.report))
    out.print(table)



def register(app: typer.Typer) -> None:
    """Add ``train`` to ``app``."""
    app.command("train",
    epilog="Example: tlkit train --data data --base mobilenet_v2 --head mlp --head-param units=512,256 "
    "--aug flip_horizontal --aug rotation:factor=0.1 --epochs 10 --weights imagenet")(train)
