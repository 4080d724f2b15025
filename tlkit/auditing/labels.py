"""Likely label errors and outliers, from the frozen base's pooled embeddings.

**Out-of-fold probabilities** (:func:`out_of_fold_probabilities`): each embedding is scaled to unit
length, then each feature to zero mean and variance 1/D over the whole set (no labels are used, so
nothing leaks between folds; rows end up of length ≈ 1 whatever the base's width D).  The set is
split into K folds (default 5, stratified by label) and for each fold a multinomial logistic
regression (scikit-learn's lbfgs, ``C`` = 4, at most 100 iterations) is fitted on the other folds
and predicts the held-out one, so every image's probabilities come from a head that never saw it.
Then two refinements, because wrong labels pull a head towards themselves and a linear head alone
misreads many clean images of a hard data set:

1. *A second round* (``ROUNDS`` = 2): each fold's head is refitted, warm-started, without the
   training images the first round's probabilities flag (cleanlab, ``filter_by="both"``);
2. *the neighbours' labels*: the probabilities are mixed half and half (``KNN_WEIGHT`` = 0.5) with
   the label distribution of each image's 10 nearest other images by cosine similarity, each
   weighted by exp(cosine / 0.05) (:func:`knn_probabilities`; never the image's own label).

**Label issues** (:func:`label_issues`): cleanlab's confident learning,
``cleanlab.filter.find_label_issues(labels, probs, filter_by="low_self_confidence",
return_indices_ranked_by="self_confidence")``: cleanlab estimates how many labels are wrong
(``num_label_issues``) and reports that many images, those whose given label is least probable.
Each issue's score is 1 − the out-of-fold probability of its given label.  Multi-label data is not
supported here (the audit refuses it).

Measured (``bench/audit_bench.py --seeds 0,1,2``): 1,335 real Fashion-MNIST files (``tv_mobilenet_v2``,
224 px, ImageNet weights; 1,000 + 250 originals plus planted copies) with 105 wrong labels (10 %
of the train originals flipped, half to the most confused class and half at random, plus 5 copies
filed under another class), noise seeds 0 / 1 / 2:

================================================  ===================  ===================
probabilities → issues                            precision            recall
================================================  ===================  ===================
one round, heads only, ``filter_by`` default      0.45 / 0.46 / 0.41   0.87 / 0.86 / 0.83
  (the first version of this module)
two rounds + neighbours, ``"both"``               0.59 / 0.59 / 0.54   0.82 / 0.81 / 0.80
two rounds + neighbours, ``"low_self_confidence"``  0.60 / 0.66 / 0.63   0.78 / 0.82 / 0.82
  (the defaults)
================================================  ===================  ===================

Each refinement helps alone (average precision of the score 0.76–0.81 → 0.79–0.82; out-of-fold
accuracy on the clean labels 0.84 → 0.87); cleanlab's default ``prune_by_noise_rate`` and ``"both"``
report 1.4–1.8 issues per wrong label on this set, ``low_self_confidence`` 1.25–1.3.  The choices
not kept: C = 0.25 … 16 (C = 1 and 4 best, within 0.02), 10 folds instead of 5 (no gain, twice the
time), a third round (precision −0.03), neighbour weight 0.3 or 0.7 and temperature 0.02 or 0.1
(within ±0.03, no consistent gain), the neighbours alone (precision 0.45–0.52).  The data set is
hard: even knowing the number of wrong labels, the best cut of the score reaches precision
0.60–0.74 at recall 0.8, as about a third of the reported images are not flipped but genuinely
ambiguous (shirt / T-shirt / pullover / coat).

Time on the 2-core development machine, on one BLAS thread (faster than two, see below): 1,335 ×
1280 in 1.1–3 s (one round, heads only: 0.6–1 s); 50,000 × 1280 × 20 classes in 35.5 s with
``neighbours`` passed (one round, heads only: 24.4 s; load average 3), plus the neighbour search
(33 s at that load) when it is not passed — pass the audit's shared search.

**Outliers** (:func:`outliers`): cleanlab's ``OutOfDistribution`` score from the mean cosine
distance d̄ to each image's k = 10 nearest neighbours (score = exp(−d̄ / median d̄)), turned
around so that higher is odder: ``1 − score``.  An image is reported when both hold:

- its d̄ stands out: robust z-score 0.6745·(d̄ − median) / MAD ≥ 3.5 (Iglewicz and Hoaglin's
  cut-off);
- and its neighbours are at least twice as far as a typical image's (d̄ ≥ 2·median, i.e. score
  ≥ 1 − e⁻² ≈ 0.865), so that a tight data set's mild stragglers are not flagged.

Measured: among 1,000 Fashion-MNIST embeddings, 21 scikit-image photos and 5 faces, the 21 photos
rank first (scores 0.97–0.99), then 2 of the faces and 1 odd Fashion-MNIST image (0.89); no other
image is reported (Fashion-MNIST median score 0.63, 99th percentile 0.83).

The neighbour search is :func:`tlkit.auditing.duplicates.nearest_neighbours` (blocked, never an N×N
matrix); compute it once and pass it to both :func:`outliers` and
:func:`tlkit.auditing.duplicates.near_groups`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from cleanlab.filter import find_label_issues
from cleanlab.outlier import OutOfDistribution
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold, StratifiedKFold
from threadpoolctl import threadpool_limits

from tlkit.auditing.duplicates import DEFAULT_NEIGHBOURS, Neighbours, _unit_rows, nearest_neighbours
from tlkit.auditing.result import LabelIssue, Outlier

DEFAULT_FOLDS = 5
LOGISTIC_C = 4.0
"""Inverse L2 strength of the out-of-fold logistic heads, on features standardised and scaled by
1/√D (so one value suits any embedding width; 4 here is C ≈ 0.003 on plainly standardised
1280-d features)."""
LOGISTIC_MAX_ITER = 100
ROUNDS = 2
"""Rounds of out-of-fold heads: the second refits each fold's head without the images the first flags."""
KNN_WEIGHT = 0.5
"""Share of the neighbours' labels in the out-of-fold probabilities (the heads' share is the rest)."""
KNN_NEIGHBOURS = 10
KNN_TEMPERATURE = 0.05
"""A neighbour's vote is exp(cosine / temperature): one at cosine 0.95 outweighs one at 0.85 by e²."""
FILTER_BY = "low_self_confidence"
"""cleanlab's ``filter_by`` for the reported issues: as many images as cleanlab estimates are
mislabeled (``cleanlab.count.num_label_issues``), those of lowest probability of their given label."""
ROUND_FILTER_BY = "both"
"""cleanlab's ``filter_by`` for the images a second round drops from the heads' training folds."""
OUTLIER_Z = 3.5
"""Robust z-score of the mean neighbour distance from which an image is an outlier."""
OUTLIER_RATIO = 2.0
"""An outlier's mean neighbour distance is at least this many times the median image's."""
OUTLIER_FLOOR = 1.0 - math.exp(-OUTLIER_RATIO)
"""The outlier score that ``OUTLIER_RATIO`` amounts to (1 − exp(−2) ≈ 0.865)."""


