"""Test-time augmentation (TTA): deterministic views of an image batch, and the model's probabilities averaged over them.

>>> tta = parse_tta("flips")          # or parse_tta(4), parse_tta("4"); None/"none" means no TTA
>>> tta.views
('original', 'hflip')
>>> plain, averaged = tta.predict(run, pixels)   # run: uint8 batch -> probabilities

The views are computed with numpy on the decoded ``uint8`` batch ``(b, height, width, 3)``
(the image already resized to the model's input size), so they are the same
whatever runs the model (``model.keras`` or an exported ``.tflite``/``.onnx``/SavedModel)
and the same on every call.  ``--tta N`` takes the first ``N`` of :data:`VIEWS`:

====  ======================  ==================================================================
  #   view                    what it is
====  ======================  ==================================================================
  1   ``original``            the image as the model sees it without TTA
  2   ``hflip``               mirrored left ↔ right
  3   ``crop_center``         the central 90 % (of height and width), resized back to full size
  4   ``crop_top_left``       the top-left 90 %, resized back
  5   ``crop_top_right``      the top-right 90 %, resized back
  6   ``crop_bottom_left``    the bottom-left 90 %, resized back
  7   ``crop_bottom_right``   the bottom-right 90 %, resized back
 8–12 ``hflip_crop_…``        views 3–7 of the mirrored image
====  ======================  ==================================================================

``flips`` is the same as ``2``.  Crops are resized back with bilinear
interpolation (half-pixel centres, edge pixels repeated) and rounded to uint8.

The model runs once per view on the whole batch (the batch shape stays the same,
so a compiled model is not retraced) and only one view is held at a time, so
memory grows with the batch, not with the number of views.  The first view is
the original image, so the plain probabilities come for free.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from tlkit.errors import TlkitError

__all__ = ["CROP_FRACTION", "MAX_VIEWS", "TTA", "VIEWS", "parse_tta", "summary", "view"]

CROP_FRACTION = 0.9
_CROPS = ("crop_center", "crop_top_left", "crop_top_right", "crop_bottom_left", "crop_bottom_right")
VIEWS: tuple[str, ...] = ("original", "hflip", *_CROPS, *(f"hflip_{name}" for name in _CROPS))
MAX_VIEWS = len(VIEWS)
NAMED = {"flips": 2}  # a named setting → how many of VIEWS it takes


@dataclass(frozen=True)
class TTA:
    """A test-time augmentation setting: its name as given (``"flips"``, ``"4"``) and its views, in order."""

    setting: str
    views: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.views)

    def describe(self) -> str:
        """E.g. ``"flips (2 views: original, hflip)"``."""
        return f"{self.setting} ({len(self.views)} views: {', '.join(self.views)})"

    def iter_views(self, pixels: np.ndarray) -> Iterator[tuple[str, np.ndarray]]:
        """``(name, batch)`` for each view of ``pixels`` (b, h, w, c), computed one at a time."""
        for name in self.views:
            yield name, view(pixels, name)

    def predict(self, run: Callable[[np.ndarray], np.ndarray], pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(plain, averaged)`` probabilities of ``pixels``: ``run`` on the original, and the mean over the views.

        ``run`` maps a pixel batch to a ``(b, classes)`` probability array
        (e.g. :class:`tlkit.inference.prediction.Predictor`).
        """
        plain: np.ndarray | None = None
        total: np.ndarray | None = None
        for _name, batch in self.iter_views(pixels):
            probs = np.asarray(run(batch), dtype=np.float64)
            if plain is None or total is None:
                plain = probs
                total = probs.copy()
            else:
                total += probs
        assert plain is not None and total is not None  # there is always a view
        return plain, total / len(self.views)

    def as_dict(self) -> dict[str, Any]:
        return {"setting": self.setting, "views": list(self.views)}


