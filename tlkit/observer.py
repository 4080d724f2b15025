"""How a training run reports progress: an observer interface, so the library never prints.

A :class:`tlkit.training.run.TrainingRun` calls these methods as it goes; the
CLI passes a :class:`tlkit.rich_observer.RichObserver` that renders them in the
terminal, ``tlkit.train(verbose=False)`` passes the silent base class, and a
notebook or another front end can subscribe its own::

    class Collect(tlkit.TrainingObserver):
        def __init__(self):
            self.epochs = []

        def epoch_ended(self, stage, epoch, last_epoch, logs):
            self.epochs.append((stage, epoch, dict(logs)))

    tlkit.train(data="data", observer=Collect())

Every method does nothing by default: override only what you need.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

LEVELS = ("info", "warning")


class TrainingObserver:
    """Receives a training run's (or a study's) messages, long tasks, epochs and trials (all no-ops here)."""

    def message(self, text: str, level: str = "info") -> None:
        """A line for the user: what the run found or decided (``level``: info or warning)."""

    def task_started(self, task: str, total: int) -> None:
        """A long task over ``total`` items began (decoding images, computing features)."""

    def task_advanced(self, task: str, done: int) -> None:
        """``done`` more items of ``task`` are finished."""

    def task_finished(self, task: str) -> None:
        """``task`` is over."""

    def stage_started(self, stage: str, first_epoch: int, last_epoch: int, steps: int) -> None:
        """A training stage (``head`` or ``fine_tune``) runs epochs ``first_epoch``..``last_epoch``
        (1-based, global across stages) of ``steps`` batches each."""

    def epoch_started(self, stage: str, epoch: int, last_epoch: int) -> None:
        """Epoch ``epoch`` (1-based) of the stage began."""

    def batch_ended(self, step: int, logs: Mapping[str, float]) -> None:
        """Batch ``step`` (1-based) of the current epoch finished; ``logs`` holds the running metrics."""

    def validation_started(self) -> None:
        """The current epoch's training batches are done; validation runs now."""

    def epoch_ended(self, stage: str, epoch: int, last_epoch: int, logs: Mapping[str, float]) -> None:
        """Epoch ``epoch`` finished with train (``loss``, ``accuracy``, ...) and validation (``val_*``) metrics."""

    def stage_finished(self, stage: str) -> None:
        """The stage's last epoch (or early stop) is behind it."""

    def trial_finished(self, trial: Any, best: Any) -> None:
        """A trial of ``tlkit tune`` ended (a :class:`tlkit.tuning.result.TrialRecord`: complete,
        pruned or failed); ``best`` is the best complete trial so far (None before the first)."""


__all__ = ["LEVELS", "TrainingObserver"]
