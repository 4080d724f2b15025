"""Training stages: the head on the frozen base, then optional fine-tuning of the base's top.

Everything that creates variables (model, optimizer, metrics) runs inside the
current ``tf.distribute`` strategy's scope, so a multi-GPU or multi-worker
strategy can be slotted in without touching this code.

Epochs are numbered globally: the fine-tuning stage continues where the head
stage stopped.  After every epoch the state is checkpointed (see
:mod:`tlkit.checkpoints`), so an interrupted run resumes where it was.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tlkit import checkpoints
from tlkit.config import TrainConfig
from tlkit.errors import TlkitError

HEAD, FINE_TUNE = "head", "fine_tune"


class TrainingInterrupted(TlkitError):
    """Ctrl-C during training: the last epoch's checkpoint is kept and the run can be resumed."""

    exit_code = 130


def distribution_strategy():
    """The active ``tf.distribute`` strategy (the default one unless a caller entered another)."""
    import tensorflow as tf

    return tf.distribute.get_strategy()


def pixel_datasets(train_px, val_px, config: TrainConfig, num_classes: int, first_pass: int = 0):
    """(train, val) ``tf.data`` datasets of decoded pixels, for end-to-end training."""
    from tlkit.data import make_dataset

    train = make_dataset(train_px, batch_size=config.batch_size, num_classes=num_classes,
                         shuffle=True, seed=config.seed, first_pass=first_pass)
    val = make_dataset(val_px, batch_size=config.batch_size, num_classes=num_classes,
                       shuffle=False, seed=config.seed)
    return train, val


def feature_datasets(run_features, config: TrainConfig, num_classes: int, first_pass: int = 0):
    """(train, val) ``tf.data`` datasets of cached base features, for training the head alone."""
    from tlkit.features import make_feature_dataset

    train = make_feature_dataset(run_features.train, batch_size=config.batch_size,
                                 num_classes=num_classes, shuffle=True, seed=config.seed,
                                 first_pass=first_pass)
    val = make_feature_dataset(run_features.val, batch_size=config.batch_size,
                               num_classes=num_classes, shuffle=False, seed=config.seed)
    return train, val


