"""Built-in augmentations, built from Keras preprocessing layers.

Every layer here is active only when the model runs with ``training=True``
and is the identity otherwise, so the saved model predicts on clean images.

``mixup`` and ``cutmix`` are batch-mixing augmentations (``mixes_batch=True``):
they mix pairs of images and their labels within a training batch, so they are
not layers of the model but functions tlkit applies in the training input
pipeline (see :class:`tlkit.AugmentationSpec`).
"""

from __future__ import annotations

from typing import Annotated, Literal

import tlkit
from tlkit import Param

# Each augmentation's parameters are its build function's keyword-only
# arguments (default, type, help and limits), as for heads.
FillMode = Annotated[
    Literal["reflect", "constant", "nearest", "wrap"], "how pixels moved in from outside the image are filled"
]


def build_flip_horizontal(seed: int):
    from keras import layers

    return layers.RandomFlip("horizontal", seed=seed, name="aug_flip_horizontal")


def build_flip_vertical(seed: int):
    from keras import layers

    return layers.RandomFlip("vertical", seed=seed, name="aug_flip_vertical")


def build_rotation(
    seed: int,
    *,
    factor: Annotated[float, Param("maximum rotation as a fraction of a full turn", ge=0.0, le=1.0)] = 0.1,
    fill_mode: FillMode = "reflect",
):
    from keras import layers

    return layers.RandomRotation(factor, fill_mode=fill_mode, seed=seed, name="aug_rotation")


def build_zoom(
    seed: int,
    *,
    factor: Annotated[float, Param("maximum zoom as a fraction of the size", ge=0.0, le=0.9)] = 0.1,
    fill_mode: FillMode = "reflect",
):
    from keras import layers

    return layers.RandomZoom(factor, fill_mode=fill_mode, seed=seed, name="aug_zoom")


def build_crop(
    seed: int,
    *,
    scale: Annotated[float, Param("side of the cropped window as a fraction of the image", ge=0.1, le=1.0)] = 0.8,
):
    """A random square window of ``scale`` × the side, anywhere in the image, resized back.

    Keras's RandomCrop changes the output size and resizes at inference, so the
    crop is composed from a translation (picks the window's position; at most
    half the margin, so no filled pixels reach the window) and a fixed zoom-in
    (cuts the centred window and resizes it back) — both identities at inference.
    """
    import keras
    from keras import layers

    margin = 1.0 - scale
    return keras.Sequential(
        [
            layers.RandomTranslation(margin / 2, margin / 2, fill_mode="reflect", seed=seed),
            layers.RandomZoom((-margin, -margin), (-margin, -margin), seed=seed + 1),
        ],
        name="aug_crop",
    )


def build_translation(
    seed: int,
    *,
    factor: Annotated[float, Param("maximum shift as a fraction of height/width", ge=0.0, le=1.0)] = 0.1,
    fill_mode: FillMode = "reflect",
):
    from keras import layers

    return layers.RandomTranslation(factor, factor, fill_mode=fill_mode, seed=seed, name="aug_translation")


def build_contrast(seed: int, *, factor: Annotated[float, Param("maximum contrast change", ge=0.0, le=1.0)] = 0.2):
    from keras import layers

    return layers.RandomContrast(factor, value_range=(0, 255), seed=seed, name="aug_contrast")


def build_brightness(
    seed: int,
    *,
    factor: Annotated[float, Param("maximum brightness shift as a fraction of 0–255", ge=0.0, le=1.0)] = 0.2,
):
    from keras import layers

    return layers.RandomBrightness(factor, value_range=(0, 255), seed=seed, name="aug_brightness")


def build_randaugment(
    seed: int,
    *,
    num_ops: Annotated[int, Param("N: operations applied one after another", ge=1, le=10)] = 2,
    magnitude: Annotated[
        int, Param("M: strength of every operation, 1–30 (Keras's factor = M/30 of each op's range)", ge=1, le=30)
    ] = 9,
):
    """RandAugment (Cubuk et al. 2019) as Keras's ``RandAugment`` layer on 0–255 pixels.

    Keras draws the N operations (of shear, translation, rotation, brightness,
    colour, contrast, sharpness, posterization, solarization, auto-contrast,
    equalization) once per batch and each one's strength per image, up to
    ``magnitude / 30`` of the operation's range.
    """
    from keras import layers

    return layers.RandAugment(
        value_range=(0, 255), num_ops=num_ops, factor=magnitude / 30, seed=seed, name="aug_randaugment"
    )


# -- batch-mixing augmentations: mix(images, labels, seed) -> (images, labels) ------------------

Alpha = Annotated[float, Param("λ ~ Beta(alpha, alpha): larger mixes more evenly", ge=0.01, le=10.0)]


def _beta_and_partners(images, alpha: float, seed):
    """One mixing weight λ ~ Beta(alpha, alpha) for the batch and, for every image, the index of
    the image it is mixed with (a random permutation of the batch); stateless in ``seed``."""
    import tensorflow as tf

    seeds = tf.random.experimental.stateless_split(seed, 3)
    first = tf.random.stateless_gamma([], seeds[0], alpha)
    second = tf.random.stateless_gamma([], seeds[1], alpha)
    lam = first / tf.maximum(first + second, 1e-12)
    batch = tf.shape(images)[0]
    partners = tf.argsort(tf.random.stateless_uniform([batch], seeds[2]))
    return lam, partners