def parse_tta(value: Any, *, option: str = "--tta") -> TTA | None:
    """The :class:`TTA` that ``value`` names, or None for no TTA (``None``, ``"none"``, ``"off"``).

    ``value`` is ``"flips"`` or a number of views ``N`` (an int or its text) from 2 to
    :data:`MAX_VIEWS`; an existing :class:`TTA` is returned as it is.

    Raises:
        TlkitError: anything else, in one line naming ``option`` and the value.
    """
    if value is None or isinstance(value, TTA):
        return value
    choices = f"flips or a number of views from 2 to {MAX_VIEWS}"
    if isinstance(value, bool):
        raise TlkitError(f"{option} must be {choices}, not {value!r}")
    text = str(value).strip().lower()
    if text in ("none", "off"):
        return None
    if text in NAMED:
        return TTA(setting=text, views=VIEWS[: NAMED[text]])
    try:
        count = int(text)
    except ValueError:
        raise TlkitError(f"{option} must be {choices}, not {str(value)!r}") from None
    if not 2 <= count <= MAX_VIEWS:
        hint = " (1 view is no TTA: leave the option out)" if count == 1 else ""
        raise TlkitError(f"{option} must be {choices}, not {count}{hint}")
    return TTA(setting=str(count), views=VIEWS[:count])


# --------------------------------------------------------------------------- the views


def view(pixels: np.ndarray, name: str) -> np.ndarray:
    """The view ``name`` (one of :data:`VIEWS`) of a batch ``(b, h, w, c)``; same shape and dtype."""
    pixels = np.asarray(pixels)
    if pixels.ndim != 4:
        raise ValueError(f"expected a (batch, height, width, channels) array, got shape {pixels.shape}")
    if name not in VIEWS:
        raise ValueError(f"unknown view {name!r}; views are {', '.join(VIEWS)}")
    if name.startswith("hflip"):
        pixels = pixels[:, :, ::-1, :]
        name = name[len("hflip_") :] if name != "hflip" else "original"
    if name == "original":
        return np.ascontiguousarray(pixels)
    return _crop_resized(pixels, name[len("crop_") :])


def _crop_box(height: int, width: int, where: str) -> tuple[int, int, int, int]:
    """``(top, left, crop_height, crop_width)`` of the ``where`` crop (center, top_left, …)."""
    ch = max(1, round(height * CROP_FRACTION))
    cw = max(1, round(width * CROP_FRACTION))
    if where == "center":
        return (height - ch) // 2, (width - cw) // 2, ch, cw
    vertical, horizontal = where.split("_")
    return (0 if vertical == "top" else height - ch), (0 if horizontal == "left" else width - cw), ch, cw


def _crop_resized(pixels: np.ndarray, where: str) -> np.ndarray:
    height, width = pixels.shape[1:3]
    top, left, ch, cw = _crop_box(height, width, where)
    return resize_bilinear(pixels[:, top : top + ch, left : left + cw, :], height, width)


def _axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    source = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
    low = np.floor(source).astype(np.intp)
    high = np.minimum(low + 1, n_in - 1)
    return low, high, (source - low).astype(np.float32)


def resize_bilinear(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """A batch ``(b, h, w, c)`` resized to ``(b, height, width, c)``: bilinear, half-pixel centres, same dtype."""
    y0, y1, fy = _axis(pixels.shape[1], height)
    x0, x1, fx = _axis(pixels.shape[2], width)
    x = pixels.astype(np.float32)
    fy = fy[None, :, None, None]
    fx = fx[None, None, :, None]
    rows = x[:, y0] * (1 - fy) + x[:, y1] * fy
    out = rows[:, :, x0] * (1 - fx) + rows[:, :, x1] * fx
    if np.issubdtype(pixels.dtype, np.integer):
        info = np.iinfo(pixels.dtype)
        out = np.clip(np.rint(out), info.min, info.max)
    return out.astype(pixels.dtype)


# --------------------------------------------------------------------------- evaluation summary


SUMMARY_KEYS = ("accuracy", "top_k_accuracy", "log_loss", "macro_f1", "weighted_f1", "num_mistakes")


def summary(metrics: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of :func:`tlkit.evaluation.evaluate.compute_metrics`'s dict (one side of the TTA comparison)."""
    counts = np.asarray(metrics["confusion_matrix"]["counts"])
    return {
        "accuracy": metrics["accuracy"],
        "top_k_accuracy": metrics["top_k_accuracy"],
        "log_loss": metrics["log_loss"],
        "macro_f1": metrics["macro_avg"]["f1"],
        "weighted_f1": metrics["weighted_avg"]["f1"],
        "num_mistakes": int(counts.sum() - np.trace(counts)),
    }
