"""The audit's outputs: audit.json, issues.csv (order), cleaned.csv (rules), report.html, the folder's publication.

An :class:`AuditResult` is built by hand over a tiny image folder with one of each finding, so these
tests check the outputs alone (the checks that find them are tested elsewhere).  The browser test
needs Debian's chromium (``apt-get install -y chromium``); without /usr/bin/chromium it is skipped.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.support import CHROMIUM, NEEDS_CHROMIUM, chromium, snapshot
from tlkit.auditing import outputs
from tlkit.auditing.outputs import (
    AUDIT_FILES,
    ISSUE_COLUMNS,
    ISSUE_ORDER,
    cleaned_rows,
    issue_rows,
    write_audit_folder,
)
from tlkit.auditing.report import MAX_SHOWN, SECTIONS, audit_html
from tlkit.auditing.result import (
    AuditResult,
    DuplicateGroup,
    ImageStats,
    LabelIssue,
    Leak,
    Outlier,
    Unreadable,
)
from tlkit.errors import TlkitError
from tlkit.testing import write_images

RED, GREEN, BLUE = (220, 40, 40), (40, 200, 40), (40, 40, 220)

# The findings planted in the folder, by path.
COPY = "train/cat/copy.png"  # exact copy of train/cat/cat_000.png, same class
LEAK = "train/cat/leak.png"  # exact copy of val/cat/cat_000.png
TWIN = "train/dog/cat_twin.png"  # copy of train/cat/cat_001.png labelled dog; its label issue suggests cat
ODD = "train/dog/odd.png"  # copy of train/cat/cat_002.png labelled dog; nothing settles the conflict
SMALL = "train/dog/dog_000_small.jpg"  # resized JPEG of train/dog/dog_000.png
WEIRD = "train/cat/weird.png"  # blue: an outlier
BROKEN = "train/dog/broken.png"  # not an image


def _audit(root: Path) -> AuditResult:
    """A result with one of each finding over ``root`` (class folders train/{cat,dog}, val/{cat,dog})."""
    from PIL import Image

    for split, n, seed in (("train", 4, 1), ("val", 2, 3)):
        write_images(root / split / "cat", n, RED, prefix="cat", seed=seed)
        write_images(root / split / "dog", n, GREEN, prefix="dog", seed=seed + 1)
    shutil.copy(root / "train/cat/cat_000.png", root / COPY)
    shutil.copy(root / "val/cat/cat_000.png", root / LEAK)
    shutil.copy(root / "train/cat/cat_001.png", root / TWIN)
    shutil.copy(root / "train/cat/cat_002.png", root / ODD)
    with Image.open(root / "train/dog/dog_000.png") as img:
        img.resize((20, 20)).save(root / SMALL, quality=80)
    write_images(root / "train" / "cat", 1, BLUE, prefix="weird")
    (root / "train/cat/weird_000.png").rename(root / WEIRD)
    (root / BROKEN).write_bytes(b"not an image")

    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.*") if p.name != "broken.png")
    labels = {path: path.split("/")[1] for path in files}
    splits = {path: path.split("/")[0] for path in files}
    counts: dict[str, dict[str, int]] = {"train": {}, "val": {}}
    for path, label in labels.items():
        counts[splits[path]][label] = counts[splits[path]].get(label, 0) + 1

    def group(*paths: str, similarity: float = 1.0) -> DuplicateGroup:
        return DuplicateGroup(paths=paths, labels={p: labels[p] for p in paths}, similarity=similarity)

    return AuditResult(
        data=root,
        base="mobilenet_v2",
        image_size=224,
        weights="imagenet",
        classes=["cat", "dog"],
        labels=labels,
        splits=splits,
        label_issues=[
            LabelIssue("train/cat/cat_003.png", "cat", "dog", 0.6, confidence=0.55),
            LabelIssue("train/dog/dog_003.png", "dog", "cat", 0.95, confidence=0.9),
            LabelIssue(TWIN, "dog", "cat", 0.85, confidence=0.8),
        ],
        duplicates=[
            group("train/cat/cat_000.png", COPY),
            group(LEAK, "val/cat/cat_000.png"),
            group("train/cat/cat_001.png", TWIN),
            group("train/cat/cat_002.png", ODD),
        ],
        near_duplicates=[group("train/dog/dog_000.png", SMALL, similarity=0.97)],
        leaks=[Leak(train=LEAK, val="val/cat/cat_000.png", kind="exact")],
        outliers=[Outlier(WEIRD, 0.9)],
        unreadable=[Unreadable(BROKEN, "not an image (cannot identify image file)")],
        class_counts=counts,
        image_stats=ImageStats(
            count=len(files),
            widths=(20, 24, 24),
            heights=(20, 24, 24),
            modes={"RGB": len(files)},
            formats={"PNG": len(files) - 1, "JPEG": 1},
        ),
    )


@pytest.fixture
def result(tmp_path) -> AuditResult:
    return _audit(tmp_path / "data")


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


# --------------------------------------------------------------------------- issues.csv


def test_issue_rows_are_sorted_by_severity_then_score(result):
    rows = issue_rows(result)
    assert all(tuple(row) == ISSUE_COLUMNS for row in rows)
    assert [(r["issue"], r["path"]) for r in rows] == [
        ("unreadable", BROKEN),
        ("leak", "val/cat/cat_000.png"),
        ("label_conflict", "train/cat/cat_001.png"),
        ("label_conflict", "train/cat/cat_002.png"),
        ("label_conflict", TWIN),
        ("label_conflict", ODD),
        ("label_issue", "train/dog/dog_003.png"),  # score 0.95
        ("label_issue", TWIN),  # 0.85
        ("label_issue", "train/cat/cat_003.png"),  # 0.6
        ("duplicate", "train/cat/cat_000.png"),
        ("duplicate", COPY),
        ("duplicate", LEAK),
        ("duplicate", "val/cat/cat_000.png"),
        ("near_duplicate", "train/dog/dog_000.png"),
        ("near_duplicate", SMALL),
        ("outlier", WEIRD),
    ]
    assert [ISSUE_ORDER.index(r["issue"]) for r in rows] == sorted(ISSUE_ORDER.index(r["issue"]) for r in rows)
    detail = {(r["issue"], r["path"]): r for r in rows}
    assert detail["leak", "val/cat/cat_000.png"]["detail"].startswith(f"val image with an exact copy in train: {LEAK}")
    assert "drops the train copy" in detail["leak", "val/cat/cat_000.png"]["detail"]
    twin = detail["label_conflict", TWIN]
    assert twin["detail"].startswith("exact copy, also labelled cat: train/cat/cat_001.png")
    assert twin["suggested_label"] == "cat"  # the suggestion settled the conflict
    assert "drops every copy" in detail["label_conflict", ODD]["detail"]
    assert detail["duplicate", COPY]["detail"].startswith("exact copy of train/cat/cat_000.png")
    assert "keeps this one" in detail["duplicate", "train/cat/cat_000.png"]["detail"]
    assert detail["near_duplicate", SMALL]["detail"].startswith("near copy (similarity 0.970) of train/dog/dog_000.png")
    issue = detail["label_issue", "train/dog/dog_003.png"]
    assert (issue["detail"], issue["suggested_label"], issue["score"]) == (
        "labelled dog, looks like cat (p = 0.90)",
        "cat",
        0.95,
    )
    assert detail["unreadable", BROKEN]["score"] == ""


# --------------------------------------------------------------------------- cleaned.csv


def test_cleaned_rows_keep_one_copy_drop_leaks_and_unsettled_conflicts(result):
    rows, summary = cleaned_rows(result)
    paths = [r["path"] for r in rows]
    assert paths == sorted(paths) and all(tuple(r) == ("path", "label", "split") for r in rows)
    assert summary.dropped == {
        LEAK: "leak",  # the train copy of a val image
        COPY: "duplicate",
        SMALL: "duplicate",
        TWIN: "conflict",  # its label issue suggests cat: the cat copy stays
        "train/cat/cat_002.png": "conflict",  # cat vs dog, no majority, no suggestion: both go
        ODD: "conflict",
    }
    assert set(paths) == set(result.labels) - set(summary.dropped)
    assert {"val/cat/cat_000.png", "train/cat/cat_000.png", "train/cat/cat_001.png", WEIRD} <= set(paths)
    assert BROKEN not in paths
    assert all(r["label"] == result.labels[r["path"]] and r["split"] == result.splits[r["path"]] for r in rows)
    assert (summary.total, summary.kept) == (len(result.labels), len(result.labels) - 6)
    assert (summary.dropped_leaks, summary.dropped_duplicates, summary.dropped_conflicts) == (1, 2, 3)
    assert summary.relabelled == {} and summary.relabel_threshold is None


def test_relabel_applies_suggestions_at_or_above_the_threshold(result):
    rows, summary = cleaned_rows(result, relabel=True, relabel_threshold=0.9)
    labels = {r["path"]: r["label"] for r in rows}
    assert summary.relabelled == {"train/dog/dog_003.png": ("dog", "cat")}
    assert labels["train/dog/dog_003.png"] == "cat" and labels["train/cat/cat_003.png"] == "cat"

    rows, summary = cleaned_rows(result, relabel=True, relabel_threshold=0.6)  # 0.6 itself is included
    assert summary.relabelled == {"train/dog/dog_003.png": ("dog", "cat"), "train/cat/cat_003.png": ("cat", "dog")}
    assert TWIN not in {r["path"] for r in rows}  # dropped, so not relabelled
    assert summary.as_dict()["relabelled"] == 2 and summary.as_dict()["relabel_threshold"] == 0.6


def test_cleaned_rules_on_merged_groups_majorities_and_leaks_alone(tmp_path):
    labels = {"train/a/1.png": "a", "train/a/2.png": "a", "val/b/3.png": "b", "train/a/4.png": "a", "val/a/5.png": "a"}
    labels |= {"train/a/6.png": "a", "train/a/7.png": "a"}
    result = AuditResult(
        data=tmp_path,
        base="b",
        image_size=32,
        weights="none",
        classes=["a", "b"],
        labels=labels,
        splits={p: p.split("/")[0] for p in labels},
        # 1, 2 (exact) and 2, 3 (near) merge: a, a, b → majority a; the val copy is outvoted
        duplicates=[DuplicateGroup(("train/a/1.png", "train/a/2.png"))],
        near_duplicates=[DuplicateGroup(("train/a/2.png", "val/b/3.png"), similarity=0.95)],
        # a near leak in no group: its train copy goes; 6 and 7 are in no group and stay
        leaks=[Leak(train="train/a/4.png", val="val/a/5.png", kind="near", similarity=0.93)],
    )
    rows, summary = cleaned_rows(result)
    assert summary.dropped == {"train/a/2.png": "duplicate", "val/b/3.png": "conflict", "train/a/4.png": "leak"}
    assert [r["path"] for r in rows] == ["train/a/1.png", "train/a/6.png", "train/a/7.png", "val/a/5.png"]
    assert next(r for r in issue_rows(result) if r["issue"] == "leak")["detail"] == (
        "val image with a near copy (similarity 0.930) in train: train/a/4.png; cleaned.csv drops the train copy"
    )
    assert [r["issue"] for r in issue_rows(result)].count("label_conflict") == 2


def test_cleaned_csv_is_a_labels_csv_tlkit_reads(result, tmp_path):
    from tlkit.data.labels_csv import read_labels_csv

    folder = write_audit_folder(result, tmp_path / "audit" / "run")
    rows, _ = read_labels_csv(folder / "cleaned.csv", result.data)
    expected, _ = cleaned_rows(result)
    assert [(r.file, r.labels, r.split) for r in rows] == [
        (result.data / e["path"], (e["label"],), e["split"]) for e in expected
    ]


# --------------------------------------------------------------------------- the folder


def test_folder_has_the_four_files_and_audit_json_has_the_documented_shape(result, tmp_path):
    target = tmp_path / "audit" / "20260101-120000-mobilenet_v2"
    folder = write_audit_folder(result, target, relabel=True, relabel_threshold=0.9)
    assert folder == target and result.folder == folder
    assert sorted(p.name for p in folder.iterdir()) == sorted(AUDIT_FILES)
    assert [p.name for p in target.parent.iterdir()] == [target.name]  # no temporary folder left

    data = json.loads((folder / "audit.json").read_text(encoding="utf-8"))
    assert list(data) == [
        "label_issues",
        "duplicates",
        "near_duplicates",
        "leaks",
        "outliers",
        "unreadable",
        "class_counts",
    ]
    assert all(set(i) == {"path", "given", "suggested", "score"} for i in data["label_issues"])
    assert all(set(leak) == {"train", "val", "kind"} for leak in data["leaks"])
    assert all(set(o) == {"path", "score"} for o in data["outliers"])
    assert all(set(u) == {"path", "reason"} for u in data["unreadable"])
    assert data["duplicates"][0] == ["train/cat/cat_000.png", COPY]
    assert data["near_duplicates"] == [["train/dog/dog_000.png", SMALL]]
    assert data["class_counts"] == result.class_counts
    assert data == result.as_json()

    assert _read_csv(folder / "issues.csv") == [{k: str(v) for k, v in row.items()} for row in issue_rows(result)]
    cleaned = {r["path"]: r["label"] for r in _read_csv(folder / "cleaned.csv")}
    assert cleaned["train/dog/dog_003.png"] == "cat" and LEAK not in cleaned  # relabelled at 0.9; leak dropped
    assert (folder / "report.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_a_second_audit_never_overwrites_the_first(result, tmp_path):
    target = tmp_path / "audit" / "20260101-120000-mobilenet_v2"
    first = write_audit_folder(result, target)
    before = snapshot(first)
    second = write_audit_folder(result, target)
    third = write_audit_folder(result, target)
    assert (second.name, third.name) == (f"{target.name}-2", f"{target.name}-3")
    assert snapshot(first) == before
    assert sorted(p.name for p in second.iterdir()) == sorted(AUDIT_FILES)


def test_an_explicit_output_that_is_not_empty_is_refused(result, tmp_path):
    taken = tmp_path / "mine"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    with pytest.raises(TlkitError, match=r"--output .*mine already exists and is not empty"):
        write_audit_folder(result, taken, explicit=True)
    assert [p.name for p in taken.iterdir()] == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "mine"]  # no temporary folder left

    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(TlkitError, match="already exists"):
        write_audit_folder(result, a_file, explicit=True)

    empty = tmp_path / "empty"
    empty.mkdir()
    assert write_audit_folder(result, empty, explicit=True) == empty  # an empty folder is the user's to fill
    assert sorted(p.name for p in empty.iterdir()) == sorted(AUDIT_FILES)


def test_a_failure_mid_write_leaves_nothing(result, tmp_path, monkeypatch):
    def broken(_result):
        raise RuntimeError("the report broke")

    monkeypatch.setattr(outputs, "audit_html", broken)
    target = tmp_path / "fresh" / "20260101-120000-mobilenet_v2"
    with pytest.raises(RuntimeError, match="the report broke"):
        write_audit_folder(result, target)
    assert not (tmp_path / "fresh").exists()  # not even the parent it made
    assert result.folder is None

    (tmp_path / "kept").mkdir()
    with pytest.raises(RuntimeError):
        write_audit_folder(result, tmp_path / "kept" / "x")
    assert list((tmp_path / "kept").iterdir()) == []


# --------------------------------------------------------------------------- report.html


def test_report_is_self_contained_with_every_section(result):
    text = audit_html(result)
    for section in SECTIONS:
        assert f'<section id="{section}">' in text
    sources = re.findall(r'(?:src|href)="([^"]*)"', text)
    assert sources and all(s.startswith(("data:image/jpeg;base64,", "#")) for s in sources), sources
    assert not re.search(r"https?://", text) and "<script" not in text and "<link" not in text and "url(" not in text
    # label issues 3, exact copies 8, near copies 2, a leak's 2, an outlier: each a decoded thumbnail
    assert text.count('src="data:image/jpeg;base64,') == 16
    assert "cannot be shown" not in text
    assert "label conflict: cat, dog" in text and "dog → <span" in text
    assert "not an image (cannot identify image file)" in text  # the unreadable section: path and reason
    assert (
        "mobilenet_v2" in text and "20–24 px (median 24)" in text and "modes: RGB 18; formats: PNG 17, JPEG 1" in text
    )


def test_report_escapes_and_survives_undecodable_images(result, tmp_path):
    result.unreadable.append(Unreadable("train/dog/<b>&.png", "<script>alert(1)</script>"))
    result.label_issues.append(LabelIssue("train/dog/<i>gone.png", "d<o>g", "c&t", 0.99))
    result.outliers.append(Outlier(BROKEN, 0.5))  # corrupt, listed unreadable: never decoded
    (result.data / "train/cat/fake.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    result.outliers.append(Outlier("train/cat/fake.png", 0.4))
    text = audit_html(result)
    assert "<script" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "<b>&" not in text and "train/dog/&lt;b&gt;&amp;.png" in text
    assert "d&lt;o&gt;g → <span" in text and "c&amp;t" in text
    assert text.count('<div class="ph"') == 3  # the missing, the unreadable and the corrupt image


def test_each_section_shows_at_most_max_shown(tmp_path):
    many = [Outlier(f"train/x/{i:04d}.png", 1 - i / 1000) for i in range(MAX_SHOWN + 50)]
    result = AuditResult(
        data=tmp_path, base="b", image_size=32, weights="none", classes=["x"], labels={}, splits={}, outliers=many
    )
    text = audit_html(result)
    section = text[text.index('<section id="outliers">') : text.index('<section id="unreadable">')]
    assert section.count('<figure class="thumb">') == MAX_SHOWN
    assert "and 50 more outliers (see issues.csv)" in section
    assert "train/x/0000.png" in section and "train/x/0249.png" not in section  # the oddest first
    assert "None found." in text  # the empty sections say so


@pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason=NEEDS_CHROMIUM,
)
def test_report_renders_in_a_headless_browser(result, tmp_path):
    from PIL import Image

    folder = write_audit_folder(result, tmp_path / "audit" / "run")
    url = (folder / "report.html").resolve().as_uri()
    dom = chromium("--dump-dom", url, tmp=tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    for section in SECTIONS:
        assert re.search(rf'<section id="{section}">', dom.stdout), f"section {section} missing in the DOM"
    assert "Label issues (3)" in dom.stdout and "Train/val leaks (1)" in dom.stdout

    png = tmp_path / "report.png"
    shot = chromium(f"--screenshot={png}", "--window-size=1200,2400", url, tmp=tmp_path)
    assert shot.returncode == 0 and png.is_file(), shot.stderr[-2000:]
    with Image.open(png) as image:
        pixels = np.asarray(image.convert("RGB")).astype(int)
    r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    # The dog thumbnails are green (no green in the page's style): several decoded 96-px images show.
    green = int(((g > 150) & (r < 110) & (b < 110)).sum())
    assert green > 2 * 96 * 96 * 0.8, f"only {green} green pixels: the thumbnails were not decoded"
