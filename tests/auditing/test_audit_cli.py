"""``tlkit audit`` end to end: findings on a small dirty folder, the feature store shared with
``tlkit train`` (both ways), the folder it writes, and one-line refusals before any work."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import tlkit
from tests import support
from tests.support import CLASS_COLORS, invoke_tlkit, snapshot, write_images
from tlkit import TlkitError

AUDIT_FAST = ["--base", "mobilenet_v2", "--weights", "none", "--image-size", "32", "--engine", "tensorflow"]
API_FAST = {"base": "mobilenet_v2", "weights": "none", "image_size": 32, "engine": "tensorflow"}


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("TLKIT_CACHE_DIR", str(root))
    return root


def dirty_folder(root: Path) -> Path:
    """Class folders with one of each problem: a val image copied into train (a leak), the same
    image in two classes (a conflict), and a file that is not an image."""
    data = root / "data"
    for k, (name, color) in enumerate(CLASS_COLORS.items()):
        write_images(data / "train" / name, 8, color, seed=k)
        write_images(data / "val" / name, 3, color, seed=10 + k)
    shutil.copy(data / "val" / "cat" / "img_000.png", data / "train" / "cat" / "leaked.png")
    shutil.copy(data / "train" / "dog" / "img_001.png", data / "train" / "fox" / "also_a_dog.png")
    (data / "train" / "fox" / "broken.png").write_bytes(b"not a png at all")
    return data


def test_audit_finds_each_problem_and_writes_its_folder(tmp_path, cache):
    data = dirty_folder(tmp_path)
    before = snapshot(data)
    proc = invoke_tlkit("audit", "--data", data, *AUDIT_FAST, "--folds", "3", "--output", tmp_path / "audits", "--json")
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout)
    assert "Training path" not in proc.stderr and "trainable" not in proc.stderr  # no head is trained here
    assert set(found) == {
        "label_issues",
        "duplicates",
        "near_duplicates",
        "leaks",
        "outliers",
        "unreadable",
        "class_counts",
    }
    assert [u["path"] for u in found["unreadable"]] == ["train/fox/broken.png"]
    assert found["unreadable"][0]["reason"]
    assert {"train/cat/leaked.png", "val/cat/img_000.png"} in [set(g) for g in found["duplicates"]]
    assert {"train/dog/img_001.png", "train/fox/also_a_dog.png"} in [set(g) for g in found["duplicates"]]
    assert {"train": "train/cat/leaked.png", "val": "val/cat/img_000.png", "kind": "exact"} in found["leaks"]
    assert found["class_counts"]["train"] == {"cat": 9, "dog": 8, "fox": 9}
    assert found["class_counts"]["val"] == {"cat": 3, "dog": 3, "fox": 3}
    for issue in found["label_issues"]:
        assert set(issue) == {"path", "given", "suggested", "score"}
    (folder,) = (tmp_path / "audits").iterdir()
    assert sorted(p.name for p in folder.iterdir()) == ["audit.json", "cleaned.csv", "issues.csv", "report.html"]
    assert json.loads((folder / "audit.json").read_text()) == found
    assert snapshot(data) == before, "the audit wrote into the data folder"

    # The cleaned labels train as they are: no leak, one copy of each duplicate, no unreadable file.
    cleaned = (folder / "cleaned.csv").read_text().splitlines()
    assert cleaned[0] == "path,label,split"
    assert not any(line.startswith("train/cat/leaked.png,") for line in cleaned)
    assert not any("broken.png" in line for line in cleaned)
    result = tlkit.train(
        data=str(data),
        labels=str(folder / "cleaned.csv"),
        output=str(tmp_path / "runs"),
        epochs=1,
        verbose=False,
        **{**support.FAST, "engine": "tensorflow"},
    )
    assert result.metrics["num_val"] == 9


def test_audit_and_train_share_the_feature_store(tmp_path, cache):
    data = tmp_path / "data"
    for k, (name, color) in enumerate(CLASS_COLORS.items()):
        write_images(data / "train" / name, 6, color, seed=k)
        write_images(data / "val" / name, 2, color, seed=10 + k)
    first = tlkit.audit(data=str(data), output=str(tmp_path / "audits"), folds=2, verbose=False, **API_FAST)
    assert {first.features[s]["cache"] for s in ("train", "val")} == {"computed"}
    messages: list[str] = []

    class Collect(tlkit.TrainingObserver):
        def message(self, text: str, level: str = "info") -> None:
            messages.append(text)

    tlkit.train(
        data=str(data),
        output=str(tmp_path / "runs"),
        epochs=1,
        observer=Collect(),
        **{**support.FAST, "engine": "tensorflow"},
    )
    assert any("Features (train): reused from the cache" in m for m in messages), messages
    again = tlkit.audit(data=str(data), output=None, folds=2, verbose=False, **API_FAST)
    assert {again.features[s]["cache"] for s in ("train", "val")} == {"hit"}
    assert again.folder is None and len(list((tmp_path / "audits").iterdir())) == 1


def test_train_warns_in_one_line_about_exact_copies_in_train_and_val(tmp_path, cache):
    data = tmp_path / "data"
    for k, (name, color) in enumerate(CLASS_COLORS.items()):
        write_images(data / "train" / name, 4, color, seed=k)
        write_images(data / "val" / name, 2, color, seed=10 + k)
    shutil.copy(data / "val" / "dog" / "img_001.png", data / "train" / "dog" / "copy.png")
    proc = invoke_tlkit(
        "train",
        "--data",
        data,
        *support.CLI_FAST,
        "--epochs",
        "1",
        "--engine",
        "tensorflow",
        "--output",
        tmp_path / "r",
    )
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stderr.split())
    assert "1 validation image(s) are exact copies of training images" in text
    assert "val/dog/img_001.png = train/dog/copy.png" in text and "tlkit audit --data" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--folds", "1"], "--folds must be an integer >= 2"),
        (["--relabel-threshold", "0"], "--relabel-threshold must be in (0, 1]"),
        (["--near-threshold", "1.5"], "--near-threshold must be in (0, 1)"),
        (["--output", "{data}/out"], "is inside the data folder"),
        (["--base", "nope"], "unknown base 'nope'"),
    ],
)
def test_bad_input_is_refused_in_one_line_before_any_work(tmp_path, cache, args, message):
    data = tmp_path / "data"
    for k, (name, color) in enumerate(CLASS_COLORS.items()):
        write_images(data / "train" / name, 3, color, seed=k)
    args = [a.format(data=data) for a in args]
    proc = invoke_tlkit("audit", "--data", data, "--weights", "none", "--output", tmp_path / "audits", *args)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in " ".join(proc.stderr.split()), proc.stderr
    assert not (tmp_path / "audits").exists()
    assert not cache.exists() or not any(cache.rglob("meta.json")), "a feature was computed before the refusal"


def test_a_missing_data_folder_is_one_line(tmp_path, cache):
    proc = invoke_tlkit("audit", "--data", tmp_path / "nope", "--weights", "none")
    assert proc.returncode == 1 and "does not exist" in proc.stderr


def test_multi_label_is_refused(tmp_path, cache):
    with pytest.raises(TlkitError, match="multi-label"):
        tlkit.audit(data=str(tmp_path), labels=str(tmp_path / "l.csv"), multi_label=True, output=None)
