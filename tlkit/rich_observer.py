"""Renders a training run's observer events in the terminal with rich.

Messages are printed as lines; long tasks (decoding, features) get a transient
progress bar with a rate; each epoch gets a live bar (batches, ETA, running
loss/accuracy) that leaves one summary line behind when the epoch ends.  A study (``tlkit tune``)
prints one row of a trials table per finished trial, a new best marked.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from tlkit.observer import TrainingObserver

_SHOWN_METRICS = ("loss", "accuracy", "f1")
_TRIAL_STATES = {"complete": "green", "pruned": "dim", "failed": "red", "running": "default"}
_TRIAL_COLUMNS = (("trial", 5, "right"), ("state", 8, "left"), ("hold-out", 9, "right"), ("seconds", 8, "right"))


#: The width of output that is not a terminal (a log file, ``| tee``, CI): wide enough that no line
#: or table cell wraps (a run directory's path must stay copyable), never used to pad lines.
PLAIN_WIDTH = 1000


def make_console(*, stderr: bool = False, quiet: bool = False) -> Console:
    """A console for tlkit's output: in a terminal, the terminal's width; elsewhere (a pipe, a log
    file) lines are never wrapped, unless ``COLUMNS`` says how wide the reader is."""
    console = Console(stderr=stderr, quiet=quiet, highlight=False)
    if console.is_terminal or os.environ.get("COLUMNS"):
        return console
    return Console(stderr=stderr, quiet=quiet, highlight=False, width=PLAIN_WIDTH, soft_wrap=True)


def format_metrics(logs: Mapping[str, Any], prefix: str = "") -> str:
    """``loss 0.1234  accuracy 0.9000 ...`` for the metrics worth a glance."""
    parts = []
    for key in _SHOWN_METRICS:
        value = logs.get(prefix + key)
        if value is not None:
            parts.append(f"{prefix}{key} {float(value):.4f}")
    return "  ".join(parts)


class RichObserver(TrainingObserver):
    """A :class:`TrainingObserver` that draws on a rich ``Console`` (stderr by default)."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or make_console(stderr=True)
        self._tasks: Progress | None = None
        self._task_ids: dict[str, TaskID] = {}
        self._task_started: dict[str, float] = {}
        self._task_done: dict[str, int] = {}
        self._epochs: Progress | None = None
        self._epoch_task: TaskID | None = None
        self._steps = 0
        self._label = "epoch"
        self._trial_header = False

    # -- messages ------------------------------------------------------------
    def message(self, text: str, level: str = "info") -> None:
        target = self._live_console()
        if level == "warning":
            target.print(f"[yellow]Warning:[/yellow] {escape(text)}", highlight=False)
        else:
            target.print(text, markup=False, highlight=False)

    def _live_console(self) -> Console:
        # Printed through a live display so the line lands above its bar.
        for live in (self._epochs, self._tasks):
            if live is not None:
                return live.console
        return self.console

    # -- long tasks ----------------------------------------------------------
    def task_started(self, task: str, total: int) -> None:
        if self._tasks is None:
            self._tasks = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
            )
            self._tasks.start()
        self._task_ids[task] = self._tasks.add_task(task, total=total, rate="")
        self._task_started.pop(task, None)
        self._task_done[task] = 0

    def task_advanced(self, task: str, done: int) -> None:
        if self._tasks is None or task not in self._task_ids:
            return
        task_id = self._task_ids[task]
        # The clock starts at the first batch, so start-up (e.g. an ONNX export) is not in the rate.
        started = self._task_started.setdefault(task, time.perf_counter())
        self._task_done[task] += done
        elapsed = time.perf_counter() - started
        rate = f"{self._task_done[task] / elapsed:.1f}/s" if elapsed > 0 else ""
        self._tasks.update(task_id, advance=done, rate=rate)

    def task_finished(self, task: str) -> None:
        if self._tasks is None or task not in self._task_ids:
            return
        self._tasks.remove_task(self._task_ids.pop(task))
        if not self._task_ids:
            self._tasks.stop()
            self._tasks = None

    # -- epochs --------------------------------------------------------------
    def stage_started(self, stage: str, first_epoch: int, last_epoch: int, steps: int) -> None:
        self._steps = steps
        self._label = "fine-tune epoch" if stage == "fine_tune" else "epoch"
        self._epochs = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("batches"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[metrics]}"),
            console=self.console,
            transient=True,
        )
        self._epochs.start()
        self._epoch_task = self._epochs.add_task("", total=steps, metrics="")

    def epoch_started(self, stage: str, epoch: int, last_epoch: int) -> None:
        if self._epochs is not None and self._epoch_task is not None:
            self._epochs.reset(
                self._epoch_task, total=self._steps, metrics="", description=f"{self._label} {epoch}/{last_epoch}"
            )

    def batch_ended(self, step: int, logs: Mapping[str, float]) -> None:
        if self._epochs is not None and self._epoch_task is not None:
            self._epochs.update(self._epoch_task, completed=step, metrics=format_metrics(logs))

    def validation_started(self) -> None:
        if self._epochs is not None and self._epoch_task is not None:
            self._epochs.update(self._epoch_task, metrics="validating…")

    def epoch_ended(self, stage: str, epoch: int, last_epoch: int, logs: Mapping[str, float]) -> None:
        line = (
            f"{self._label} {epoch:>3}/{last_epoch}  {format_metrics(logs)}  "
            f"[bold]{format_metrics(logs, 'val_')}[/bold]"
        )
        self._live_console().print(line, highlight=False)

    def stage_finished(self, stage: str) -> None:
        if self._epochs is not None:
            self._epochs.stop()
            self._epochs = None
            self._epoch_task = None

    # -- trials (tlkit tune) -------------------------------------------------
    def trial_finished(self, trial: Any, best: Any) -> None:
        """One row of the trials table (the header before the first): number, state, hold-out value
        (a pruned trial's last value seen, in brackets), seconds and the values it tried."""
        table = Table(box=None, show_header=not self._trial_header, header_style="bold", pad_edge=False)
        for name, width, justify in _TRIAL_COLUMNS:
            table.add_column(name, width=width, justify=justify, no_wrap=True)  # type: ignore[arg-type]
        table.add_column("parameters", overflow="fold", ratio=1)
        self._trial_header = True
        value = "—"
        if trial.value is not None:
            value = f"{trial.value:.4f}"
        elif trial.state == "pruned" and trial.intermediate:
            value = f"({trial.intermediate[-1]:.4f})"
        params = format_params(trial.params)
        is_best = best is not None and trial.state == "complete" and best.number == trial.number
        if is_best:
            params = f"[bold green]★ new best[/bold green]  {escape(params)}"
        else:
            params = escape(params)
        style = _TRIAL_STATES.get(trial.state, "default")
        table.add_row(
            str(trial.number),
            f"[{style}]{escape(trial.state)}[/{style}]",
            f"[bold]{value}[/bold]" if is_best else value,
            f"{trial.seconds:.1f}",
            params,
        )
        self._live_console().print(table, highlight=False)


def format_params(params: Mapping[str, Any]) -> str:
    """``lr=0.00123 head=mlp head.dropout=0.21``: a trial's values, compactly."""
    parts = []
    for name, value in params.items():
        shown = f"{value:.3g}" if isinstance(value, float) else str(value)
        parts.append(f"{name}={shown}")
    return " ".join(parts)


__all__ = ["PLAIN_WIDTH", "RichObserver", "make_console", "format_metrics", "format_params"]
