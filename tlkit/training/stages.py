"""Training stages: the head on the frozen base, then optional fine-tuning of the base's top.

Everything that creates variables (model, optimizer, metrics) runs inside the
run's ``tf.distribute`` strategy's scope (:mod:`tlkit.training.distribute`).

Epochs are numbered globally: the fine-tuning stage continues where the head
stage stopped.  After every epoch the state is checkpointed (see
:mod:`tlkit.training.checkpoints`: written behind the training, committed as a unit), so an
interrupted run resumes where it was.
"""

from __future__ import annotations

import copy
import importlib.util
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tlkit.errors import TlkitError
from tlkit.evaluation.history import is_improvement, monitor_mode
from tlkit.model.finetune import unfreeze
from tlkit.training import checkpoints, objectives
from tlkit.training.distribute import lost_workers, multi_worker_fit_fixes, prepare_for_fit

if TYPE_CHECKING:
    from tlkit.config.options import TrainConfig
    from tlkit.io.rundir import RunDir
    from tlkit.model.builder import ModelParts
    from tlkit.observer import TrainingObserver
    from tlkit.training.distribute import Distribution

HEAD, FINE_TUNE = "head", "fine_tune"

#: Steps per compiled call when the head trains on cached features: Keras's per-step Python
#: round trip is a good part of such a step, and 64 steps of a large head still take only a
#: few seconds (the longest Ctrl-C or a progress update waits).
HEAD_STEPS_PER_CALL = 64


class Terminated(KeyboardInterrupt):
    """SIGTERM (what ``kill`` and job schedulers send) arrived: stop like Ctrl-C does."""


class TrainingInterrupted(TlkitError):
    """Ctrl-C or SIGTERM during training: the last epoch's checkpoint is kept and the run can be resumed.

    The exit code is the shell's for the signal: 130 (SIGINT) or 143 (SIGTERM).
    """

    exit_code = 130

    @classmethod
    def after(cls, signal_exception: BaseException, message: str) -> TrainingInterrupted:
        """The error for ``signal_exception`` (a KeyboardInterrupt or :class:`Terminated`)."""
        terminated = isinstance(signal_exception, Terminated)
        error = cls(("terminated (SIGTERM)" if terminated else "interrupted") + message)
        error.exit_code = 143 if terminated else 130
        return error


