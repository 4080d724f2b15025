"""Batch-mixing augmentations (mixup, cutmix, …) in the training input pipeline; soft labels.

A batch-mixing augmentation (an :class:`~tlkit.registry.specs.AugmentationSpec` with
``mixes_batch=True``) mixes pairs of images *and their labels* within a batch,
so it cannot be a layer of the saved model: tlkit applies it to the training
batches of the end-to-end path (:func:`mix_batches`), after batching and before
the model's own (per-image) augmentation layers.  Validation batches stay clean.

Labels become soft (convex combinations of one-hot rows).  Cross-entropy,
focal loss and MSE take soft labels as they are; class weights become per-image
sample weights ``label · class_weights`` (the mixed images' weights mixed the
same way); training metrics compare against the argmax of the mixed label
(:func:`hard_label_metrics`), so on clean hard labels they are unchanged.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence

from tlkit.errors import TlkitError
from tlkit.registry.manager import get_registry
from tlkit.registry.specs import parse_choice


def batch_mixing_names(augmentations: Sequence[str]) -> list[str]:
    """The names of the batch-mixing augmentations among ``--aug`` strings (``NAME[:k=v,...]``;
    names no plugin registers are left to the caller's checks)."""
    known = get_registry().augmentations
    names = [parse_choice(text, "--aug")[0] for text in augmentations]
    return [name for name in names if name in known and known[name].mixes_batch]


def check_batch_mixing(mixing: Sequence[str], aug_views: int, multi_label: bool = False) -> None:
    """Refuse what batch mixing cannot do: cached augmented views (``--aug-views``), and (not yet)
    multi-label data.  ``mixing`` names the batch-mixing augmentations of the run."""
    if mixing and multi_label:
        raise TlkitError(
            f"--aug {', '.join(mixing)} is not supported with --multi-label yet (its training metrics and class "
            f"weights assume one class per image); drop one of them"
        )
    if mixing and aug_views:
        names = ", ".join(mixing)
        raise TlkitError(
            f"batch mixing (--aug {names}) mixes the images and labels of every training batch anew, which "
            f"cached views cannot hold; drop --aug-views {aug_views} (mixing trains end to end) or drop {names}"
        )


def mixed(
    dataset,
    mixers: Sequence[Callable],
    *,
    steps: int,
    seed: int,
    first_pass: int = 0,
    class_weights: Sequence[float] | None = None,
):
    """``dataset`` (``(pixels, one_hot_labels)`` batches, ``steps`` per pass) with every batch mixed.

    The k-th batch of pass p gets the number ``p × steps + k`` (counted from ``first_pass``, so a
    resumed run numbers as an uninterrupted one), which seeds its mixing (:func:`mix_batches`).
    """
    import tensorflow as tf  # lazy: TensorFlow only when batches are mixed; importing this module stays light

    passes = itertools.count(first_pass)

    def numbers() -> Iterator[int]:
        start = next(passes) * steps
        yield from range(start, start + steps)

    numbering = tf.data.Dataset.from_generator(numbers, output_signature=tf.TensorSpec((), tf.int64))
    mix = mix_batches(mixers, seed, class_weights)
    return tf.data.Dataset.zip((dataset, numbering)).map(
        lambda batch, number: mix(batch[0], batch[1], number), num_parallel_calls=2, deterministic=True
    )


def mix_batches(mixers: Sequence[Callable], seed: int, class_weights: Sequence[float] | None = None):
    """A ``tf.data`` map function ``(images, labels, number) -> (images, soft_labels[, weights])``.

    Each batch is mixed by one of ``mixers`` (chosen at random per batch when there are
    several, as timm switches between mixup and cutmix), with the stateless seed
    ``(seed, number)``.  With ``class_weights`` (one per class) it adds per-image sample
    weights ``soft_label · class_weights``.
    """
    import tensorflow as tf  # lazy: TensorFlow only when batches are mixed; importing this module stays light

    mixers = list(mixers)
    weights = None if class_weights is None else tf.constant(list(class_weights), tf.float32)

    def mix(images, labels, number):
        batch_seed = tf.stack([tf.constant(seed, tf.int64), tf.cast(number, tf.int64)])
        if len(mixers) == 1:
            images, labels = mixers[0](images, labels, batch_seed)
        else:
            pick_seed = tf.random.experimental.stateless_fold_in(batch_seed, len(mixers))
            which = tf.random.stateless_uniform([], pick_seed, 0, len(mixers), dtype=tf.int32)
            branches = [lambda m=m: m(images, labels, batch_seed) for m in mixers]
            images, labels = tf.switch_case(which, branches)
        if weights is None:
            return images, labels
        return images, labels, tf.linalg.matvec(labels, weights)

    return mix


def class_weight_vector(class_weight: dict[int, float] | None, num_classes: int) -> list[float] | None:
    """Keras's ``class_weight`` dict as a list with one weight per class (1.0 where missing)."""
    if not class_weight:
        return None
    return [float(class_weight.get(index, 1.0)) for index in range(num_classes)]


def hard_label_metrics(metrics: list) -> list:
    """``metrics`` measured against the argmax of the (soft) label, as one-hot.

    Accuracy and top-k already use the label's argmax and are returned as they
    are; precision, recall, F1 and F-beta are wrapped.  On hard one-hot labels
    (validation) a wrapped metric equals the metric.
    """
    import keras  # lazy: Keras imports TensorFlow; only compiling a run that mixes batches needs it

    argmax_already = (keras.metrics.CategoricalAccuracy, keras.metrics.TopKCategoricalAccuracy)
    return [m if isinstance(m, argmax_already) else _hard_label_class()(m) for m in metrics]


_HARD_LABEL_CLASS = None


def _hard_label_class():
    """Define the wrapper metric on first use (it subclasses a Keras class)."""
    global _HARD_LABEL_CLASS
    if _HARD_LABEL_CLASS is not None:
        return _HARD_LABEL_CLASS
    import keras  # lazy: Keras imports TensorFlow; only compiling a run that mixes batches needs it
    from keras import ops

    class HardLabelMetric(keras.metrics.Metric):
        """A metric updated with ``one_hot(argmax(y_true))`` instead of ``y_true``; same name and result."""

        def __init__(self, metric, **kwargs):
            super().__init__(name=metric.name, dtype=metric.dtype, **kwargs)
            self.metric = metric

        def update_state(self, y_true, y_pred, sample_weight=None):
            hard = ops.one_hot(ops.argmax(y_true, axis=-1), ops.shape(y_true)[-1], dtype=y_pred.dtype)
            return self.metric.update_state(hard, y_pred, sample_weight=sample_weight)

        def result(self):
            return self.metric.result()

        def reset_state(self):
            self.metric.reset_state()

    _HARD_LABEL_CLASS = HardLabelMetric
    return _HARD_LABEL_CLASS


__all__ = [
    "batch_mixing_names",
    "check_batch_mixing",
    "class_weight_vector",
    "hard_label_metrics",
    "mix_batches",
    "mixed",
]
