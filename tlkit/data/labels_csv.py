"""Datasets beyond class folders: a CSV of labels (``--labels FILE.csv``), single- or multi-label.

The CSV has a header row and one row per image::

    path,label,split            single-label (--labels)
    img/0001.jpg,cat,train
    img/0002.jpg,dog,val

    path,labels,split           multi-label (--labels --multi-label); labels separated by "|"
    img/0001.jpg,cat|outdoor,train
    img/0002.jpg,,val           no label at all: an image where every label is absent

``path`` is relative to the data folder (``--data``); absolute paths, paths that
leave the data folder (``..``), missing files and duplicate rows are refused,
each with the CSV line named.  ``split`` is optional: without it, validation
images are held out deterministically — ``--val-split`` of each class
(stratified, as for class folders) for single-label data, ``--val-split`` of
all rows for multi-label data — seeded by ``--seed``, so the same CSV, fraction
and seed always give the same split (all three are in the run's config.toml).
Other columns are ignored.

:func:`scan_for_config` is what training, evaluation and the report call: it
reads the CSV when the configuration names one, and the class folders otherwise.
Nothing here opens an image or imports TensorFlow.
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tlkit.data import folders as datamod
from tlkit.data.folders import DatasetScan, Split, held_out
from tlkit.errors import TlkitError

__all__ = [
    "SPLIT_VALUES",
    "LabelRow",
    "check_label_options",
    "csv_fingerprint",
    "read_labels_csv",
    "scan_for_config",
    "scan_labels_csv",
]

SPLIT_VALUES = ("train", "val")
"""The values the optional ``split`` column may hold (case-insensitive)."""


@dataclass(frozen=True)
class LabelRow:
    """One row of a labels CSV: the image, its label(s), its split (None: no split column), its line."""

    file: Path
    labels: tuple[str, ...]  # exactly one for single-label data; zero or more for multi-label data
    split: str | None
    line: int


def csv_fingerprint(path: str | Path) -> str:
    """SHA-256 of the CSV's bytes: part of what identifies a run's data (``--resume`` checks it)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def check_label_options(config: Any) -> None:
    """The rules that tie ``--labels``, ``--multi-label``, ``--label-sep`` and ``--threshold`` to the
    other options (called by :meth:`tlkit.config.options.TrainConfig.validate`); one-line TlkitErrors."""
    threshold = str(config.threshold).strip()
    if threshold != "tuned":
        try:
            value = float(threshold)
        except ValueError:
            value = math.nan
        if not 0 < value < 1:  # NaN too
            raise TlkitError(f"--threshold must be a number between 0 and 1 (exclusive) or tuned, got {threshold!r}")
    if not config.multi_label:
        if threshold == "tuned" or float(threshold) != 0.5:
            raise TlkitError(
                f"--threshold {threshold} works with --multi-label only (single-label predicts the top class)"
            )
        if config.label_sep != "|":
            raise TlkitError(f"--label-sep {config.label_sep!r} works with --multi-label only")
        return
    if not config.labels:
        raise TlkitError(
            "--multi-label needs --labels FILE.csv with a labels column (class folders give one class per image)"
        )
    if not config.label_sep or config.label_sep in (",", '"') or config.label_sep.isspace():
        raise TlkitError(f'--label-sep must be a visible character other than , and ", got {config.label_sep!r}')
    if config.class_weight != "none":
        raise TlkitError(
            f"--class-weight {config.class_weight} is for single-label data; with --multi-label use --class-weight none"
        )
    if "top_k" in config.metrics:
        raise TlkitError("--metrics top_k is for single-label data; with --multi-label drop top_k from --metrics")


# --------------------------------------------------------------------------- reading


def _where(csv_path: Path, line: int) -> str:
    return f"--labels {csv_path}, line {line}"


def _checked_path(text: str, root: Path, csv_path: Path, line: int) -> tuple[Path, str]:
    """The image file a ``path`` cell names (inside ``root``), and its normalised relative form."""
    where = _where(csv_path, line)
    if not text:
        raise TlkitError(f"{where}: the path is empty; give the image's path relative to --data {root}")
    posix = text.replace("\\", "/")
    if posix.startswith("/") or os.path.isabs(text) or (len(posix) > 1 and posix[1] == ":"):
        raise TlkitError(f"{where}: {text!r} is an absolute path; paths must be relative to --data {root}")
    norm = os.path.normpath(posix).replace("\\", "/")
    if norm == ".." or norm.startswith("../"):
        raise TlkitError(f"{where}: {text!r} leaves the data folder {root}; paths must stay inside --data")
    file = root / norm
    if not file.is_file():
        raise TlkitError(f"{where}: no such image {file}; fix the path (relative to --data {root}) or drop the row")
    return file, norm


