"""What training optimizes and reports: optimizers, learning-rate schedules, losses, metrics.

Only built-in Keras losses and metrics are used, so a compiled model never
needs tlkit to be deserialized.  The one custom piece, :class:`LearningRate`
(warm-up + decay in one schedule), lives only in the optimizer, which is
never part of the saved ``model.keras``.
"""

from __future__ import annotations

import math
from typing import Any

from tlkit.config.options import TrainConfig
from tlkit.data.mixing import hard_label_metrics

# The allowed schedules, losses and metrics are declared once, on TrainConfig's fields.


def make_schedule(
    kind: str, lr: float, *, steps_per_epoch: int, epochs: int, warmup_epochs: int, decay_rate: float, decay_epochs: int
):
    """A ``LearningRate`` schedule (or the plain float for a constant rate without warm-up)."""
    if kind == "constant" and warmup_epochs == 0:
        return lr
    return _learning_rate_class()(
        kind=kind,
        base_lr=lr,
        steps_per_epoch=steps_per_epoch,
        total_steps=max(1, steps_per_epoch * epochs),
        warmup_steps=steps_per_epoch * warmup_epochs,
        decay_rate=decay_rate,
        decay_epochs=decay_epochs,
    )


_LR_CLASS = None


def _learning_rate_class():
    """Define the schedule class on first use (it subclasses a Keras class)."""
    global _LR_CLASS
    if _LR_CLASS is not None:
        return _LR_CLASS
    import keras  # lazy: Keras imports TensorFlow; only compiling a model needs it
    from keras import ops

    class LearningRate(keras.optimizers.schedules.LearningRateSchedule):
        """Linear warm-up to ``base_lr``, then constant, cosine, exponential or step decay.

        Exponential decays by ``decay_rate`` per epoch (continuously); step
        multiplies by ``decay_rate`` every ``decay_epochs`` epochs; cosine goes
        to 0 at the end of training.
        """

        def __init__(self, kind, base_lr, steps_per_epoch, total_steps, warmup_steps, decay_rate, decay_epochs):
            self.kind = kind
            self.base_lr = float(base_lr)
            self.steps_per_epoch = int(steps_per_epoch)
            self.total_steps = int(total_steps)
            self.warmup_steps = int(warmup_steps)
            self.decay_rate = float(decay_rate)
            self.decay_epochs = int(decay_epochs)

        def __call__(self, step):
            step = ops.cast(step, "float32")
            warm = float(max(self.warmup_steps, 1))
            after = ops.maximum(step - self.warmup_steps, 0.0)
            if self.kind == "cosine":
                span = float(max(self.total_steps - self.warmup_steps, 1))
                decayed = 0.5 * self.base_lr * (1.0 + ops.cos(math.pi * ops.minimum(after / span, 1.0)))
            elif self.kind == "exponential":
                decayed = self.base_lr * ops.power(self.decay_rate, after / float(self.steps_per_epoch))
            elif self.kind == "step":
                periods = ops.floor(after / float(self.steps_per_epoch * self.decay_epochs))
                decayed = self.base_lr * ops.power(self.decay_rate, periods)
            else:
                decayed = ops.convert_to_tensor(self.base_lr, "float32")
            if self.warmup_steps == 0:
                return decayed
            return ops.where(step < self.warmup_steps, self.base_lr * (step + 1.0) / warm, decayed)

        def get_config(self):
            return {
                "kind": self.kind,
                "base_lr": self.base_lr,
                "steps_per_epoch": self.steps_per_epoch,
                "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps,
                "decay_rate": self.decay_rate,
                "decay_epochs": self.decay_epochs,
            }

    _LR_CLASS = LearningRate
    return _LR_CLASS


