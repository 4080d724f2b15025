"""Keras callbacks that connect ``model.fit`` to a training run.

This module imports Keras at the top; import it only once training starts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import keras

from tlkit.observer import TrainingObserver


class EpochEnd(keras.callbacks.Callback):
    """Calls ``on_end(epoch, logs, seconds)`` after every epoch (0-based epoch, Keras's logs,
    the epoch's wall time including validation)."""

    def __init__(self, on_end: Callable[[int, dict[str, Any], float], None]) -> None:
        super().__init__()
        self._on_end = on_end
        self._started = time.perf_counter()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._on_end(epoch, logs or {}, time.perf_counter() - self._started)


class ObserverCallback(keras.callbacks.Callback):
    """Forwards epochs, batches and validation to a :class:`~tlkit.observer.TrainingObserver`.

    ``last_epoch`` is the stage's last global epoch (fine-tuning continues the count).
    """

    # Keras may then call the batch hooks on a worker thread, without holding up the next
    # step; observers only draw (rich's progress display is thread-safe).
    async_safe = True

    def __init__(self, observer: TrainingObserver, stage: str, last_epoch: int) -> None:
        super().__init__()
        self.observer = observer
        self.stage = stage
        self.last_epoch = last_epoch

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.observer.epoch_started(self.stage, epoch + 1, self.last_epoch)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.observer.batch_ended(batch + 1, logs or {})

    def on_test_begin(self, logs: dict | None = None) -> None:
        self.observer.validation_started()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.observer.epoch_ended(self.stage, epoch + 1, self.last_epoch, logs or {})