@contextmanager
def sigterm_stops_training() -> Iterator[None]:
    """While inside, SIGTERM raises :class:`Terminated` (so training checkpoints and stops cleanly).

    Only the main thread can install handlers; elsewhere (a notebook's worker
    thread) this does nothing.  The previous handler is restored on the way out.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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
    """What is checkpointed after every epoch (the run directory's checkpoint state)."""

    status: str = "running"
    stage: str = HEAD
    epoch: int = 0  # global epochs completed
    head_epochs: int = 0  # epochs the head stage ran (it may stop early)
    best_value: float | None = None
    best_epoch: int = 0
    best_stage: str = ""
    best_weights: str = ""  # "head" or "full": what the best-weights checkpoint holds
    since_best: int = 0  # epochs of the current stage without improvement (early stopping)
    stopped_early: list[str] = field(default_factory=list)  # stages ended by --patience
    rows: list[dict[str, Any]] = field(default_factory=list)
    data: dict[str, str] = field(default_factory=dict)
    base_weights: str = ""
    checkpoint: str = ""  # the generation of the checkpoint files this state commits (tlkit.training.checkpoints)
    best_checkpoint: str = ""  # the generation whose best-weights file holds the best epoch

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunState:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass
class StageInputs:
    """What the stages work with: a prepared run's model, data, settings and run directory
    (made by :meth:`tlkit.training.run.TrainingRun.stage_inputs`)."""

    config: TrainConfig
    parts: ModelParts
    distribution: Distribution
    run_dir: RunDir
    observer: TrainingObserver
    state: RunState
    num_classes: int
    steps: int  # batches per training epoch
    head_on_features: bool  # the head stage trains the head alone on cached features
    head_datasets: Callable[[int], tuple[Any, Any]]  # first_pass -> (train, val) of the head stage
    pixel_datasets: Callable[[int], tuple[Any, Any]]  # first_pass -> (train, val) of decoded pixels
    class_weight: dict[int, float] | None  # Keras's class_weight for fit (None when batches are mixed)
    timings: dict[str, Any]  # the run's timings, to which each epoch's is added


class StageRunner:
    """Runs a prepared run's head stage and fine-tuning stage (given as :class:`StageInputs`),
    checkpointing after every epoch into its run directory."""

    def __init__(self, inputs: StageInputs) -> None:
        self.inputs = inputs
        self.config = inputs.config
        self.state: RunState = inputs.state
        self._restore_pending = inputs.state.epoch > 0  # a resumed run continues from its checkpoint
        self._writer = checkpoints.BackgroundWriter()

    # -- the stages --------------------------------------------------------
    def run_stages(self) -> RunState:
        """Fit the remaining stages; the best weights are in the model afterwards."""
        try:
            return self._run_stages()
        finally:
            self._writer.close()  # every checkpoint on disk before the run goes on (or stops)

    def _run_stages(self) -> RunState:
        config, state, parts = self.config, self.state, self.inputs.parts
        if state.stage == HEAD:
            on_features = self.inputs.head_on_features
            stage = Stage(
                HEAD,
                parts.head_tail if on_features else parts.model,
                state.epoch,
                config.epochs,
                config.lr,
                config.warmup_epochs,
                self.inputs.head_datasets,
                self.inputs.steps,
                full_weights=not on_features,
            )
            self._fit(stage)
            state.head_epochs = state.epoch
            self._restore_best()  # fine-tuning (or the saved model) starts from the best head
            if config.fine_tune_epochs:
                self._switch_best_to_full()
                state.stage = FINE_TUNE
                self._checkpoint(None)  # the fine-tuning stage starts from here
        if state.stage == FINE_TUNE and config.fine_tune_epochs:
            count = unfreeze(parts.backbone, config.unfreeze)
            if state.epoch == state.head_epochs:
                self.inputs.observer.message(
                    f"Fine-tuning: {count} layers of the base unfrozen ({config.unfreeze}; BatchNorm stays "
                    f"frozen), learning rate {config.fine_tune_lr:g}"
                )
            end = state.head_epochs + config.fine_tune_epochs
            stage = Stage(
                FINE_TUNE,
                parts.model,
                state.epoch,
                end,
                config.fine_tune_lr,
                0,
                self.inputs.pixel_datasets,
                self.inputs.steps,
                full_weights=True,
            )
            self._fit(stage)
        self._restore_best()
        return state  # the run is marked done once model.keras and metrics are written

    def _fit(self, stage: Stage) -> None:
        # lazy: callbacks subclasses keras.callbacks.Callback at import
        from tlkit.training.callbacks import EpochEnd, ObserverCallback

        if stage.start >= stage.end:
            return
        with self.inputs.distribution.strategy.scope():
            objectives.compile_for_stage(
                stage.model,
                self.config,
                lr=stage.lr,
                steps_per_epoch=stage.steps,
                epochs=stage.end - (self.state.head_epochs if stage.name == FINE_TUNE else 0),
                warmup_epochs=stage.warmup_epochs,
                num_classes=self.inputs.num_classes,
                soft_labels=bool(self.inputs.parts.mixers),  # mixup/cutmix: training metrics on argmax labels
                steps_per_execution=self._steps_per_call(stage),
            )
        if self._restore_pending:
            with self.inputs.distribution.strategy.scope():  # the optimizer's variables are made in it
                self._restore_last(stage)
            self._restore_pending = False
        else:
            self.state.since_best = 0
        train, val = stage.datasets(stage.start)
        prepare_for_fit(stage.model, self.inputs.distribution)
        callbacks = [
            EpochEnd(lambda epoch, logs, seconds: self.end_epoch(stage, epoch, logs, seconds)),
            ObserverCallback(self.inputs.observer, stage.name, stage.end),
            *self._keras_callbacks(),
        ]
        observer = self.inputs.observer
        observer.stage_started(stage.name, stage.start + 1, stage.end, stage.steps)
        try:
            with multi_worker_fit_fixes(self.inputs.distribution):
                stage.model.fit(
                    train,
                    validation_data=val,
                    epochs=stage.end,
                    initial_epoch=stage.start,
                    callbacks=callbacks,
                    class_weight=self.inputs.class_weight,
                    shuffle=False,
                    verbose=0,
                )
        except KeyboardInterrupt as stop:
            self._writer.wait()  # the last finished epoch's checkpoint completes first
            if not self.inputs.run_dir.state_path.exists():  # no epoch saved: the new run leaves nothing
                raise TrainingInterrupted.after(stop, " before the first epoch finished; nothing was saved") from None
            self.state.status = "interrupted"
            self.inputs.run_dir.write_state(self.state.as_dict())
            raise TrainingInterrupted.after(
                stop,
                f"; the checkpoint after epoch {self.state.epoch} is saved — resume with: "
                f"tlkit train --resume {self.inputs.run_dir}",
            ) from None
        except Exception as exc:
            lost = lost_workers(exc, self.inputs.distribution)
            if lost is None:
                raise
            self._writer.wait()  # the last finished epoch's checkpoint completes first
            where = self.inputs.run_dir if self.inputs.distribution.is_chief else "<the chief's run directory>"
            epoch = self.state.epoch
            saved = f"the checkpoint after epoch {epoch} is saved" if epoch else "no epoch was saved"
            raise TlkitError(
                f"{lost} of this multi-worker run stopped (killed, pre-empted or unreachable); {saved} — "
                f"restart every worker with: tlkit train --resume {where}"
            ) from None
        finally:
            observer.stage_finished(stage.name)

    def _steps_per_call(self, stage: Stage) -> int:
        """Steps per compiled call: a whole epoch (up to 64 steps) for the head on cached features."""
        if stage.full_weights or self.inputs.distribution.name != "default":
            # Whole-model steps are long (per-step progress, prompt Ctrl-C); under a tf.distribute
            # strategy Keras's multi-step loop failed (multi-worker, TF 2.21), so one step per call.
            return 1
        return min(stage.steps, HEAD_STEPS_PER_CALL)

    def _keras_callbacks(self) -> list:
        import keras  # lazy: Keras imports TensorFlow; only a running fit needs it

        config = self.config
        callbacks = []
        if importlib.util.find_spec("tensorboard") is not None:  # Keras's callback needs it to write logs/
            callbacks.append(keras.callbacks.TensorBoard(log_dir=str(self.inputs.run_dir.logs_dir), write_graph=False))
        if config.reduce_lr_patience:
            callbacks.append(
                keras.callbacks.ReduceLROnPlateau(
                    monitor=config.monitor,
                    mode=monitor_mode(config.monitor),
                    factor=config.reduce_lr_factor,
                    patience=config.reduce_lr_patience,
                    verbose=0,
                )
            )
        return callbacks

    # -- per epoch -----------------------------------------------------------
    def end_epoch(self, stage: Stage, epoch: int, logs: dict[str, Any], seconds: float = 0.0) -> None:
        """Record epoch ``epoch`` (0-based), track the best model, stop early, checkpoint."""
        import keras  # lazy: Keras imports TensorFlow; only a running fit needs it

        started = time.perf_counter()
        state, config = self.state, self.config
        row: dict[str, Any] = {"epoch": epoch + 1, "stage": stage.name}
        row.update({k: float(v) for k, v in logs.items() if k != "learning_rate"})
        row["lr"] = float(keras.ops.convert_to_numpy(stage.model.optimizer.learning_rate))
        state.rows.append(row)
        state.epoch = epoch + 1

        better = is_improvement(row.get(config.monitor), state.best_value, config.monitor)
        if better:
            state.best_value, state.best_epoch, state.best_stage = row[config.monitor], epoch + 1, stage.name
            state.best_weights = "full" if stage.full_weights else "head"
            state.since_best = 0
        else:
            state.since_best += 1
            if config.patience and state.since_best >= config.patience:
                stage.model.stop_training = True
                state.stopped_early.append(stage.name)
        self._checkpoint(stage, best=better)
        self.inputs.timings.setdefault("epochs", []).append(
            {
                "epoch": epoch + 1,
                "stage": stage.name,
                "fit_s": round(seconds, 3),
                "checkpoint_s": round(time.perf_counter() - started, 3),
            }
        )

    def _checkpoint(self, stage: Stage | None, best: bool = False) -> None:
        """Checkpoint the epoch just finished (written in the background), or, between
        stages (``stage`` None), the whole model without optimizer state (written now)."""
        state = self.state
        if stage is None:
            self._writer.wait()
            state.checkpoint = f"whole-{state.epoch:04d}"
            model, optimizer = self.inputs.parts.model, None
        else:
            state.checkpoint = f"{stage.name}-{state.epoch:04d}"
            if best:
                state.best_checkpoint = state.checkpoint
            model, optimizer = stage.model, checkpoints.snapshot(stage.model.optimizer.variables)
        weights = checkpoints.snapshot(model.weights)
        checkpoint = checkpoints.EpochCheckpoint(
            run=self.inputs.run_dir,
            weights=weights,
            optimizer=optimizer,
            best=weights if best else None,
            rows=copy.deepcopy(state.rows),
            state=copy.deepcopy(state.as_dict()),
        )
        if stage is None:
            checkpoint.write()
        else:
            self._writer.submit(checkpoint)

    # -- restoring -----------------------------------------------------------
    def _restore_last(self, stage: Stage) -> None:
        """Load the last checkpoint: the head's weights in the head stage, the whole model's after."""
        path, optimizer, _ = checkpoints.checkpoint_files(self.inputs.run_dir, self.state.as_dict())
        if path.is_file():
            checkpoints.load_weights(stage.model, path)
        checkpoints.restore_optimizer(stage.model, optimizer)

    def _restore_best(self) -> None:
        """Load the best weights so far (by ``--monitor``) into the model."""
        self._writer.wait()
        _, _, path = checkpoints.checkpoint_files(self.inputs.run_dir, self.state.as_dict())
        if not path.is_file():
            return
        if self.state.best_weights == "full":
            checkpoints.load_weights(self.inputs.parts.model, path)
        elif self.state.best_weights == "head":
            checkpoints.load_weights(self.inputs.parts.head_tail, path)

    def _switch_best_to_full(self) -> None:
        """Before the base changes, store the best model so far as whole-model weights."""
        self._writer.wait()
        if self.state.best_weights == "head":
            # A new generation: the committed state keeps naming the head's best file until the
            # stage-boundary checkpoint names this one.
            generation = f"whole-{self.state.epoch:04d}"
            checkpoints.save_weights(self.inputs.parts.model, self.inputs.run_dir.checkpoint_file("best", generation))
            self.state.best_weights, self.state.best_checkpoint = "full", generation
