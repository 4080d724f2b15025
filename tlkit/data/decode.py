"""Decoding images: one file into RGB pixels, and a whole split once into an on-disk memmap.

:func:`load_image` decodes one file as training, evaluation and prediction all do
(EXIF orientation, every PIL mode to 8-bit RGB, a bilinear squash to the size);
:func:`decode_image_bytes` does the same for an image in memory (``tlkit serve``'s uploads).
:func:`decode_split` decodes every image of a :class:`~tlkit.data.folders.Split`
once, in parallel, into a uint8 ``np.memmap`` in a work folder, so a dataset larger
than RAM still trains and later epochs cost no decoding.  No TensorFlow here.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from tlkit.data.folders import Split
from tlkit.errors import TlkitError, first_line

__all__ = [
    "BadImageError",
    "bad_images_message",
    "none_readable_message",
    "DecodedSplit",
    "decode_image_bytes",
    "decode_split",
    "load_image",
]

_MAX_LISTED_BAD = 20
_MAX_LISTED_NONE = 5  # a command with no readable image at all: the first few say why


class BadImageError(Exception):
    """An image file that cannot be decoded; ``reason`` is short and human-readable."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(path, reason)  # keeps the exception picklable
        self.path = Path(path)
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def load_image(path: str | Path, size: int) -> np.ndarray:
    """Decode one image file into a ``(size, size, 3)`` uint8 RGB array.

    EXIF orientation is applied, an animated image gives its first frame, every
    PIL mode becomes 8-bit RGB (16/32-bit images are scaled, not clipped; alpha
    is composited onto white) and the image is resized to ``size`` x ``size``
    with bilinear filtering, squashing rather than cropping, as Keras'
    ``image_dataset_from_directory`` does.

    Raises:
        BadImageError: the file is missing, truncated, corrupt or not an image.
    """
    return _load(path, Path(path), size)


def decode_image_bytes(data: bytes, size: int, *, name: str = "image", max_pixels: int | None = None) -> np.ndarray:
    """Decode an image held in memory (an upload) exactly as :func:`load_image` decodes a file.

    ``name`` is what errors call it; an image of more than ``max_pixels`` pixels
    (width × height, read from its header before any pixel is decoded) is refused
    as a likely decompression bomb.

    Raises:
        BadImageError: truncated, corrupt, not an image, or over ``max_pixels``.
    """
    return _load(io.BytesIO(data), Path(name), size, max_pixels)


def _load(source: str | Path | IO[bytes], path: Path, size: int, max_pixels: int | None = None) -> np.ndarray:
    try:
        with Image.open(source) as img:
            if max_pixels is not None and img.width * img.height > max_pixels:
                raise BadImageError(
                    path,
                    f"{img.width}x{img.height} is {img.width * img.height:,} pixels, over the limit of "
                    f"{max_pixels:,} (a decompression bomb?)",
                )
            # Let the JPEG decoder downscale by 1/2, 1/4 or 1/8 while decoding (never
            # below `size`): a large photo decodes several times faster, and the
            # bilinear resize below produces the final size anyway.
            img.draft(None, (size, size))
            # Decode now, inside the `with`: a truncated file fails here, not later.
            img.load()
            if img.width == 0 or img.height == 0:
                raise BadImageError(path, "image has zero width or height")
            rgb = _to_rgb(_apply_exif_orientation(img))
    except BadImageError:
        raise
    except UnidentifiedImageError:
        raise BadImageError(path, "not a readable image (unknown or corrupt format)") from None
    except FileNotFoundError:
        raise BadImageError(path, "file not found") from None
    except Exception as exc:  # noqa: BLE001 - PIL raises many types on bad data
        # PIL reports corrupt data as OSError, SyntaxError, ValueError, struct.error,
        # IndexError, ... depending on the format; all mean "this file is unusable".
        raise BadImageError(path, _short_reason(exc)) from exc

    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)


def _short_reason(exc: Exception) -> str:
    """The first line of an exception's message, kept short for error listings."""
    return first_line(exc, 120)


