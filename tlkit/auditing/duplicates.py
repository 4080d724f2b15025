"""Exact duplicates, near duplicates and train/val leaks, from content hashes, embeddings and pHash.

**Exact duplicates** are files with the same content hash (byte-identical files).

**Near duplicates** (re-encoded, resized, shifted by a pixel or two, slightly cropped copies) are found
in two steps:

1. *Candidates*: each image's ``k`` (default 10) nearest neighbours by cosine similarity of the
   pooled embeddings, kept when the similarity is at least ``threshold`` (default
   :data:`DEFAULT_NEAR_THRESHOLD` = 0.88).  The search is an exact, blocked matrix product over
   L2-normalised vectors (a block of rows against all rows, top-k kept per row), so memory grows
   as N·k, never N×N.  When N²·D is large (50,000 × 1280-d features) the search runs in a
   256-dimensional projection (the top right singular vectors of a 5,000-row sample: 98 % of the
   energy of real MobileNetV2 features) and the candidates' similarities are then recomputed exactly
   on the full vectors: 18 s for 50,000 × 1280 on 2 cores (the whole audit's checks: 46 s, 1.4 GB peak RSS,
   ``bench/audit_scale.py``).  :func:`nearest_neighbours` is public so that the audit searches
   once for both near duplicates and outliers.
2. *Confirmation* by a perceptual hash (``imagehash.phash``, 16×16 = 256 bits): both images are
   reduced to 64×64 grey thumbnails; the translation (up to ±4 px of 64, i.e. ±6 % of the side) and
   the small centre crop (0, 1.25, 2.5, 3.75 or 5 % a side, on either image, cut on a sub-pixel box
   so that a 1-px crop of a 28-px image has its own scale) that maximise their correlation align
   them, and the pHash of the two aligned, overlapping regions must differ by at most
   ``hash_distance`` bits (default :data:`DEFAULT_HASH_DISTANCE` = 32 of 256).  Hashes are computed
   lazily, only for candidate images, once each; a file that cannot be read drops its pairs.

Confirmed pairs (other than exact copies of each other) are joined into connected components; a
group's ``similarity`` is its lowest confirmed pairwise cosine, and ``pairs`` lists those pairs.

**Why these defaults** (measured on real ImageNet MobileNetV2 features, ``tv_mobilenet_v2`` at
224 px, and files written by PIL; the study's scripts are not part of tlkit):

- *Copies*: 21 scikit-image photos (chelsea, coffee, astronaut, rocket, camera, coins, …) re-encoded
  as JPEG q=75, resized ×0.5, shifted 1–2 px, cropped 2 % or 5 % a side, brightened 10 %; and 200
  Fashion-MNIST images (28 px) re-encoded as JPEG q=75, shifted by 1 px (on one or both axes) and
  re-encoded, resized ×2, cropped by 1 px.  Cosine similarity to the original: 5th percentile
  0.90–0.99 per transform (the lowest: shifted, re-encoded 28-px images, 0.895, minimum 0.878).
  A second study, 2,000 Fashion-MNIST images (200 a class) plus 50 copies each cropped by 1 px at
  the top and left (27×27 PNG), by 1 px at the bottom and right, JPEG'd and shifted 1 px, resized
  ×2: every copy is its original's candidate (1-px crops: cosine ≥ 0.935, median 0.97).
- *Different images*: a Fashion-MNIST image's most similar other image of the same class reaches
  cosine 0.97 (median 0.90), different photos 0.98, different crops of one photo 0.96: the
  embedding alone cannot tell a copy from a look-alike.  It proposes candidates; 0.88 keeps
  99.5 % of the copies.
- *Plain 64-bit pHash fails on small images*: a 1-px shift of a 28-px image moves it by 9 bits
  (median; 95th percentile 20), while 8 % of Fashion-MNIST images have a different image within
  6 bits.  Hence the alignment and the 256-bit hash.  Aligned, copies differ by at most 34 bits
  (95th percentile 0–26 per transform); the 6,268 pairs of different Fashion-MNIST images with
  cosine ≥ 0.88 by at least 36 (0.1st percentile 40); different photos or crops by at least 60.
- *Crops of a pixel need sub-pixel boxes*: with crop boxes rounded to whole pixels, 2.5 and 5 % a
  side of 28 px were both 1 px a side (26 px), never the 27 px of a 1-px one-sided crop, so the
  scales differed by 3.7 % and those copies' aligned hashes differed by 32 bits (median; 95th
  percentile 52): only 27 of 50 top-left and 26 of 50 bottom-right 1-px crops were confirmed in the
  second study.  Sub-pixel boxes and the finer ladder confirm all 100 (median 16 and 12 bits, at
  most 28 and 32); JPEG'd shifted and ×2 copies are unchanged (at most 26 and 8 bits).  Its 9,674
  pairs of different images among the 10 nearest neighbours with cosine ≥ 0.88 differ by at least
  30 bits either way (0.1st percentile 38); 4 of them are within 32 bits, before as after (3 in
  common; near-identical coats, trousers, sneakers: pixel correlation 0.78–0.98), i.e. 4 false
  pairs in 203 groups (155 before).  On 14 photos a 5 % crop of one side is confirmed for 13 (10
  with whole-pixel boxes); different photos stay ≥ 102 bits apart.  The cost: the confirmation
  takes about twice as long (15 s instead of 7 s for the second study's 9,700 candidate pairs on
  2 cores).
- *Together* (cosine ≥ 0.88 and ≤ 32 bits), as groups: every Fashion-MNIST copy, and every photo
  copy but one (a JPEG'd, shifted half-size copy of a 102-px image whose embedding moved to 0.56),
  is grouped with its original; none of the 6,268 look-alike pairs nor of the different photos is
  confirmed.  Of 221 groups, one joins two near-identical sneakers through their copies (the
  second study: all 200 copies grouped, 4 false pairs, see above).  Missed
  by design: mirror images (an augmentation, not a copy) and crops of 5 % or more on one side only
  (18 of 21 caught).  Very smooth, low-detail images (e.g. blurred noise) hash unstably — pHash
  splits its coefficients at their median, and most of theirs are near zero — so their copies may
  be missed, never falsely joined.

**Leaks** are validation images with an exact or a near copy in train (exact copies win).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import imagehash
import numpy as np
from PIL import Image
from sklearn.utils.extmath import randomized_svd

from tlkit.auditing.result import DuplicateGroup, Leak, LeakKind

DEFAULT_NEAR_THRESHOLD = 0.88
"""Cosine similarity of pooled embeddings from which a pair is a near-duplicate candidate."""
DEFAULT_HASH_DISTANCE = 32
"""Most bits (of 256) by which the aligned perceptual hashes of a confirmed pair may differ."""
DEFAULT_NEIGHBOURS = 10
"""Nearest neighbours searched per image (near-duplicate candidates, outlier distances)."""

HASH_SIZE = 16  # pHash of 16×16 = 256 bits
_GRID = 64  # thumbnails are 64×64, pHash's own working size for 16×16 hashes
_MAX_SHIFT = 4  # pixels of the 64-px grid searched each way when aligning a pair (±6 %)
# Centre crops (fraction a side) tried on either image, cut on sub-pixel boxes: steps of 1.25 % a side
# (2.5 % of scale) leave at most ±0.8 px of 64 misaligned at the edges, and a 1-px crop of a 28-px
# image (3.6 % of scale) is matched, which whole-pixel boxes (1 px a side at 2.5 and 5 %) were not.
_CROPS = (0.0, 0.0125, 0.025, 0.0375, 0.05)
_FFT = 72  # zero-padded FFT size: ≥ 64 + _MAX_SHIFT keeps the searched lags free of wrap-around

# Above this many multiply-adds (N² · D) the neighbour search runs in a projection.
_SEARCH_BUDGET = 4e11
_PROJECTED_DIM = 256
_PROJECTION_SAMPLE = 5000
_BLOCK_BYTES = 64 * 2**20  # one block of similarities (rows × N float32)


@dataclass(frozen=True)
class Neighbours:
    """Each image's nearest other images by cosine similarity, most similar first.

    ``indices`` and ``similarities`` are (N, k) arrays (k may be smaller than asked when there are
    fewer images); the similarities are exact cosines of the full embeddings.
    """

    indices: np.ndarray
    similarities: np.ndarray

    @property
    def k(self) -> int:
        return int(self.indices.shape[1])


def _unit_rows(embeddings: Any) -> np.ndarray:
    """float32 copy of ``embeddings`` with each row scaled to length 1 (zero rows stay zero)."""
    x = np.array(embeddings, dtype=np.float32, copy=True)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D array (images × features), got shape {x.shape}")
    np.nan_to_num(x, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.divide(x, norms, out=x, where=norms > 0)
    return x


def _projection(unit: np.ndarray, dim: int, seed: int = 0) -> np.ndarray:
    """(D, dim) matrix of the top right singular vectors of a row sample of ``unit`` (uncentred,
    so dot products, hence cosines, are what it preserves)."""

    rng = np.random.default_rng(seed)
    n = unit.shape[0]
    sample = unit[np.sort(rng.choice(n, size=min(n, _PROJECTION_SAMPLE), replace=False))]
    _, _, vt = randomized_svd(sample, n_components=dim, n_iter=4, random_state=seed)
    return np.ascontiguousarray(vt.T, dtype=np.float32)


def _top_k(block: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``block`` (B × N), the column indices of its k largest values, and the values,
    largest first.  Cheaper than argpartition on wide rows: the k-th largest of the 64-wide column
    blocks' maxima bounds the row's k-th largest value from below, and only values above it are
    sorted."""
    rows, n = block.shape
    width = 64
    if n <= 4 * width or k * width * 2 >= n:
        idx = np.argpartition(block, n - k, axis=1)[:, n - k :]
        vals = np.take_along_axis(block, idx, axis=1)
    else:
        full = (n // width) * width
        maxima = block[:, :full].reshape(rows, -1, width).max(axis=2)
        if full < n:
            maxima = np.concatenate([maxima, block[:, full:].max(axis=1, keepdims=True)], axis=1)
        bound = np.partition(maxima, maxima.shape[1] - k, axis=1)[:, maxima.shape[1] - k]
        r, c = np.nonzero(block >= bound[:, None])
        v = block[r, c]
        order = np.lexsort((-v, r))
        r, c, v = r[order], c[order], v[order]
        starts = np.searchsorted(r, np.arange(rows))
        take = (starts[:, None] + np.arange(k)[None, :]).ravel()
        idx = c[take].reshape(rows, k)
        vals = v[take].reshape(rows, k)
    order = np.argsort(-vals, axis=1, kind="stable")
    return np.take_along_axis(idx, order, axis=1), np.take_along_axis(vals, order, axis=1)


def nearest_neighbours(embeddings: Any, k: int = DEFAULT_NEIGHBOURS) -> Neighbours:
    """The ``k`` nearest other images of every image by cosine similarity of ``embeddings`` (N, D).

    Exact blocked search over L2-normalised rows: memory stays O(N·k + block × N), never N×N.
    When N²·D exceeds 4·10¹¹ multiply-adds (e.g. 50,000 × 1280) the search runs in a 256-d
    projection and the similarities of the neighbours found are recomputed on the full vectors.
    Compute it once and pass it to :func:`near_groups` and :func:`tlkit.auditing.labels.outliers`.
    """
    unit = _unit_rows(embeddings)
    n, d = unit.shape
    k = max(0, min(int(k), n - 1))
    if k == 0:
        return Neighbours(np.zeros((n, 0), np.int64), np.zeros((n, 0), np.float32))
    search = unit
    if float(n) * n * d > _SEARCH_BUDGET and d > _PROJECTED_DIM:
        search = _unit_rows(unit @ _projection(unit, _PROJECTED_DIM))
    block = max(1, min(n, _BLOCK_BYTES // (4 * n)))
    indices = np.empty((n, k), np.int64)
    sims = np.empty((n, k), np.float32)
    for start in range(0, n, block):
        stop = min(n, start + block)
        s = search[start:stop] @ search.T
        s[np.arange(stop - start), np.arange(start, stop)] = -np.inf  # not one's own neighbour
        indices[start:stop], sims[start:stop] = _top_k(s, k)
    if search is not unit:  # exact cosines of the neighbours found in the projection
        for start in range(0, n, block):
            stop = min(n, start + block)
            sims[start:stop] = np.einsum("id,ikd->ik", unit[start:stop], unit[indices[start:stop]])
        order = np.argsort(-sims, axis=1, kind="stable")
        indices = np.take_along_axis(indices, order, axis=1)
        sims = np.take_along_axis(sims, order, axis=1)
    return Neighbours(indices, sims)


def exact_groups(
    paths: Sequence[str], hashes: Sequence[str], labels: Mapping[str, str] | None = None
) -> list[DuplicateGroup]:
    """Groups of two or more ``paths`` whose content ``hashes`` are equal (byte-identical files).

    Paths are sorted inside each group and groups by their first path; ``labels`` (path → label)
    fills each group's ``labels`` so that ``conflict`` tells a photo filed under two classes.
    """
    if len(paths) != len(hashes):
        raise ValueError(f"{len(paths)} paths but {len(hashes)} hashes")
    labels = labels or {}
    by_hash: dict[str, list[str]] = {}
    for path, digest in zip(paths, hashes):
        by_hash.setdefault(digest, []).append(path)
    groups = [
        DuplicateGroup(tuple(sorted(members)), {p: labels.get(p, "") for p in sorted(members)}, 1.0)
        for members in by_hash.values()
        if len(members) > 1
    ]
    return sorted(groups, key=lambda g: g.paths)


# -- perceptual confirmation -----------------------------------------------------------------


# (crop of a, crop of b) pairs tried: no crop, or a crop of one image only
_CROP_PAIRS = np.array([(0, 0)] + [(c, 0) for c in range(1, len(_CROPS))] + [(0, c) for c in range(1, len(_CROPS))])
_SHIFTS = np.r_[0 : _MAX_SHIFT + 1, -_MAX_SHIFT:0]  # as FFT lags: 0, 1, …, _MAX_SHIFT, −_MAX_SHIFT, …, −1
_WINDOW = (_SHIFTS % _FFT)[:, None], (_SHIFTS % _FFT)[None, :]
_MASK = np.fft.rfft2(np.ones((_GRID, _GRID)), s=(_FFT, _FFT))
_OVERLAP = np.fft.irfft2(_MASK * np.conj(_MASK), s=(_FFT, _FFT))[_WINDOW]  # pixels overlapping per shift


@dataclass
class _Thumb:
    """One image's 64×64 grey thumbnails, one per centre crop: raw 8-bit pixels (for hashing), the
    spectrum of the pixels scaled to 0..1, and the sums of those pixels and their squares over the
    overlap of each shift (for aligning, whichever side of the pair it is on); pHashes of regions,
    once computed."""

    raw: np.ndarray  # (crops, 64, 64) uint8
    spectrum: np.ndarray  # (crops, _FFT, _FFT // 2 + 1), of raw / 255
    sums_first: np.ndarray  # (2, crops, shifts, shifts): Σ raw, Σ raw² over the overlap, as the first image
    sums_second: np.ndarray  # the same as the second image
    hashes: dict[tuple[int, int, int, int, int], Any] = field(default_factory=dict)

    def phash(self, crop: int, y0: int, y1: int, x0: int, x1: int) -> Any:
        key = (crop, y0, y1, x0, x1)
        if key not in self.hashes:
            pixels = np.ascontiguousarray(self.raw[crop, y0:y1, x0:x1])
            self.hashes[key] = imagehash.phash(Image.fromarray(pixels), hash_size=HASH_SIZE)
        return self.hashes[key]


def _thumbnail(file: str | os.PathLike[str]) -> _Thumb | None:
    """The thumbnails of one image file, or None when it cannot be read."""

    try:
        with Image.open(file) as im:
            im.draft("L", (2 * _GRID, 2 * _GRID))  # JPEG: decode at a reduced scale
            grey = im.convert("L")
            grey.load()
    except Exception:  # unreadable, truncated, not an image, too large: its pairs are dropped
        return None
    w, h = grey.size
    raw = np.empty((len(_CROPS), _GRID, _GRID), np.uint8)
    for c, f in enumerate(_CROPS):
        # A sub-pixel box (not rounded to whole pixels): small images need crops finer than a pixel.
        box = (w * f, h * f, w - w * f, h - h * f)
        raw[c] = np.asarray(grey.resize((_GRID, _GRID), Image.Resampling.LANCZOS, box=box))
    scaled = raw / 255.0
    spectra = np.fft.rfft2(np.stack([scaled, scaled * scaled]), s=(_FFT, _FFT))
    first = np.fft.irfft2(_MASK * np.conj(spectra), s=(_FFT, _FFT))[..., _WINDOW[0], _WINDOW[1]]
    second = np.fft.irfft2(spectra * np.conj(_MASK), s=(_FFT, _FFT))[..., _WINDOW[0], _WINDOW[1]]
    return _Thumb(raw, spectra[0], first, second)


def _correlations(a: _Thumb, b: _Thumb) -> np.ndarray:
    """Pearson correlation of the overlapping pixels, for each crop pair and shift within
    ±_MAX_SHIFT: [crop pair, dy, dx], where b[y + dy, x + dx] faces a[y, x].  Sums over the
    overlaps come from FFTs (masked normalised cross-correlation)."""
    ca, cb = _CROP_PAIRS[:, 0], _CROP_PAIRS[:, 1]
    sab = np.fft.irfft2(b.spectrum[cb] * np.conj(a.spectrum[ca]), s=(_FFT, _FFT))[:, _WINDOW[0], _WINDOW[1]]
    sa, saa = a.sums_first[:, ca]
    sb, sbb = b.sums_second[:, cb]
    n = _OVERLAP
    cov = sab - sa * sb / n
    var = np.maximum(saa - sa * sa / n, 0.0) * np.maximum(sbb - sb * sb / n, 0.0)
    flat = var <= 1e-12 * n * n  # a blank overlap: equal if both are blank at the same level
    same_level = np.abs(sa - sb) <= 1e-3 * n
    return np.where(flat, np.where(same_level, 1.0, 0.0), cov / np.sqrt(np.where(flat, 1.0, var)))


def _aligned_distance(a: _Thumb, b: _Thumb) -> int:
    """Bits by which the pHashes of ``a`` and ``b`` differ once aligned: the shift within
    ±_MAX_SHIFT pixels and the centre crop of either image whose overlapping pixels correlate best."""
    corr = _correlations(a, b)
    p, iy, ix = np.unravel_index(int(np.argmax(corr)), corr.shape)
    ca, cb = (int(c) for c in _CROP_PAIRS[p])
    dy, dx, g = int(_SHIFTS[iy]), int(_SHIFTS[ix]), _GRID
    ha = a.phash(ca, max(0, -dy), g - max(0, dy), max(0, -dx), g - max(0, dx))
    hb = b.phash(cb, max(0, dy), g - max(0, -dy), max(0, dx), g - max(0, -dx))
    return int(ha - hb)


class _Confirmer:
    """Perceptual confirmation of candidate pairs, with each file's thumbnails computed once."""

    def __init__(self, files: Sequence[str | os.PathLike[str]], hash_distance: int) -> None:
        self.files = files
        self.hash_distance = hash_distance
        self.thumbs: dict[int, _Thumb | None] = {}

    def thumb(self, i: int) -> _Thumb | None:
        if i not in self.thumbs:
            self.thumbs[i] = _thumbnail(self.files[i])
        return self.thumbs[i]

    def prefetch(self, indices: Sequence[int]) -> None:
        """Thumbnails of these images, decoded on a few threads (PIL releases the GIL)."""

        todo = [i for i in indices if i not in self.thumbs]
        if len(todo) < 8:
            return
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            for i, thumb in zip(todo, pool.map(_thumbnail, [self.files[i] for i in todo])):
                self.thumbs[i] = thumb

    def __call__(self, i: int, j: int) -> bool:
        a, b = self.thumb(i), self.thumb(j)
        if a is None or b is None:
            return False
        return _aligned_distance(a, b) <= self.hash_distance


def perceptual_distance(file_a: str | os.PathLike[str], file_b: str | os.PathLike[str]) -> int | None:
    """Bits (of 256) by which two image files' aligned pHashes differ; None if one is unreadable.

    The measure :func:`near_groups` confirms candidates with (see the module docstring).
    """
    a, b = _thumbnail(file_a), _thumbnail(file_b)
    if a is None or b is None:
        return None
    return _aligned_distance(a, b)


def _components(edges: Sequence[tuple[int, int]]) -> list[list[int]]:
    """Connected components (sorted members) of the graph with these edges."""
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j in edges:
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    members: dict[int, list[int]] = {}
    for x in sorted(parent):
        members.setdefault(find(x), []).append(x)
    return list(members.values())


def near_groups(
    paths: Sequence[str],
    embeddings: Any,
    files: Sequence[str | os.PathLike[str]],
    labels: Mapping[str, str] | None = None,
    *,
    threshold: float = DEFAULT_NEAR_THRESHOLD,
    hash_distance: int = DEFAULT_HASH_DISTANCE,
    exact: Sequence[DuplicateGroup] | None = None,
    k: int = DEFAULT_NEIGHBOURS,
    neighbours: Neighbours | None = None,
) -> list[DuplicateGroup]:
    """Groups of near-duplicate images (re-encoded, resized, slightly shifted or cropped copies).

    ``paths`` (relative, for the report), ``embeddings`` (N, D) and ``files`` (readable paths of the
    same images) are aligned.  A pair is a candidate when one image is among the other's ``k``
    nearest neighbours with cosine similarity ≥ ``threshold``, and is confirmed when the aligned
    256-bit pHashes of the two files differ by at most ``hash_distance`` bits (see the module
    docstring for the method and why the defaults).  Pairs inside one ``exact`` group are not near
    duplicates.  Groups are the connected components of confirmed pairs (paths sorted, groups sorted
    by first path); ``similarity`` is the lowest confirmed pairwise cosine, ``pairs`` the confirmed
    pairs.  ``neighbours`` (from :func:`nearest_neighbours`) skips the search.
    """
    n = len(paths)
    if len(files) != n or len(embeddings) != n:
        raise ValueError(f"{n} paths, {len(files)} files and {len(embeddings)} embeddings: they must match")
    if n < 2:
        return []
    labels = labels or {}
    if neighbours is None:
        neighbours = nearest_neighbours(embeddings, k)
    kk = min(k, neighbours.k)
    exact_id: dict[str, int] = {p: g for g, group in enumerate(exact or ()) for p in group.paths}

    candidates: dict[tuple[int, int], float] = {}
    rows, cols = np.nonzero(neighbours.similarities[:, :kk] >= threshold)
    for i, c in zip(rows.tolist(), cols.tolist()):
        j = int(neighbours.indices[i, c])
        if i == j:
            continue
        gi, gj = exact_id.get(paths[i]), exact_id.get(paths[j])
        if gi is not None and gi == gj:
            continue
        key = (min(i, j), max(i, j))
        candidates[key] = max(candidates.get(key, -1.0), float(neighbours.similarities[i, c]))

    confirm = _Confirmer(files, hash_distance)
    confirm.prefetch(sorted({x for pair in candidates for x in pair}))
    confirmed = [
        (pair, sim) for pair, sim in sorted(candidates.items(), key=lambda kv: (-kv[1], kv[0])) if confirm(*pair)
    ]
    components = _components([pair for pair, _ in confirmed])
    component_of = {x: c for c, members in enumerate(components) for x in members}
    pairs: list[list[tuple[str, str, float]]] = [[] for _ in components]
    for (i, j), sim in confirmed:
        a, b = sorted((paths[i], paths[j]))
        pairs[component_of[i]].append((a, b, round(sim, 6)))
    groups = []
    for members, group_pairs in zip(components, pairs):
        names = sorted(paths[i] for i in members)
        groups.append(
            DuplicateGroup(
                tuple(names),
                {p: labels.get(p, "") for p in names},
                min(s for _, _, s in group_pairs),
                pairs=tuple(sorted(group_pairs)),
            )
        )
    return sorted(groups, key=lambda g: g.paths)


# -- leaks -------------------------------------------------------------------------------------


def leaks(splits: Mapping[str, str], exact: Sequence[DuplicateGroup], near: Sequence[DuplicateGroup]) -> list[Leak]:
    """Validation images with an exact or near copy in train, one :class:`Leak` each, by val path.

    ``splits`` maps path → "train" | "val".  An exact copy wins over a near one; among near copies
    the train image most similar to the val image is named (a direct confirmed pair first, else any
    train image of its group, at the group's similarity); ties go to the first train path.
    """
    found: dict[str, tuple[int, float, str, Leak]] = {}  # val → (rank, -similarity, train, leak)

    def offer(train: str, val: str, kind: LeakKind, similarity: float, rank: int) -> None:
        key = (rank, -similarity, train)
        current = found.get(val)
        if current is None or key < current[:3]:
            found[val] = (*key, Leak(train=train, val=val, kind=kind, similarity=float(similarity)))

    for group in exact:
        trains = [p for p in group.paths if splits.get(p) == "train"]
        for val in (p for p in group.paths if splits.get(p) == "val"):
            for train in trains:
                offer(train, val, "exact", 1.0, 0)
    for group in near:
        trains = [p for p in group.paths if splits.get(p) == "train"]
        if not trains:
            continue
        direct: dict[str, list[tuple[str, float]]] = {}
        for a, b, sim in group.pairs:
            for x, y in ((a, b), (b, a)):
                if splits.get(x) == "val" and splits.get(y) == "train":
                    direct.setdefault(x, []).append((y, sim))
        for val in (p for p in group.paths if splits.get(p) == "val"):
            for train, sim in direct.get(val, ()):
                offer(train, val, "near", sim, 1)
            for train in trains:
                offer(train, val, "near", group.similarity, 2)
    return [entry[3] for _, entry in sorted(found.items())]


__all__ = [
    "DEFAULT_HASH_DISTANCE",
    "DEFAULT_NEAR_THRESHOLD",
    "DEFAULT_NEIGHBOURS",
    "HASH_SIZE",
    "Neighbours",
    "exact_groups",
    "leaks",
    "near_groups",
    "nearest_neighbours",
    "perceptual_distance",
]
