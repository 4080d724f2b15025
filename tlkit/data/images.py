"""Folder datasets: class discovery, file validation, decoding, a ``tf.data`` pipeline.

The expected layout is the one Keras' ``image_dataset_from_directory`` uses::

    <data>/train/<class>/<image>      required
    <data>/val/<class>/<image>        optional; without it a stratified split of train/ is used

The work happens in three steps, each usable on its own:

1. :func:`scan_dataset` finds classes and image files (cheap: no image is opened).
2. :func:`decode_split` decodes every image once, in parallel, into a uint8
   ``np.memmap`` in a work folder, so a dataset larger than RAM still trains and
   later epochs cost no decoding.
3. :func:`make_dataset` serves batches from that memmap as a ``tf.data.Dataset``.

TensorFlow is imported inside :func:`make_dataset` only: scanning and decoding
(and everything that imports this module, such as ``tlkit list-bases``) stay light.
Nothing here ever writes into the data folder.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from tlkit.errors import TlkitError

if TYPE_CHECKING:  # pragma: no cover - typing only; keeps TensorFlow out of import time
    import tensorflow as tf

__all__ = [
    "IMAGE_EXTENSIONS",
    "BadImageError",
    "DatasetScan",
    "DecodedSplit",
    "Split",
    "decode_split",
    "load_image",
    "make_dataset",
    "scan_dataset",
]

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
"""File extensions (lower case, with the dot) treated as images; compared case-insensitively."""

_LAYOUT = "<data>/train/<class>/<image> (and optionally <data>/val/<class>/<image>)"
_MAX_LISTED_BAD = 20


# --------------------------------------------------------------------------- scanning


@dataclass
class Split:
    """The files of one split and their class indices (``labels[i]`` belongs to ``files[i]``)."""

    files: list[Path]
    labels: np.ndarray  # int32 class indices, same length as files (multi-label: (N, C) multi-hot)

    def __len__(self) -> int:
        return len(self.files)

    def indices_of(self, label: int) -> np.ndarray:
        """Positions of the images of class ``label`` (multi-label: the images that have it)."""
        if self.labels.ndim == 2:
            return np.flatnonzero(self.labels[:, label])
        return np.flatnonzero(self.labels == label)


@dataclass
class DatasetScan:
    """What :func:`scan_dataset` found in a data folder."""

    root: Path
    classes: list[str]  # sorted; a label is an index into this list
    train: Split
    val: Split
    val_source: str  # e.g. "val/ folder" or "20% stratified split of train/ (seed 0)"
    skipped_hidden: int  # hidden files/folders (name starts with '.'), each counted once
    skipped_other: int  # files without an image extension

    def class_counts(self, which: str) -> dict[str, int]:
        """Images per class in the ``"train"`` or ``"val"`` split, in class order."""
        if which not in ("train", "val"):
            raise ValueError(f"which must be 'train' or 'val', not {which!r}")
        split = self.train if which == "train" else self.val
        if split.labels.ndim == 2:  # multi-label: images having each label
            counts = split.labels.sum(axis=0)
        else:
            counts = np.bincount(split.labels, minlength=len(self.classes))
        return {name: int(count) for name, count in zip(self.classes, counts)}


@dataclass
class _FolderScan:
    """Images per class found under one split folder (train/ or val/)."""

    files_by_class: dict[str, list[Path]]
    hidden: int = 0
    other: int = 0


def scan_dataset(data_dir: str | Path, *, val_split: float = 0.2, seed: int = 0) -> DatasetScan:
    """Find the classes and image files of a dataset folder.

    Args:
        data_dir: folder holding ``train/<class>/...`` and optionally ``val/<class>/...``.
        val_split: fraction of each class of train/ held out for validation when there
            is no val/ folder (0 < val_split < 1; ignored when val/ exists).
        seed: seed of the train/val split, so the same seed gives the same split.

    Returns:
        A :class:`DatasetScan`. Classes are sorted alphabetically and a label is the
        class's index; files are sorted, so the result is deterministic.

    Raises:
        TlkitError: the folder is missing or malformed (says what is wrong and the
            expected layout), or a class cannot be split.
    """
    root = Path(data_dir)
    if not root.exists():
        raise TlkitError(f"data folder {root} does not exist; expected layout: {_LAYOUT}")
    if not root.is_dir():
        raise TlkitError(f"{root} is not a folder; expected layout: {_LAYOUT}")
    train_dir = root / "train"
    if not train_dir.is_dir():
        raise TlkitError(f"{root} has no train/ folder; expected layout: {_LAYOUT}")

    train_scan = _scan_split_folder(train_dir)
    classes = sorted(train_scan.files_by_class)
    hidden, other = train_scan.hidden, train_scan.other

    val_dir = root / "val"
    if val_dir.exists():
        if not val_dir.is_dir():
            raise TlkitError(f"{val_dir} is not a folder; expected layout: {_LAYOUT}")
        val_scan = _scan_split_folder(val_dir)
        _check_same_classes(classes, sorted(val_scan.files_by_class))
        train = _split_from_folders(train_scan.files_by_class, classes)
        val = _split_from_folders(val_scan.files_by_class, classes)
        val_source = "val/ folder"
        hidden, other = hidden + val_scan.hidden, other + val_scan.other
    else:
        if not 0 < val_split < 1:  # written this way so NaN is rejected too
            raise TlkitError(f"val_split must be between 0 and 1 (exclusive), got {val_split}; or add a val/ folder")
        train, val = _stratified_split(train_scan.files_by_class, classes, val_split, seed)
        val_source = f"{val_split * 100:g}% stratified split of train/ (seed {seed})"

    return DatasetScan(
        root=root,
        classes=classes,
        train=train,
        val=val,
        val_source=val_source,
        skipped_hidden=hidden,
        skipped_other=other,
    )


def _scan_split_folder(split_dir: Path) -> _FolderScan:
    """Collect the images of every class folder directly under ``split_dir``."""
    scan = _FolderScan(files_by_class={})
    for entry in _sorted_entries(split_dir):
        if entry.name.startswith("."):
            scan.hidden += 1
        elif entry.is_dir():
            files: list[Path] = []
            scan.hidden, scan.other = _collect_images(entry, files, scan.hidden, scan.other, seen={entry.resolve()})
            scan.files_by_class[entry.name] = files
        else:  # a stray file next to the class folders is not part of any class
            scan.other += 1

    if not scan.files_by_class:
        raise TlkitError(f"{split_dir} has no class folders; expected one sub-folder per class: {_LAYOUT}")
    empty = [name for name, files in scan.files_by_class.items() if not files]
    if empty:
        listed = ", ".join(str(split_dir / name) for name in empty)
        raise TlkitError(
            f"class folder(s) with no images: {listed}; add images "
            f"({' '.join(sorted(IMAGE_EXTENSIONS))}) or remove the folder(s)"
        )
    return scan


def _collect_images(folder: Path, out: list[Path], hidden: int, other: int, seen: set[Path]) -> tuple[int, int]:
    """Append the images under ``folder`` (recursively, sorted) to ``out``.

    Sub-folders are searched like Keras' ``image_dataset_from_directory`` does, so
    a class may be organised in sub-folders. ``seen`` holds resolved folders
    already visited, which stops symlink loops. Returns the updated skip counts.
    """
    for entry in _sorted_entries(folder):
        if entry.name.startswith("."):
            hidden += 1
        elif entry.is_dir():
            real = entry.resolve()
            if real not in seen:
                seen.add(real)
                hidden, other = _collect_images(entry, out, hidden, other, seen)
        elif entry.suffix.lower() in IMAGE_EXTENSIONS:
            out.append(entry)
        else:
            other += 1
    return hidden, other


def _sorted_entries(folder: Path) -> list[Path]:
    """The entries of ``folder``, sorted; an unreadable folder is a user error."""
    try:
        return sorted(folder.iterdir())
    except OSError as exc:
        raise TlkitError(f"cannot read folder {folder}: {exc.strerror or exc}") from exc


def _check_same_classes(train_classes: list[str], val_classes: list[str]) -> None:
    """Raise a TlkitError naming the difference when train/ and val/ disagree."""
    missing = sorted(set(train_classes) - set(val_classes))
    extra = sorted(set(val_classes) - set(train_classes))
    if not missing and not extra:
        return
    parts = []
    if missing:
        parts.append(f"val/ lacks classes: {', '.join(missing)}")
    if extra:
        parts.append(f"val/ has extra classes: {', '.join(extra)}")
    raise TlkitError("train/ and val/ must hold the same class folders; " + "; ".join(parts))


def _split_from_folders(files_by_class: dict[str, list[Path]], classes: list[str]) -> Split:
    """A Split holding every file of every class, in class order."""
    files: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        files.extend(files_by_class[name])
        labels.extend([label] * len(files_by_class[name]))
    return Split(files=files, labels=np.asarray(labels, dtype=np.int32))


def _stratified_split(
    files_by_class: dict[str, list[Path]], classes: list[str], val_split: float, seed: int
) -> tuple[Split, Split]:
    """Hold out ``val_split`` of each class (at least one image) for validation."""
    too_small = [name for name in classes if len(files_by_class[name]) < 2]
    if too_small:
        raise TlkitError(
            "cannot split train/ into train and validation: class(es) with fewer than "
            f"2 images: {', '.join(too_small)}; add images or provide a val/ folder"
        )
    train_files: dict[str, list[Path]] = {}
    val_files: dict[str, list[Path]] = {}
    for name in classes:
        files = files_by_class[name]
        val_idx = held_out(len(files), val_split, seed)
        val_files[name] = [f for i, f in enumerate(files) if i in val_idx]
        train_files[name] = [f for i, f in enumerate(files) if i not in val_idx]
    return _split_from_folders(train_files, classes), _split_from_folders(val_files, classes)


def held_out(n: int, val_split: float, seed: int) -> set[int]:
    """Which of ``n`` items (one class's, for a stratified split) go to validation.

    At least one, and at least one left for training.  A fresh generator per call: a class's
    split depends only on its own items and the seed, so adding a class or images elsewhere
    does not reshuffle it.
    """
    n_val = min(n - 1, max(1, round(n * val_split)))
    return set(np.random.default_rng(seed).permutation(n)[:n_val].tolist())


# --------------------------------------------------------------------------- decoding


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
    path = Path(path)
    try:
        with Image.open(path) as img:
            # Let the JPEG decoder downscale by 1/2, 1/4 or 1/8 while decoding (never
            # below `size`): a large photo decodes several times faster, and the
            # bilinear resize below produces the final size anyway.
            img.draft(None, (size, size))
            # Decode now, inside the `with`: a truncated file fails here, not later.
            img.load()
            if img.width == 0 or img.height == 0:
                raise BadImageError(path, "image has zero width or height")
            img = _apply_exif_orientation(img)
            rgb = _to_rgb(img)
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
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."


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
        raise TlkitError(_bad_images_message(bad, count, name, skip_bad_images))

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


def _bad_images_message(bad: list[tuple[Path, str]], total: int, name: str, skipping: bool) -> str:
    """The TlkitError text listing unreadable images (at most 20 of them)."""
    if skipping:  # skipping was asked for, but nothing would be left
        first = f"all {total} image(s) in {name} could not be read; fix or replace them:"
    else:
        first = (
            f"{len(bad)} image(s) in {name} could not be read; fix or remove them, "
            "or pass --skip-bad-images to skip them:"
        )
    lines = [first] + [f"  {path}: {reason}" for path, reason in bad[:_MAX_LISTED_BAD]]
    if len(bad) > _MAX_LISTED_BAD:
        lines.append(f"  … and {len(bad) - _MAX_LISTED_BAD} more")
    return "\n".join(lines)


# --------------------------------------------------------------------------- tf.data


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
    import tensorflow as tf  # here, not at the top: importing tlkit.data.images must stay light

    if batch_size < 1:
        raise TlkitError(f"batch_size must be at least 1, got {batch_size}")
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
        from tlkit.data.mixing import mixed

        dataset = mixed(dataset, mixers, steps=steps, seed=seed, first_pass=first_pass, class_weights=class_weights)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(steps))
    from tlkit.training.distribute import shard_by_data

    return shard_by_data(steady_pipeline(dataset.prefetch(2)))


def steady_pipeline(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """``dataset`` with tf.data's autotuner off: its parallelism and buffers are the ones set here.

    Measured with TensorFlow 2.21 and Keras 3's ``fit`` on this project's pipelines: with the
    autotuner on, an epoch ended only at the autotuner's next wake-up, whose period doubles from
    10 ms (cumulative 1.27 s, 2.55 s, 5.1 s, ...). A 1.2 s head epoch took 1.28 or 2.57 s, at
    random. The maps here are a gather, a cast or a batch mix, and batches are prefetched, so
    tuning had nothing to gain (``bench/head_floor.py``).
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


def _batch_generator(
    decoded: DecodedSplit, batch_size: int, shuffle: bool, seed: int, first_pass: int = 0
) -> Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]]:
    """A generator function that yields one pass of uint8 batches per call.

    ``tf.data`` calls it once per iteration of the dataset (once per epoch in
    ``fit``); the shared counter makes each call use the next permutation.
    """
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
            yield np.asarray(decoded.pixels[index]), decoded.labels[index]

    return batches
