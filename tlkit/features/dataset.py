"""The head's data on cached features: a native ``tf.data`` dataset over an entry, and the head's predictions.

Importing this module stays light: TensorFlow is imported when a dataset is built.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tlkit.data.pipelines import shard_by_data, steady_pipeline
from tlkit.errors import TlkitError
from tlkit.features.memory import release_pages

if TYPE_CHECKING:  # pragma: no cover - typing only
    from tlkit.features.store import FeatureSet

#: Bytes of features a dataset may copy into RAM; above, batches are read from the file.
#: (Held in RAM, the gather is free; read per batch, a step costs a few ms more but memory
#: stays flat: 5,000 ResNet50 images are 2 GB of features.)
IN_MEMORY_BUDGET = 1 << 30


def _row_reader(table: np.ndarray, rows_total: int, shape: tuple[int, ...]) -> Callable[[np.ndarray], np.ndarray]:
    """``read(rows) -> float32 features`` of flat rows of a cached table, without mapping it whole.

    A memory-mapped entry is read with ``preadv`` (:class:`_EntryRows`); anything else is indexed.
    """
    path = getattr(table, "filename", None)
    if path is not None and hasattr(os, "preadv") and not getattr(table, "offset", 0):
        return _EntryRows(path, table.dtype, shape)
    flat = table.reshape(rows_total, *shape)

    def indexed(rows: np.ndarray) -> np.ndarray:
        ordered = flat[np.sort(rows)][np.argsort(np.argsort(rows))]  # sorted reads, original order
        return np.asarray(ordered, dtype=np.float32)

    return indexed


class _EntryRows:
    """Reads rows of a cache entry's feature file with ``preadv`` straight into the batch.

    The file's pages stay in the page cache, outside this process's RSS (a memory map touched
    over an epoch would hold the whole split there).  The descriptor closes with the reader.
    """

    def __init__(self, path: str | Path, dtype: np.dtype, shape: tuple[int, ...]) -> None:
        self._path, self._dtype, self._shape = path, dtype, shape
        self._row_bytes = dtype.itemsize * math.prod(shape)
        self._fd = os.open(path, os.O_RDONLY)

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows), *self._shape), dtype=self._dtype)
        raw = out.reshape(len(rows), -1).view(np.uint8)
        for i, row in enumerate(rows.tolist()):
            if os.preadv(self._fd, [raw[i]], row * self._row_bytes) != self._row_bytes:
                raise TlkitError(
                    f"feature cache entry {self._path} is shorter than expected; clear the cache and rerun"
                )
        return out.astype(np.float32, copy=False)

    def __del__(self) -> None:
        fd, self._fd = getattr(self, "_fd", -1), -1  # -1: closed (or never opened)
        if fd >= 0:
            os.close(fd)


def make_feature_dataset(
    features: FeatureSet,
    *,
    batch_size: int,
    num_classes: int,
    shuffle: bool,
    seed: int,
    first_pass: int = 0,
    in_memory_budget: int | None = None,
):
    """A ``tf.data.Dataset`` of ``(features, one_hot)`` batches of a cached split, built natively.

    Epoch k visits the images in the order ``np.random.default_rng(seed + k).permutation(N)``
    (split order without ``shuffle``) and reads view ``k % views`` — a different
    augmentation of each image every epoch, as end-to-end training would see.
    ``first_pass`` is the first epoch's index (for resumed runs).

    Python runs once per epoch (to draw that epoch's order); batches are
    gathered in the graph from the features held in memory — or, when they
    exceed ``in_memory_budget`` bytes, read from the memmap batch by batch.
    """
    import tensorflow as tf  # lazy: only training the head on features needs TensorFlow

    count = len(features.labels)
    views = features.views
    shape = tuple(features.features.shape[2:])
    passes = itertools.count(first_pass)

    def epoch_orders() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        epoch = next(passes)
        order = np.random.default_rng(seed + epoch).permutation(count) if shuffle else np.arange(count)
        # Row of (view, image) in the flattened (views * N) feature table.
        yield (order + (epoch % views) * count).astype(np.int64), features.labels[order].astype(np.int32)

    label_shape = tuple(features.labels.shape[1:])  # () for class indices, (C,) for multi-label multi-hot
    orders = tf.data.Dataset.from_generator(
        epoch_orders,
        output_signature=(
            tf.TensorSpec(shape=(count,), dtype=tf.int64),
            tf.TensorSpec(shape=(count, *label_shape), dtype=tf.int32),
        ),
    )

    def targets(labels):
        return tf.cast(labels, tf.float32) if label_shape else tf.one_hot(labels, num_classes, dtype=tf.float32)

    batches = orders.flat_map(lambda rows, labels: tf.data.Dataset.from_tensor_slices((rows, labels)).batch(batch_size))
    budget = IN_MEMORY_BUDGET if in_memory_budget is None else in_memory_budget
    if features.features.nbytes <= budget:
        table = tf.constant(np.asarray(features.features).reshape(views * count, *shape))
        release_pages(features.features)  # the copy is in the tensor; the mapping need not stay resident

        def gather(rows, labels):
            # float16 entries stay float16 in memory (half the RAM); the head sees float32.
            x = tf.cast(tf.gather(table, rows), tf.float32)
            return x, targets(labels)
    else:
        read_rows = _row_reader(features.features, views * count, shape)

        def gather(rows, labels):
            x = tf.numpy_function(read_rows, [rows], tf.float32, stateful=False)
            x.set_shape((None, *shape))
            return x, targets(labels)

    steps = math.ceil(count / batch_size)
    dataset = batches.map(gather)  # one memcpy per batch: a parallel map measured slower
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(steps)).prefetch(2)
    return shard_by_data(steady_pipeline(dataset))


def head_probabilities(head: Any, features: FeatureSet, batch_size: int = 256) -> np.ndarray:
    """The head's class probabilities on a split's clean cached features (view 0), in split order.

    Equal to the whole model's predictions on that split's images (up to the
    engine's ~1e-6), without decoding an image or running the base.
    """
    view = features.features[0]
    parts = [
        np.asarray(head.predict_on_batch(np.asarray(view[start : start + batch_size], dtype=np.float32)))
        for start in range(0, len(features.labels), batch_size)
    ]
    return np.concatenate(parts).astype(np.float64)


__all__ = ["IN_MEMORY_BUDGET", "head_probabilities", "make_feature_dataset"]