def read_labels_csv(
    csv_path: str | Path, data_root: str | Path, *, multi_label: bool = False, label_sep: str = "|"
) -> tuple[list[LabelRow], list[str]]:
    """Read and check every row of a labels CSV; return ``(rows, ignored_columns)``.

    Raises:
        TlkitError: naming the CSV line and what to do, for a missing file or
            header, a missing column, an empty, absolute, escaping, missing or
            duplicate path, an empty label (single-label), an unknown split.
    """
    csv_path, root = Path(csv_path), Path(data_root)
    if not root.is_dir():
        raise TlkitError(f"--data {root} is not a folder; with --labels it is the folder the CSV's paths start from")
    try:
        with open(csv_path, encoding="utf-8-sig", newline="") as fh:
            lines = list(csv.reader(fh))
    except FileNotFoundError:
        raise TlkitError(f"--labels {csv_path} does not exist; pass a CSV file with a header row path,label") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise TlkitError(f"--labels {csv_path} cannot be read as a UTF-8 CSV ({exc})") from None
    label_column = "labels" if multi_label else "label"
    expected = f"path,{label_column}[,split]"
    if not lines or not any(cell.strip() for cell in lines[0]):
        raise TlkitError(f"--labels {csv_path} is empty; its first line must be the header {expected}")
    header = [cell.strip().lower() for cell in lines[0]]
    if "path" not in header or label_column not in header:
        other = "label" if multi_label else "labels"
        hint = ""
        if other in header:
            hint = (
                " (a labels column holds several labels per image: pass --multi-label)"
                if not multi_label
                else " (with --multi-label the column is named labels)"
            )
        raise TlkitError(
            f"--labels {csv_path}: the header {','.join(lines[0])!r} lacks "
            f"{'path' if 'path' not in header else label_column}; expected {expected}{hint}"
        )
    duplicated = sorted({name for name in header if name and header.count(name) > 1})
    if duplicated:
        raise TlkitError(f"--labels {csv_path}: the header repeats column(s) {', '.join(duplicated)}")
    col_path, col_label = header.index("path"), header.index(label_column)
    col_split = header.index("split") if "split" in header else None
    ignored = [lines[0][i].strip() for i, name in enumerate(header) if name not in ("path", label_column, "split")]

    rows: list[LabelRow] = []
    seen: dict[str, int] = {}
    for number, cells in enumerate(lines[1:], start=2):
        if not any(cell.strip() for cell in cells):
            continue  # blank lines are no rows
        where = _where(csv_path, number)
        if len(cells) < len(header):
            raise TlkitError(f"{where}: {len(cells)} cell(s) for the {len(header)} columns of the header")
        file, key = _checked_path(cells[col_path].strip(), root, csv_path, number)
        if key in seen:
            raise TlkitError(f"{where}: {key} is listed again (first on line {seen[key]}); keep one row per image")
        seen[key] = number
        cell = cells[col_label].strip()
        if multi_label:
            labels = tuple(sorted({part.strip() for part in cell.split(label_sep) if part.strip()}))
        else:
            if not cell:
                raise TlkitError(f"{where}: the label of {key} is empty; give its class or drop the row")
            labels = (cell,)
        split = None
        if col_split is not None:
            split = cells[col_split].strip().lower()
            if not split:
                raise TlkitError(f"{where}: the split of {key} is empty; use train or val")
            if split not in SPLIT_VALUES:
                shown = cells[col_split].strip()
                raise TlkitError(f"{where}: split {shown!r} of {key} is not train or val; use train or val")
        rows.append(LabelRow(file, labels, split, number))
    if not rows:
        raise TlkitError(f"--labels {csv_path} has a header but no rows; add one row per image")
    return rows, ignored


# --------------------------------------------------------------------------- splitting


