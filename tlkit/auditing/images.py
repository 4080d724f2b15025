"""Image sizes, modes and formats for the audit's summary line, from the files' headers only.

``PIL.Image.open`` parses a file's header (size, mode, format) without decoding its pixels, so this
costs one small read per file; the files are read on a few threads.  Files that cannot be opened
are skipped here: the audit lists them, with the reason, from decoding.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from statistics import median_low

from PIL import Image

from tlkit.auditing.result import ImageStats

_WORKERS = 8  # header reads wait on the disk more than on the CPU


def _header(file: str | os.PathLike[str]) -> tuple[int, int, str, str] | None:
    """(width, height, mode, format) from the file's header, or None when it cannot be opened."""

    try:
        with Image.open(file) as im:
            return im.width, im.height, im.mode, im.format or "unknown"
    except Exception:  # corrupt, not an image, decompression bomb: reported elsewhere
        return None


def image_stats(files: Sequence[str | os.PathLike[str]]) -> ImageStats:
    """Count, (min, median, max) width and height, and the count of each mode and format of the
    image ``files`` that open (headers only, never the pixels).  No readable file: empty stats."""
    if not files:
        return ImageStats()
    workers = max(1, min(_WORKERS, len(files)))
    if workers == 1:
        headers = [_header(f) for f in files]
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            headers = list(pool.map(_header, files, chunksize=64))
    readable = [h for h in headers if h is not None]
    if not readable:
        return ImageStats()
    widths = [h[0] for h in readable]
    heights = [h[1] for h in readable]
    return ImageStats(
        count=len(readable),
        widths=(min(widths), median_low(widths), max(widths)),
        heights=(min(heights), median_low(heights), max(heights)),
        modes=dict(sorted(Counter(h[2] for h in readable).items())),
        formats=dict(sorted(Counter(h[3] for h in readable).items())),
    )


__all__ = ["image_stats"]
