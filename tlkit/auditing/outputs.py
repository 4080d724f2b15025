"""What an audit leaves behind: one folder with ``audit.json``, ``issues.csv``, ``cleaned.csv`` and ``report.html``.

The folder is written into a temporary sibling and published whole by
:func:`tlkit.io.files.publish_folder`: a reader never sees half of it, an earlier audit is never
overwritten, and a failure leaves nothing.  Every path is relative to the audited data folder
with ``/`` separators, as in :class:`~tlkit.auditing.result.AuditResult`.

``issues.csv`` (columns ``path, issue, detail, suggested_label, score``) has one row per finding
and image, the worst kind first (:data:`ISSUE_ORDER`), then by score (higher is worse or surer),
then by path:

1. ``unreadable``: the image cannot be used at all (``detail`` is the reason);
2. ``leak``: a val image with an exact or near copy in train (row on the val image; validation
   accuracy is flattered);
3. ``label_conflict``: an exact or near copy of the image carries another label (one of the labels
   is surely wrong; such a group gets these rows instead of ``duplicate``/``near_duplicate`` rows);
4. ``label_issue``: the out-of-fold heads suggest another label;
5. ``duplicate``: exact copies with the same label (training sees the photo twice);
6. ``near_duplicate``: re-encoded, resized or shifted copies with the same label;
7. ``outlier``: far from every class (another domain, blank, rotated...): worth a look.

``cleaned.csv`` is a labels CSV in tlkit's ``--labels`` format (``path,label,split``; see
:mod:`tlkit.data.labels_csv`) listing every readable image with its split, except:

* Copies are grouped: the exact groups, the near groups and each leak's pair, merged when they
  share an image.  Each group keeps at most ONE image.
* The group's label is the label all its copies carry; on a conflict, the label a strict majority
  of the copies carry; failing that, the one label that label issues on its copies suggest, when
  that is one of the copies' labels; failing that, the group has no label and every copy is dropped
  (the photo's class is unknown: reason ``conflict``).
* The kept copy is the first, in sorted path order, of the copies carrying the group's label,
  val copies before train copies: a train copy of a kept val image is dropped (reason ``leak``),
  other copies are dropped as ``duplicate`` (or ``conflict`` when their label is not the group's).
* Nothing else is dropped (outliers and label issues stay, unreadable images are never listed).
* With ``relabel``, a kept image with a label issue whose score is at least ``relabel_threshold``
  (:data:`DEFAULT_RELABEL_THRESHOLD`) takes the suggested label, in either split.
"""

from __future__ import annotations

import contextlib
import csv
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tlkit.auditing.report import audit_html
from tlkit.auditing.result import AuditResult, DuplicateGroup, LabelIssue
from tlkit.errors import TlkitError
from tlkit.io.files import publish_folder, staging_folder, write_json, write_text
from tlkit.io.rundir import RunDir

__all__ = [
    "AUDIT_FILES",
    "DEFAULT_RELABEL_THRESHOLD",
    "ISSUE_COLUMNS",
    "ISSUE_ORDER",
    "CleanedSummary",
    "cleaned_rows",
    "issue_rows",
    "write_audit_folder",
]

ISSUE_ORDER = (
    "unreadable",
    "leak",
    "label_conflict",
    "label_issue",
    "duplicate",
    "near_duplicate",
    "outlier",
)
"""The values of ``issues.csv``'s ``issue`` column, worst first: the order of its rows."""

ISSUE_COLUMNS = ("path", "issue", "detail", "suggested_label", "score")
"""The columns of ``issues.csv``."""

CLEANED_COLUMNS = ("path", "label", "split")
"""The columns of ``cleaned.csv`` (tlkit's single-label ``--labels`` format)."""

DEFAULT_RELABEL_THRESHOLD = 0.8
"""``--relabel`` applies a suggested label when the issue's score (1 − the out-of-fold probability
of the given label) is at least this: the heads give the given label at most a 20 % chance."""

AUDIT_JSON = "audit.json"
ISSUES_CSV = "issues.csv"
CLEANED_CSV = "cleaned.csv"
REPORT_HTML = RunDir.REPORT  # the same name as a run's report

AUDIT_FILES = (AUDIT_JSON, ISSUES_CSV, CLEANED_CSV, REPORT_HTML)
"""The files of an audit folder."""

