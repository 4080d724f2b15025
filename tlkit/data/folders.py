"""Folder datasets: the one walker of image folders, class discovery and the train/val split.

The expected layout is the one Keras' ``image_dataset_from_directory`` uses::

    <data>/train/<class>/<image>      required
    <data>/val/<class>/<image>        optional; without it a stratified split of train/ is used

:func:`scan_dataset` finds classes and image files (cheap: no image is opened);
:func:`image_files` lists the images under any folder the same way (``tlkit predict``
uses it).  Sub-folders are searched, hidden files and folders are skipped, and each
real folder is visited once, so a symlink loop ends.  Nothing here ever writes into
the data folder.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tlkit.errors import TlkitError

__all__ = [
    "IMAGE_EXTENSIONS",
    "DatasetScan",
    "Split",
    "held_out",
    "image_files",
    "scan_dataset",
]

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
"""File extensions (lower case, with the dot) treated as images; compared case-insensitively."""

_LAYOUT = "<data>/train/<class>/<image> (and optionally <data>/val/<class>/<image>)"


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
class _Skipped:
    """Entries a walk passed over: hidden ones (name starts with '.') and non-images."""

    hidden: int = 0
    other: int = 0


@dataclass
class _FolderScan(_Skipped):
    """Images per class found under one split folder (train/ or val/)."""

    files_by_class: dict[str, list[Path]] = field(default_factory=dict)


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
    scan = _FolderScan()
    for entry in _sorted_entries(split_dir):
        if entry.name.startswith("."):
            scan.hidden += 1
        elif entry.is_dir():
            scan.files_by_class[entry.name] = list(_walk(entry, scan, seen={entry.resolve()}))
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


def image_files(folder: str | Path) -> Iterator[Path]:
    """The image files under ``folder``, lazily: recursively, sorted, hidden files and folders
    skipped, each real folder visited once (a symlink loop ends).

    Raises:
        TlkitError: a folder cannot be read.
    """
    folder = Path(folder)
    yield from _walk(folder, _Skipped(), seen={folder.resolve()})


def _walk(folder: Path, skipped: _Skipped, seen: set[Path]) -> Iterator[Path]:
    """The images under ``folder`` (recursively, sorted), counting what is skipped into ``skipped``.

    Sub-folders are searched like Keras' ``image_dataset_from_directory`` does, so
    a class may be organised in sub-folders. ``seen`` holds resolved folders
    already visited, which stops symlink loops.
    """
    for entry in _sorted_entries(folder):
        if entry.name.startswith("."):
            skipped.hidden += 1
        elif entry.is_dir():
            real = entry.resolve()
            if real not in seen:
                seen.add(real)
                yield from _walk(entry, skipped, seen)
        elif entry.suffix.lower() in IMAGE_EXTENSIONS:
            yield entry
        else:
            skipped.other += 1


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