def rows_to_csv(rows: list[dict[str, Any]]) -> str:
    """CSV text with a header from the union of the rows' keys (first-seen order)."""
    header: list[str] = []
    for row in rows:
        header += [key for key in row if key not in header]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def history_from_rows(rows: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Column lists (Keras ``History`` style) from per-epoch rows."""
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys and k not in ("epoch", "stage")]
    return {k: [float(row.get(k, math.nan)) for row in rows] for k in keys}


def monitor_mode(monitor: str) -> str:
    return "min" if monitor.endswith("loss") else "max"


def best_epoch(history: dict[str, list[float]], monitor: str = "val_accuracy") -> tuple[int, float]:
    """(1-based epoch, value) of the best ``monitor`` value (val loss if it is absent)."""
    values = history.get(monitor)
    if not values:
        monitor, values = "val_loss", history.get("val_loss") or [math.nan]
    pick = min if monitor_mode(monitor) == "min" else max
    index = pick(range(len(values)), key=lambda i: values[i])
    return index + 1, values[index]


@dataclass
class Stage:
    """One ``fit`` call: which model is trained on which data, for which global epochs."""

    name: str
    model: Any  # the head alone (on cached features) or the whole model
    start: int  # first global epoch index (0-based)
    end: int  # one past the last
    lr: float
    warmup_epochs: int
    datasets: Callable[[int], tuple[Any, Any]]  # first_pass -> (train, val)
    steps: int
    full_weights: bool  # True when `model` is the whole model


@dataclass
class RunState:
    """What is checkpointed after every epoch (``checkpoints/state.json``)."""

    status: str = "running"
    stage: str = HEAD
    epoch: int = 0  # global epochs completed
    head_epochs: int = 0  # epochs the head stage ran (it may stop early)
    best_value: float | None = None
    best_epoch: int = 0
    best_stage: str = ""
    best_weights: str = ""  # "head" or "full": what best.weights.h5 holds
    since_best: int = 0  # epochs of the current stage without improvement (early stopping)
    stopped_early: list[str] = field(default_factory=list)  # stages ended by --patience
    rows: list[dict[str, Any]] = field(default_factory=list)
    data: dict[str, str] = field(default_factory=dict)
    base_weights: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunState":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def _epoch_callback(runner: "StageRunner", stage: Stage):
    import keras

    class EpochEnd(keras.callbacks.Callback):
        """Records the epoch, tracks the best model, stops early, checkpoints."""

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            runner.end_epoch(stage, epoch, logs or {})

    return EpochEnd()


class StageRunner:
    """Runs the head stage and the fine-tuning stage, checkpointing after every epoch."""

    def __init__(self, *, run_dir: Path, config: TrainConfig, parts: Any, num_classes: int,
                 class_weight: dict[int, float] | None, head_data: Callable[[int], tuple[Any, Any]],
                 pixel_data: Callable[[int], tuple[Any, Any]], head_on_features: bool, steps: int,
                 state: RunState, progress: Callable[[Stage], list] | None = None,
                 console: Any = None) -> None:
        """``head_data``/``pixel_data`` make (train, val) datasets from a first epoch index;
        with ``head_on_features`` the head stage trains ``parts.head`` on cached features,
        otherwise the whole model (base frozen) on pixels."""
        self.run_dir = Path(run_dir)
        self.ckpt = checkpoints.checkpoint_dir(run_dir)
        self.config = config
        self.parts = parts
        self.num_classes = num_classes
        self.class_weight = class_weight
        self.head_data = head_data
        self.pixel_data = pixel_data
        self.head_on_features = head_on_features
        self.steps = steps
        self.state = state
        self.progress = progress
        self.console = console
        self._restore_pending = state.epoch > 0  # a resumed run continues from its checkpoint

    # -- the stages --------------------------------------------------------
    def run(self) -> RunState:
        config, state = self.config, self.state
        if state.stage == HEAD:
            model = self.parts.head if self.head_on_features else self.parts.model
            stage = Stage(HEAD, model, state.epoch, config.epochs, config.lr, config.warmup_epochs,
                          self.head_data, self.steps, full_weights=not self.head_on_features)
            self._fit(stage)
            state.head_epochs = state.epoch
            self._restore_best()  # fine-tuning (or the saved model) starts from the best head
            if config.fine_tune_epochs:
                self._switch_best_to_full()
                state.stage = FINE_TUNE
                self._checkpoint(None)  # the fine-tuning stage starts from here
        if state.stage == FINE_TUNE and config.fine_tune_epochs:
            from tlkit.finetune import unfreeze

            count = unfreeze(self.parts.backbone, config.unfreeze)
            if self.console is not None and state.epoch == state.head_epochs:
                self.console.print(
                    f"Fine-tuning: {count} layers of the base unfrozen ({config.unfreeze}; BatchNorm stays "
                    f"frozen), learning rate {config.fine_tune_lr:g}"
                )
            end = state.head_epochs + config.fine_tune_epochs
            stage = Stage(FINE_TUNE, self.parts.model, state.epoch, end, config.fine_tune_lr, 0,
                          self.pixel_data, self.steps, full_weights=True)
            self._fit(stage)
        self._restore_best()
        return state  # the caller marks the run done once model.keras and metrics are written

    def _fit(self, stage: Stage) -> None:
        from tlkit.objectives import compile_for_stage

        if stage.start >= stage.end:
            return
        with distribution_strategy().scope():
            compile_for_stage(stage.model, self.config, lr=stage.lr, steps_per_epoch=stage.steps,
                              epochs=stage.end - (self.state.head_epochs if stage.name == FINE_TUNE else 0),
                              warmup_epochs=stage.warmup_epochs, num_classes=self.num_classes)
        if self._restore_pending:
            self._restore_last(stage)
            self._restore_pending = False
        else:
            self.state.since_best = 0
        train, val = stage.datasets(stage.start)
        callbacks = [_epoch_callback(self, stage)] + self._keras_callbacks(stage)
        if self.progress is not None:
            callbacks += self.progress(stage)
        try:
            stage.model.fit(train, validation_data=val, epochs=stage.end, initial_epoch=stage.start,
                            callbacks=callbacks, class_weight=self.class_weight, shuffle=False, verbose=0)
        except KeyboardInterrupt:
            self.state.status = "interrupted"
            checkpoints.write_state(self.run_dir, self.state.as_dict())
            raise TrainingInterrupted(
                f"interrupted; the checkpoint after epoch {self.state.epoch} is saved — resume with: "
                f"tlkit train --resume {self.run_dir}"
            ) from None

    def _keras_callbacks(self, stage: Stage) -> list:
        import keras

        import importlib.util

        config = self.config
        callbacks = []
        if importlib.util.find_spec("tensorboard") is not None:  # tf.summary needs it to write
            callbacks.append(keras.callbacks.TensorBoard(log_dir=str(self.run_dir / "logs"), write_graph=False))
        if config.reduce_lr_patience:
            callbacks.append(keras.callbacks.ReduceLROnPlateau(
                monitor=config.monitor, mode=monitor_mode(config.monitor), factor=config.reduce_lr_factor,
                patience=config.reduce_lr_patience, verbose=0))
        return callbacks

    # -- per epoch -----------------------------------------------------------
    def end_epoch(self, stage: Stage, epoch: int, logs: dict[str, Any]) -> None:
        import keras

        state, config = self.state, self.config
        row: dict[str, Any] = {"epoch": epoch + 1, "stage": stage.name}
        row.update({k: float(v) for k, v in logs.items() if k != "learning_rate"})
        row["lr"] = float(keras.ops.convert_to_numpy(stage.model.optimizer.learning_rate))
        state.rows.append(row)
        state.epoch = epoch + 1

        value = row.get(config.monitor)
        better = value is not None and not math.isnan(value) and (
            state.best_value is None
            or (value < state.best_value if monitor_mode(config.monitor) == "min" else value > state.best_value)
        )
        if better:
            state.best_value, state.best_epoch, state.best_stage = value, epoch + 1, stage.name
            state.best_weights = "full" if stage.full_weights else "head"
            state.since_best = 0
        else:
            state.since_best += 1
            if config.patience and state.since_best >= config.patience:
                stage.model.stop_training = True
                state.stopped_early.append(stage.name)
        self._checkpoint(stage, best=better)

    def _checkpoint(self, stage: Stage | None, best: bool = False) -> None:
        from tlkit.rundir import write_text

        if stage is not None:
            checkpoints.save_weights(stage.model, self.ckpt / checkpoints.LAST)
            checkpoints.save_optimizer(stage.model.optimizer, self.ckpt / checkpoints.OPTIMIZER)
            if best:
                checkpoints.link_best(self.run_dir)
        else:  # between stages: the whole model, no optimizer state yet
            checkpoints.save_weights(self.parts.model, self.ckpt / checkpoints.LAST)
            (self.ckpt / checkpoints.OPTIMIZER).unlink(missing_ok=True)
        write_text(self.run_dir / "history.csv", rows_to_csv(self.state.rows))
        checkpoints.write_state(self.run_dir, self.state.as_dict())  # last: it commits the epoch

    # -- restoring -----------------------------------------------------------
    def _restore_last(self, stage: Stage) -> None:
        """Load the last checkpoint: the head's weights in the head stage, the whole model's after."""
        path = self.ckpt / checkpoints.LAST
        if path.is_file():
            checkpoints.load_weights(stage.model, path)
        checkpoints.restore_optimizer(stage.model, self.ckpt / checkpoints.OPTIMIZER)

    def _restore_best(self) -> None:
        """Load the best weights so far (by ``--monitor``) into the model."""
        path = self.ckpt / checkpoints.BEST
        if not path.is_file():
            return
        if self.state.best_weights == "full":
            checkpoints.load_weights(self.parts.model, path)
        elif self.state.best_weights == "head":
            checkpoints.load_weights(self.parts.head, path)

    def _switch_best_to_full(self) -> None:
        """Before the base changes, store the best model so far as whole-model weights."""
        if self.state.best_weights == "head":
            checkpoints.save_weights(self.parts.model, self.ckpt / checkpoints.BEST)
            self.state.best_weights = "full"
