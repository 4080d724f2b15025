"""The audit's ``report.html``: one self-contained page to look at what :func:`tlkit.audit` found.

Like a run's report (:mod:`tlkit.evaluation.report`, whose style it shares) everything is inside
the file: CSS inline, thumbnails as base64 JPEGs (~96 px, decoded as training decodes), no
JavaScript, no network.  Sections (element ids, :data:`SECTIONS`): ``summary`` (counts, class
balance per split, image sizes and modes, the base used), ``label-issues`` (the image, its given
and suggested label), ``duplicates`` and ``near-duplicates`` (the copies of each group side by
side, label conflicts flagged), ``leaks`` (the train and the val copy side by side), ``outliers``
and ``unreadable`` (path and reason).  Each section shows at most :data:`MAX_SHOWN` entries and
points to ``issues.csv`` for the rest.  An image that cannot be decoded is a grey box, never an error.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from tlkit.auditing.result import AuditResult, DuplicateGroup
from tlkit.evaluation.html import PAGE_CSS as _CSS
from tlkit.evaluation.html import data_uri as _png_uri
from tlkit.evaluation.html import escape as _e
from tlkit.evaluation.html import jpeg_thumbnail as _jpeg_thumb
from tlkit.version import __version__

__all__ = ["MAX_SHOWN", "SECTIONS", "audit_html"]

SECTIONS = ("summary", "label-issues", "duplicates", "near-duplicates", "leaks", "outliers", "unreadable")
"""The ids of the report's sections, in order."""

MAX_SHOWN = 200
"""The most entries (issues, groups, leaks...) one section shows; the rest are in ``issues.csv``."""

_MAX_COPIES = 8  # thumbnails shown per group of copies

_AUDIT_CSS = """
.strip { display:flex; flex-wrap:wrap; gap:12px; align-items:flex-start; }
.group { border-top:1px solid var(--line); padding:10px 0 6px; }
.group .head { font-size:13px; margin-bottom:6px; }
figure.thumb { margin:0; width:112px; }
figure.thumb img, figure.thumb .ph { width:96px; height:96px; object-fit:contain; background:#eef0f3;
                                     border-radius:4px; display:block; }
figure.thumb .ph { border:1px dashed #b8bec9; color:var(--muted); font-size:11px; display:flex;
                   align-items:center; justify-content:center; text-align:center; }
figure.thumb figcaption { font-size:11.5px; line-height:1.3; overflow-wrap:anywhere; margin-top:3px; }
figure.thumb figcaption .lbl { font-weight:600; }
td.img { width:104px; }
.flag { color:var(--bad); font-weight:600; }
.vs { align-self:center; color:var(--muted); font-size:18px; }
.more { color:var(--muted); font-size:13px; margin-top:8px; }
"""


class _Thumbs:
    """``<figure>`` thumbnails of the audited images, each decoded once; a grey box when it cannot be."""

    def __init__(self, result: AuditResult) -> None:
        self._root = Path(result.data)
        self._unreadable = {u.path for u in result.unreadable}
        self._cache: dict[str, str | None] = {}

    def _src(self, path: str) -> str | None:
        if path not in self._cache:
            data = None if path in self._unreadable else _jpeg_thumb(self._root / path)
            self._cache[path] = None if data is None else _png_uri(data, "image/jpeg")
        return self._cache[path]

    def picture(self, path: str) -> str:
        """The ``<img>`` of ``path`` (relative to the data folder), or a grey box saying it cannot be shown."""
        src = self._src(path)
        if src is None:
            return f'<div class="ph" title="{_e(path)}">cannot be shown</div>'
        return f'<img alt="{_e(Path(path).name)}" title="{_e(path)}" src="{src}">'

    def figure(self, path: str, caption: str = "") -> str:
        """:meth:`picture` with ``caption`` (HTML) under the escaped path."""
        return (
            f'<figure class="thumb">{self.picture(path)}<figcaption><span class="mono">{_e(path)}</span>'
            f"{'<br>' + caption if caption else ''}</figcaption></figure>"
        )


def _more(total: int, shown: int, what: str) -> str:
    if total <= shown:
        return ""
    return f'<p class="more">and {total - shown} more {_e(what)} (see issues.csv)</p>'


def _section(id_: str, title: str, count: int, intro: str, body: str) -> str:
    if not count:
        body = '<p class="note">None found.</p>'
    return f'<section id="{id_}"><h2>{_e(title)} ({count})</h2><p class="note">{intro}</p>{body}</section>'


# --------------------------------------------------------------------------- sections


def _cards(result: AuditResult) -> str:
    copies = sum(len(g.paths) for g in result.duplicates)
    cards = [
        (str(result.image_stats.count or len(result.labels)), f"readable images, {len(result.classes)} classes"),
        (str(len(result.label_issues)), "likely wrong labels"),
        (str(len(result.duplicates)), f"groups of exact copies ({copies} images)"),
        (str(len(result.conflicts)), "copies in two classes"),
        (str(len(result.near_duplicates)), "groups of near copies"),
        (str(len(result.leaks)), "val images with a copy in train"),
        (str(len(result.outliers)), "outliers"),
        (str(len(result.unreadable)), "unreadable files"),
    ]
    return (
        '<div class="cards">'
        + "".join(f'<div class="card"><div class="v">{_e(v)}</div><div class="k">{_e(k)}</div></div>' for v, k in cards)
        + "</div>"
    )