def _apply_exif_orientation(img: Image.Image) -> Image.Image:
    """Rotate/flip as the EXIF Orientation tag says, so the image looks as in a viewer."""
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001
        # Malformed EXIF metadata does not make the pixels unusable; viewers ignore
        # it too, so keep the image as stored rather than reject it.
        return img


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB."""
    mode = img.mode
    if mode.startswith("I") or mode == "F":
        # PIL's own convert() clips these to 0..255 (a 16-bit image turns almost
        # all white), so scale the values ourselves.
        gray = Image.fromarray(_wide_to_uint8(np.asarray(img), mode))
        return gray.convert("RGB")
    if _has_alpha(img):
        # Transparent areas become white, as a viewer on a white page shows them;
        # dropping alpha instead would expose arbitrary (often black) colours.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img if mode == "RGB" else img.convert("RGB")


def _has_alpha(img: Image.Image) -> bool:
    """True for modes with an alpha band and for images with a transparency key."""
    return img.mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in img.info


def _wide_to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """Scale a 16-bit, 32-bit integer or float grayscale array to uint8.

    ``I;16*`` images are 16-bit by definition, so they keep their top 8 bits.
    Mode ``I`` (32-bit) holds 8-bit, 16-bit or wider data depending on the
    source, so its actual value range decides; mode ``F`` likewise, with 0..1
    taken as the usual float convention.
    """
    if mode.startswith("I;16") and values.dtype.kind == "u":
        return (values >> 8).astype(np.uint8)
    data = values.astype(np.float64)
    finite = data[np.isfinite(data)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    if mode == "F" and low >= 0 and high <= 1:
        scaled = data * 255.0
    elif low >= 0 and high <= 255:
        scaled = data  # already 8-bit data in a wide container
    elif low >= 0 and high <= 65535:
        scaled = np.floor(data / 256.0)  # 16-bit data: same as >> 8
    else:
        # Negative or wider-than-16-bit values have no fixed scale: stretch the range.
        scaled = (data - low) * (255.0 / (high - low))
    return np.clip(np.nan_to_num(scaled), 0, 255).astype(np.uint8)


@dataclass
class DecodedSplit:
    """A decoded split: pixels in a read-only on-disk memmap, with labels and files."""

    pixels: np.ndarray | None  # uint8 (N, size, size, 3), an np.memmap in the work folder (None: not decoded)
    labels: np.ndarray  # int32 (N,)
    files: list[Path]
    bad: list[tuple[Path, str]]  # images that failed to decode and were skipped

    def __len__(self) -> int:
        return len(self.files)


def decode_split(
    split: Split,
    size: int,
    workdir: str | Path,
    *,
    name: str,
    skip_bad_images: bool = False,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> DecodedSplit:
    """Decode every image of ``split`` once, in parallel, into ``workdir/<name>-<size>.u8``.

    The pixels go straight into an ``np.memmap`` on disk, so the whole dataset is
    never held in RAM. Decoding runs in a thread pool (PIL releases the GIL while
    decoding); each worker writes its own row of the memmap.

    Args:
        split: the files and labels to decode.
        size: output height and width in pixels.
        workdir: folder for the memmap file (created if missing; never the data folder).
        name: the split's name, used in the file name and in messages ("train", "val").
        skip_bad_images: leave unreadable images out (listed in ``bad``) instead of failing.
        workers: decoding threads; default ``os.cpu_count()``.
        progress: called from the calling thread with the number of images
            finished since the previous call (like ``rich``'s ``advance``).

    Raises:
        TlkitError: some images could not be read and ``skip_bad_images`` is false
            (lists them), every image is unreadable, or the split is empty.
    """
    count = len(split.files)
    if count == 0:
        raise TlkitError(f"{name} has no images to decode")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"{name}-{size}.u8"
    shape = (count, size, size, 3)

    # A fresh file, not an overwrite: an earlier DecodedSplit may still map the old
    # one, and truncating a mapped file under it would crash its next read (SIGBUS).
    _remove_quietly(path)
    pixels = np.memmap(path, dtype=np.uint8, mode="w+", shape=shape)
    failures = _decode_into(pixels, split.files, size, workers, progress)
    bad = [(split.files[i], reason) for i, reason in sorted(failures.items())]

    if bad and (not skip_bad_images or len(bad) == count):
        del pixels
        _remove_quietly(path)  # a half-filled cache is of no use to anyone
        raise TlkitError(bad_images_message(bad, count, name, skip_bad_images))

    good = [i for i in range(count) if i not in failures]
    if bad:
        _compact_rows(pixels, good)
    pixels.flush()
    del pixels  # unmap before truncating: shrinking a mapped file is unsafe
    good_shape = (len(good), size, size, 3)
    if bad:
        _truncate_quietly(path, math.prod(good_shape))
    return DecodedSplit(
        pixels=np.memmap(path, dtype=np.uint8, mode="r", shape=good_shape),
        labels=np.ascontiguousarray(split.labels[good], dtype=np.int32),
        files=[split.files[i] for i in good],
        bad=bad,
    )


def _decode_into(
    pixels: np.ndarray,
    files: list[Path],
    size: int,
    workers: int | None,
    progress: Callable[[int], None] | None,
) -> dict[int, str]:
    """Decode ``files[i]`` into ``pixels[i]`` in threads; return {index: reason} of failures."""

    def decode_one(index: int) -> None:
        # Each task writes its own row, so no locking is needed and no decoded
        # image waits in memory for the others.
        pixels[index] = load_image(files[index], size)

    failures: dict[int, str] = {}
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        futures = {pool.submit(decode_one, i): i for i in range(len(files))}
        for future in as_completed(futures):
            try:
                future.result()
            except BadImageError as exc:
                failures[futures[future]] = exc.reason
            if progress is not None:
                progress(1)
    return failures


def _remove_quietly(path: Path) -> None:
    """Delete ``path`` if possible (Windows refuses while a mapping is still open)."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def _truncate_quietly(path: Path, length: int) -> None:
    """Shrink ``path`` to ``length`` bytes; only disk space is lost if that is refused."""
    try:
        os.truncate(path, length)
    except OSError:
        pass


def _compact_rows(pixels: np.ndarray, keep: list[int]) -> None:
    """Move rows ``keep`` (ascending) to the front of ``pixels``, in place."""
    # keep[j] >= j always, so copying front to back never overwrites a row still needed.
    for target, source in enumerate(keep):
        if target != source:
            pixels[target] = pixels[source]


def none_readable_message(skipped: Sequence[Mapping[str, str]], total: int, what: str, consequence: str) -> str:
    """``none of the N <what> could be read; <consequence>:`` and, one per line, which file and why
    (the first few, then "… and N more"): for a command that found no readable image at all.

    ``skipped`` holds ``{"path": ..., "reason": ...}`` records (what :func:`tlkit.inference.prediction.decoded_batches`
    collects).
    """
    first = f"none of the {total} {what} could be read; {consequence}:"
    return _listing(first, [(item["path"], item["reason"]) for item in skipped], _MAX_LISTED_NONE)


def bad_images_message(bad: list[tuple[Path, str]], total: int, name: str, skipping: bool) -> str:
    """The TlkitError text listing unreadable images (at most 20 of them)."""
    if skipping:  # skipping was asked for, but nothing would be left
        first = f"all {total} image(s) in {name} could not be read; fix or replace them:"
    else:
        first = (
            f"{len(bad)} image(s) in {name} could not be read; fix or remove them, "
            "or pass --skip-bad-images to skip them:"
        )
    return _listing(first, bad, _MAX_LISTED_BAD)


def _listing(first: str, bad: Sequence[tuple[str | Path, str]], limit: int) -> str:
    """``first``, then ``  path: reason`` for the first ``limit`` files and "… and N more"."""
    lines = [first] + [f"  {path}: {reason}" for path, reason in bad[:limit]]
    if len(bad) > limit:
        lines.append(f"  … and {len(bad) - limit} more")
    return "\n".join(lines)
