"""Built-in augmentations, built from Keras preprocessing layers.

Every layer here is active only when the model runs with ``training=True``
and is the identity otherwise, so the saved model predicts on clean images.
"""

from __future__ import annotations

from typing import Annotated, Literal

import tlkit
from tlkit import param

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
    factor: Annotated[float, param("maximum rotation as a fraction of a full turn", min=0.0, max=1.0)] = 0.1,
    fill_mode: FillMode = "reflect",
):
    from keras import layers

    return layers.RandomRotation(factor, fill_mode=fill_mode, seed=seed, name="aug_rotation")


def build_zoom(
    seed: int,
    *,
    factor: Annotated[float, param("maximum zoom as a fraction of the size", min=0.0, max=0.9)] = 0.1,
    fill_mode: FillMode = "reflect",
):
    from keras import layers

    return layers.RandomZoom(factor, fill_mode=fill_mode, seed=seed, name="aug_zoom")


def build_crop(
    seed: int,
    *,
    scale: Annotated[float, param("side of the cropped window as a fraction of the image", min=0.1, max=1.0)] = 0.8,
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
    factor: Annotated[float, param("maximum shift as a fraction of height/width", min=0.0, max=1.0)] = 0.1,
    fill_mode: FillMode = "reflect",
):
    from keras import layers

    return layers.RandomTranslation(factor, factor, fill_mode=fill_mode, seed=seed, name="aug_translation")


def build_contrast(seed: int, *, factor: Annotated[float, param("maximum contrast change", min=0.0, max=1.0)] = 0.2):
    from keras import layers

    return layers.RandomContrast(factor, value_range=(0, 255), seed=seed, name="aug_contrast")


def build_brightness(
    seed: int,
    *,
    factor: Annotated[float, param("maximum brightness shift as a fraction of 0–255", min=0.0, max=1.0)] = 0.2,
):
    from keras import layers

    return layers.RandomBrightness(factor, value_range=(0, 255), seed=seed, name="aug_brightness")


AUGMENTATIONS = (
    tlkit.AugmentationSpec("flip_horizontal", build_flip_horizontal, "random left–right mirror"),
    tlkit.AugmentationSpec("flip_vertical", build_flip_vertical, "random top–bottom mirror"),
    tlkit.AugmentationSpec("rotation", build_rotation, "random rotation by up to ±factor × 360°"),
    tlkit.AugmentationSpec("zoom", build_zoom, "random zoom in or out by up to ±factor"),
    tlkit.AugmentationSpec("crop", build_crop, "random crop of scale × the side at a random position, resized back"),
    tlkit.AugmentationSpec("translation", build_translation, "random shift by up to ±factor of the size"),
    tlkit.AugmentationSpec("contrast", build_contrast, "random contrast change by up to ±factor"),
    tlkit.AugmentationSpec("brightness", build_brightness, "random brightness shift by up to ±factor of the range"),
)


@tlkit.hookimpl
def register_augmentations(register):
    for spec in AUGMENTATIONS:
        register(spec)
