"""One trial of ``tlkit tune``: a fresh head trained on a study's cached features, scored on a hold-out.

The features of one (base, image size, weights) are computed once for the whole study by a
training run prepared without a run directory (:func:`compute_features`, through the same
:class:`~tlkit.features.store.FeatureStore` as ``tlkit train``), as the base's feature *map*, so
every head — pooling or flattening — trains on them; they are then held in memory as numpy
arrays for every trial.  A trial (:func:`train_head`) builds the trial's head on the cached
feature shape, compiles it with the trial's optimizer, learning rate, weight decay and loss
(:mod:`tlkit.training.objectives`), trains ``epochs`` epochs on the train split minus a stratified,
seeded hold-out (:func:`holdout_split`; validation images are never seen) and, after each epoch,
hands the best hold-out accuracy so far to ``report`` (Optuna's report-and-prune).
:func:`score_on_val` trains a configuration the same way on all the train features and scores
it once on val: the number the user sees, never tuned on.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tlkit.config.options import TrainConfig
from tlkit.data.imbalance import class_weights
from tlkit.errors import TlkitError
from tlkit.observer import TrainingObserver
from tlkit.registry.manager import get_registry
from tlkit.training.distribute import precision_policy_kept
from tlkit.training.run import TrainingRun

DEFAULT_HOLDOUT = 0.2


@dataclass
class StudyFeatures:
    """The cached features of one (base, size, weights), in memory: view 0 of train and val, with labels."""

    x_train: np.ndarray  # (N, *feature_shape) float32
    y_train: np.ndarray  # (N,) class indices
    x_val: np.ndarray
    y_val: np.ndarray
    classes: list[str]
    summary: dict[str, Any] = field(default_factory=dict)  # RunFeatures.summary() + seconds

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def feature_key(config: TrainConfig) -> tuple[str, int, str, str, str]:
    """What decides a study's features: base, size, weights, engine and stored dtype."""
    return (config.base, config.image_size, config.weights, config.engine, config.feature_dtype)


class _MapFeaturesRun(TrainingRun):
    """A run whose cached features are the base's feature map, whatever the config's head does first:
    one feature pass serves every head a study tries (pooling ones pool the map themselves)."""

    def _build_model(self) -> None:
        super()._build_model()
        parts = self.parts
        assert parts is not None
        parts.pooling = None
        parts.cached_model = parts.feature_model
        parts.head_tail = parts.head


def features_config(config: TrainConfig) -> TrainConfig:
    """The configuration whose run computes a study's features: clean views, cached, one device."""
    return dataclasses.replace(
        config, augmentations=[], aug_views=0, feature_cache=True, fine_tune_epochs=0, strategy="default"
    )


def compute_features(config: TrainConfig, observer: TrainingObserver) -> StudyFeatures:
    """Scan, decode and run the frozen base over train and val once (or find them in the cache)."""
    started = time.perf_counter()
    run = _MapFeaturesRun.start(features_config(config), observer)
    run.writes_run_dir = False
    run.describes_training = False  # each trial builds and describes its own head
    with tempfile.TemporaryDirectory(prefix="tlkit-pixels-") as workdir, precision_policy_kept():
        run.prepare(workdir)
        run.features()
    features = run.run_features
    assert features is not None, "a study always trains on cached features"
    summary = dict(features.summary(), seconds=round(time.perf_counter() - started, 3))
    return StudyFeatures(
        x_train=np.asarray(features.train.features[0], dtype=np.float32),
        y_train=np.asarray(features.train.labels, dtype=np.int64),
        x_val=np.asarray(features.val.features[0], dtype=np.float32),
        y_val=np.asarray(features.val.labels, dtype=np.int64),
        classes=list(run.classes),
        summary=summary,
    )