_LISTED = 3  # copies named in one detail cell before "and N more"


# --------------------------------------------------------------------------- groups of copies


@dataclass(frozen=True)
class _Group:
    """Copies of one photo (merged exact groups, near groups and leaks) and what cleaned.csv does with them."""

    members: tuple[str, ...]  # sorted
    label: str | None  # the group's label; None: a conflict nothing settles, every copy is dropped
    kept: str | None
    dropped: dict[str, str]  # path → "leak" | "duplicate" | "conflict"


def _merge(sets: Iterable[Sequence[str]]) -> list[tuple[str, ...]]:
    """Union of overlapping path sets (union-find), each sorted, in sorted order."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for paths in sets:
        paths = list(paths)
        for path in paths:
            find(path)
        for other in paths[1:]:
            a, b = find(paths[0]), find(other)
            if a != b:
                parent[max(a, b)] = min(a, b)
    components: dict[str, list[str]] = {}
    for path in parent:
        components.setdefault(find(path), []).append(path)
    return sorted(tuple(sorted(c)) for c in components.values() if len(c) > 1)


def _group_label(members: Sequence[str], labels: dict[str, str], suggested: dict[str, set[str]]) -> str | None:
    given = [labels[p] for p in members]
    counts = Counter(given).most_common()
    if len(counts) == 1:
        return counts[0][0]
    if counts[0][1] * 2 > len(given):
        return counts[0][0]
    suggestions = set().union(*(suggested.get(p, set()) for p in members)) & set(given)
    return suggestions.pop() if len(suggestions) == 1 else None


def _groups(result: AuditResult) -> list[_Group]:
    """The groups of copies of ``result`` and, for each, the image cleaned.csv keeps (module docstring)."""
    readable = set(result.labels) - {u.path for u in result.unreadable}
    sets: list[Sequence[str]] = [g.paths for g in (*result.duplicates, *result.near_duplicates)]
    sets += [(leak.train, leak.val) for leak in result.leaks]
    suggested: dict[str, set[str]] = {}
    for issue in result.label_issues:
        suggested.setdefault(issue.path, set()).add(issue.suggested)
    groups = []
    for component in _merge([p for p in paths if p in readable] for paths in sets):
        label = _group_label(component, result.labels, suggested)
        candidates = [p for p in component if result.labels[p] == label]
        candidates.sort(key=lambda p: (result.splits.get(p) != "val", p))
        kept = candidates[0] if candidates else None
        kept_val = kept is not None and result.splits.get(kept) == "val"
        dropped = {}
        for path in component:
            if path == kept:
                continue
            if result.labels[path] != label:
                dropped[path] = "conflict"
            elif kept_val and result.splits.get(path) != "val":
                dropped[path] = "leak"
            else:
                dropped[path] = "duplicate"
        groups.append(_Group(members=component, label=label, kept=kept, dropped=dropped))
    return groups


# --------------------------------------------------------------------------- cleaned.csv


@dataclass
class CleanedSummary:
    """What ``cleaned.csv`` left out or changed, for the terminal summary.

    ``dropped`` maps each left-out path to why: ``"leak"`` (a train copy of a kept val image),
    ``"duplicate"`` (a surplus copy) or ``"conflict"`` (a copy whose label is not the group's,
    or every copy of a group whose labels nothing settles); ``relabelled`` maps a path to
    ``(given, new)`` label.
    """

    total: int  # readable images audited
    kept: int  # rows of cleaned.csv
    dropped: dict[str, str] = field(default_factory=dict)
    relabelled: dict[str, tuple[str, str]] = field(default_factory=dict)
    relabel_threshold: float | None = None  # None: --relabel was not asked for

    def _count(self, reason: str) -> int:
        return sum(1 for r in self.dropped.values() if r == reason)

    @property
    def dropped_leaks(self) -> int:
        """Train copies of val images left out."""
        return self._count("leak")

    @property
    def dropped_duplicates(self) -> int:
        """Surplus copies (exact or near) left out."""
        return self._count("duplicate")

    @property
    def dropped_conflicts(self) -> int:
        """Copies left out because their label conflicts with another copy's."""
        return self._count("conflict")

    def as_dict(self) -> dict[str, Any]:
        """Counts only, for ``--json`` and logs."""
        return {
            "total": self.total,
            "kept": self.kept,
            "dropped_leaks": self.dropped_leaks,
            "dropped_duplicates": self.dropped_duplicates,
            "dropped_conflicts": self.dropped_conflicts,
            "relabelled": len(self.relabelled),
            "relabel_threshold": self.relabel_threshold,
        }