def make_optimizer(config: TrainConfig, learning_rate: Any):
    """A fresh optimizer by name with the configured weight decay (and SGD momentum).

    Adam, AdamW and SGD are Keras's, with each variable's update fused into one
    TensorFlow kernel (:mod:`tlkit.training.fused_optimizers`: same formulas, several
    times fewer passes over the head's weights per step).
    """
    import keras  # lazy: Keras imports TensorFlow; only compiling a model needs it

    # lazy: fused_optimizers subclasses Keras optimizers at import
    from tlkit.training.fused_optimizers import FusedAdam, FusedAdamW, FusedSGD

    decay = config.weight_decay or None
    if config.optimizer == "adam":
        return FusedAdam(learning_rate=learning_rate, weight_decay=decay)
    if config.optimizer == "adamw":
        return FusedAdamW(learning_rate=learning_rate, weight_decay=config.weight_decay or 0.004)
    if config.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate=learning_rate, weight_decay=decay)
    return FusedSGD(learning_rate=learning_rate, momentum=config.momentum, nesterov=config.nesterov, weight_decay=decay)


def make_loss(config: TrainConfig):
    """The configured Keras loss object (``--multi-label``: the binary form of cross-entropy and focal)."""
    import keras  # lazy: Keras imports TensorFlow; only compiling a model needs it

    if config.multi_label and config.loss != "mean_squared_error":
        if config.loss == "focal":
            return keras.losses.BinaryFocalCrossentropy(
                gamma=config.focal_gamma, label_smoothing=config.label_smoothing
            )
        return keras.losses.BinaryCrossentropy(label_smoothing=config.label_smoothing)
    if config.loss == "focal":
        return keras.losses.CategoricalFocalCrossentropy(
            gamma=config.focal_gamma, label_smoothing=config.label_smoothing
        )
    if config.loss == "mean_squared_error":
        return keras.losses.MeanSquaredError()
    return keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing)


def make_metrics(config: TrainConfig, num_classes: int) -> list:
    """Keras metric objects, named so logs read ``accuracy``, ``top_5_accuracy``, ``f1``, ``fbeta``…"""
    import keras  # lazy: Keras imports TensorFlow; only compiling a model needs it

    metrics: list = []
    # --multi-label: each output is its own yes/no decision at the threshold (0.5 while --threshold is tuned).
    threshold = (0.5 if config.threshold == "tuned" else float(config.threshold)) if config.multi_label else None
    for name in config.metrics:
        if name == "accuracy" and threshold is not None:
            metrics.append(keras.metrics.BinaryAccuracy(threshold=threshold, name="accuracy"))
        elif name == "accuracy":
            metrics.append(keras.metrics.CategoricalAccuracy(name="accuracy"))
        elif name == "top_k":
            k = min(config.top_k, num_classes)
            metrics.append(keras.metrics.TopKCategoricalAccuracy(k=k, name=f"top_{k}_accuracy"))
        elif name == "precision":
            metrics.append(keras.metrics.Precision(thresholds=threshold, name="precision"))
        elif name == "recall":
            metrics.append(keras.metrics.Recall(thresholds=threshold, name="recall"))
        elif name == "f1":
            metrics.append(keras.metrics.F1Score(average="macro", threshold=threshold, name="f1"))
        elif name == "fbeta":
            metrics.append(
                keras.metrics.FBetaScore(average="macro", beta=config.fbeta, threshold=threshold, name="fbeta")
            )
    return metrics


def compile_for_stage(
    model,
    config: TrainConfig,
    *,
    lr: float,
    steps_per_epoch: int,
    epochs: int,
    warmup_epochs: int,
    num_classes: int,
    soft_labels: bool = False,
    steps_per_execution: int = 1,
) -> None:
    """Compile ``model`` for one training stage.

    ``soft_labels`` (batch mixing: mixup, cutmix) measures the metrics against the argmax of
    the label (:func:`tlkit.data.mixing.hard_label_metrics`); the losses take soft labels as they are.
    ``steps_per_execution`` steps run in one compiled call (Keras's option).
    """
    schedule = make_schedule(
        config.schedule,
        lr,
        steps_per_epoch=steps_per_epoch,
        epochs=epochs,
        warmup_epochs=warmup_epochs,
        decay_rate=config.decay_rate,
        decay_epochs=config.decay_epochs,
    )
    metrics = make_metrics(config, num_classes)
    if soft_labels:
        metrics = hard_label_metrics(metrics)
    model.compile(
        optimizer=make_optimizer(config, schedule),
        loss=make_loss(config),
        metrics=metrics,
        steps_per_execution=steps_per_execution,
    )