def mixup_batch(images, labels, seed, *, alpha: float = 0.2):
    """mixup (Zhang et al. 2018): every image becomes λ·image + (1−λ)·partner, and its label
    λ·label + (1−λ)·partner's label, with one λ for the batch."""
    import tensorflow as tf

    lam, partners = _beta_and_partners(images, alpha, seed)
    weight = tf.cast(lam, images.dtype)
    mixed = weight * images + (1.0 - weight) * tf.gather(images, partners)
    weight = tf.cast(lam, labels.dtype)
    soft = weight * labels + (1.0 - weight) * tf.gather(labels, partners)
    return mixed, soft


def cutmix_batch(images, labels, seed, *, alpha: float = 1.0):
    """CutMix (Yun et al. 2019): a box of the partner image is pasted over every image (one box
    for the batch, area ≈ 1−λ, clipped at the border); labels mix by the box's exact area."""
    import tensorflow as tf

    lam, partners = _beta_and_partners(images, alpha, seed)
    height, width = tf.shape(images)[1], tf.shape(images)[2]
    ratio = tf.sqrt(1.0 - lam)
    cut_h = tf.cast(tf.round(tf.cast(height, tf.float32) * ratio), tf.int32)
    cut_w = tf.cast(tf.round(tf.cast(width, tf.float32) * ratio), tf.int32)
    centre_seed = tf.random.experimental.stateless_fold_in(seed, 7)
    cy = tf.random.stateless_uniform([], centre_seed, 0, height, dtype=tf.int32)
    cx = tf.random.stateless_uniform([], tf.random.experimental.stateless_fold_in(centre_seed, 1), 0, width, tf.int32)
    y0, y1 = tf.clip_by_value(cy - cut_h // 2, 0, height), tf.clip_by_value(cy + cut_h - cut_h // 2, 0, height)
    x0, x1 = tf.clip_by_value(cx - cut_w // 2, 0, width), tf.clip_by_value(cx + cut_w - cut_w // 2, 0, width)
    rows, cols = tf.range(height), tf.range(width)
    in_rows = (rows >= y0) & (rows < y1)
    in_cols = (cols >= x0) & (cols < x1)
    box = (in_rows[:, None] & in_cols[None, :])[None, :, :, None]  # (1, h, w, 1)
    mixed = tf.where(box, tf.gather(images, partners), images)
    kept = 1.0 - tf.cast((y1 - y0) * (x1 - x0), labels.dtype) / tf.cast(height * width, labels.dtype)
    soft = kept * labels + (1.0 - kept) * tf.gather(labels, partners)
    return mixed, soft


def _mixer(function, seed: int, **params):
    """``mix(images, labels, batch_seed)`` with this augmentation's own seed folded in, so two
    mixing augmentations in one run draw differently."""
    import tensorflow as tf

    def mix(images, labels, batch_seed):
        return function(images, labels, tf.random.experimental.stateless_fold_in(batch_seed, seed), **params)

    return mix


def build_mixup(seed: int, *, alpha: Alpha = 0.2):
    return _mixer(mixup_batch, seed, alpha=alpha)


def build_cutmix(seed: int, *, alpha: Alpha = 1.0):
    return _mixer(cutmix_batch, seed, alpha=alpha)


AUGMENTATIONS = (
    tlkit.AugmentationSpec("flip_horizontal", build_flip_horizontal, "random left–right mirror"),
    tlkit.AugmentationSpec("flip_vertical", build_flip_vertical, "random top–bottom mirror"),
    tlkit.AugmentationSpec("rotation", build_rotation, "random rotation by up to ±factor × 360°"),
    tlkit.AugmentationSpec("zoom", build_zoom, "random zoom in or out by up to ±factor"),
    tlkit.AugmentationSpec("crop", build_crop, "random crop of scale × the side at a random position, resized back"),
    tlkit.AugmentationSpec("translation", build_translation, "random shift by up to ±factor of the size"),
    tlkit.AugmentationSpec("contrast", build_contrast, "random contrast change by up to ±factor"),
    tlkit.AugmentationSpec("brightness", build_brightness, "random brightness shift by up to ±factor of the range"),
    tlkit.AugmentationSpec(
        "randaugment", build_randaugment, "RandAugment: num_ops random operations of strength up to magnitude/30"
    ),
    tlkit.AugmentationSpec(
        "mixup",
        build_mixup,
        "batch mixing: images and labels blended with a partner (λ ~ Beta(alpha, alpha)); end-to-end only",
        mixes_batch=True,
    ),
    tlkit.AugmentationSpec(
        "cutmix",
        build_cutmix,
        "batch mixing: a partner's box pasted in, labels mixed by its area; end-to-end only",
        mixes_batch=True,
    ),
)


@tlkit.hookimpl
def register_augmentations(register):
    for spec in AUGMENTATIONS:
        register(spec)
