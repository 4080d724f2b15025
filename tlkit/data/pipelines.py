"""``tf.data`` pipelines: batches served from a decoded split, and the options every tlkit dataset gets.

TensorFlow is imported inside the functions only: importing this module stays light.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

from tlkit.data.mixing import mixed
from tlkit.errors import TlkitError

if TYPE_CHECKING:  # pragma: no cover - typing only; keeps TensorFlow out of import time
    import tensorflow as tf

    from tlkit.data.decode import DecodedSplit

__all__ = ["make_dataset", "shard_by_data", "steady_pipeline"]


def make_dataset(
    decoded: DecodedSplit,
    *,
    batch_size: int,
    num_classes: int,
    shuffle: bool,
    seed: int,
    first_pass: int = 0,
    mixers: Sequence[Callable] = (),
    class_weights: Sequence[float] | None = None,
) -> tf.data.Dataset:
    """A ``tf.data.Dataset`` of ``(pixels, one_hot_labels)`` batches from a decoded split.

    Pixels are float32 in 0..255, shape ``(b, size, size, 3)``; labels are float32
    one-hot, shape ``(b, num_classes)``. The last, partial batch is kept, and the
    dataset's cardinality is the number of steps, so Keras can show progress.

    With ``shuffle``, the k-th pass over the dataset (k = 0, 1, ...) visits the
    images in the order of ``np.random.default_rng(seed + k).permutation(N)``:
    every epoch is shuffled differently, and two runs with the same seed see the
    same orders. Without it, images come in split order. ``first_pass`` is the
    index of the first pass (a resumed run starting at epoch k passes k), so a
    resumed run sees the same orders an uninterrupted one would.

    ``mixers`` (batch-mixing augmentations, training only) mix every batch's images and
    labels (soft labels; :mod:`tlkit.data.mixing`); with them, ``class_weights`` (one per class)
    become per-image sample weights, a third element of each batch.
    """
    import tensorflow as tf  # lazy: TensorFlow only when a tf.data pipeline is built; importing this module stays light

    if batch_size < 1:
        raise TlkitError(f"batch_size must be at least 1, got {batch_size}")
    if decoded.pixels is None:
        raise TlkitError("cannot make a dataset from a split whose images were not decoded")
    count, size = len(decoded.labels), decoded.pixels.shape[1]
    if count == 0:
        raise TlkitError("cannot make a dataset from a split with no images")
    steps = math.ceil(count / batch_size)
    batches = _batch_generator(decoded, batch_size, shuffle, seed, first_pass)

    dataset = tf.data.Dataset.from_generator(
        batches,
        output_signature=(
            tf.TensorSpec(shape=(None, size, size, 3), dtype=tf.uint8),
            tf.TensorSpec(shape=(None, *decoded.labels.shape[1:]), dtype=tf.int32),
        ),
    )
    multi_hot = decoded.labels.ndim == 2  # multi-label data (tlkit.data.labels_csv): already (b, C)

    def to_model_inputs(pixels: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        # The generator hands over uint8 and int labels (4x less data through the
        # Python boundary); widening to float32 and one-hot happens in the graph.
        targets = tf.cast(labels, tf.float32) if multi_hot else tf.one_hot(labels, num_classes, dtype=tf.float32)
        return tf.cast(pixels, tf.float32), targets

    dataset = dataset.map(to_model_inputs)  # a cast: not worth a thread pool
    if mixers:
        dataset = mixed(dataset, mixers, steps=steps, seed=seed, first_pass=first_pass, class_weights=class_weights)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(steps))
    return shard_by_data(steady_pipeline(dataset.prefetch(2)))


def steady_pipeline(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """``dataset`` with tf.data's autotuner off: its parallelism and buffers are the ones set here.

    Measured with TensorFlow 2.21 and Keras 3's ``fit`` on this project's pipelines: with the
    autotuner on, an epoch ended only at the autotuner's next wake-up, whose period doubles from
    10 ms (cumulative 1.27 s, 2.55 s, 5.1 s, ...). A 1.2 s head epoch took 1.28 or 2.57 s, at
    random. The maps here are a gather, a cast or a batch mix, and batches are prefetched, so
    tuning had nothing to gain (``bench/head_floor.py``).
    """
    import tensorflow as tf  # lazy: TensorFlow only when a tf.data pipeline is built; importing this module stays light

    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


def shard_by_data(dataset):
    """Tell ``tf.distribute`` to shard ``dataset`` by its elements across workers (each worker keeps
    its share of every global batch): tlkit's datasets have no files to shard by."""
    import tensorflow as tf  # lazy: TensorFlow only when a tf.data pipeline is built; importing this module stays light

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def _batch_generator(
    decoded: DecodedSplit, batch_size: int, shuffle: bool, seed: int, first_pass: int = 0
) -> Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]]:
    """A generator function that yields one pass of uint8 batches per call.

    ``tf.data`` calls it once per iteration of the dataset (once per epoch in
    ``fit``); the shared counter makes each call use the next permutation.
    """
    pixels = decoded.pixels
    if pixels is None:
        raise TlkitError("cannot make batches from a split whose images were not decoded")
    count = len(decoded.labels)
    passes = itertools.count(first_pass)

    def batches() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        epoch = next(passes)
        if shuffle:
            order = np.random.default_rng(seed + epoch).permutation(count)
        else:
            order = np.arange(count)
        for start in range(0, count, batch_size):
            index = order[start : start + batch_size]
            # Fancy indexing reads just these rows from the memmap into RAM.
            yield np.asarray(pixels[index]), decoded.labels[index]

    return batches