def _standardised(embeddings: Any) -> np.ndarray:
    """Rows scaled to unit length, then each feature to zero mean and variance 1/D (float32)."""
    x = _unit_rows(embeddings)
    x -= x.mean(axis=0, dtype=np.float64).astype(np.float32)
    std = x.std(axis=0, dtype=np.float64).astype(np.float32)
    std[std == 0] = 1.0
    x /= std * np.float32(np.sqrt(x.shape[1]))  # rows of length ≈ 1 whatever the width
    return x


def _folds(y: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, held-out) index pairs; see :func:`out_of_fold_probabilities` for the rule."""

    n = len(y)
    k = min(int(folds), n)
    counts = np.bincount(y)
    counts = counts[counts > 0]
    several = counts[counts >= 2]
    if several.size == 0:  # every class has one image: nothing to stratify
        return list(KFold(k, shuffle=True, random_state=seed).split(y))
    k = max(2, min(k, int(several.min())))
    with warnings.catch_warnings():  # single-image classes: "the least populated class has only 1 member"
        warnings.simplefilter("ignore", UserWarning)
        return list(StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(n), y))


def _issue_mask(y: np.ndarray, p: np.ndarray, filter_by: str = FILTER_BY) -> tuple[np.ndarray, np.ndarray]:
    """cleanlab's label issues as a boolean mask over all images, and its ranked indices (by
    self-confidence).  Images of a class with a single image are not judged; fewer than two classes
    with two images or more: no issues."""
    n, num_classes = p.shape
    mask = np.zeros(n, bool)
    counts = np.bincount(y, minlength=num_classes)
    kept_classes = np.flatnonzero(counts >= 2)
    if n == 0 or kept_classes.size < 2:
        return mask, np.zeros(0, np.int64)
    judged = np.flatnonzero(counts[y] >= 2)
    sub = p[np.ix_(judged, kept_classes)]
    totals = sub.sum(axis=1, keepdims=True)
    sub = np.divide(sub, totals, out=np.full_like(sub, 1.0 / kept_classes.size), where=totals > 0)
    remap = np.full(num_classes, -1, np.int64)
    remap[kept_classes] = np.arange(kept_classes.size)
    found = find_label_issues(
        remap[y[judged]], sub, filter_by=filter_by, return_indices_ranked_by="self_confidence", n_jobs=1
    )
    ranked = judged[np.asarray(found, dtype=np.int64)]
    mask[ranked] = True
    return mask, ranked


def knn_probabilities(
    embeddings: Any,
    labels: Any,
    num_classes: int,
    *,
    neighbours: Neighbours | None = None,
    k: int = KNN_NEIGHBOURS,
    temperature: float = KNN_TEMPERATURE,
) -> np.ndarray:
    """(N, num_classes) label distribution of each image's ``k`` nearest other images (cosine of
    the embeddings), each neighbour weighted by exp(cosine / ``temperature``).  An image is never
    its own neighbour, so no image votes for itself; a class no neighbour has gets probability 0.
    ``neighbours`` (from :func:`tlkit.auditing.duplicates.nearest_neighbours`) skips the search."""
    y = np.asarray(labels, dtype=np.int64).ravel()
    n = len(y)
    if neighbours is None:
        neighbours = nearest_neighbours(embeddings, k)
    kk = min(int(k), neighbours.k)
    probs = np.zeros((n, num_classes), np.float64)
    if kk == 0:
        probs[:] = 1.0 / max(1, num_classes)
        return probs
    sims = neighbours.similarities[:, :kk].astype(np.float64)
    weights = np.exp((sims - sims[:, :1]) / temperature)  # shifted by each row's largest: no overflow
    rows = np.repeat(np.arange(n), kk)
    np.add.at(probs, (rows, y[neighbours.indices[:, :kk]].ravel()), weights.ravel())
    return probs / probs.sum(axis=1, keepdims=True)


def out_of_fold_probabilities(
    embeddings: Any,
    labels: Any,
    num_classes: int,
    *,
    folds: int = DEFAULT_FOLDS,
    seed: int = 0,
    C: float = LOGISTIC_C,
    max_iter: int = LOGISTIC_MAX_ITER,
    rounds: int = ROUNDS,
    knn_weight: float = KNN_WEIGHT,
    neighbours: Neighbours | None = None,
) -> np.ndarray:
    """(N, num_classes) probabilities, each row from heads that did not see that image's label.

    ``embeddings`` (N, D) are standardised, then split into ``folds`` folds, stratified by the
    integer ``labels`` (0 … num_classes − 1).  Small classes: the number of folds drops to the size
    of the smallest class that has two images or more (never below 2), so that every such class is
    in every training fold; a class with a single image cannot be in its own training fold, so its
    image gets probability 0 for it (:func:`label_issues` does not judge such images).  A class
    absent from a training fold gets probability 0 from that fold's head; columns are always in
    class order and rows sum to 1.  A fold whose training part holds one class only predicts that
    class.  Fewer than two images: uniform probabilities.

    With ``rounds`` = 2 (the default) each fold's head is refitted (warm-started) without the
    training images that the first round's probabilities flag as label issues, so that wrong labels
    do not pull the heads towards themselves (a fold keeps its first-round head when dropping them
    would leave a class out).  The result is then mixed with the images' neighbours' labels:
    ``(1 − knn_weight) · heads + knn_weight ·`` :func:`knn_probabilities` (``neighbours`` skips the
    search).  See the module docstring for the measurements behind these defaults.
    """

    y = np.asarray(labels, dtype=np.int64).ravel()
    n = len(y)
    if len(embeddings) != n:
        raise ValueError(f"{len(embeddings)} embeddings but {n} labels")
    if n and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes - 1}")
    probs = np.zeros((n, num_classes), np.float64)
    if n < 2:
        probs[:] = 1.0 / max(1, num_classes)
        return probs

    x = _standardised(embeddings)
    splits = _folds(y, folds, seed)
    heads: list[Any] = []
    # One BLAS thread: lbfgs's products are small and many, and threads fighting over them are
    # slower (5–7× at 1,000 images, 1.3× at 50,000; far worse when another process wants the cores).
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # a few iterations short is fine for ranking
        for train, held_out in splits:
            present = np.unique(y[train])
            if present.size == 1:
                probs[held_out, present[0]] = 1.0
                heads.append(None)
                continue
            head = LogisticRegression(C=C, max_iter=max_iter, warm_start=True)
            head.fit(x[train], y[train])
            probs[np.ix_(held_out, head.classes_)] = head.predict_proba(x[held_out])
            heads.append(head)
        for _ in range(max(0, int(rounds) - 1)):
            flagged, _ranked = _issue_mask(y, probs, ROUND_FILTER_BY)
            if not flagged.any():
                break
            refined = probs.copy()
            for (train, held_out), head in zip(splits, heads):
                keep = train[~flagged[train]]
                if head is None or not np.array_equal(np.unique(y[keep]), head.classes_):
                    continue
                head.fit(x[keep], y[keep])
                refined[held_out] = 0.0
                refined[np.ix_(held_out, head.classes_)] = head.predict_proba(x[held_out])
            probs = refined
    if knn_weight > 0:
        probs = (1.0 - knn_weight) * probs + knn_weight * knn_probabilities(
            embeddings, y, num_classes, neighbours=neighbours
        )
    return probs


def label_issues(
    paths: Sequence[str],
    labels: Any,
    probs: Any,
    classes: Sequence[str],
    splits: Mapping[str, str] | None = None,
) -> list[LabelIssue]:
    """Images whose given label is likely wrong, most likely first.

    ``labels`` are integer class indices into ``classes``, ``probs`` the out-of-fold probabilities
    (:func:`out_of_fold_probabilities`).  The issues are cleanlab's
    ``find_label_issues(..., filter_by="low_self_confidence", return_indices_ranked_by="self_confidence")``; each
    has ``score`` = 1 − probs[given], ``suggested`` = the most probable class (the most probable
    other class in the rare case that is the given one), ``confidence`` = its probability, and the
    image's split (``splits``: path → "train" | "val").  Sorted by score, highest first.  Images of
    a class with a single image are not judged; fewer than two classes (with two images or more):
    no issues.
    """

    y = np.asarray(labels, dtype=np.int64).ravel()
    p = np.asarray(probs, dtype=np.float64)
    n, num_classes = len(y), len(classes)
    if num_classes < 2 or n == 0:
        return []
    if p.shape != (n, num_classes):
        raise ValueError(f"probs has shape {p.shape}, expected ({n}, {num_classes})")
    _mask, found = _issue_mask(y, p)
    splits = splits or {}
    issues = []
    for i in found.tolist():
        given = int(y[i])
        order = np.argsort(-p[i], kind="stable")
        suggested = int(order[0]) if int(order[0]) != given else int(order[1])
        path = paths[i]
        issues.append(
            LabelIssue(
                path=path,
                given=classes[given],
                suggested=classes[suggested],
                score=float(1.0 - p[i, given]),
                confidence=float(p[i, suggested]),
                split=splits.get(path, "train"),
            )
        )
    return sorted(issues, key=lambda issue: (-issue.score, issue.path))


class _PrecomputedNeighbours:
    """What cleanlab's ``OutOfDistribution`` asks of a fitted ``NearestNeighbors``: the neighbours
    of the fitted set itself, here already found by :func:`nearest_neighbours`."""

    metric = "cosine"

    def __init__(self, distances: np.ndarray, indices: np.ndarray) -> None:
        self.distances, self.indices = distances, indices
        self.n_neighbors = int(indices.shape[1])

    def kneighbors(self, X: Any = None, n_neighbors: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        return self.distances, self.indices


def outlier_scores(embeddings: Any, *, k: int = DEFAULT_NEIGHBOURS, neighbours: Neighbours | None = None) -> np.ndarray:
    """Every image's outlier score in 0..1 (higher is odder): 1 − cleanlab's ``OutOfDistribution``
    score from the mean cosine distance to its ``k`` nearest neighbours."""

    n = len(embeddings)
    if neighbours is None:
        neighbours = nearest_neighbours(embeddings, k)
    kk = min(int(k), neighbours.k)
    if kk == 0:
        return np.zeros(n)
    distances = np.clip(1.0 - neighbours.similarities[:, :kk].astype(np.float64), 0.0, 2.0)
    knn = _PrecomputedNeighbours(distances, neighbours.indices[:, :kk])
    scores = OutOfDistribution(params={"knn": knn, "k": kk}).score(features=np.asarray(embeddings))
    return np.clip(1.0 - np.asarray(scores, dtype=np.float64), 0.0, 1.0)


def outliers(
    paths: Sequence[str],
    embeddings: Any,
    labels: Any = None,
    splits: Mapping[str, str] | None = None,
    *,
    top: int | None = None,
    k: int = DEFAULT_NEIGHBOURS,
    neighbours: Neighbours | None = None,
) -> list[Outlier]:
    """Images far from every other image in embedding space, oddest first.

    Score: :func:`outlier_scores` (1 − cleanlab's ``OutOfDistribution`` kNN score, in 0..1).
    Reported when the mean distance to the ``k`` nearest neighbours has a robust z-score of at least
    ``OUTLIER_Z`` (3.5) and is at least ``OUTLIER_RATIO`` (2) times the median image's (see the
    module docstring); at most ``top`` of them when given.  ``labels`` is accepted for symmetry
    with the other checks and not used: an outlier is far from every class, whatever its label.
    ``neighbours`` (from :func:`tlkit.auditing.duplicates.nearest_neighbours`) skips the search.
    Fewer than three images: none.
    """
    n = len(paths)
    if len(embeddings) != n:
        raise ValueError(f"{n} paths but {len(embeddings)} embeddings")
    if n < 3:
        return []
    if neighbours is None:
        neighbours = nearest_neighbours(embeddings, k)
    kk = min(int(k), neighbours.k)
    scores = outlier_scores(embeddings, k=kk, neighbours=neighbours)
    mean_distance = np.clip(1.0 - neighbours.similarities[:, :kk].astype(np.float64), 0.0, 2.0).mean(axis=1)
    median = float(np.median(mean_distance))
    mad = float(np.median(np.abs(mean_distance - median)))
    if mad > 0:
        z = 0.6745 * (mean_distance - median) / mad
    else:  # more than half the images are equally far: anything farther stands out
        z = np.where(mean_distance > median, np.inf, 0.0)
    odd = np.flatnonzero((z >= OUTLIER_Z) & (mean_distance >= OUTLIER_RATIO * median) & (mean_distance > 0))
    splits = splits or {}
    found = sorted(
        (Outlier(path=paths[i], score=float(scores[i]), split=splits.get(paths[i], "train")) for i in odd.tolist()),
        key=lambda o: (-o.score, o.path),
    )
    return found[:top] if top is not None else found


__all__ = [
    "DEFAULT_FOLDS",
    "FILTER_BY",
    "KNN_NEIGHBOURS",
    "KNN_TEMPERATURE",
    "KNN_WEIGHT",
    "LOGISTIC_C",
    "LOGISTIC_MAX_ITER",
    "OUTLIER_FLOOR",
    "OUTLIER_RATIO",
    "OUTLIER_Z",
    "ROUNDS",
    "ROUND_FILTER_BY",
    "knn_probabilities",
    "label_issues",
    "out_of_fold_probabilities",
    "outlier_scores",
    "outliers",
]