def scan_labels_csv(
    csv_path: str | Path,
    data_root: str | Path,
    *,
    multi_label: bool = False,
    label_sep: str = "|",
    val_split: float = 0.2,
    seed: int = 0,
):
    """A :class:`tlkit.data.folders.DatasetScan` from a labels CSV (see the module docstring).

    Classes (labels) are sorted.  Single-label data has ``labels`` of shape (N,)
    (class indices); multi-label data has an (N, C) int32 multi-hot matrix.

    Raises:
        TlkitError: a bad row (see :func:`read_labels_csv`), fewer than 2 classes,
            a class with no training image, or data that cannot be split.
    """
    csv_path = Path(csv_path)
    rows, _ = read_labels_csv(csv_path, data_root, multi_label=multi_label, label_sep=label_sep)
    classes = sorted({name for row in rows for name in row.labels})
    noun = "label(s)" if multi_label else "class(es)"
    if len(classes) < 2:
        raise TlkitError(
            f"--labels {csv_path} names {len(classes)} {noun} ({', '.join(classes) or 'none'}); "
            f"a classifier needs 2 or more"
        )
    index = {name: i for i, name in enumerate(classes)}
    has_split = rows[0].split is not None
    if has_split:
        train_rows = [r for r in rows if r.split == "train"]
        val_rows = [r for r in rows if r.split == "val"]
        for name, chosen in (("train", train_rows), ("val", val_rows)):
            if not chosen:
                raise TlkitError(f"--labels {csv_path}: no row has split {name}; mark some rows {name}")
        source = f"split column of {csv_path.name}"
    elif not 0 < val_split < 1:
        raise TlkitError(f"--val-split must be between 0 and 1 (exclusive), got {val_split}; or add a split column")
    elif multi_label:
        train_rows, val_rows = _random_split(rows, val_split, seed, csv_path)
        source = f"{val_split * 100:g}% random split of {csv_path.name} (seed {seed})"
    else:
        train_rows, val_rows = _stratified_split(rows, classes, val_split, seed, csv_path)
        source = f"{val_split * 100:g}% stratified split of {csv_path.name} (seed {seed})"

    in_train = {name for row in train_rows for name in row.labels}
    missing = [name for name in classes if name not in in_train]
    if missing:
        how = "" if has_split else f" after the {val_split * 100:g}% validation hold-out (seed {seed})"
        raise TlkitError(
            f"--labels {csv_path}: {noun} {', '.join(missing)} have no training image{how}; "
            f"add training rows for them{' or a split column' if not has_split else ''}"
        )

    def make_split(chosen: list[LabelRow]):
        if multi_label:
            labels = np.zeros((len(chosen), len(classes)), dtype=np.int32)
            for i, row in enumerate(chosen):
                labels[i, [index[name] for name in row.labels]] = 1
        else:
            labels = np.asarray([index[row.labels[0]] for row in chosen], dtype=np.int32)
        return Split(files=[row.file for row in chosen], labels=labels)

    return DatasetScan(
        root=Path(data_root),
        classes=classes,
        train=make_split(train_rows),
        val=make_split(val_rows),
        val_source=source,
        skipped_hidden=0,
        skipped_other=0,
    )


def _stratified_split(
    rows: list[LabelRow], classes: list[str], val_split: float, seed: int, csv_path: Path
) -> tuple[list[LabelRow], list[LabelRow]]:
    """Hold out ``val_split`` of each class, as :func:`tlkit.data.folders.scan_dataset` does for class folders."""
    by_class = {name: [r for r in rows if r.labels[0] == name] for name in classes}
    too_small = [name for name, chosen in by_class.items() if len(chosen) < 2]
    if too_small:
        raise TlkitError(
            f"--labels {csv_path}: cannot hold out validation images of class(es) with fewer than 2 rows: "
            f"{', '.join(too_small)}; add rows or a split column"
        )

    val_lines: set[int] = set()
    for chosen in by_class.values():
        val_lines.update(chosen[i].line for i in held_out(len(chosen), val_split, seed))
    return [r for r in rows if r.line not in val_lines], [r for r in rows if r.line in val_lines]


def _random_split(
    rows: list[LabelRow], val_split: float, seed: int, csv_path: Path
) -> tuple[list[LabelRow], list[LabelRow]]:
    """Hold out ``val_split`` of all rows (multi-label rows have no single class to stratify by)."""
    if len(rows) < 2:
        raise TlkitError(f"--labels {csv_path}: one row cannot be split into train and val; add rows")

    val_index = held_out(len(rows), val_split, seed)
    return (
        [r for i, r in enumerate(rows) if i not in val_index],
        [r for i, r in enumerate(rows) if i in val_index],
    )


# --------------------------------------------------------------------------- one entry point


def scan_for_config(config: Any):
    """The :class:`tlkit.data.folders.DatasetScan` of a configuration (a ``TrainConfig`` or a run's
    config.toml as a dict): the ``--labels`` CSV when it names one, else the class folders."""
    if isinstance(config, Mapping):
        values = dict(config)
    else:
        values = config.to_dict()
    val_split, seed = float(values.get("val_split", 0.2)), int(values.get("seed", 0))
    if values.get("labels"):
        return scan_labels_csv(
            values["labels"],
            values.get("data", "data"),
            multi_label=bool(values.get("multi_label", False)),
            label_sep=str(values.get("label_sep", "|")),
            val_split=val_split,
            seed=seed,
        )
    return datamod.scan_dataset(values.get("data", "data"), val_split=val_split, seed=seed)
