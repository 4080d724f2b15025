"""The Keras callback that shows live training progress in the terminal (rich).

This module imports Keras at the top; import it only once training starts.
"""

from __future__ import annotations

from typing import Any

import keras
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def _fmt(logs: dict[str, Any], prefix: str = "") -> str:
    parts = []
    for key in ("loss", "accuracy", "f1"):
        value = logs.get(prefix + key)
        if value is not None:
            parts.append(f"{prefix}{key} {float(value):.4f}")
    return "  ".join(parts)


class RichProgress(keras.callbacks.Callback):
    """One live progress bar per epoch: batches done, ETA, live loss and accuracy.

    Finished epochs stay on screen as one line each with train and validation metrics.
    """

    def __init__(self, console: Console, steps: int, epochs: int, stage: str = "head") -> None:
        """``epochs`` is the last global epoch of the stage (fine-tuning continues the count)."""
        super().__init__()
        self.console = console
        self.steps = steps
        self.epochs = epochs
        self.stage = stage
        self.label = "fine-tune epoch" if stage == "fine_tune" else "epoch"
        self._progress: Progress | None = None
        self._task = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._progress = Progress(
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
        self._progress.start()
        self._task = self._progress.add_task("", total=self.steps, metrics="")

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if self._progress is not None:
            self._progress.reset(self._task, total=self.steps, metrics="",
                                 description=f"{self.label} {epoch + 1}/{self.epochs}")

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=batch + 1, metrics=_fmt(logs or {}))

    def on_test_begin(self, logs: dict | None = None) -> None:
        if self._progress is not None:
            self._progress.update(self._task, metrics="validating…")

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        line = f"{self.label} {epoch + 1:>3}/{self.epochs}  {_fmt(logs)}  [bold]{_fmt(logs, 'val_')}[/bold]"
        # Printed through the live display so it lands above the bar.
        (self._progress.console if self._progress is not None else self.console).print(line, highlight=False)

    def on_train_end(self, logs: dict | None = None) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