def cleaned_rows(
    result: AuditResult, *, relabel: bool = False, relabel_threshold: float = DEFAULT_RELABEL_THRESHOLD
) -> tuple[list[dict[str, str]], CleanedSummary]:
    """The rows of ``cleaned.csv`` (``path``, ``label``, ``split``; sorted by path) and a summary of the changes.

    The rules (one image per group of copies, train copies of val images dropped, conflicts settled
    by majority or suggestion or else dropped, ``relabel`` above ``relabel_threshold``) are in the
    module docstring.
    """
    unreadable = {u.path for u in result.unreadable}
    readable = sorted(p for p in result.labels if p not in unreadable)
    dropped: dict[str, str] = {}
    for group in _groups(result):
        dropped.update(group.dropped)
    best: dict[str, LabelIssue] = {}
    if relabel:
        for issue in result.label_issues:
            if issue.score >= relabel_threshold and issue.suggested != issue.given:
                if issue.path not in best or issue.score > best[issue.path].score:
                    best[issue.path] = issue
    rows, relabelled = [], {}
    for path in readable:
        if path in dropped:
            continue
        label = result.labels[path]
        chosen = best.get(path)
        if chosen is not None and chosen.suggested != label:
            relabelled[path] = (label, chosen.suggested)
            label = chosen.suggested
        rows.append({"path": path, "label": label, "split": result.splits.get(path, "train")})
    summary = CleanedSummary(
        total=len(readable),
        kept=len(rows),
        dropped=dropped,
        relabelled=relabelled,
        relabel_threshold=relabel_threshold if relabel else None,
    )
    return rows, summary


# --------------------------------------------------------------------------- issues.csv


def _listing(paths: Sequence[str]) -> str:
    shown = ", ".join(paths[:_LISTED])
    return shown + (f" and {len(paths) - _LISTED} more" if len(paths) > _LISTED else "")


def _fate(path: str, group: _Group | None) -> str:
    if group is None:
        return ""
    if path == group.kept:
        return "; cleaned.csv keeps this one"
    reason = group.dropped.get(path)
    if reason == "leak":
        return "; cleaned.csv drops it (its val copy stays)"
    if reason == "conflict" and group.kept is None:
        return "; cleaned.csv drops every copy (no label wins)"
    if reason == "conflict":
        return f"; cleaned.csv keeps only a copy labelled {group.label}"
    return "; cleaned.csv drops it" if reason else ""


def _leak_fate(train: str, group: _Group | None) -> str:
    if group is None:
        return ""
    if group.kept is None:
        return "; cleaned.csv drops every copy (their labels conflict)"
    if train == group.kept:
        return "; cleaned.csv keeps the train copy (the val copy's label is outvoted)"
    return "; cleaned.csv drops the train copy"


def _copy_rows(
    groups: Sequence[DuplicateGroup], kind: str, labels: dict[str, str], by_path: dict[str, _Group]
) -> list[dict[str, Any]]:
    rows = []
    for g in groups:
        copy = "exact copy" if kind == "duplicate" else f"near copy (similarity {g.similarity:.3f})"
        group_labels = {p: labels.get(p, g.labels.get(p, "")) for p in g.paths}
        conflict = len(set(group_labels.values())) > 1
        for path in g.paths:
            others = [p for p in g.paths if p != path]
            home = by_path.get(path)
            if conflict:
                different: dict[str, list[str]] = {}
                for p in others:
                    if group_labels[p] != group_labels[path]:
                        different.setdefault(group_labels[p], []).append(p)
                detail = f"{copy}, also labelled " + "; ".join(
                    f"{label}: {_listing(ps)}" for label, ps in sorted(different.items())
                )
                wins = home.label if home is not None else None
                issue, suggested = "label_conflict", wins if wins and wins != group_labels[path] else ""
            else:
                detail, issue, suggested = f"{copy} of {_listing(others)}", kind, ""
            rows.append(_row(path, issue, detail + _fate(path, home), suggested, g.similarity))
    return rows


