"""Write a small, class-balanced Fashion-MNIST subset as PNG files in tlkit's folder layout.

The subset is drawn from the Fashion-MNIST *training* split (Debian package
``dataset-fashion-mnist``) and written as::

    <out>/train/<class_name>/<index>.png
    <out>/val/<class_name>/<index>.png

where ``<index>`` is the image's position in the original training split, so every
file can be traced back to its source. The same arguments always give the same files.

Usage::

    python examples/make_demo_data.py --out examples/fashion-mnist-mini

Only the standard library, numpy and Pillow are needed.
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import struct
import sys
from pathlib import Path

import numpy as np
from PIL import Image

CLASS_NAMES = [
    "t-shirt_top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle_boot",
]
DEFAULT_SOURCE = Path("/usr/share/datasets/fashion-mnist")
IMAGES_FILE = "train-images-idx3-ubyte.gz"
LABELS_FILE = "train-labels-idx1-ubyte.gz"


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Read a gzipped IDX file (the MNIST format): big-endian header, then uint8 data."""
    with gzip.open(path, "rb") as f:
        (found,) = struct.unpack(">I", f.read(4))
        if found != magic:
            raise ValueError(f"{path}: not an IDX file of the expected kind (magic {found})")
        ndim = magic & 0xFF  # the magic's last byte is the number of dimensions
        shape = struct.unpack(f">{ndim}I", f.read(4 * ndim))
        data = np.frombuffer(f.read(), dtype=np.uint8)
    return data.reshape(shape)


def choose_subset(labels: np.ndarray, per_train: int, per_val: int, seed: int) -> dict[str, dict[int, np.ndarray]]:
    """Pick per_train + per_val distinct random indices of each class, sorted per split."""
    rng = np.random.default_rng(seed)
    subset: dict[str, dict[int, np.ndarray]] = {"train": {}, "val": {}}
    for label in range(len(CLASS_NAMES)):
        candidates = np.flatnonzero(labels == label)
        if len(candidates) < per_train + per_val:
            raise ValueError(
                f"class {CLASS_NAMES[label]} has only {len(candidates)} images; asked for {per_train + per_val}"
            )
        chosen = rng.choice(candidates, size=per_train + per_val, replace=False)
        subset["train"][label] = np.sort(chosen[:per_train])
        subset["val"][label] = np.sort(chosen[per_train:])
    return subset


def write_pngs(images: np.ndarray, subset: dict[str, dict[int, np.ndarray]], out: Path) -> int:
    """Write the chosen images as 8-bit grayscale PNGs; return how many were written."""
    written = 0
    for split, by_label in subset.items():
        for label, indices in by_label.items():
            folder = out / split / CLASS_NAMES[label]
            folder.mkdir(parents=True, exist_ok=True)
            for index in indices:
                Image.fromarray(images[index]).save(folder / f"{index}.png")
                written += 1
    return written


def prepare_output(out: Path, force: bool) -> None:
    """Refuse a non-empty output folder unless forced; when forced, clear train/ and val/."""
    if out.exists() and any(out.iterdir()):
        if not force:
            raise SystemExit(
                f"error: {out} exists and is not empty; pass --force to regenerate its train/ and val/ folders"
            )
        # Only the folders this script writes are removed: a LICENSE or README
        # kept next to them survives regeneration.
        for split in ("train", "val"):
            shutil.rmtree(out / split, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--source",
        type=Path,
        default=DEFAULT_SOURCE,
        help=f"folder holding {IMAGES_FILE} and {LABELS_FILE} (default: %(default)s)",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--per-class-train", type=int, default=40, help="train images per class")
    parser.add_argument("--per-class-val", type=int, default=10, help="val images per class")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the subset")
    parser.add_argument("--force", action="store_true", help="regenerate train/ and val/ in a non-empty output folder")
    args = parser.parse_args(argv)
    if args.per_class_train < 1 or args.per_class_val < 1:
        parser.error("--per-class-train and --per-class-val must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point: read Fashion-MNIST, pick the subset, write the PNGs."""
    args = parse_args(argv)
    images = read_idx(args.source / IMAGES_FILE, magic=0x00000803)
    labels = read_idx(args.source / LABELS_FILE, magic=0x00000801)
    if len(images) != len(labels):
        raise SystemExit(f"error: {len(images)} images but {len(labels)} labels in {args.source}")
    subset = choose_subset(labels, args.per_class_train, args.per_class_val, args.seed)
    prepare_output(args.out, args.force)
    written = write_pngs(images, subset, args.out)
    print(f"wrote {written} images of {len(CLASS_NAMES)} classes to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
