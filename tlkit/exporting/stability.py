"""How steady ``model.keras``'s own answers are under pixel noise too small to see.

A quantized export rounds numbers inside the network; whether that changes an answer depends as
much on the model as on the rounding.  Some models change their top-1 class when every pixel moves
by a grey level or two: no 8-bit rounding can then keep the required agreement, and a better
converter cannot help (docs/export.md, "When int8 fails", has the measurements).  This module
measures that yardstick, so a failed parity check can say which of the two it is.

The noise is uniform in ``[-k, +k]`` grey levels, drawn independently for every pixel value from a
fixed seed and not clipped (so it has no mean), on at most :data:`MAX_IMAGES` of the images the
parity check used.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tlkit.inference.prediction import Predictor, decoded_batches
from tlkit.io.rundir import RunDir

__all__ = ["MAX_IMAGES", "NOISE_LEVELS", "kept_text", "measure_stability", "noise_text", "stability_sentence"]

#: Noise amplitudes in grey levels (of 0–255), smallest first.
NOISE_LEVELS: tuple[int, ...] = (1, 2)
#: At most this many images are perturbed (spread evenly over the parity images): ±1.4 points at 500.
MAX_IMAGES = 500


def measure_stability(
    model: Any,
    files: Sequence[Path],
    reference_top1: np.ndarray,
    size: int,
    batch_size: int,
    *,
    levels: Sequence[int] = NOISE_LEVELS,
    seed: int = 0,
) -> dict[str, Any]:
    """The share of ``model``'s top-1 answers that stay the same when noise is added to the pixels.

    ``files[i]``'s clean answer is ``reference_top1[i]`` (what the parity check already computed, so
    the clean pass is not repeated).  Returns ``{"images", "noise_grey_levels", "self_agreement"}``,
    one agreement per level.
    """
    if len(files) != len(reference_top1):
        raise ValueError(f"{len(files)} files but {len(reference_top1)} reference answers")
    pick = np.unique(np.linspace(0, len(files) - 1, min(len(files), MAX_IMAGES)).round().astype(int))
    chosen = [files[i] for i in pick]
    want = np.asarray(reference_top1)[pick]
    predictor = Predictor(model)
    rng = np.random.default_rng(seed)
    same = np.zeros(len(levels), dtype=np.int64)
    seen = 0
    for indices, pixels in decoded_batches(chosen, size, batch_size):
        clean = pixels.astype(np.float32)
        for k, level in enumerate(levels):
            noise = rng.uniform(-level, level, size=clean.shape).astype(np.float32)
            same[k] += int((predictor(clean + noise).argmax(axis=1) == want[indices]).sum())
        seen += len(indices)
    return {
        "images": seen,
        "noise_grey_levels": [int(level) for level in levels],
        "self_agreement": [float(count / seen) if seen else 1.0 for count in same],
    }


def noise_text(stability: dict[str, Any]) -> str:
    """The noise levels of a :func:`measure_stability` record as shown: ``"±1 / ±2"``."""
    return " / ".join(f"±{level}" for level in stability["noise_grey_levels"])


def kept_text(stability: dict[str, Any]) -> str:
    """The answers kept at each level as shown: ``"97.0 % / 92.0 %"``."""
    return " / ".join(f"{100 * a:.1f} %" for a in stability["self_agreement"])


def stability_sentence(stability: dict[str, Any], agreement: float, threshold: float, export: str) -> str:
    """One clause for a failed parity check of ``export`` (e.g. ``"tflite int8"``): how fragile
    ``model.keras`` is next to it."""
    levels, agreements = stability["noise_grey_levels"], stability["self_agreement"]
    text = (
        f"pixel noise of {noise_text(stability)} grey levels alone changes "
        f"{' / '.join(f'{100 * (1 - a):.1f} %' for a in agreements)} of {RunDir.MODEL}'s answers "
        f"({stability['images']} images)"
    )
    if agreement >= agreements[-1]:
        return (
            f"{text}, and the export no more than ±{levels[-1]} does: this model is too fragile for {export} "
            f"to keep {100 * threshold:.0f} % of its answers"
        )
    return f"{text}, and the export more than ±{levels[-1]} does: the loss is the quantization's"
