"""What an audit found: plain records with paths relative to the data folder (``/`` separators).

Scores run the same way everywhere: higher is worse (more likely a wrong label, farther from
every class).  :meth:`AuditResult.as_json` is the documented ``audit.json`` shape, nothing more.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

LeakKind = Literal["exact", "near"]


@dataclass(frozen=True)
class LabelIssue:
    """An image whose given label the out-of-fold heads disagree with.

    ``score`` is 1 − the out-of-fold probability of the given label (cleanlab's self-confidence
    turned around: 1 is surely wrong); ``confidence`` is the probability of ``suggested``.
    """

    path: str
    given: str
    suggested: str
    score: float
    confidence: float = 0.0
    split: str = "train"


@dataclass(frozen=True)
class Leak:
    """A validation image with an exact or near copy in train (its accuracy would be flattered)."""

    train: str
    val: str
    kind: LeakKind
    similarity: float = 1.0


@dataclass(frozen=True)
class Outlier:
    """An image far from every class in the base's embedding space; ``score`` in 0..1, higher is odder."""

    path: str
    score: float
    split: str = "train"


@dataclass(frozen=True)
class Unreadable:
    """An image file that cannot be used, and why (corrupt, truncated, empty, not an image, too large)."""

    path: str
    reason: str


@dataclass(frozen=True)
class DuplicateGroup:
    """Copies of one image; ``labels`` maps each path to its label ("" when unlabelled).

    ``conflict`` is True when the copies carry different labels (the same photo in two classes).
    """

    paths: tuple[str, ...]
    labels: dict[str, str] = field(default_factory=dict)
    similarity: float = 1.0  # 1 for exact copies; the lowest pairwise cosine similarity for near ones
    # Near groups: the confirmed pairs (path, path, cosine), path-sorted; () for exact groups.
    pairs: tuple[tuple[str, str, float], ...] = ()

    @property
    def conflict(self) -> bool:
        return len({label for label in self.labels.values()}) > 1


@dataclass
class ImageStats:
    """Sizes and modes of the readable images, for the summary line."""

    count: int = 0
    widths: tuple[int, int, int] = (0, 0, 0)  # min, median, max
    heights: tuple[int, int, int] = (0, 0, 0)
    modes: dict[str, int] = field(default_factory=dict)
    formats: dict[str, int] = field(default_factory=dict)


@dataclass
class AuditResult:
    """Everything :func:`tlkit.audit` found, and where it wrote it."""

    data: Path
    base: str
    image_size: int
    weights: str
    classes: list[str]
    labels: dict[str, str]  # path → given label of every readable image
    splits: dict[str, str]  # path → "train" | "val"
    label_issues: list[LabelIssue] = field(default_factory=list)
    duplicates: list[DuplicateGroup] = field(default_factory=list)
    near_duplicates: list[DuplicateGroup] = field(default_factory=list)
    leaks: list[Leak] = field(default_factory=list)
    outliers: list[Outlier] = field(default_factory=list)
    unreadable: list[Unreadable] = field(default_factory=list)
    class_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    image_stats: ImageStats = field(default_factory=ImageStats)
    folder: Path | None = None  # the audit's output folder
    labels_csv: Path | None = None  # the --labels CSV audited, if any
    features: dict[str, Any] = field(default_factory=dict)  # how the features were obtained (cache hit, engine)
    timings: dict[str, float] = field(default_factory=dict)
    cleaned: dict[str, Any] = field(default_factory=dict)  # what cleaned.csv dropped and relabelled (counts)
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """The ``audit.json`` object (also what ``tlkit audit --json`` prints)."""
        return {
            "label_issues": [
                {"path": i.path, "given": i.given, "suggested": i.suggested, "score": round(i.score, 4)}
                for i in self.label_issues
            ],
            "duplicates": [list(g.paths) for g in self.duplicates],
            "near_duplicates": [list(g.paths) for g in self.near_duplicates],
            "leaks": [{"train": leak.train, "val": leak.val, "kind": leak.kind} for leak in self.leaks],
            "outliers": [{"path": o.path, "score": round(o.score, 4)} for o in self.outliers],
            "unreadable": [{"path": u.path, "reason": u.reason} for u in self.unreadable],
            "class_counts": self.class_counts,
        }

    @property
    def conflicts(self) -> list[DuplicateGroup]:
        """Exact-duplicate groups whose copies carry different labels."""
        return [g for g in self.duplicates if g.conflict]


__all__ = [
    "AuditResult",
    "DuplicateGroup",
    "ImageStats",
    "LabelIssue",
    "Leak",
    "LeakKind",
    "Outlier",
    "Unreadable",
]
