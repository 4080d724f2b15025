"""Write the benchmark dataset: a class-balanced Fashion-MNIST subset as PNGs.

``--n`` training images (``n/10`` per class) plus 25 % of that as validation
images, drawn from the Fashion-MNIST *training* split (Debian package
``dataset-fashion-mnist``) and written in tlkit's folder layout::

    <out>/train/<class_name>/<index>.png
    <out>/val/<class_name>/<index>.png

The same ``--n`` and ``--seed`` always give the same files.  The reading and
writing code is the demo data script's (``examples/make_demo_data.py``).

Usage::

    python bench/make_data.py --out bench/.data/fmnist-1000            # 1000 + 250 images
    python bench/make_data.py --out bench/.data/fmnist-5000 --n 5000   # 5000 + 1250 images
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

_EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "make_demo_data.py"


def _demo_data_module():
    """``examples/make_demo_data.py`` as a module (``examples/`` is not a package)."""
    spec = importlib.util.spec_from_file_location("_tlkit_make_demo_data", _EXAMPLES)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


demo = _demo_data_module()
NUM_CLASSES = len(demo.CLASS_NAMES)


def split_sizes(n: int) -> tuple[int, int]:
    """(train, val) images per class for ``n`` training images: n/10 and 25 % of that."""
    if n < NUM_CLASSES or n % NUM_CLASSES:
        raise ValueError(f"--n must be a positive multiple of {NUM_CLASSES}, got {n}")
    per_train = n // NUM_CLASSES
    per_val = max(1, round(per_train * 0.25))
    return per_train, per_val


def is_complete(out: Path, n: int) -> bool:
    """True when ``out`` already holds exactly this dataset's number of PNGs."""
    per_train, per_val = split_sizes(n)
    for split, per in (("train", per_train), ("val", per_val)):
        for name in demo.CLASS_NAMES:
            folder = out / split / name
            if not folder.is_dir() or len(list(folder.glob("*.png"))) != per:
                return False
    return True


def make_dataset(
    out: Path, n: int = 1000, seed: int = 0, *, source: Path = demo.DEFAULT_SOURCE, force: bool = False
) -> Path:
    """Write the dataset into ``out`` (skipped when it is already there) and return ``out``."""
    out = Path(out)
    if not force and is_complete(out, n):
        return out
    per_train, per_val = split_sizes(n)
    images = demo.read_idx(source / demo.IMAGES_FILE, magic=0x00000803)
    labels = demo.read_idx(source / demo.LABELS_FILE, magic=0x00000801)
    subset = demo.choose_subset(labels, per_train, per_val, seed)
    demo.prepare_output(out, force=True)
    demo.write_pngs(images, subset, out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument(
        "--n", type=int, default=1000, help="training images, a multiple of 10 (default %(default)s); +25%% validation"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed of the subset")
    parser.add_argument(
        "--source",
        type=Path,
        default=demo.DEFAULT_SOURCE,
        help="folder with the Fashion-MNIST IDX files (default %(default)s)",
    )
    parser.add_argument("--force", action="store_true", help="rewrite even when the dataset is already there")
    args = parser.parse_args(argv)
    try:
        per_train, per_val = split_sizes(args.n)
    except ValueError as exc:
        parser.error(str(exc))
    make_dataset(args.out, args.n, args.seed, source=args.source, force=args.force)
    print(f"{args.out}: {per_train * NUM_CLASSES} train + {per_val * NUM_CLASSES} val images, {NUM_CLASSES} classes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
