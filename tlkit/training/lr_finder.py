"""The learning-rate finder: one sweep of exponentially growing learning rates on cached features.

``tlkit lr-find`` (and :func:`tlkit.lr_find`) prepares the run exactly as ``tlkit train`` would —
same data scan, same model, same feature cache, so after (or before) a ``tlkit train`` on the same
data, base, weights and image size it runs no base at all — then trains a fresh head on the
cached features for one pass (at least :data:`MIN_STEPS` steps), multiplying the learning rate by
the same factor every step from ``start_lr`` to ``end_lr``.  It records the loss of every step
and its smoothed value (an exponential moving average with bias correction, as fastai does), and
stops early once the smoothed loss exceeds :data:`DIVERGENCE` × its minimum.

The suggestion (:func:`suggest`) is the learning rate at the **steepest descent** of the smoothed
loss: where the loss falls fastest per unit of log learning rate, the rate learns quickly while
it is still well below where training turns unstable.  The classic "minimum ÷ 10" is reported
alongside, and is the suggestion only when the loss never falls.

The results go to a new folder ``<output>/<YYYYmmdd-HHMMSS>-<base>-<head>[-N]/`` (default
``output``: ``lr-find``, beside ``runs/`` so ``tlkit compare runs/*/`` never meets it), never
reused: :data:`PLOT` (loss vs learning rate), :data:`CURVE_JSON` (the curve, the suggestion and
the ``tlkit train`` command that uses it) and :data:`CURVE_CSV`.  This module owns that layout.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import shlex
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tlkit.config.options import OPTIONS, TrainConfig
from tlkit.errors import TlkitError
from tlkit.io.files import write_json, write_text
from tlkit.io.rundir import RunDir
from tlkit.observer import TrainingObserver

DEFAULT_START_LR = 1e-7
DEFAULT_END_LR = 10.0
DEFAULT_OUTPUT = "lr-find"
MIN_STEPS = 50  # a default sweep takes at least this many steps (the train set is repeated when smaller)
LEAST_STEPS = 10  # fewer given with --steps: too few points for a curve
SMOOTHING = 0.98  # the EMA's β
DIVERGENCE = 4.0  # stop once the smoothed loss exceeds this × its minimum
SKIP_START = 0.1  # the first 10 % of the points (at least one) never hold the suggestion
MIN_FALL = 0.01  # a smoothed loss that falls less than 1 % to its lowest has no descent to pick

# The results folder's layout, written down once.
PLOT = "lr_find.png"
CURVE_JSON = "lr_find.json"
CURVE_CSV = "lr_find.csv"
RULES = {
    "steepest": "steepest descent of the smoothed loss",
    "minimum/10": "the smoothed loss never fell by 1 %: lowest loss ÷ 10",
}


@dataclass
class LRFindResult:
    """What a learning-rate sweep found, and where it wrote it."""

    lrs: list[float]  # one per step taken, growing exponentially
    losses: list[float]  # the training loss of each step (before that step's update)
    smoothed: list[float]  # EMA of the losses, bias-corrected
    suggestion: float
    rule: str  # a key of RULES: which rule chose the suggestion
    steepest_lr: float | None  # None when the smoothed loss never fell
    minimum_lr: float  # where the smoothed loss is lowest (the other rule suggests a tenth of it)
    start_lr: float
    end_lr: float
    steps_planned: int
    steps_per_epoch: int
    stopped: str  # why the sweep ended, in words
    config: TrainConfig  # the resolved training configuration the sweep was run for
    train_command: str  # `tlkit train …` with --lr set to the suggestion
    folder: Path
    plot: Path
    curve_json: Path
    curve_csv: Path
    features: dict[str, Any] | None = None  # tlkit.features.plan.RunFeatures.summary()

    @property
    def suggested_lr_text(self) -> str:
        """The suggestion as the command gives it (two significant digits)."""
        return lr_text(self.suggestion)

    def as_dict(self) -> dict[str, Any]:
        return {
            "suggestion": self.suggestion,
            "suggested_lr": self.suggested_lr_text,
            "rule": self.rule,
            "rule_text": RULES[self.rule],
            "steepest_lr": self.steepest_lr,
            "minimum_lr": self.minimum_lr,
            "minimum_lr_div10": self.minimum_lr / 10,
            "start_lr": self.start_lr,
            "end_lr": self.end_lr,
            "steps_planned": self.steps_planned,
            "steps_run": len(self.lrs),
            "steps_per_epoch": self.steps_per_epoch,
            "stopped": self.stopped,
            "train_command": self.train_command,
            "folder": str(self.folder),
            "plot": str(self.plot),
            "curve_json": str(self.curve_json),
            "curve_csv": str(self.curve_csv),
            "features": self.features,
            "config": self.config.to_dict(),
            "points": [
                {"step": i + 1, "lr": lr, "loss": loss, "smoothed": s}
                for i, (lr, loss, s) in enumerate(zip(self.lrs, self.losses, self.smoothed))
            ],
        }


# -- the numbers -------------------------------------------------------------------


def sweep_lrs(start_lr: float, end_lr: float, steps: int) -> list[float]:
    """``steps`` learning rates from ``start_lr`` to ``end_lr`` (both included), each the last × a constant."""
    if steps == 1:
        return [start_lr]
    ratio = end_lr / start_lr
    return [start_lr * ratio ** (i / (steps - 1)) for i in range(steps)]


def smooth(losses: Sequence[float], beta: float = SMOOTHING) -> list[float]:
    """The exponential moving average of ``losses`` with bias correction (``avg / (1 - β^t)``)."""
    average, out = 0.0, []
    for t, loss in enumerate(losses, start=1):
        average = beta * average + (1 - beta) * loss
        out.append(average / (1 - beta**t))
    return out


def suggest(lrs: Sequence[float], smoothed: Sequence[float]) -> tuple[float, str, float | None, float]:
    """``(suggestion, rule, steepest_lr, minimum_lr)`` of a recorded curve.

    ``lowest`` is the index of the lowest smoothed loss (the first, on a tie) and ``minimum_lr``
    its learning rate.  Steepest descent: the slope of step k is ``(smoothed[k+1] - smoothed[k])
    / (ln lr[k+1] - ln lr[k])``, for k from ``max(1, int(n * SKIP_START))`` (the first 10 % of the
    n points are the smoothing's warm-up) to ``lowest - 1`` (the descent that leads to the lowest
    loss, not a dip after it); the suggestion is ``lr[k]`` of the most negative slope (the first
    on a tie).  When there is no negative slope there, or the lowest smoothed loss is less than
    :data:`MIN_FALL` (1 %) below the highest before it (a flat curve's slopes are noise), the
    suggestion is ``minimum_lr / 10``.
    """
    if len(lrs) != len(smoothed) or len(lrs) < 2:
        raise ValueError("a curve needs two or more points, one smoothed loss per learning rate")
    lowest = min(range(len(smoothed)), key=smoothed.__getitem__)
    minimum_lr = lrs[lowest]
    slopes = [
        (k, (smoothed[k + 1] - smoothed[k]) / (math.log(lrs[k + 1]) - math.log(lrs[k])))
        for k in range(max(1, int(len(lrs) * SKIP_START)), lowest)
    ]
    k, slope = min(slopes, key=lambda item: item[1], default=(0, 0.0))
    fallen_from = max(smoothed[: lowest + 1])
    if slope < 0 and fallen_from - smoothed[lowest] >= MIN_FALL * abs(fallen_from):
        return lrs[k], "steepest", lrs[k], minimum_lr
    return minimum_lr / 10, "minimum/10", None, minimum_lr


def lr_text(lr: float) -> str:
    """A learning rate with two significant digits, as a flag value (``0.0032``, ``3.2e-05``)."""
    return f"{lr:.2g}"


# -- the train command -------------------------------------------------------------


def _flag_values(name: str, value: Any) -> list[str]:
    """The command-line words that give option ``name`` the value ``value``."""
    meta = OPTIONS[name]
    if meta.kind is bool:
        on, _, off = meta.flags.partition("/")
        return [on if value else off]
    if meta.kind is dict:
        return [w for key, item in value.items() for w in (meta.cli_flag, f"{key}={_plain(item)}")]
    if meta.kind is list:
        if meta.separator:
            return [meta.cli_flag, meta.separator.join(value)]
        return [w for item in value for w in (meta.cli_flag, item)]
    return [meta.cli_flag, _plain(value)]


def _plain(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(_plain(v) for v in value)
    return repr(value) if isinstance(value, float) else str(value)


def train_command(config: TrainConfig, lr: float) -> str:
    """``tlkit train …`` for ``config`` (a resolved one) with ``--lr lr``: ``--data``, ``--base`` and
    ``--head``, then every option that differs from its default (head parameters that differ
    from the head's defaults, the image size when it is not the base's default)."""
    # lazy: `tlkit --help` imports this module (its defaults), not the sweep's modules (config.resolve loads numpy)
    from tlkit.config.resolve import resolve_head
    from tlkit.registry.manager import get_registry

    defaults = TrainConfig()
    head_defaults = resolve_head(config.head, {})[1]
    words = ["tlkit", "train"]
    for name in OPTIONS:
        value = getattr(config, name)
        if name == "lr":
            words += [OPTIONS[name].cli_flag, lr_text(lr)]
            continue
        if name in ("data", "base", "head"):  # always: what the command is about
            words += [OPTIONS[name].cli_flag, _short_path(value) if name == "data" else value]
            continue
        if name == "head_params":
            value = {k: v for k, v in value.items() if head_defaults.get(k) != v}
        elif name == "image_size" and value == get_registry().base(config.base).default_size:
            continue
        elif name == "output":
            value = _short_path(value)
            if Path(value).resolve() == Path(defaults.output).resolve():
                continue
        if value == getattr(defaults, name) or (name == "head_params" and not value):
            continue
        words += _flag_values(name, value)
    return " ".join(shlex.quote(w) for w in words)


def _short_path(path: str) -> str:
    """``path`` relative to the working folder when it is inside it, else as it is."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve())) or "."
    except ValueError:
        return str(path)


# -- the sweep ---------------------------------------------------------------------


def check_sweep(start_lr: float, end_lr: float, steps: int | None) -> None:
    """One-line TlkitErrors for a sweep that cannot run (before any work)."""
    for flag, value in (("--start-lr", start_lr), ("--end-lr", end_lr)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise TlkitError(f"{flag} must be a positive number, got {value!r}")
    if end_lr <= start_lr:
        raise TlkitError(
            f"--end-lr {end_lr:g} must be larger than --start-lr {start_lr:g}; the sweep grows the learning rate"
        )
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < LEAST_STEPS):
        raise TlkitError(f"--steps must be an integer ≥ {LEAST_STEPS} (or left out for one pass), got {steps!r}")


def sweep_config(config: TrainConfig, output: str | Path) -> TrainConfig:
    """The configuration the sweep prepares: ``config`` on clean cached features, one device, no
    fine-tuning, writing only to ``output``."""
    return dataclasses.replace(
        config,
        augmentations=[],
        aug_views=0,
        feature_cache=True,
        fine_tune_epochs=0,
        strategy="default",
        output=str(Path(output).expanduser().resolve()),
    )


def find_lr(
    config: TrainConfig,
    *,
    output: str | Path = DEFAULT_OUTPUT,
    start_lr: float = DEFAULT_START_LR,
    end_lr: float = DEFAULT_END_LR,
    steps: int | None = None,
    observer: TrainingObserver | None = None,
) -> LRFindResult:
    """Sweep the head's learning rate for ``config`` (a resolved :class:`TrainConfig`); see the module."""
    # lazy: `tlkit --help` imports this module (its defaults), not the sweep's modules (training.run loads numpy)
    from tlkit.config.preflight import check_output
    from tlkit.training.distribute import precision_policy_kept
    from tlkit.training.run import TrainingRun
    from tlkit.training.stages import sigterm_stops_training

    check_sweep(start_lr, end_lr, steps)
    check_output(Path(output).expanduser().resolve())
    observer = observer or TrainingObserver()
    for note in _what_the_sweep_leaves_out(config):
        observer.message(note)
    run = TrainingRun.start(sweep_config(config, output), observer)
    run.writes_run_dir = False
    with (
        tempfile.TemporaryDirectory(prefix="tlkit-pixels-") as workdir,
        sigterm_stops_training(),  # SIGTERM stops it like Ctrl-C: the decoded pixels are removed
        precision_policy_kept(),
    ):
        run.prepare(workdir)
        run.features()
        lrs, losses, stopped, planned = _sweep(run, start_lr, end_lr, steps)
    smoothed = smooth(losses)
    suggestion, rule, steepest, minimum = suggest(lrs, smoothed)
    if rule != "steepest":
        observer.message(
            f"the smoothed loss never fell by {MIN_FALL:.0%} between --start-lr {start_lr:g} and {lrs[-1]:.3g}; "
            f"the suggestion is the lowest loss's rate ÷ 10 and may not be useful — check the data and "
            f"the base's weights, or widen the sweep",
            level="warning",
        )

    folder = RunDir.create(run.config.output, config.base, config.head).path
    result = LRFindResult(
        lrs=lrs,
        losses=losses,
        smoothed=smoothed,
        suggestion=suggestion,
        rule=rule,
        steepest_lr=steepest,
        minimum_lr=minimum,
        start_lr=float(start_lr),
        end_lr=float(end_lr),
        steps_planned=planned,
        steps_per_epoch=run.steps,
        stopped=stopped,
        config=config,
        train_command=train_command(config, suggestion),
        folder=folder,
        plot=folder / PLOT,
        curve_json=folder / CURVE_JSON,
        curve_csv=folder / CURVE_CSV,
        features=run.run_features.summary() if run.run_features is not None else None,
    )
    _write(result, title=f"{config.base} + {config.head}")
    return result


def _what_the_sweep_leaves_out(config: TrainConfig) -> list[str]:
    """Lines telling the user which of their options the sweep does not apply, and why."""
    notes = []
    if config.augmentations:
        notes.append(
            "lr-find sweeps the un-augmented features (augmentations change the base's input, so their "
            "features differ every epoch); --aug is kept in the suggested train command"
        )
    if not config.feature_cache:
        notes.append("lr-find always trains the head on cached features (--no-feature-cache applies to train)")
    if config.fine_tune_epochs:
        notes.append("lr-find finds the head stage's --lr; --fine-tune-lr is not swept")
    if config.strategy not in ("auto", "default"):
        notes.append(f"lr-find runs on one device (--strategy {config.strategy} applies to train)")
    if config.schedule != "constant" or config.warmup_epochs:
        notes.append("the sweep is its own schedule; --schedule and --warmup-epochs apply to train")
    return notes


def _sweep(run: Any, start_lr: float, end_lr: float, steps: int | None) -> tuple[list[float], list[float], str, int]:
    """Train a fresh head on the run's cached features, the learning rate growing every step.

    Returns ``(lrs, losses, why_it_stopped, steps_planned)``.
    """
    # lazy: `tlkit --help` imports this module (its defaults), and no numpy
    import numpy as np

    # lazy: `tlkit --help` imports this module (its defaults), not the sweep's modules
    from tlkit.training.objectives import make_loss, make_optimizer

    observer, per_epoch = run.observer, run.steps
    planned = steps if steps is not None else max(per_epoch, MIN_STEPS)
    if steps is None and per_epoch < MIN_STEPS:
        observer.message(
            f"the train set is {per_epoch} batch(es) of {run.global_batch}; the sweep goes over it "
            f"{math.ceil(MIN_STEPS / per_epoch)} times to take {MIN_STEPS} steps"
        )
    observer.message(
        f"Sweep: {planned} steps, learning rate {start_lr:g} → {end_lr:g} (× {(end_lr / start_lr) ** (1 / max(planned - 1, 1)):.4g} per step)"
    )
    model = run.parts.head_tail
    with run.distribution.strategy.scope():
        model.compile(optimizer=make_optimizer(run.config, start_lr), loss=make_loss(run.config))
    train, _ = run.head_datasets(0)  # a new pass (shuffled anew) each time it is iterated
    batches = iter(train)
    lrs: list[float] = []
    losses: list[float] = []
    smoothed = 0.0
    lowest = math.inf
    stopped = f"reached --end-lr {end_lr:g}"
    task = "sweeping the learning rate"
    observer.task_started(task, planned)
    try:
        for step, lr in enumerate(sweep_lrs(start_lr, end_lr, planned), start=1):
            try:
                x, y = next(batches)
            except StopIteration:
                batches = iter(train)
                x, y = next(batches)
            model.optimizer.learning_rate = lr
            logs = model.train_on_batch(np.asarray(x), np.asarray(y), class_weight=run.class_weight, return_dict=True)
            loss = float(logs["loss"])
            observer.task_advanced(task, 1)
            if not math.isfinite(loss):
                stopped = f"the loss became {loss} at step {step} (lr {lr:.3g})"
                break
            lrs.append(lr)
            losses.append(loss)
            smoothed = SMOOTHING * smoothed + (1 - SMOOTHING) * loss
            current = smoothed / (1 - SMOOTHING**step)
            lowest = min(lowest, current)
            if step > 1 and current > DIVERGENCE * lowest:
                stopped = f"the loss diverged at step {step} (lr {lr:.3g}: smoothed loss > {DIVERGENCE:g}× its minimum)"
                break
    finally:
        observer.task_finished(task)
    if len(lrs) < 2:
        raise TlkitError(f"the sweep stopped after {len(lrs)} step(s) ({stopped}); lower --start-lr (now {start_lr:g})")
    observer.message(f"Sweep: {len(lrs)} steps, {stopped}")
    return lrs, losses, stopped, planned


def _write(result: LRFindResult, *, title: str) -> None:
    """The plot, the curve as JSON and CSV, each written atomically into the new folder."""
    # lazy: `tlkit --help` imports this module (its defaults), not the sweep's modules (figures loads numpy and PIL)
    from tlkit.evaluation.figures import plot_lr_find

    plot_lr_find(
        result.lrs,
        result.losses,
        result.smoothed,
        result.plot,
        suggestion=result.suggestion,
        suggestion_label=f"suggestion {lr_text(result.suggestion)} ({RULES[result.rule]})",
        minimum_lr=result.minimum_lr,
        title=title,
    )
    write_json(result.curve_json, result.as_dict())
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["step", "lr", "loss", "smoothed"])
    for point in result.as_dict()["points"]:
        writer.writerow([point["step"], repr(point["lr"]), repr(point["loss"]), repr(point["smoothed"])])
    write_text(result.curve_csv, buffer.getvalue())


__all__ = [
    "DEFAULT_END_LR",
    "DEFAULT_OUTPUT",
    "DEFAULT_START_LR",
    "LRFindResult",
    "find_lr",
    "smooth",
    "suggest",
    "sweep_lrs",
    "train_command",
]
