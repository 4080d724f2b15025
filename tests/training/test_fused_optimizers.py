"""The fused optimizers compute what Keras's own do, step for step."""

from __future__ import annotations

import numpy as np
import pytest


def _run(optimizer, steps: int = 6):
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((12,)), keras.layers.Dense(7, activation="relu"), keras.layers.Dense(3)])
    rng = np.random.default_rng(1)
    x = rng.normal(size=(16, 12)).astype("float32")
    y = rng.normal(size=(16, 3)).astype("float32")
    model.compile(optimizer=optimizer, loss="mse")
    for _ in range(steps):
        model.train_on_batch(x, y)
    return [np.asarray(w) for w in model.weights], [np.asarray(v) for v in optimizer.variables]


CASES = [
    ("Adam", "FusedAdam", {"learning_rate": 0.01}),
    ("Adam", "FusedAdam", {"learning_rate": 0.003, "beta_1": 0.8, "beta_2": 0.95, "epsilon": 1e-6}),
    ("Adam", "FusedAdam", {"learning_rate": 0.01, "weight_decay": 0.01}),
    ("AdamW", "FusedAdamW", {"learning_rate": 0.01, "weight_decay": 0.004}),
    ("SGD", "FusedSGD", {"learning_rate": 0.05}),
    ("SGD", "FusedSGD", {"learning_rate": 0.05, "momentum": 0.9}),
    ("SGD", "FusedSGD", {"learning_rate": 0.05, "momentum": 0.9, "nesterov": True}),
]


@pytest.mark.parametrize(("keras_name", "fused_name", "kwargs"), CASES, ids=lambda v: str(v))
def test_fused_update_equals_keras(keras_name, fused_name, kwargs):
    import keras

    from tlkit.training import fused_optimizers

    expected_weights, expected_state = _run(getattr(keras.optimizers, keras_name)(**kwargs))
    weights, state = _run(getattr(fused_optimizers, fused_name)(**kwargs))
    assert len(weights) == len(expected_weights) and len(state) == len(expected_state)
    for got, want in zip(weights + state, expected_weights + expected_state):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # and the steps really moved the weights (the comparison is not between two idle models)
    assert not np.allclose(weights[0], _run(getattr(keras.optimizers, keras_name)(**kwargs), steps=1)[0][0])


def test_fused_kernels_are_really_used():
    import keras
    import tensorflow as tf

    from tlkit.training.fused_optimizers import FusedAdam

    optimizer = FusedAdam(learning_rate=0.1)
    variable = keras.Variable(np.ones(4, "float32"))
    optimizer.build([variable])

    @tf.function
    def step():
        optimizer.apply([tf.ones(4)], [variable])

    graph = step.get_concrete_function().graph
    ops = {op.type for op in graph.get_operations()}
    assert "ResourceApplyAdam" in ops
