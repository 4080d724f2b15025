"""``--labels FILE.csv``: reading and checking the CSV, the split it gives, and a run trained on one."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from tests.support import CLASS_COLORS, invoke_tlkit, snapshot
from tlkit.config.options import TrainConfig
from tlkit.data.labels_csv import read_labels_csv, scan_for_config, scan_labels_csv
from tlkit.errors import TlkitError
from tlkit.io.rundir import RunDir
from tlkit.testing import write_images


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """A data folder of loose images (no class folders): img/<colour>_NNN.png, 6 per colour."""
    root = tmp_path_factory.mktemp("csvdata") / "data"
    for k, (name, color) in enumerate(CLASS_COLORS.items()):
        write_images(root / "img", 6, color, size=32, seed=k, prefix=name)
    return root


def write_csv(folder: Path, text: str, name: str = "labels.csv") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- parsing: good and bad rows

BAD_ROWS = [
    # (CSV text, the message's tail after "--labels <csv>")
    ("path,label\n/etc/passwd,cat\n", ", line 2: '/etc/passwd' is an absolute path; paths must be relative to --data"),
    ("path,label\n../x.png,cat\n", ", line 2: '../x.png' leaves the data folder"),
    ("path,label\nimg/../../x.png,cat\n", ", line 2: 'img/../../x.png' leaves the data folder"),
    ("path,label\nimg/nope.png,cat\n", ", line 2: no such image"),
    (
        "path,label\nimg/cat_000.png,cat\nimg/./cat_000.png,dog\n",
        ", line 3: img/cat_000.png is listed again (first on line 2)",
    ),
    ("path,label\nimg/cat_000.png,\n", ", line 2: the label of img/cat_000.png is empty"),
    ("path,label,split\nimg/cat_000.png,cat,test\n", ", line 2: split 'test' of img/cat_000.png is not train or val"),
    ("path,label,split\nimg/cat_000.png,cat,\n", ", line 2: the split of img/cat_000.png is empty; use train or val"),
    ("path,label\n,cat\n", ", line 2: the path is empty"),
    ("path,label,split\nimg/cat_000.png,cat\n", ", line 2: 2 cell(s) for the 3 columns of the header"),
    ("file,label\nimg/cat_000.png,cat\n", ": the header 'file,label' lacks path; expected path,label[,split]"),
    ("path,labels\nimg/cat_000.png,cat\n", "lacks label; expected path,label[,split] (a labels column holds several"),
    ("path,label\n", " has a header but no rows"),
    ("", " is empty; its first line must be the header path,label[,split]"),
]


@pytest.mark.parametrize(("text", "message"), BAD_ROWS)
def test_bad_rows_are_refused_naming_the_line(images, tmp_path, text, message):
    csv_path = write_csv(tmp_path, text)
    with pytest.raises(TlkitError) as info:
        read_labels_csv(csv_path, images)
    text_of_error = str(info.value)
    assert text_of_error.startswith(f"--labels {csv_path}")
    assert message in text_of_error
    assert "\n" not in text_of_error


def test_good_csv_gives_classes_splits_and_ignores_other_columns(images, tmp_path):
    rows = ["path,label,split,width"]
    for name in CLASS_COLORS:
        rows += [f"img/{name}_{i:03d}.png,{name},{'val' if i >= 4 else 'train'},32" for i in range(6)]
    csv_path = write_csv(tmp_path, "\ufeff" + "\n".join(rows) + "\n\n")  # a BOM and a blank line are fine
    parsed, ignored = read_labels_csv(csv_path, images)
    assert ignored == ["width"] and len(parsed) == 18
    scan = scan_labels_csv(csv_path, images)
    assert scan.classes == sorted(CLASS_COLORS)
    assert [f.name for f in scan.val.files] == [f"{n}_{i:03d}.png" for n in CLASS_COLORS for i in (4, 5)]
    assert scan.class_counts("train") == {"cat": 4, "dog": 4, "fox": 4}
    assert scan.val_source == f"split column of {csv_path.name}"


def test_without_a_split_column_the_hold_out_is_stratified_and_seeded(images, tmp_path):
    rows = ["path,label"] + [f"img/{n}_{i:03d}.png,{n}" for n in CLASS_COLORS for i in range(6)]
    csv_path = write_csv(tmp_path, "\n".join(rows) + "\n")
    first = scan_labels_csv(csv_path, images, val_split=0.34, seed=3)
    again = scan_labels_csv(csv_path, images, val_split=0.34, seed=3)
    other = scan_labels_csv(csv_path, images, val_split=0.34, seed=4)
    assert first.val.files == again.val.files
    assert first.val.files != other.val.files
    assert first.class_counts("val") == {"cat": 2, "dog": 2, "fox": 2}  # round(6 * 0.34) of each class
    assert first.val_source == f"34% stratified split of {csv_path.name} (seed 3)"
    assert not set(first.val.files) & set(first.train.files)


def test_a_class_without_training_rows_is_refused(images, tmp_path):
    text = "path,label,split\nimg/cat_000.png,cat,train\nimg/dog_000.png,dog,train\nimg/fox_000.png,fox,val\n"
    with pytest.raises(TlkitError, match=r"class\(es\) fox have no training image; add training rows"):
        scan_labels_csv(write_csv(tmp_path, text), images)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"multi_label": True}, "--multi-label needs --labels FILE.csv"),
        ({"threshold": "tuned"}, "--threshold tuned works with --multi-label only"),
        ({"threshold": "0.3"}, "--threshold 0.3 works with --multi-label only"),
        ({"threshold": "1.5", "multi_label": True, "labels": "x.csv"}, "--threshold must be a number between 0 and 1"),
        ({"label_sep": ";"}, "--label-sep ';' works with --multi-label only"),
        ({"multi_label": True, "labels": "x.csv", "class_weight": "balanced"}, "--class-weight balanced is for single"),
        ({"multi_label": True, "labels": "x.csv", "metrics": ["top_k"]}, "--metrics top_k is for single-label"),
        ({"multi_label": True, "labels": "x.csv", "label_sep": ","}, "--label-sep must be a visible character"),
    ],
)
def test_label_options_that_do_not_fit_are_refused(options, message):
    with pytest.raises(TlkitError, match=message.replace("(", r"\(")):
        TrainConfig(**options).validate()


def test_the_cli_refuses_a_missing_labels_file_in_one_line(images, tmp_path):
    result = invoke_tlkit("train", "--data", images, "--labels", tmp_path / "nope.csv", "--output", tmp_path / "runs")
    assert result.returncode != 0
    assert "--labels" in result.stderr and "is not a file" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


# --------------------------------------------------------------------------- a run trained on a CSV


@pytest.fixture(scope="module")
def csv_run(images, tmp_path_factory):
    """One tiny run trained from a CSV with a split column: (run dir, csv path, data snapshot before)."""
    folder = tmp_path_factory.mktemp("csvrun")
    rows = ["path,label,split"]
    for name in CLASS_COLORS:
        rows += [f"img/{name}_{i:03d}.png,{name},{'val' if i >= 4 else 'train'}" for i in range(6)]
    csv_path = write_csv(folder, "\n".join(rows) + "\n")
    before = snapshot(images)
    result = invoke_tlkit(
        "train", "--data", images, "--labels", csv_path, "--base", "mobilenet_v2", "--weights", "none",
        "--image-size", "32", "--epochs", "1", "--batch-size", "8", "--output", folder / "runs", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return Path(json.loads(result.stdout)["run_dir"]), csv_path, before


def test_a_csv_run_has_the_csvs_classes_and_split(csv_run, images):
    run_dir, csv_path, before = csv_run
    run = RunDir(run_dir)
    assert run.read_classes() == ["cat", "dog", "fox"]
    metrics = run.read_metrics()
    assert (metrics["num_train"], metrics["num_val"]) == (12, 6)
    config = run.read_config()
    assert config["labels"] == str(csv_path.resolve()) and config["multi_label"] is False
    # The CSV's content is part of what identifies the data (a --resume compares it).
    assert run.read_state()["data"]["labels"] == hashlib.sha256(csv_path.read_bytes()).hexdigest()
    # The same configuration gives the same split again (what evaluate and --resume rely on).
    scan = scan_for_config(config)
    assert [f.name for f in scan.val.files] == [f"{n}_{i:03d}.png" for n in CLASS_COLORS for i in (4, 5)]
    assert snapshot(images) == before  # nothing was written into the data folder


def test_evaluate_and_predict_a_csv_run(csv_run, images):
    import tlkit
    from tlkit.inference.prediction import load_keras_model

    run_dir, csv_path, _ = csv_run
    model = load_keras_model(RunDir(run_dir).model_path)  # loaded once for the three calls
    evaluation = tlkit.evaluate(run_dir, model=model)  # the run's own validation data: the CSV's val rows
    assert evaluation.num_images == 6
    assert f"split column of {csv_path.name}" in evaluation.split
    assert RunDir(run_dir).read_evaluation()["num_images"] == 6
    on_train = tlkit.evaluate(run_dir, split="train", model=model, write=False)
    assert on_train.num_images == 12 and sum(c.support for c in on_train.per_class.values()) == 12
    (prediction,) = tlkit.predict(run_dir, images / "img" / "cat_000.png", model=model)
    assert prediction.label in CLASS_COLORS and np.isclose(sum(prediction.probs), 1.0, atol=1e-4)
