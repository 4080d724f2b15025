"""Training stages: compile and fit the head on top of the frozen base.

Everything that creates variables (model, optimizer, metrics) runs inside the
current ``tf.distribute`` strategy's scope, so a multi-GPU or multi-worker
strategy can be slotted in without touching this code.
"""

from __future__ import annotations

import csv
import io
import math
from typing import Any

from tlkit.config import TrainConfig


def distribution_strategy():
    """The active ``tf.distribute`` strategy (the default one unless a caller entered another)."""
    import tensorflow as tf

    return tf.distribute.get_strategy()


def make_optimizer(name: str, lr: float):
    """A fresh Keras optimizer by name (validated earlier by TrainConfig)."""
    import keras

    if name == "adam":
        return keras.optimizers.Adam(learning_rate=lr)
    if name == "adamw":
        return keras.optimizers.AdamW(learning_rate=lr)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate=lr)
    return keras.optimizers.SGD(learning_rate=lr)


def compile_model(model, config: TrainConfig) -> None:
    """Compile with the configured optimizer and loss, tracking accuracy."""
    model.compile(
        optimizer=make_optimizer(config.optimizer, config.lr),
        loss=config.loss,
        metrics=["accuracy"],
    )


def pixel_datasets(train_px, val_px, config: TrainConfig, num_classes: int):
    """(train, val) ``tf.data`` datasets of decoded pixels, for end-to-end training."""
    from tlkit.data import make_dataset

    train = make_dataset(train_px, batch_size=config.batch_size, num_classes=num_classes,
                         shuffle=True, seed=config.seed)
    val = make_dataset(val_px, batch_size=config.batch_size, num_classes=num_classes,
                       shuffle=False, seed=config.seed)
    return train, val


def feature_datasets(run_features, config: TrainConfig, num_classes: int):
    """(train, val) ``tf.data`` datasets of cached base features, for training the head alone."""
    from tlkit.features import make_feature_dataset

    train = make_feature_dataset(run_features.train, batch_size=config.batch_size,
                                 num_classes=num_classes, shuffle=True, seed=config.seed)
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


def fit_head(model, train_ds, val_ds, *, config: TrainConfig, callbacks: list) -> dict[str, list[float]]:
    """Train the head (the base stays frozen) and return the Keras history dict."""
    history = model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=config.epochs,
        callbacks=callbacks,
        shuffle=False,  # the dataset reshuffles itself each epoch, seeded
        verbose=0,
    )
    return {key: [float(v) for v in values] for key, values in history.history.items()}


def best_epoch(history: dict[str, list[float]]) -> tuple[int, float]:
    """(1-based epoch, value) of the best validation accuracy (val loss if absent)."""
    if history.get("val_accuracy"):
        values = history["val_accuracy"]
        index = max(range(len(values)), key=lambda i: values[i])
    else:
        values = history.get("val_loss") or [math.nan]
        index = min(range(len(values)), key=lambda i: values[i])
    return index + 1, values[index]
