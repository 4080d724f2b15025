"""Keras optimizers whose per-variable update is one fused TensorFlow kernel.

Keras 3's ``Adam``/``SGD`` update a variable with several separate element-wise
ops (``m += (g - m)(1 - β1)``, ``v += ...``, ``var -= ...``), each one a full
pass over memory.  For a head like ``dense256`` on 7×7×1280 features (16 M
parameters) those passes, not the matmuls, are most of a training step on a
CPU.  TensorFlow has kernels that do the whole update in one pass
(``ResourceApplyAdam``, ``ResourceApplyKerasMomentum``, ``ResourceApplyGradientDescent``)
with exactly Keras's formulas; these subclasses call them and fall back to
Keras's own update wherever the kernel does not apply (a ``tf.distribute``
strategy other than the default one, non-float32 variables, AMSGrad).

They are drop-in: same hyper-parameters, same optimizer variables (so
checkpoints and resume are unchanged), same results to float32 rounding
(``tests/test_fused_optimizers.py`` compares them with Keras's over several steps).
This module imports Keras and TensorFlow at the top: import it only to train.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf


def _fusable(variable: Any, gradient: Any) -> bool:
    """The fused kernels need a plain float32 resource variable, a dense gradient and no strategy."""
    return (
        not tf.distribute.has_strategy()
        and variable.dtype == "float32"
        and hasattr(variable, "handle")
        and not isinstance(gradient, tf.IndexedSlices)
    )


class _FusedAdamStep:
    """``update_step`` of Adam/AdamW as one ``ResourceApplyAdam`` (weight decay is applied before, by Keras)."""

    def update_step(self, gradient, variable, learning_rate):
        if getattr(self, "amsgrad", False) or not _fusable(variable, gradient):
            return super().update_step(gradient, variable, learning_rate)  # type: ignore[misc]
        index = self._get_variable_index(variable)  # type: ignore[attr-defined]
        step = tf.cast(self.iterations + 1, tf.float32)  # type: ignore[attr-defined]
        beta_1 = tf.constant(self.beta_1, tf.float32)  # type: ignore[attr-defined]
        beta_2 = tf.constant(self.beta_2, tf.float32)  # type: ignore[attr-defined]
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle,
            m=self._momentums[index].handle,  # type: ignore[attr-defined]
            v=self._velocities[index].handle,  # type: ignore[attr-defined]
            beta1_power=tf.pow(beta_1, step),
            beta2_power=tf.pow(beta_2, step),
            lr=tf.cast(learning_rate, tf.float32),
            beta1=beta_1,
            beta2=beta_2,
            epsilon=tf.constant(self.epsilon, tf.float32),  # type: ignore[attr-defined]
            grad=tf.cast(gradient, tf.float32),
            use_locking=False,
        )


class _FusedSGDStep:
    """``update_step`` of SGD (with or without momentum, Nesterov or not) as one kernel."""

    def update_step(self, gradient, variable, learning_rate):
        if not _fusable(variable, gradient):
            return super().update_step(gradient, variable, learning_rate)  # type: ignore[misc]
        lr = tf.cast(learning_rate, tf.float32)
        grad = tf.cast(gradient, tf.float32)
        if self.momentum == 0:  # type: ignore[attr-defined]
            tf.raw_ops.ResourceApplyGradientDescent(var=variable.handle, alpha=lr, delta=grad, use_locking=False)
            return
        accumulator = self.momentums[self._get_variable_index(variable)]  # type: ignore[attr-defined]
        tf.raw_ops.ResourceApplyKerasMomentum(
            var=variable.handle,
            accum=accumulator.handle,
            lr=lr,
            grad=grad,
            momentum=tf.constant(self.momentum, tf.float32),  # type: ignore[attr-defined]
            use_locking=False,
            use_nesterov=bool(self.nesterov),  # type: ignore[attr-defined]
        )


class FusedAdam(_FusedAdamStep, keras.optimizers.Adam):
    """``keras.optimizers.Adam`` with the update fused into one kernel per variable."""


class FusedAdamW(_FusedAdamStep, keras.optimizers.AdamW):
    """``keras.optimizers.AdamW`` with the update fused into one kernel per variable."""


class FusedSGD(_FusedSGDStep, keras.optimizers.SGD):
    """``keras.optimizers.SGD`` with the update fused into one kernel per variable."""


__all__ = ["FusedAdam", "FusedAdamW", "FusedSGD"]