def _balance_table(result: AuditResult) -> str:
    counts = result.class_counts
    if not counts:
        return '<p class="note">No class counts.</p>'
    splits = [s for s in ("train", "val") if s in counts] + sorted(s for s in counts if s not in ("train", "val"))
    classes = list(result.classes) + sorted({c for s in splits for c in counts[s]} - set(result.classes))
    largest = max([n for s in splits for n in counts[s].values()] + [1])
    head = "".join(f'<th class="num">{_e(s)}</th>' for s in splits)
    rows = []
    for name in classes:
        cells = []
        for s in splits:
            n = counts[s].get(name, 0)
            bar = f'<span class="bar" style="width:{max(1, round(60 * n / largest))}px"></span> ' if n else ""
            cells.append(f'<td class="num">{bar}{n}</td>')
        rows.append(f'<tr><td class="cls">{_e(name)}</td>{"".join(cells)}</tr>')
    totals = "".join(f'<td class="num">{sum(counts[s].values())}</td>' for s in splits)
    return (
        f'<table class="dataset"><tr><th>class</th>{head}</tr>{"".join(rows)}'
        f'<tr class="avg"><td>all</td>{totals}</tr></table>'
    )


def _stats_line(result: AuditResult) -> str:
    s = result.image_stats
    if not s.count:
        return "No image sizes recorded."

    def span(values: tuple[int, int, int]) -> str:
        return f"{values[0]}–{values[2]} px (median {values[1]})" if values[0] != values[2] else f"{values[0]} px"

    def tally(values: dict[str, int]) -> str:
        return ", ".join(f"{_e(k)} {n}" for k, n in sorted(values.items(), key=lambda kv: (-kv[1], kv[0]))) or "—"

    return (
        f"{s.count} readable images; width {span(s.widths)}, height {span(s.heights)}; "
        f"modes: {tally(s.modes)}; formats: {tally(s.formats)}."
    )


def _summary_section(result: AuditResult) -> str:
    source = f'labels from <span class="mono">{_e(result.labels_csv)}</span>' if result.labels_csv else "class folders"
    parts = [
        '<section id="summary"><h2>Summary</h2>',
        f'<p>Data <span class="mono">{_e(result.data)}</span> ({source}); features of base '
        f"<b>{_e(result.base)}</b> at {_e(result.image_size)} px, weights <b>{_e(result.weights)}</b>.</p>",
        _cards(result),
        "<h3>Class balance</h3>",
        _balance_table(result),
        "<h3>Images</h3>",
        f"<p>{_stats_line(result)}</p>",
    ]
    if result.notes:
        parts.append('<ul class="note">' + "".join(f"<li>{_e(n)}</li>" for n in result.notes) + "</ul>")
    if result.timings:
        took = result.timings.get("total", sum(result.timings.values()))
        steps = ", ".join(f"{_e(k)} {v:.1f} s" for k, v in result.timings.items() if k != "total")
        parts.append(f'<p class="note">The audit took {took:.1f} s ({steps}).</p>')
    return "".join(parts) + "</section>"


def _label_issues_section(result: AuditResult, thumbs: _Thumbs) -> str:
    issues = sorted(result.label_issues, key=lambda i: (-i.score, i.path))
    rows = "".join(
        f'<tr><td class="img"><figure class="thumb">{thumbs.picture(i.path)}</figure></td>'
        f'<td class="mono">{_e(i.path)}</td><td>{_e(i.given)} → <span class="lbl"><b>{_e(i.suggested)}</b></span></td>'
        f'<td class="num">{i.score:.3f}</td><td>{_e(i.split)}</td></tr>'
        for i in issues[:MAX_SHOWN]
    )
    body = (
        '<table><tr><th>image</th><th>path</th><th>given → suggested</th><th class="num">score</th>'
        f"<th>split</th></tr>{rows}</table>" + _more(len(issues), MAX_SHOWN, "label issues")
    )
    intro = (
        "Images whose given label the out-of-fold heads doubt (confident learning); score is 1 − the "
        "probability of the given label, the surest first."
    )
    return _section("label-issues", "Label issues", len(issues), intro, body)


