"""The deterministic photo preprocessing shared by the tests and ``make_reference.py``.

Needs only numpy and Pillow (it runs in the torch venv too).  torchvision's
evaluation transform, on uint8 pixels: resize the shorter side to 256 with
bilinear filtering, then center-crop 224×224.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

RESIZE = 256
CROP = 224
#: skimage.data function names of the photos used, in fixture order.
PHOTOS = ("chelsea", "coffee")


def center_crop(image: np.ndarray, resize: int = RESIZE, crop: int = CROP) -> np.ndarray:
    """uint8 (h, w, 3) → uint8 (crop, crop, 3), as torchvision's Resize(256) + CenterCrop(224)."""
    pil = Image.fromarray(np.asarray(image, dtype=np.uint8))
    width, height = pil.size
    if width <= height:
        new_w, new_h = resize, int(resize * height / width)
    else:
        new_w, new_h = int(resize * width / height), resize
    pil = pil.resize((new_w, new_h), Image.BILINEAR)
    left = int(round((new_w - crop) / 2.0))
    top = int(round((new_h - crop) / 2.0))
    return np.asarray(pil.crop((left, top, left + crop, top + crop)), dtype=np.uint8)


def photo(name: str) -> np.ndarray:
    """The cropped 224×224 uint8 version of ``skimage.data.<name>()``."""
    import skimage.data

    return center_crop(getattr(skimage.data, name)())
