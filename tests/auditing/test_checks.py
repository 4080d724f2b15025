"""The audit's checks on their own: duplicates, near duplicates (real photos), leaks, label issues,
outliers, neighbour search and image statistics.  Embeddings are synthetic; images are real."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tlkit.auditing import duplicates, images, labels
from tlkit.auditing.duplicates import exact_groups, leaks, near_groups, nearest_neighbours
from tlkit.auditing.labels import label_issues, out_of_fold_probabilities, outliers
from tlkit.auditing.result import DuplicateGroup, Leak

# -- helpers ---------------------------------------------------------------------------------


def clusters(per_class: int, classes: int, dim: int, spread: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian class clusters: unit-ish random centres plus isotropic noise."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, dim)) * 3.0
    y = np.repeat(np.arange(classes), per_class)
    x = centres[y] + spread * rng.standard_normal((len(y), dim))
    return x.astype(np.float32), y


def photo(name: str) -> Image.Image:
    """A real photo shipped with scikit-image, as RGB."""
    data = pytest.importorskip("skimage.data")
    pixels = getattr(data, name)()
    return Image.fromarray(pixels).convert("RGB")


def jpeg(image: Image.Image, quality: int = 75) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def shifted(image: Image.Image, dx: int, dy: int) -> Image.Image:
    """Moved by (dx, dy) pixels, the uncovered border repeating the edge."""
    a = np.asarray(image)
    h, w = a.shape[:2]
    padded = np.pad(a, ((max(dy, 0), max(-dy, 0)), (max(dx, 0), max(-dx, 0)), (0, 0)), mode="edge")
    return Image.fromarray(np.ascontiguousarray(padded[max(-dy, 0) : max(-dy, 0) + h, max(-dx, 0) : max(-dx, 0) + w]))


def cropped(image: Image.Image, fraction: float) -> Image.Image:
    w, h = image.size
    dx, dy = round(w * fraction), round(h * fraction)
    return image.crop((dx, dy, w - dx, h - dy))


# -- exact duplicates ---------------------------------------------------------------------------


def test_exact_groups_find_copies_and_cross_class_conflicts():
    paths = ["cat/b.png", "dog/a.png", "cat/a.png", "cat/c.png", "dog/z.png", "dog/y.png"]
    hashes = ["h1", "h1", "h2", "h2", "h3", "h4"]
    label_of = {p: p.split("/")[0] for p in paths}
    groups = exact_groups(paths, hashes, label_of)
    assert [g.paths for g in groups] == [("cat/a.png", "cat/c.png"), ("cat/b.png", "dog/a.png")]
    assert [g.conflict for g in groups] == [False, True]
    assert groups[1].labels == {"cat/b.png": "cat", "dog/a.png": "dog"}
    assert all(g.similarity == 1.0 for g in groups)
    assert exact_groups([], [], {}) == []
    with pytest.raises(ValueError):
        exact_groups(["a"], [], {})


# -- neighbour search ---------------------------------------------------------------------------


def test_nearest_neighbours_match_brute_force_and_never_include_self():
    x, _ = clusters(40, 5, 24, 1.0, seed=1)
    found = nearest_neighbours(x, k=6)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    expected = np.sort(sims, axis=1)[:, ::-1][:, :6]
    np.testing.assert_allclose(found.similarities, expected, atol=1e-5)
    assert not (found.indices == np.arange(len(x))[:, None]).any()
    assert (np.diff(found.similarities, axis=1) <= 1e-6).all()
    assert nearest_neighbours(x[:1], k=6).k == 0
    assert nearest_neighbours(x[:3], k=6).k == 2


def test_top_k_bound_shortcut_agrees_with_a_full_sort():
    rng = np.random.default_rng(3)
    block = rng.standard_normal((7, 5000)).astype(np.float32)
    block[2, 100:200] = 9.0  # ties across several 64-wide column blocks
    idx, vals = duplicates._top_k(block, 10)
    np.testing.assert_allclose(vals, -np.sort(-block, axis=1)[:, :10])
    np.testing.assert_allclose(np.take_along_axis(block, idx, axis=1), vals)


def test_projected_search_recomputes_exact_similarities(monkeypatch):
    rng = np.random.default_rng(2)  # 300-d features of rank 32 plus a little noise, as real ones concentrate
    x = (
        rng.standard_normal((600, 32)) @ rng.standard_normal((32, 300)) + 0.1 * rng.standard_normal((600, 300))
    ).astype(np.float32)
    x[1] = x[0] + 0.01  # a near copy: must stay each other's nearest neighbour
    exact = nearest_neighbours(x, k=5)
    monkeypatch.setattr(duplicates, "_SEARCH_BUDGET", 1.0)
    monkeypatch.setattr(duplicates, "_PROJECTED_DIM", 64)
    projected = nearest_neighbours(x, k=5)
    assert projected.indices[0, 0] == 1 and projected.indices[1, 0] == 0
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    rows = np.arange(len(x))[:, None]
    np.testing.assert_allclose(projected.similarities, (unit[rows] * unit[projected.indices]).sum(-1), atol=1e-5)
    assert (projected.indices[:, 0] == exact.indices[:, 0]).mean() > 0.9


# -- near duplicates on real photos ---------------------------------------------------------------


@pytest.fixture
def photo_set(tmp_path):
    """Originals, their copies (JPEG q=75, 1-px shift, ×0.5 resize, 2 % crop), an exact copy, a
    look-alike (another photo with a nearly equal embedding) and an unreadable file."""
    rng = np.random.default_rng(0)
    chelsea, coffee, astronaut, rocket, camera = (
        photo(n) for n in ("chelsea", "coffee", "astronaut", "rocket", "camera")
    )
    items = [  # path, image or bytes, embedding source
        ("train/cat/chelsea.png", chelsea, "chelsea"),
        ("val/cat/chelsea_q75.jpg", jpeg(chelsea), "chelsea"),
        ("train/cup/coffee.png", coffee, "coffee"),
        ("train/cup/coffee_shift.png", shifted(coffee, 1, 1), "coffee"),
        ("train/person/astronaut.png", astronaut, "astronaut"),
        ("val/person/astronaut_half.png", astronaut.resize((256, 256), Image.Resampling.BILINEAR), "astronaut"),
        ("train/rocket/rocket.png", rocket, "rocket"),
        ("train/rocket/rocket_crop.png", cropped(rocket, 0.02), "rocket"),
        ("train/person/camera.png", camera, "camera"),
        ("train/person/camera_copy.png", None, "camera"),  # byte-identical copy of camera.png
        ("train/person/camera_lookalike.png", photo("moon"), "camera"),  # another photo, same embedding
        ("train/cup/broken.png", b"not an image at all", "coffee"),
    ]
    base = {name: rng.standard_normal(64) for name in ("chelsea", "coffee", "astronaut", "rocket", "camera")}
    paths, files, embeddings = [], [], []
    for rel, content, source in items:
        file = tmp_path / rel
        file.parent.mkdir(parents=True, exist_ok=True)
        if content is None:
            file.write_bytes((tmp_path / "train/person/camera.png").read_bytes())
        elif isinstance(content, bytes):
            file.write_bytes(content)
        else:
            content.save(file)
        paths.append(rel)
        files.append(file)
        embeddings.append(base[source] + 0.05 * rng.standard_normal(64))
    label_of = {p: p.split("/")[1] for p in paths}
    split_of = {p: p.split("/")[0] for p in paths}
    return paths, files, np.array(embeddings, np.float32), label_of, split_of


def test_near_groups_find_real_copies_and_not_other_photos(photo_set):
    paths, files, embeddings, label_of, _ = photo_set
    hashes = [f.name if "camera" not in f.name or "lookalike" in f.name else "camera" for f in files]
    exact = exact_groups(paths, hashes, label_of)
    assert [g.paths for g in exact] == [("train/person/camera.png", "train/person/camera_copy.png")]
    groups = near_groups(paths, embeddings, files, label_of, exact=exact)
    assert [g.paths for g in groups] == [
        ("train/cat/chelsea.png", "val/cat/chelsea_q75.jpg"),
        ("train/cup/coffee.png", "train/cup/coffee_shift.png"),
        ("train/person/astronaut.png", "val/person/astronaut_half.png"),
        ("train/rocket/rocket.png", "train/rocket/rocket_crop.png"),
    ]
    for group in groups:
        assert duplicates.DEFAULT_NEAR_THRESHOLD <= group.similarity <= 1.0
        assert len(group.pairs) == 1 and group.pairs[0][:2] == group.paths
        assert group.labels == {p: label_of[p] for p in group.paths} and not group.conflict


def test_near_groups_drop_exact_copies_lookalikes_and_unreadable_files(photo_set):
    paths, files, embeddings, label_of, _ = photo_set
    # Without the exact groups, the byte-identical copy is a (trivially confirmed) near pair ...
    grouped = {g.paths for g in near_groups(paths, embeddings, files, label_of)}
    assert ("train/person/camera.png", "train/person/camera_copy.png") in grouped
    # ... while the look-alike (embedding as close as a copy's, another photo) and the unreadable
    # file (embedding close to coffee's) never join a group.
    members = {p for g in grouped for p in g}
    assert "train/person/camera_lookalike.png" not in members
    assert "train/cup/broken.png" not in members


def test_near_group_thresholds_are_honoured(photo_set):
    paths, files, embeddings, label_of, _ = photo_set
    assert near_groups(paths, embeddings, files, label_of, threshold=0.99999) == []
    assert near_groups(paths, embeddings, files, label_of, hash_distance=-1) == []
    assert near_groups(paths[:1], embeddings[:1], files[:1], label_of) == []
    with pytest.raises(ValueError):
        near_groups(paths, embeddings[:3], files, label_of)


def test_perceptual_distance_separates_copies_from_other_photos(tmp_path):
    chelsea, coffee = photo("chelsea"), photo("coffee")
    chelsea.save(tmp_path / "a.png")
    jpeg(cropped(shifted(chelsea, 2, 1), 0.02)).save(tmp_path / "b.jpg", quality=75)
    coffee.save(tmp_path / "c.png")
    (tmp_path / "d.png").write_bytes(b"")
    copy = duplicates.perceptual_distance(tmp_path / "a.png", tmp_path / "b.jpg")
    other = duplicates.perceptual_distance(tmp_path / "a.png", tmp_path / "c.png")
    assert copy is not None and other is not None
    assert copy <= duplicates.DEFAULT_HASH_DISTANCE < other
    assert duplicates.perceptual_distance(tmp_path / "a.png", tmp_path / "d.png") is None


@pytest.mark.parametrize("size", [None, 28])
def test_perceptual_distance_confirms_a_one_pixel_top_left_crop(tmp_path, size):
    """A real photo (and a 28-px thumbnail of it, Fashion-MNIST's size) cropped by 1 px at the top
    and left edges: the copy is 1 px smaller, so only a sub-pixel crop aligns the two (whole-pixel
    boxes missed the thumbnail at 36 bits)."""
    original = photo("coffee")
    if size is not None:
        original = original.resize((size, size), Image.Resampling.LANCZOS)
    w, h = original.size
    original.save(tmp_path / "a.png")
    original.crop((1, 1, w, h)).save(tmp_path / "b.png")
    photo("astronaut").resize(original.size, Image.Resampling.LANCZOS).save(tmp_path / "c.png")
    copy = duplicates.perceptual_distance(tmp_path / "a.png", tmp_path / "b.png")
    other = duplicates.perceptual_distance(tmp_path / "a.png", tmp_path / "c.png")
    assert copy is not None and other is not None
    assert copy <= duplicates.DEFAULT_HASH_DISTANCE < other


# -- leaks ------------------------------------------------------------------------------------------


def test_leaks_name_one_train_copy_per_val_image_exact_first():
    splits = {"t1": "train", "t2": "train", "t3": "train", "v1": "val", "v2": "val", "v3": "val", "v4": "val"}
    exact = [
        DuplicateGroup(("t2", "v1")),
        DuplicateGroup(("v3", "v4")),  # val-only copies: not a leak
    ]
    near = [
        DuplicateGroup(
            ("t1", "t3", "v1", "v2"),
            similarity=0.9,
            pairs=(("t1", "v2", 0.93), ("t3", "v2", 0.97), ("t1", "t3", 0.9), ("t1", "v1", 0.95)),
        ),
        DuplicateGroup(("t1", "v4"), similarity=0.91, pairs=()),  # no pair detail: the group's similarity
        DuplicateGroup(("t2", "t3"), similarity=0.95, pairs=(("t2", "t3", 0.95),)),  # train-only
    ]
    assert leaks(splits, exact, near) == [
        Leak(train="t2", val="v1", kind="exact", similarity=1.0),
        Leak(train="t3", val="v2", kind="near", similarity=0.97),
        Leak(train="t1", val="v4", kind="near", similarity=0.91),
    ]
    assert leaks(splits, [], []) == []


def test_leaks_from_real_photos(photo_set):
    paths, files, embeddings, label_of, split_of = photo_set
    near = near_groups(paths, embeddings, files, label_of)
    found = leaks(split_of, [], near)
    assert [(leak.train, leak.val, leak.kind) for leak in found] == [
        ("train/cat/chelsea.png", "val/cat/chelsea_q75.jpg", "near"),
        ("train/person/astronaut.png", "val/person/astronaut_half.png", "near"),
    ]


# -- out-of-fold probabilities ------------------------------------------------------------------------


def test_out_of_fold_probabilities_shape_rows_and_class_order():
    x, y = clusters(30, 3, 16, 0.5, seed=4)
    probs = out_of_fold_probabilities(x, y, 4, folds=5, seed=0)
    assert probs.shape == (90, 4)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    assert (probs.argmax(axis=1) == y).mean() > 0.95  # columns in class order
    assert (probs[:, 3] == 0).all()  # a class no image has
    again = out_of_fold_probabilities(x, y, 4, folds=5, seed=0)
    np.testing.assert_array_equal(probs, again)


def test_out_of_fold_probabilities_handle_tiny_classes():
    x, y = clusters(12, 2, 8, 0.5, seed=5)
    x = np.concatenate([x, x[:3] + 5.0])
    y = np.concatenate([y, [2, 3, 3]])  # a single-image class and a two-image class
    probs = out_of_fold_probabilities(x, y, 4, folds=5)
    assert probs.shape == (27, 4)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    assert probs[24, 2] == 0.0  # its class is in no training fold of its own
    one = out_of_fold_probabilities(x[:1], y[:1], 4)
    np.testing.assert_allclose(one, 0.25)
    single_class = out_of_fold_probabilities(x[:12], np.zeros(12, int), 2, folds=3)
    np.testing.assert_allclose(single_class[:, 0], 1.0)
    with pytest.raises(ValueError):
        out_of_fold_probabilities(x, y, 3)


# -- label issues ------------------------------------------------------------------------------------


def test_label_issues_find_flipped_labels():
    x, y = clusters(60, 6, 32, 2.0, seed=6)
    rng = np.random.default_rng(6)
    flipped = rng.choice(len(y), 18, replace=False)  # 5 %
    noisy = y.copy()
    noisy[flipped] = (y[flipped] + rng.integers(1, 6, len(flipped))) % 6
    classes = [f"class{c}" for c in range(6)]
    paths = [f"img{i:03d}.png" for i in range(len(y))]
    splits = {p: ("val" if i % 4 == 0 else "train") for i, p in enumerate(paths)}
    probs = out_of_fold_probabilities(x, noisy, 6)
    issues = label_issues(paths, noisy, probs, classes, splits)
    found = {paths.index(issue.path) for issue in issues}
    truth = set(flipped.tolist())
    assert len(found & truth) / len(truth) >= 0.8  # recall
    assert len(found & truth) / len(found) >= 0.6  # precision
    assert [i.score for i in issues] == sorted((i.score for i in issues), reverse=True)
    for issue in issues:
        i = paths.index(issue.path)
        assert issue.given == classes[noisy[i]] and issue.suggested != issue.given
        assert issue.score == pytest.approx(1 - probs[i, noisy[i]])
        assert issue.confidence == pytest.approx(probs[i, classes.index(issue.suggested)])
        assert issue.split == splits[issue.path]
    right = [issue for issue in issues if paths.index(issue.path) in truth]
    assert sum(issue.suggested == classes[y[paths.index(issue.path)]] for issue in right) / len(right) > 0.8


def test_label_issues_need_two_classes():
    x, y = clusters(10, 2, 8, 0.5, seed=7)
    probs = out_of_fold_probabilities(x, y, 2)
    assert label_issues([str(i) for i in range(20)], np.zeros(20, int), probs[:, :1], ["only"], {}) == []
    assert label_issues([], np.zeros(0, int), np.zeros((0, 2)), ["a", "b"], {}) == []
    # one class has a single image: it cannot be judged, and one judged class is too few
    lonely = np.r_[np.zeros(19, int), 1]
    assert label_issues([str(i) for i in range(20)], lonely, probs, ["a", "b"], {}) == []


# -- outliers ----------------------------------------------------------------------------------------


def test_outliers_find_the_far_point_and_spare_the_clusters():
    x, y = clusters(50, 4, 32, 1.0, seed=8)
    rng = np.random.default_rng(108)  # not the clusters' seed: its first draws are their centres
    far = rng.standard_normal((2, 32)).astype(np.float32) * 3.0
    x = np.concatenate([x, far])
    paths = [f"img{i:03d}.png" for i in range(len(x))]
    splits = {p: "train" for p in paths}
    splits[paths[-1]] = "val"
    found = outliers(paths, x, np.r_[y, 0, 1], splits)
    assert {o.path for o in found} == set(paths[-2:])
    assert all(0 <= o.score <= 1 for o in found) and found[0].score >= found[1].score
    assert {o.path: o.split for o in found}[paths[-1]] == "val"
    assert outliers(paths, x, None, splits, top=1) == found[:1]
    scores = labels.outlier_scores(x)
    assert scores[-2:].min() > np.percentile(scores[:-2], 99)


def test_outliers_of_tight_or_tiny_sets_are_none():
    x, _ = clusters(40, 1, 16, 0.3, seed=9)
    assert outliers([str(i) for i in range(40)], x) == []
    assert outliers(["a", "b"], x[:2]) == []
    same = np.ones((10, 4), np.float32)  # all identical: nobody is odd
    assert outliers([str(i) for i in range(10)], same) == []


def test_checks_share_one_neighbour_search(photo_set):
    paths, files, embeddings, label_of, split_of = photo_set
    shared = nearest_neighbours(embeddings)
    assert near_groups(paths, embeddings, files, label_of, neighbours=shared) == near_groups(
        paths, embeddings, files, label_of
    )
    assert outliers(paths, embeddings, None, split_of, neighbours=shared) == outliers(paths, embeddings, None, split_of)


# -- image statistics ---------------------------------------------------------------------------------


def test_image_stats_read_headers_and_skip_unreadable_files(tmp_path):
    specs = [((30, 20), "RGB", "PNG"), ((50, 40), "L", "PNG"), ((70, 10), "RGB", "JPEG"), ((40, 30), "RGBA", "PNG")]
    files = []
    for i, (size, mode, fmt) in enumerate(specs):
        file = tmp_path / f"{i}.{fmt.lower()}"
        Image.new(mode, size).save(file, fmt)
        files.append(file)
    (tmp_path / "bad.png").write_bytes(b"\x89PNG truncated")
    stats = images.image_stats([*files, tmp_path / "bad.png", tmp_path / "missing.png"])
    assert stats.count == 4
    assert stats.widths == (30, 40, 70)
    assert stats.heights == (10, 20, 40)
    assert stats.modes == {"L": 1, "RGB": 2, "RGBA": 1}
    assert stats.formats == {"JPEG": 1, "PNG": 3}
    assert images.image_stats([]).count == 0
    assert images.image_stats([tmp_path / "bad.png"]).count == 0