def _group_block(result: AuditResult, group: DuplicateGroup, thumbs: _Thumbs, near: bool) -> str:
    labels = {p: result.labels.get(p, group.labels.get(p, "")) for p in group.paths}
    distinct = sorted(set(labels.values()))
    head = f"{len(group.paths)} copies"
    if near:
        head += f", similarity ≥ {group.similarity:.3f}"
    if len(distinct) > 1:
        head += ' — <span class="flag">label conflict: ' + ", ".join(_e(d) for d in distinct) + "</span>"
    figures = "".join(
        thumbs.figure(p, f'<span class="lbl">{_e(labels[p] or "—")}</span> · {_e(result.splits.get(p, ""))}')
        for p in group.paths[:_MAX_COPIES]
    )
    extra = len(group.paths) - _MAX_COPIES
    if extra > 0:
        figures += f'<div class="vs">+{extra}</div>'
    return f'<div class="group"><div class="head">{head}</div><div class="strip">{figures}</div></div>'


def _groups_section(result: AuditResult, thumbs: _Thumbs, near: bool) -> str:
    groups = result.near_duplicates if near else result.duplicates
    ordered = sorted(groups, key=lambda g: (not g.conflict, -len(g.paths), g.paths))
    body = "".join(_group_block(result, g, thumbs, near) for g in ordered[:MAX_SHOWN])
    body += _more(len(ordered), MAX_SHOWN, "groups")
    if near:
        intro = (
            "Re-encoded, resized, shifted or cropped copies: close in the base's embedding and confirmed "
            "by a perceptual hash. Groups whose copies carry different labels come first."
        )
        return _section("near-duplicates", "Near duplicates", len(groups), intro, body)
    intro = "Byte-identical images. A photo in two classes is a label conflict; those come first."
    return _section("duplicates", "Exact duplicates", len(groups), intro, body)


def _leaks_section(result: AuditResult, thumbs: _Thumbs) -> str:
    leaks = sorted(result.leaks, key=lambda leak: (leak.kind != "exact", -leak.similarity, leak.val, leak.train))
    blocks = []
    for leak in leaks[:MAX_SHOWN]:
        kind = "exact copy" if leak.kind == "exact" else f"near copy, similarity {leak.similarity:.3f}"
        train = thumbs.figure(leak.train, f'train · <span class="lbl">{_e(result.labels.get(leak.train, ""))}</span>')
        val = thumbs.figure(leak.val, f'val · <span class="lbl">{_e(result.labels.get(leak.val, ""))}</span>')
        blocks.append(
            f'<div class="group"><div class="head">{_e(kind)}</div>'
            f'<div class="strip">{train}<div class="vs">=</div>{val}</div></div>'
        )
    body = "".join(blocks) + _more(len(leaks), MAX_SHOWN, "leaks")
    intro = "Validation images with a copy in train: their accuracy is flattered. cleaned.csv drops the train copy."
    return _section("leaks", "Train/val leaks", len(leaks), intro, body)


def _outliers_section(result: AuditResult, thumbs: _Thumbs) -> str:
    outliers = sorted(result.outliers, key=lambda o: (-o.score, o.path))
    figures = "".join(
        thumbs.figure(o.path, f'<span class="lbl">{_e(result.labels.get(o.path, ""))}</span> · score {o.score:.3f}')
        for o in outliers[:MAX_SHOWN]
    )
    body = f'<div class="strip">{figures}</div>' + _more(len(outliers), MAX_SHOWN, "outliers")
    intro = "Images far from every class in the base's embedding (another domain, blank, rotated...), oddest first."
    return _section("outliers", "Outliers", len(outliers), intro, body)


def _unreadable_section(result: AuditResult) -> str:
    items = sorted(result.unreadable, key=lambda u: u.path)
    rows = "".join(f'<tr><td class="mono">{_e(u.path)}</td><td>{_e(u.reason)}</td></tr>' for u in items[:MAX_SHOWN])
    body = f"<table><tr><th>path</th><th>reason</th></tr>{rows}</table>" + _more(len(items), MAX_SHOWN, "files")
    intro = "Files that cannot be used (corrupt, truncated, empty, not an image, too large); they are left out of cleaned.csv."
    return _section("unreadable", "Unreadable images", len(items), intro, body)


# --------------------------------------------------------------------------- the page


def audit_html(result: AuditResult) -> str:
    """The audit's report as one self-contained HTML page (see the module docstring)."""
    thumbs = _Thumbs(result)
    nav = "".join(f'<a href="#{s}">{s}</a>' for s in SECTIONS)
    sections: Sequence[str] = [
        _summary_section(result),
        _label_issues_section(result, thumbs),
        _groups_section(result, thumbs, near=False),
        _groups_section(result, thumbs, near=True),
        _leaks_section(result, thumbs),
        _outliers_section(result, thumbs),
        _unreadable_section(result),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>tlkit audit — {_e(result.data)}</title><style>{_CSS}{_AUDIT_CSS}</style></head><body>"
        f'<header><h1>Audit of {_e(Path(result.data).name or result.data)}</h1><div class="sub">'
        f'tlkit audit of <span class="mono">{_e(result.data)}</span> with {_e(result.base)}</div>'
        f"<nav>{nav}</nav></header><main>{''.join(sections)}</main>"
        f"<footer>Generated by tlkit {_e(__version__)} on {_e(time.strftime('%Y-%m-%d %H:%M'))}. "
        "Self-contained: no scripts, no network.</footer></body></html>\n"
    )
