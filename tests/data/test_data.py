"""Tests for tlkit.data.folders, .decode and .pipelines: scanning, decoding every image format/mode, and the tf.data pipeline."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tlkit.data.decode import BadImageError, DecodedSplit, decode_split, load_image
from tlkit.data.folders import IMAGE_EXTENSIONS, Split, image_files, scan_dataset
from tlkit.data.pipelines import make_dataset
from tlkit.errors import TlkitError

RED = (255, 0, 0)
BLUE = (0, 0, 255)
WHITE = (255, 255, 255)


# --------------------------------------------------------------------------- helpers


def write_image(path: Path, color=RED, size=(8, 8), mode="RGB", fmt=None) -> Path:
    """Save a solid-colour image at ``path`` (folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path, format=fmt)
    return path


def make_dataset_dir(root: Path, counts: dict[str, int], split: str = "train") -> Path:
    """``root/<split>/<class>/<i>.png`` with ``counts[class]`` images per class."""
    for name, n in counts.items():
        folder = root / split / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            write_image(folder / f"{i:03d}.png", color=(i * 10 % 256, 0, 0))
    return root


def listing(root: Path) -> list[tuple[str, int, int]]:
    """Every path under ``root`` with its size and modification time."""
    return sorted((str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*"))


def close_to(pixel, expected, tol=6) -> bool:
    return all(abs(int(a) - int(b)) <= tol for a, b in zip(pixel, expected))


# --------------------------------------------------------------------------- layout errors


def test_missing_data_dir(tmp_path):
    with pytest.raises(TlkitError, match=r"does not exist.*train/<class>"):
        scan_dataset(tmp_path / "nope")


def test_missing_train_folder(tmp_path):
    (tmp_path / "val" / "a").mkdir(parents=True)
    with pytest.raises(TlkitError, match=r"no train/ folder.*expected layout"):
        scan_dataset(tmp_path)


def test_no_class_folders(tmp_path):
    write_image(tmp_path / "train" / "stray.png")
    with pytest.raises(TlkitError, match="no class folders"):
        scan_dataset(tmp_path)


def test_empty_class_folder_is_named(tmp_path):
    make_dataset_dir(tmp_path, {"cat": 3})
    (tmp_path / "train" / "dog").mkdir()
    (tmp_path / "train" / "dog" / "notes.txt").write_text("not an image")
    with pytest.raises(TlkitError, match=r"no images: .*train[/\\]dog"):
        scan_dataset(tmp_path)


def test_train_val_class_mismatch_names_the_difference(tmp_path):
    make_dataset_dir(tmp_path, {"cat": 2, "dog": 2, "fox": 2})
    make_dataset_dir(tmp_path, {"cat": 1, "eel": 1}, split="val")
    with pytest.raises(TlkitError) as info:
        scan_dataset(tmp_path)
    assert "val/ lacks classes: dog, fox" in str(info.value)
    assert "val/ has extra classes: eel" in str(info.value)


@pytest.mark.parametrize("val_split", [0, 1, -0.1, 1.5, float("nan")])
def test_bad_val_split(tmp_path, val_split):
    make_dataset_dir(tmp_path, {"cat": 4})
    with pytest.raises(TlkitError, match="val_split"):
        scan_dataset(tmp_path, val_split=val_split)


def test_class_with_one_image_cannot_be_split(tmp_path):
    make_dataset_dir(tmp_path, {"cat": 4, "dog": 1})
    with pytest.raises(TlkitError, match=r"fewer than 2 images: dog.*val/ folder"):
        scan_dataset(tmp_path)


# --------------------------------------------------------------------------- scanning


def test_val_folder_is_used(tmp_path):
    make_dataset_dir(tmp_path, {"cat": 3, "dog": 2})
    make_dataset_dir(tmp_path, {"cat": 1, "dog": 2}, split="val")
    scan = scan_dataset(tmp_path)
    assert scan.val_source == "val/ folder"
    assert scan.class_counts("train") == {"cat": 3, "dog": 2}
    assert scan.class_counts("val") == {"cat": 1, "dog": 2}
    assert all(f.parts[-3] == "val" for f in scan.val.files)


def test_classes_sorted_labels_match_folders(tmp_path):
    make_dataset_dir(tmp_path, {"zebra": 2, "Ant": 2, "mole": 3}, split="val")
    make_dataset_dir(tmp_path, {"zebra": 2, "Ant": 2, "mole": 3})
    scan = scan_dataset(tmp_path)
    assert scan.classes == ["Ant", "mole", "zebra"]
    for split in (scan.train, scan.val):
        assert split.labels.dtype == np.int32
        assert len(split.labels) == len(split.files)
        assert [scan.classes[i] for i in split.labels] == [f.parent.name for f in split.files]
        assert split.files == sorted(split.files)  # class order, then file order


def test_stratified_split_is_deterministic(tmp_path):
    make_dataset_dir(tmp_path, {"a": 10, "b": 5, "c": 2})
    scan = scan_dataset(tmp_path, val_split=0.2, seed=0)
    assert scan.class_counts("val") == {"a": 2, "b": 1, "c": 1}
    assert scan.class_counts("train") == {"a": 8, "b": 4, "c": 1}
    assert scan.val_source == "20% stratified split of train/ (seed 0)"
    all_files = sorted((tmp_path / "train").rglob("*.png"))
    assert sorted(scan.train.files + scan.val.files) == all_files
    assert not set(scan.train.files) & set(scan.val.files)

    again = scan_dataset(tmp_path, val_split=0.2, seed=0)
    assert again.val.files == scan.val.files and again.train.files == scan.train.files
    others = {tuple(scan_dataset(tmp_path, seed=s).val.files) for s in range(1, 6)}
    assert any(files != tuple(scan.val.files) for files in others)


def test_hidden_and_non_image_files_are_skipped_and_counted(tmp_path):
    make_dataset_dir(tmp_path, {"cat": 2, "dog": 2})
    train = tmp_path / "train"
    (train / "cat" / ".DS_Store").write_bytes(b"\0")
    write_image(train / ".cache" / "x.png")  # a hidden folder counts once
    write_image(train / "cat" / "._cat.png")  # macOS resource fork: hidden, not an image
    (train / "dog" / "notes.txt").write_text("hi")
    (train / "README.md").write_text("stray file next to the class folders")
    write_image(train / "dog" / "UPPER.JPG", fmt="JPEG")  # extension case is ignored
    write_image(train / "dog" / "nested" / "deep.png")  # sub-folders are searched
    scan = scan_dataset(tmp_path)
    assert scan.classes == ["cat", "dog"]
    assert scan.skipped_hidden == 3
    assert scan.skipped_other == 2
    total = sum(scan.class_counts("train").values()) + sum(scan.class_counts("val").values())
    assert total == 2 + 4


def symlink_or_skip(link: Path, target: Path) -> None:
    try:
        link.symlink_to(target, target_is_directory=True)
    except (OSError, NotImplementedError):
        pytest.skip("symbolic links cannot be made here")


def test_a_symlink_loop_ends_and_each_image_is_found_once(tmp_path):
    make_dataset_dir(tmp_path, {"cat": 2, "dog": 2})
    train = tmp_path / "train"
    write_image(train / "cat" / "sub" / "deep.png")
    symlink_or_skip(train / "cat" / "sub" / "up", train / "cat")  # cat/sub/up/sub/up/... forever
    scan = scan_dataset(tmp_path, val_split=0.5)
    expected = ["cat/000.png", "cat/001.png", "cat/sub/deep.png", "dog/000.png", "dog/001.png"]
    assert sorted(p.relative_to(train).as_posix() for p in [*scan.train.files, *scan.val.files]) == expected
    assert [p.relative_to(train).as_posix() for p in image_files(train)] == expected  # lazily, sorted


def test_an_unreadable_folder_is_named(tmp_path):
    with pytest.raises(TlkitError, match="cannot read folder .*nowhere"):
        list(image_files(tmp_path / "nowhere"))


def test_image_extensions():
    assert {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"} == IMAGE_EXTENSIONS


def test_nothing_is_written_into_the_data_folder(tmp_path):
    data = make_dataset_dir(tmp_path / "data", {"cat": 3, "dog": 3})
    (data / "train" / "cat" / "broken.jpg").write_bytes(b"garbage")
    before = listing(data)
    scan = scan_dataset(data)
    decoded = decode_split(scan.train, 8, tmp_path / "work", name="train", skip_bad_images=True)
    assert len(decoded.bad) == 1
    assert listing(data) == before


# --------------------------------------------------------------------------- load_image


@pytest.mark.parametrize(
    "ext,fmt,tol",
    [
        ("jpg", "JPEG", 8),
        ("png", "PNG", 0),
        ("bmp", "BMP", 0),
        ("gif", "GIF", 0),
        ("webp", "WEBP", 8),
        ("tif", "TIFF", 0),
    ],
)
def test_every_format_loads(tmp_path, ext, fmt, tol):
    color = (200, 40, 80)
    path = write_image(tmp_path / f"img.{ext}", color=color, size=(12, 10), fmt=fmt)
    out = load_image(path, 6)
    assert out.shape == (6, 6, 3) and out.dtype == np.uint8
    assert close_to(out[3, 3], color, tol)


def save_array(path: Path, array: np.ndarray, **save_args) -> Path:
    Image.fromarray(array).save(path, **save_args)
    return path


def paletted(tmp_path: Path, transparent: bool) -> Path:
    img = Image.new("P", (4, 4), 1)
    img.putpalette([0, 0, 0, 0, 128, 0] + [0] * 762)  # index 0 black, 1 green
    img.paste(0, (0, 0, 2, 4))  # left half index 0
    path = tmp_path / "p.png"
    img.save(path, transparency=0) if transparent else img.save(path)
    return path


def two_halves(mode: str, left, right) -> Image.Image:
    img = Image.new(mode, (4, 4), right)
    img.paste(left, (0, 0, 2, 4))
    return img


@pytest.mark.parametrize(
    "name,make,left,right",
    [
        ("L", lambda d: write_image(d / "l.png", 200, mode="L"), (200,) * 3, (200,) * 3),
        ("1", lambda d: write_image(d / "1.png", 1, mode="1"), WHITE, WHITE),
        ("P", lambda d: paletted(d, transparent=False), (0, 0, 0), (0, 128, 0)),
        ("P+transparency", lambda d: paletted(d, transparent=True), WHITE, (0, 128, 0)),
        (
            "RGBA",
            lambda d: two_halves("RGBA", (0, 0, 0, 0), (0, 0, 255, 255)).save(d / "a.png") or d / "a.png",
            WHITE,
            BLUE,
        ),
        (
            "RGBA half-transparent",
            lambda d: write_image(d / "h.png", (0, 0, 0, 128), mode="RGBA"),
            (127,) * 3,
            (127,) * 3,
        ),
        (
            "LA",
            lambda d: two_halves("LA", (0, 0), (50, 255)).save(d / "la.png") or d / "la.png",
            WHITE,
            (50,) * 3,
        ),
        ("CMYK jpeg", lambda d: write_image(d / "c.jpg", (0, 255, 255, 0), mode="CMYK"), RED, RED),
        ("CMYK tiff", lambda d: write_image(d / "c.tif", (0, 0, 0, 0), mode="CMYK"), WHITE, WHITE),
        (
            # 16-bit: 65535 -> 255, 32768 -> 128; clipping would make the right half 255.
            "I;16 png",
            lambda d: save_array(d / "g16.png", np.array([[65535] * 2 + [32768] * 2] * 4, np.uint16)),
            WHITE,
            (128,) * 3,
        ),
        (
            "I;16B tiff",
            lambda d: Image.frombytes("I;16B", (4, 4), np.array([[65535] * 2 + [512] * 2] * 4, ">u2").tobytes()).save(
                d / "b.tif"
            )
            or d / "b.tif",
            WHITE,
            (2,) * 3,
        ),
        (
            "I 32-bit holding 16-bit data",
            lambda d: save_array(d / "i.tif", np.array([[65535] * 2 + [1024] * 2] * 4, np.int32)),
            WHITE,
            (4,) * 3,
        ),
        (
            "I 32-bit holding 8-bit data",
            lambda d: save_array(d / "i8.tif", np.array([[255] * 2 + [100] * 2] * 4, np.int32)),
            WHITE,
            (100,) * 3,
        ),
        (
            "F 0..1",
            lambda d: save_array(d / "f.tif", np.array([[1.0] * 2 + [0.5] * 2] * 4, np.float32)),
            WHITE,
            (127,) * 3,
        ),
    ],
)
def test_every_mode_becomes_rgb(tmp_path, name, make, left, right):
    path = make(tmp_path)
    out = load_image(path, 4)
    assert out.shape == (4, 4, 3) and out.dtype == np.uint8
    tol = 8 if path.suffix == ".jpg" else 1
    assert close_to(out[1, 0], left, tol), (name, out[1, 0])
    assert close_to(out[1, 3], right, tol), (name, out[1, 3])


def test_animated_gif_gives_first_frame(tmp_path):
    frames = [Image.new("RGB", (6, 6), c) for c in (RED, BLUE, (0, 255, 0))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert Image.open(path).n_frames == 3
    assert tuple(load_image(path, 6)[2, 2]) == RED


def test_exif_orientation_is_applied(tmp_path):
    # Stored 40 wide x 20 tall with a red top-left quadrant. Orientation 6 means
    # "rotate 90 degrees clockwise to display": red then sits top-right.
    img = Image.new("RGB", (40, 20), BLUE)
    img.paste(RED, (0, 0, 20, 10))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    img.save(path, exif=exif, quality=95)
    out = load_image(path, 16)
    assert close_to(out[3, 12], RED, 30)
    assert close_to(out[3, 3], BLUE, 30)
    assert close_to(out[12, 12], BLUE, 30)


def test_resize_squashes_without_cropping(tmp_path):
    img = Image.new("RGB", (40, 10), BLUE)
    img.paste(RED, (0, 0, 10, 10))  # left quarter red
    out = load_image(save_array(tmp_path / "wide.png", np.asarray(img)), 8)
    assert tuple(out[4, 7]) == BLUE
    # A centre crop would have lost the red quarter; squashing keeps it in the left quarter.
    assert (out[:, 0] == RED).all() and (out[:, 1, 0] > 128).all() and (out[:, 2:, 0] < 128).all()


def truncated_copy(tmp_path: Path, fmt: str) -> Path:
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    full = tmp_path / f"full.{fmt.lower()}"
    Image.fromarray(noise).save(full, format=fmt)
    data = full.read_bytes()
    cut = tmp_path / f"cut.{fmt.lower()}"
    cut.write_bytes(data[: len(data) // 2])
    return cut


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_image_is_bad(tmp_path, fmt):
    with pytest.raises(BadImageError) as info:
        load_image(truncated_copy(tmp_path, fmt), 8)
    assert info.value.path.name.startswith("cut.") and info.value.reason


def test_corrupt_and_empty_files_are_bad(tmp_path):
    (tmp_path / "junk.jpg").write_bytes(b"this is not a jpeg at all")
    (tmp_path / "empty.png").write_bytes(b"")
    for name in ("junk.jpg", "empty.png", "missing.png"):
        with pytest.raises(BadImageError, match=name):
            load_image(tmp_path / name, 8)


# --------------------------------------------------------------------------- decode_split


def colour_split(tmp_path: Path, n: int) -> Split:
    """n PNGs whose red channel encodes their index (10 * i)."""
    files = [write_image(tmp_path / "imgs" / f"{i:02d}.png", (10 * i, 0, 0)) for i in range(n)]
    return Split(files=files, labels=np.arange(n, dtype=np.int32) % 3)


def test_decode_split_writes_a_memmap(tmp_path):
    split = colour_split(tmp_path, 7)
    done: list[int] = []
    decoded = decode_split(split, 5, tmp_path / "work", name="train", workers=2, progress=done.append)
    assert isinstance(decoded.pixels, np.memmap)
    assert Path(decoded.pixels.filename) == tmp_path / "work" / "train-5.u8"
    assert decoded.pixels.shape == (7, 5, 5, 3) and decoded.pixels.dtype == np.uint8
    assert list(decoded.pixels[:, 0, 0, 0]) == [10 * i for i in range(7)]
    assert decoded.labels.tolist() == split.labels.tolist() and decoded.bad == []
    assert sum(done) == 7


def add_bad_files(split: Split, tmp_path: Path, positions: list[int]) -> Split:
    """Insert corrupt files into ``split`` at the given positions (label 9)."""
    files, labels = list(split.files), split.labels.tolist()
    (tmp_path / "imgs").mkdir(exist_ok=True)
    for k, pos in enumerate(positions):
        bad = tmp_path / "imgs" / f"bad{k:02d}.jpg"
        bad.write_bytes(b"\xff\xd8\xff not really")
        files.insert(pos, bad)
        labels.insert(pos, 9)
    return Split(files=files, labels=np.asarray(labels, dtype=np.int32))


def test_bad_images_fail_with_a_list_and_a_hint(tmp_path):
    split = add_bad_files(colour_split(tmp_path, 3), tmp_path, [0])
    split.files.append(truncated_copy(tmp_path, "PNG"))
    split.labels = np.append(split.labels, 9).astype(np.int32)
    with pytest.raises(TlkitError) as info:
        decode_split(split, 4, tmp_path / "work", name="train")
    message = str(info.value)
    first, *rest = message.splitlines()
    assert first == (
        "2 image(s) in train could not be read; fix or remove them, or pass --skip-bad-images to skip them:"
    )
    assert len(rest) == 2 and "bad00.jpg" in rest[0] and "cut.png" in rest[1]
    assert not (tmp_path / "work" / "train-4.u8").exists()


def test_long_bad_list_is_cut_at_20(tmp_path):
    split = add_bad_files(colour_split(tmp_path, 1), tmp_path, list(range(23)))
    with pytest.raises(TlkitError) as info:
        decode_split(split, 4, tmp_path / "work", name="val")
    lines = str(info.value).splitlines()
    assert lines[0].startswith("23 image(s) in val could not be read")
    assert len(lines) == 22 and lines[-1].strip() == "… and 3 more"


def test_skip_bad_images_drops_and_reports_them(tmp_path):
    split = add_bad_files(colour_split(tmp_path, 5), tmp_path, [0, 3, 7])
    decoded = decode_split(split, 4, tmp_path / "work", name="train", skip_bad_images=True)
    assert [p.name for p, _ in decoded.bad] == ["bad00.jpg", "bad01.jpg", "bad02.jpg"]
    assert all(reason for _, reason in decoded.bad)
    assert decoded.pixels.shape == (5, 4, 4, 3)
    assert list(decoded.pixels[:, 1, 1, 0]) == [0, 10, 20, 30, 40]  # compacted in order
    assert decoded.labels.tolist() == [0, 1, 2, 0, 1]
    assert [f.name for f in decoded.files] == [f"{i:02d}.png" for i in range(5)]
    assert (tmp_path / "work" / "train-4.u8").stat().st_size == 5 * 4 * 4 * 3


def test_all_bad_images_is_an_error_even_when_skipping(tmp_path):
    split = add_bad_files(Split(files=[], labels=np.zeros(0, np.int32)), tmp_path, [0, 1])
    with pytest.raises(TlkitError, match="all 2 image"):
        decode_split(split, 4, tmp_path / "work", name="train", skip_bad_images=True)


# --------------------------------------------------------------------------- make_dataset


def index_coded(n: int, size: int = 2) -> DecodedSplit:
    """A fake decoded split whose image i is filled with the value i."""
    pixels = np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None], (n, size, size, 3))
    return DecodedSplit(
        pixels=np.ascontiguousarray(pixels),
        labels=(np.arange(n) % 3).astype(np.int32),
        files=[Path(f"{i}.png") for i in range(n)],
        bad=[],
    )


def epoch_orders(dataset, epochs: int) -> list[list[int]]:
    return [[int(v) for x, _ in dataset for v in x.numpy()[:, 0, 0, 0]] for _ in range(epochs)]


def test_make_dataset_batches_and_one_hot():
    decoded = index_coded(10)
    dataset = make_dataset(decoded, batch_size=4, num_classes=3, shuffle=False, seed=0)
    assert int(dataset.cardinality()) == 3
    batches = list(dataset)
    assert [x.shape[0] for x, _ in batches] == [4, 4, 2]  # last partial batch kept
    x, y = batches[0]
    assert x.dtype.name == "float32" and tuple(x.shape) == (4, 2, 2, 3)
    assert y.dtype.name == "float32" and tuple(y.shape) == (4, 3)
    np.testing.assert_array_equal(y.numpy(), np.eye(3, dtype=np.float32)[[0, 1, 2, 0]])
    assert epoch_orders(dataset, 1) == [list(range(10))]


def test_make_dataset_shuffle_is_seeded_and_differs_per_epoch():
    decoded = index_coded(12)
    orders = epoch_orders(make_dataset(decoded, batch_size=5, num_classes=3, shuffle=True, seed=7), 3)
    again = epoch_orders(make_dataset(decoded, batch_size=5, num_classes=3, shuffle=True, seed=7), 3)
    assert orders == again
    assert orders[0] != orders[1] != orders[2]
    assert all(sorted(o) == list(range(12)) for o in orders)
    expected = np.random.default_rng(7 + 1).permutation(12).tolist()
    assert orders[1] == expected
    other = epoch_orders(make_dataset(decoded, batch_size=5, num_classes=3, shuffle=True, seed=8), 1)
    assert other[0] != orders[0]


# --------------------------------------------------------------------------- class-weight files


def test_a_class_weight_file_is_read_by_one_reader_with_one_set_of_messages(tmp_path):
    import json

    from tlkit.config.resolve import resolve_config
    from tlkit.data.imbalance import class_weights, read_class_weights

    path = tmp_path / "w.json"
    path.write_text(json.dumps({"b": 3, "a": 0.5}))
    assert read_class_weights(path) == {"b": 3.0, "a": 0.5}
    assert class_weights(str(path), np.array([0, 1, 2]), ["a", "b", "c"]) == {0: 0.5, 1: 3.0, 2: 1.0}
    for text, message in [
        ("[1, 2]", "must hold an object {class name: weight}"),
        ("{", "is not readable JSON"),
        ('{"a": -1}', "weight of 'a' must be a number >= 0"),
        ('{"a": true}', "weight of 'a' must be a number >= 0"),
    ]:
        path.write_text(text)
        with pytest.raises(TlkitError, match=re.escape(message)):
            read_class_weights(path)
        with pytest.raises(TlkitError, match=re.escape(message)):  # before anything is scanned
            resolve_config(data=str(tmp_path), output=str(tmp_path / "runs"), class_weight=str(path))
    path.write_text('{"c": 1}')
    with pytest.raises(TlkitError, match="names classes that are not in the data: c"):
        read_class_weights(path, ["a", "b"])
    missing = str(tmp_path / "none.json")
    with pytest.raises(TlkitError, match="does not exist; pass an existing .json file"):
        class_weights(missing, np.array([0, 1]), ["a", "b"])