def _row(path: str, issue: str, detail: str, suggested: str, score: float | None) -> dict[str, Any]:
    return {
        "path": path,
        "issue": issue,
        "detail": detail,
        "suggested_label": suggested,
        "score": "" if score is None else round(float(score), 4),
    }


def issue_rows(result: AuditResult) -> list[dict[str, Any]]:
    """The rows of ``issues.csv`` (:data:`ISSUE_COLUMNS`), worst first: by :data:`ISSUE_ORDER`, then
    score descending (empty for unreadable images), then path.  ``detail`` is one short sentence,
    and says what ``cleaned.csv`` does with a copy."""
    by_path = {path: group for group in _groups(result) for path in group.members}
    rows = [_row(u.path, "unreadable", u.reason, "", None) for u in result.unreadable]
    for leak in result.leaks:
        copy = "an exact copy" if leak.kind == "exact" else f"a near copy (similarity {leak.similarity:.3f})"
        rows.append(
            _row(
                leak.val,
                "leak",
                f"val image with {copy} in train: {leak.train}" + _leak_fate(leak.train, by_path.get(leak.train)),
                "",
                leak.similarity,
            )
        )
    rows += _copy_rows(result.duplicates, "duplicate", result.labels, by_path)
    rows += _copy_rows(result.near_duplicates, "near_duplicate", result.labels, by_path)
    for issue in result.label_issues:
        confidence = f" (p = {issue.confidence:.2f})" if issue.confidence else ""
        detail = f"labelled {issue.given}, looks like {issue.suggested}{confidence}"
        rows.append(_row(issue.path, "label_issue", detail, issue.suggested, issue.score))
    for outlier in result.outliers:
        rows.append(_row(outlier.path, "outlier", "far from every class in the base's features", "", outlier.score))
    rows.sort(key=lambda r: (ISSUE_ORDER.index(r["issue"]), -(r["score"] or 0.0), r["path"], r["detail"]))
    return rows


# --------------------------------------------------------------------------- the folder


def _write_csv(path: Path, columns: Sequence[str], rows: Iterable[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)


def write_audit_folder(
    result: AuditResult,
    target: str | Path,
    *,
    explicit: bool = False,
    relabel: bool = False,
    relabel_threshold: float = DEFAULT_RELABEL_THRESHOLD,
) -> Path:
    """Write the audit's folder (:data:`AUDIT_FILES`) and return where it went; sets ``result.folder``.

    Args:
        result: what the audit found.
        target: the folder to create; its parent is created if needed.
        explicit: ``target`` is the user's ``--output``: when it exists and is not an empty folder,
            :class:`~tlkit.errors.TlkitError` is raised.  Otherwise (the default timestamped name)
            a taken name becomes ``target-2``, ``target-3``...
        relabel: apply suggested labels in ``cleaned.csv`` (see :func:`cleaned_rows`).
        relabel_threshold: the lowest label-issue score relabelled.

    Everything is written into a temporary sibling folder first and renamed into place
    complete; on any failure the temporary folder is removed and nothing appears.
    """
    target = Path(target)
    taken = (
        f"--output {target} already exists and is not empty; pass a new folder (an audit never "
        "overwrites earlier output)"
    )
    if explicit and target.exists() and not (target.is_dir() and not any(target.iterdir())):
        raise TlkitError(taken)
    made_parent = not target.parent.exists()
    target.parent.mkdir(parents=True, exist_ok=True)
    final: Path | None = None
    try:
        with staging_folder(target) as tmp:
            write_json(tmp / AUDIT_JSON, result.as_json())
            _write_csv(tmp / ISSUES_CSV, ISSUE_COLUMNS, issue_rows(result))
            rows, summary = cleaned_rows(result, relabel=relabel, relabel_threshold=relabel_threshold)
            result.cleaned = summary.as_dict()
            _write_csv(tmp / CLEANED_CSV, CLEANED_COLUMNS, rows)
            write_text(tmp / REPORT_HTML, audit_html(result))
            final = publish_folder(tmp, target, numbered=not explicit, taken=taken)
            result.folder = final
            return final
    finally:
        if final is None and made_parent:
            with contextlib.suppress(OSError):
                target.parent.rmdir()  # only when empty: a failed first audit leaves nothing