def holdout_split(
    labels: np.ndarray, fraction: float = DEFAULT_HOLDOUT, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``(fit rows, hold-out rows)`` of ``labels``: ``fraction`` of each class (at least one image of
    every class with two or more) held out, drawn with ``seed``; both sorted."""
    rng = np.random.default_rng(seed)
    held: list[np.ndarray] = []
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        if len(rows) < 2:
            continue
        count = min(len(rows) - 1, max(1, round(fraction * len(rows))))
        held.append(rng.permutation(rows)[:count])
    hold = np.sort(np.concatenate(held)) if held else np.empty(0, dtype=np.int64)
    if len(hold) == 0:
        raise TlkitError("the training images are too few for a hold-out (two images of a class at least)")
    fit = np.setdiff1d(np.arange(len(labels)), hold)
    return fit, hold


def _head_model(config: TrainConfig, feature_shape: tuple[int, ...], num_classes: int):
    """The trial's head alone, on the cached feature shape (float32, as the builder makes heads)."""
    import keras  # lazy: Keras imports TensorFlow; only training a trial needs it

    spec = get_registry().head(config.head)
    policy = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy("float32")
    try:
        inputs = keras.Input(shape=feature_shape, name="features")
        return keras.Model(inputs, spec.build(inputs, num_classes, **config.head_params), name="head")
    finally:
        keras.mixed_precision.set_global_policy(policy)


def train_head(
    config: TrainConfig,
    x: np.ndarray,
    y: np.ndarray,
    classes: list[str],
    *,
    x_eval: np.ndarray,
    y_eval: np.ndarray,
    report: Callable[[float, int], None] | None = None,
) -> list[float]:
    """Train ``config``'s head on ``(x, y)`` for ``config.epochs`` epochs; return the accuracy on
    ``(x_eval, y_eval)`` after each epoch.  ``report(best_so_far, epoch)`` is called after each
    epoch (1-based) and may raise to stop (Optuna's ``TrialPruned``)."""
    import keras  # lazy: Keras imports TensorFlow; only training a trial needs it

    # lazy: objectives imports the data layer's mixing and Keras at first use
    from tlkit.training.objectives import compile_for_stage

    keras.backend.clear_session()  # the previous trial's graphs and layer names are gone
    keras.utils.set_random_seed(config.seed)
    num_classes = len(classes)
    model = _head_model(config, tuple(x.shape[1:]), num_classes)
    steps = -(-len(y) // config.batch_size)
    compile_for_stage(
        model,
        dataclasses.replace(config, metrics=["accuracy"]),
        lr=config.lr,
        steps_per_epoch=steps,
        epochs=config.epochs,
        warmup_epochs=config.warmup_epochs,
        num_classes=num_classes,
    )
    one_hot = np.eye(num_classes, dtype=np.float32)
    accuracies: list[float] = []

    class Report(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            accuracies.append(float((logs or {}).get("val_accuracy", float("nan"))))
            if report is not None:
                report(max(accuracies), epoch + 1)

    # Every trial builds a new head, so TensorFlow traces its step anew and logs a "retracing" warning
    # from the sixth trial on: expected here, and noise to the user.
    tf_logger = logging.getLogger("tensorflow")
    level = tf_logger.level
    tf_logger.setLevel(logging.ERROR)
    try:
        model.fit(
            x,
            one_hot[y],
            batch_size=config.batch_size,
            epochs=config.epochs,
            class_weight=class_weights(config.class_weight, y, classes),
            validation_data=(x_eval, one_hot[y_eval]),
            shuffle=True,
            verbose=0,
            callbacks=[Report()],
        )
    finally:
        tf_logger.setLevel(level)
    return accuracies


def run_trial(
    config: TrainConfig,
    features: StudyFeatures,
    *,
    holdout: float = DEFAULT_HOLDOUT,
    report: Callable[[float, int], None] | None = None,
) -> list[float]:
    """One trial: ``config``'s head on the train features minus the hold-out, scored on the hold-out."""
    fit, hold = holdout_split(features.y_train, holdout, config.seed)
    return train_head(
        config,
        features.x_train[fit],
        features.y_train[fit],
        features.classes,
        x_eval=features.x_train[hold],
        y_eval=features.y_train[hold],
        report=report,
    )


def score_on_val(config: TrainConfig, features: StudyFeatures) -> float:
    """``config``'s head trained on all the train features, scored once on val: the best epoch's
    accuracy, as ``tlkit train`` keeps the best epoch's weights."""
    accuracies = train_head(
        config, features.x_train, features.y_train, features.classes, x_eval=features.x_val, y_eval=features.y_val
    )
    return max(accuracies)


__all__ = [
    "DEFAULT_HOLDOUT",
    "StudyFeatures",
    "compute_features",
    "feature_key",
    "holdout_split",
    "run_trial",
    "score_on_val",
    "train_head",
]
