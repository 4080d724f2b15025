"""Evaluate, predict and compare: metrics against hand-computed values, streaming, bad input, the CLI.

Most tests use a hand-made run directory whose model is a tiny, exact colour
classifier (global average pooling → a fixed Dense layer), so predictions are
known in advance and no training is needed; one test trains a real run and
checks that evaluation reproduces the validation accuracy training recorded for the saved model.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.support import write_images
from tlkit.errors import TlkitError

SIZE = 16
CLASSES = ["cat", "dog", "fox"]
COLORS = {"cat": (200, 40, 40), "dog": (40, 200, 40), "fox": (40, 40, 200)}
# val/<true class>: the colours of its images (one colour = the class the model predicts)
VAL = {"cat": ["cat", "cat", "cat", "dog"], "dog": ["dog", "dog", "dog"], "fox": ["fox", "fox", "cat"]}
EXPECTED_CONFUSION = [[3, 1, 0], [0, 3, 0], [1, 0, 2]]


def colour_model():
    """raw RGB 0–255 → mean colour → softmax: predicts the dominant channel, confidently."""
    import keras

    inputs = keras.Input((SIZE, SIZE, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    dense = keras.layers.Dense(3, activation="softmax")
    outputs = dense(pooled)
    dense.set_weights([np.eye(3, dtype="float32") * 0.1, np.zeros(3, dtype="float32")])
    return keras.Model(inputs, outputs)


def make_data(root: Path, val: dict[str, list[str]] = VAL, classes=CLASSES) -> Path:
    for k, name in enumerate(classes):
        write_images(root / "train" / name, 4, COLORS.get(name, (128, 128, 128)), size=SIZE, seed=k)
        for i, colour in enumerate(val.get(name, [name])):
            # one image per call so each file keeps its own colour
            tmp = root / "_tmp"
            write_images(tmp, 1, COLORS[colour], size=SIZE, seed=100 + 10 * k + i)
            (root / "val" / name).mkdir(parents=True, exist_ok=True)
            (tmp / "img_000.png").rename(root / "val" / name / f"v{i}_{colour}.png")
    shutil.rmtree(root / "_tmp", ignore_errors=True)
    return root


def make_run(
    folder: Path, data: Path, *, name: str = "20260101-000000-tiny-gap", stages=("head", "head", "head")
) -> Path:
    """A run directory as `tlkit train` writes it, with the colour model."""
    run = folder / name
    run.mkdir(parents=True)
    colour_model().save(run / "model.keras")
    (run / "classes.json").write_text(json.dumps(CLASSES))
    (run / "config.toml").write_text(
        textwrap.dedent(f"""\
        data = "{data}"
        base = "tiny"
        head = "gap"
        augmentations = ["flip_horizontal"]
        epochs = {len(stages)}
        image_size = {SIZE}
        seed = 0
        val_split = 0.2

        [head_params]
        units = 8

        [tlkit]
        version = "0.1.0"
        created = "2026-01-01T00:00:00+0000"
        """)
    )
    accs = [0.5, 0.7, 0.8, 0.75, 0.9, 0.85][: len(stages)]
    lines = ["epoch,stage,loss,accuracy,val_loss,val_accuracy,val_f1"]
    for e, (stage, acc) in enumerate(zip(stages, accs), start=1):
        lines.append(f"{e},{stage},{1.5 - acc:.3f},{acc + 0.05:.3f},{1.6 - acc:.3f},{acc:.3f},{acc - 0.1:.3f}")
    (run / "history.csv").write_text("\n".join(lines) + "\n")
    best = int(np.argmax(accs)) + 1
    (run / "metrics.json").write_text(
        json.dumps(
            {
                "best_epoch": best,
                "best_val_accuracy": accs[best - 1],
                "epochs_run": len(stages),
                "train_time_s": 1.25,
                "num_train": 12,
                "num_val": 10,
                "num_classes": 3,
            }
        )
    )
    return run


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(data folder, run directory) with the colour model; shared by the tests of this module."""
    root = tmp_path_factory.mktemp("evaluate")
    data = make_data(root / "data")
    return data, make_run(root / "runs", data)


@pytest.fixture(scope="module")
def cli():
    """Run tlkit's commands in-process (with evaluate/predict/report/compare registered)."""
    from tlkit.cli import app
    from tlkit.cli.evaluate import register

    register(app)
    runner = CliRunner()

    def run(*args: str):
        result = runner.invoke(app, [str(a) for a in args])
        return result.exit_code, result.stdout, result.stderr

    return run


# --------------------------------------------------------------------------- metrics (no TensorFlow)


def test_metrics_match_hand_computed_values():
    from tlkit.evaluation.evaluate import compute_metrics

    y_true = [0, 0, 0, 1, 1, 2]
    y_pred = [0, 0, 1, 1, 2, 2]
    probs = np.full((6, 3), 0.1)
    probs[np.arange(6), y_pred] = 0.8
    probs[2, 0] = probs[4, 1] = 0.15  # the true class second best: counts for top-2
    m = compute_metrics(probs, y_true, ["a", "b", "c"], top_k=2)
    assert m["confusion_matrix"]["counts"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["top_k"] == 2 and m["top_k_accuracy"] == pytest.approx(1.0)
    per = m["per_class"]
    assert [per[c]["precision"] for c in "abc"] == pytest.approx([1.0, 0.5, 0.5])
    assert [per[c]["recall"] for c in "abc"] == pytest.approx([2 / 3, 0.5, 1.0])
    assert [per[c]["f1"] for c in "abc"] == pytest.approx([0.8, 0.5, 2 / 3])
    assert [per[c]["support"] for c in "abc"] == [3, 2, 1]
    assert m["macro_avg"]["f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert m["weighted_avg"]["f1"] == pytest.approx((3 * 0.8 + 2 * 0.5 + 2 / 3) / 6)
    assert m["weighted_avg"]["recall"] == pytest.approx(4 / 6)  # weighted recall = accuracy
    assert m["confusion_matrix"]["row_normalized"][0] == pytest.approx([2 / 3, 1 / 3, 0])
    assert m["log_loss"] == pytest.approx(-np.mean(np.log([0.8, 0.8, 0.15, 0.8, 0.15, 0.8])))


def test_a_class_never_predicted_has_zero_precision_not_nan():
    from tlkit.evaluation.evaluate import compute_metrics

    probs = np.array([[0.9, 0.1], [0.8, 0.2]])
    m = compute_metrics(probs, [0, 1], ["a", "b"], top_k=5)
    assert m["per_class"]["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert m["top_k"] == 2 and m["top_k_accuracy"] == 1.0
    assert m["macro_avg"]["precision"] == pytest.approx(0.25)


# --------------------------------------------------------------------------- evaluate


def test_evaluate_run_on_its_validation_data(tiny):
    import tlkit.evaluation.evaluate as ev

    data, run = tiny
    training_metrics = (run / "metrics.json").read_text()
    result = ev.evaluate(run, top_k=2)
    assert result.classes == CLASSES and result.num_images == 10
    assert result.confusion == EXPECTED_CONFUSION
    assert result.accuracy == pytest.approx(0.8)
    assert result.per_class["cat"].precision == pytest.approx(3 / 4)
    assert result.per_class["cat"].recall == pytest.approx(3 / 4)
    assert result.per_class["fox"].recall == pytest.approx(2 / 3)
    assert {(m.true, m.predicted) for m in result.mistakes} == {("cat", "dog"), ("fox", "cat")}
    probs = [m.probability for m in result.mistakes]
    assert probs == sorted(probs, reverse=True) and probs[0] > 0.9
    assert result.mistakes[0].path.endswith(".png")
    assert "validation images" in result.split

    out = run / "evaluation"
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["confusion_matrix"]["counts"] == EXPECTED_CONFUSION
    assert saved["per_class"]["dog"] == {"precision": 0.75, "recall": 1.0, "f1": pytest.approx(6 / 7), "support": 3}
    assert saved["accuracy"] == pytest.approx(0.8) and saved["num_mistakes"] == 2
    for name in ("confusion_matrix.png", "mistakes.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (run / "metrics.json").read_text() == training_metrics, "training metrics.json was modified"


def test_evaluate_other_data_class_folder_and_split_option(tiny, tmp_path):
    import tlkit.evaluation.evaluate as ev

    data, run = tiny
    # a folder of class sub-folders (a test set): all its images
    result = ev.evaluate(run, data / "val", write=False)
    assert result.num_images == 10 and result.confusion == EXPECTED_CONFUSION
    assert not (tmp_path / "evaluation").exists()
    everything = ev.evaluate(run, data, split="all", output_dir=tmp_path / "out")
    assert everything.num_images == 22 and (tmp_path / "out" / "metrics.json").is_file()
    with pytest.raises(TlkitError, match="--split must be one of"):
        ev.evaluate(run, data, split="test")


def test_unreadable_images_are_skipped_and_listed(tiny, tmp_path):
    import tlkit.evaluation.evaluate as ev

    data = make_data(tmp_path / "data")
    (data / "val" / "dog" / "broken.png").write_bytes(b"not a png")
    result = ev.evaluate(tiny[1], data, write=False)
    assert result.num_images == 10
    assert [Path(s["path"]).name for s in result.skipped] == ["broken.png"]


def test_bare_model_file_uses_classes_json_beside_it_or_output_indices(tiny, tmp_path):
    import tlkit.evaluation.evaluate as ev
    from tlkit.inference.prediction import predict

    data, run = tiny
    bare = tmp_path / "exported" / "colours.keras"
    bare.parent.mkdir()
    shutil.copy(run / "model.keras", bare)
    with pytest.raises(TlkitError, match="model file, not a run directory: pass --data"):
        ev.evaluate(bare)
    result = ev.evaluate(bare, data / "val")  # no classes.json: data's sorted classes assumed
    assert result.confusion == EXPECTED_CONFUSION and any("no classes.json" in n for n in result.notes)
    assert (bare.parent / "evaluation" / "metrics.json").is_file()
    [p] = list(predict(bare, data / "val" / "dog" / "v0_dog.png"))
    assert p.label == "1" and sorted(p.labels) == ["0", "1", "2"]
    (bare.parent / "classes.json").write_text(json.dumps(CLASSES))
    [p] = list(predict(bare, data / "val" / "dog" / "v0_dog.png", top_k=1))
    assert p.labels == ["dog"]


def test_classes_that_do_not_match_the_data_are_named(tiny, tmp_path):
    import tlkit.evaluation.evaluate as ev

    data, run = tiny
    other = tmp_path / "other"
    for name in ("cat", "dog", "wolf"):
        write_images(other / name, 1, COLORS.get(name, (90, 90, 90)), size=SIZE)
    with pytest.raises(TlkitError) as info:
        ev.evaluate(run, other)
    message = str(info.value)
    assert "\n" not in message and "the data lacks fox" in message and "does not know wolf" in message

    bare = tmp_path / "m" / "model.keras"
    bare.parent.mkdir()
    shutil.copy(run / "model.keras", bare)
    two = tmp_path / "two"
    for name in ("cat", "dog"):
        write_images(two / name, 1, COLORS[name], size=SIZE)
    with pytest.raises(TlkitError, match="model has 3 outputs but .* has 2 classes"):
        ev.evaluate(bare, two)
    (bare.parent / "classes.json").write_text(json.dumps(["cat", "dog"]))
    with pytest.raises(TlkitError, match="3 outputs but .*classes.json lists 2 classes"):
        ev.evaluate(bare, two)


def test_not_a_run_or_model_is_a_clear_error(tmp_path, tiny):
    import tlkit.evaluation.evaluate as ev

    with pytest.raises(TlkitError, match="is not a tlkit run directory"):
        ev.evaluate(tmp_path)
    with pytest.raises(TlkitError, match="does not exist"):
        ev.evaluate(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(TlkitError, match="neither a run directory nor a .keras model file"):
        ev.evaluate(tmp_path / "notes.txt")
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    shutil.copy(tiny[1] / "config.toml", unfinished)
    with pytest.raises(TlkitError, match="has no model.keras"):
        ev.evaluate(unfinished)


# --------------------------------------------------------------------------- predict


def test_predict_yields_the_first_results_before_reading_every_image(tiny, tmp_path, monkeypatch):
    import tlkit.data.decode
    from tlkit.inference.prediction import predict

    folder = tmp_path / "many"
    write_images(folder, 40, COLORS["fox"], size=SIZE)
    calls: list[str] = []
    lock = threading.Lock()
    real = tlkit.data.decode.load_image

    def recording(path, size):
        with lock:
            calls.append(Path(path).name)
        return real(path, size)

    monkeypatch.setattr(tlkit.data.decode, "load_image", recording)
    stream = predict(tiny[1], [folder], batch_size=4, top_k=2)
    assert calls == []  # nothing is read until the generator is consumed
    first = next(stream)
    assert first.label == "fox" and Path(first.path).name == "img_000.png"
    assert len(calls) <= 4 + 4 + 4, f"{len(calls)} of 40 images read before the first result"
    rest = list(stream)
    assert len(rest) == 39 and len(calls) == 40
    assert [Path(p.path).name for p in [first, *rest]] == [f"img_{i:03d}.png" for i in range(40)]


def test_predict_paths_folders_globs_odd_images_and_bad_files(tiny, tmp_path):
    from PIL import Image

    from tlkit.inference.prediction import predict

    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    (folder / ".hidden").mkdir()
    Image.new("RGB", (500, 300), COLORS["dog"]).save(folder / "big.jpg")
    Image.new("RGBA", (20, 30), COLORS["fox"] + (255,)).save(folder / "sub" / "alpha.png")
    Image.new("L", (9, 9), 200).save(folder / "gray.png")
    Image.fromarray(np.full((12, 12), 60000, dtype=np.uint16)).save(folder / "wide16.png")
    Image.new("CMYK", (16, 16), (0, 200, 200, 0)).save(folder / "cmyk.jpg")  # red in CMYK
    Image.new("P", (8, 8)).save(folder / ".hidden" / "skipped.png")
    (folder / "notes.txt").write_text("not an image, not listed")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    extra = tmp_path / "extra"
    write_images(extra, 2, COLORS["cat"], size=SIZE)

    results = list(predict(tiny[1], [folder, str(extra / "*.png"), tmp_path / "missing.jpg"], top_k=5))
    names = [Path(p.path).name for p in results]
    assert names == [
        "big.jpg",
        "broken.png",
        "cmyk.jpg",
        "gray.png",
        "alpha.png",
        "wide16.png",
        "img_000.png",
        "img_001.png",
        "missing.jpg",
    ]
    by_name = {Path(p.path).name: p for p in results}
    assert by_name["big.jpg"].label == "dog" and by_name["alpha.png"].label == "fox"
    assert by_name["cmyk.jpg"].label == "cat" and by_name["img_001.png"].label == "cat"
    assert by_name["broken.png"].error and not by_name["broken.png"].ok and by_name["broken.png"].labels == []
    assert by_name["missing.jpg"].error == "file not found"
    ok = by_name["gray.png"]
    assert len(ok.labels) == 3 and sum(ok.probs) == pytest.approx(1.0, abs=1e-5)  # top_k capped at 3 classes
    assert ok.as_dict()["top"][0] == {"label": ok.label, "prob": ok.prob}


def test_predict_on_a_folder_with_a_symlink_loop_ends_and_lists_each_image_once(tiny, tmp_path):
    from tlkit.inference.prediction import predict

    folder = tmp_path / "looped"
    write_images(folder, 1, COLORS["cat"], size=SIZE)
    write_images(folder / "sub", 2, COLORS["dog"], size=SIZE)
    try:
        (folder / "sub" / "back").symlink_to(folder, target_is_directory=True)  # sub/back/sub/back/... forever
    except (OSError, NotImplementedError):
        pytest.skip("symbolic links cannot be made here")

    results = list(predict(tiny[1], [folder]))
    names = [Path(p.path).relative_to(folder).as_posix() for p in results]
    assert names == ["img_000.png", "sub/img_000.png", "sub/img_001.png"]
    assert [p.label for p in results] == ["cat", "dog", "dog"]


def test_predict_with_nothing_to_predict_is_an_error(tiny, tmp_path):
    from tlkit.inference.prediction import predict

    (tmp_path / "empty").mkdir()
    with pytest.raises(TlkitError, match="no image files to predict"):
        predict(tiny[1], [tmp_path / "empty", str(tmp_path / "*.jpg")])


# --------------------------------------------------------------------------- compare and plots


def test_compare_rows_and_overlay_plot(tiny, tmp_path):
    from tlkit.evaluation.compare import compare

    data, run = tiny
    second = make_run(
        tmp_path, data, name="20260102-000000-tiny-gap", stages=("head", "head", "fine_tune", "fine_tune", "fine_tune")
    )
    result = compare([run, second], plot_path=tmp_path / "compare.png")
    first_row, second_row = result.rows
    assert first_row["base"] == "tiny" and first_row["augmentations"] == ["flip_horizontal"]
    assert second_row["epochs"] == 5 and second_row["stages"] == ["head", "fine_tune"]
    assert second_row["best_val_accuracy"] == pytest.approx(0.9) and second_row["best_epoch"] == 5
    assert second_row["val_f1"] == pytest.approx(0.8) and second_row["val_f1_source"] == "history (best epoch)"
    assert second_row["train_time_s"] == 1.25
    assert result.plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(TlkitError, match="not a tlkit run directory"):
        compare([run, data])


def test_plot_history_marks_stage_boundary_and_best_epoch(tmp_path):
    from tlkit.evaluation.figures import history_figure, plot_history

    history = {
        "accuracy": [0.5, 0.6, 0.7, 0.8],
        "val_accuracy": [0.4, 0.7, 0.6, 0.65],
        "loss": [1.0, 0.8, 0.6, 0.5],
        "val_loss": [1.1, 0.9, 0.95, 0.9],
    }
    stages = ["head", "head", "fine_tune", "fine_tune"]
    paths = plot_history(history, tmp_path / "plots", title="t", stages=stages, best_epoch=2)
    assert [p.name for p in paths] == ["accuracy.png", "loss.png"]
    fig = history_figure(history, "accuracy", title="t", stages=stages, best_epoch=2)
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.texts]
    assert "head" in texts and "fine-tune" in texts
    assert any("best epoch 2" in t.get_text() for t in ax.get_legend().get_texts())
    assert 2.5 in [line.get_xdata()[0] for line in ax.lines if len(line.get_xdata()) == 2]  # the boundary
    assert ax.get_xlabel() == "Epoch" and "Accuracy" in ax.get_title()
    plot_history(history, tmp_path / "old", title="t")  # the original call still works


# --------------------------------------------------------------------------- CLI


def test_cli_evaluate_json_and_table(cli, tiny):
    code, out, err = cli("evaluate", tiny[1], "--json", "--top-k", "2")
    assert code == 0, err
    metrics = json.loads(out)
    assert metrics["confusion_matrix"]["counts"] == EXPECTED_CONFUSION and metrics["top_k"] == 2
    code, out, err = cli("evaluate", tiny[1])
    assert code == 0, err
    assert "accuracy" in out and "macro avg" in out and "Confusion matrix: counts" in out
    assert "row-normalised" in out and "mistakes.png" in out


def test_cli_predict_formats_and_failures(cli, tiny, tmp_path):
    data = tiny[0]
    (tmp_path / "broken.jpg").write_bytes(b"junk")
    code, out, err = cli(
        "predict", tiny[1], data / "val" / "dog", tmp_path / "broken.jpg", "--format", "csv", "--top-k", "2"
    )
    assert code == 0, err
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == ["path", "rank1_label", "rank1_prob", "rank2_label", "rank2_prob"]
    assert [r[1] for r in rows[1:]] == ["dog", "dog", "dog"] and float(rows[1][2]) > 0.9
    assert "broken.jpg" in err and "skipped 1 unreadable" in err

    code, out, err = cli("predict", tiny[1], data / "val" / "fox", "--json")
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [d["label"] for d in lines] == ["fox", "fox", "cat"]

    code, out, err = cli("predict", tiny[1], data / "val" / "cat" / "v0_cat.png")
    assert code == 0 and "cat" in out and "prediction" in out

    code, out, err = cli("predict", tiny[1], tmp_path / "broken.jpg")
    assert code == 1 and "none of the 1 file(s) could be read" in err
    code, out, err = cli("predict", tiny[1], str(tmp_path / "*.png"))
    assert code == 1 and "no image files to predict" in err and err.count("Error") == 1


def test_cli_bad_input_is_one_line_and_nonzero(cli, tiny, tmp_path):
    for args in (
        ("evaluate", tmp_path),
        ("predict", tmp_path, tiny[0]),
        ("report", tmp_path),
        ("compare", tiny[1], tmp_path),
    ):
        code, out, err = cli(*args)
        assert code == 1, args
        assert err.strip().startswith("Error:") and "not a tlkit run directory" in err
        assert len(err.strip().splitlines()) <= 2, err  # one line (wrapped at most once at 80 columns)


def test_cli_compare_and_register_is_idempotent(cli, tiny, tmp_path):
    from tlkit.cli import app
    from tlkit.cli.evaluate import COMMANDS, register

    register(app)
    names = [c.name for c in app.registered_commands]
    assert all(names.count(n) == 1 for n in COMMANDS)
    code, out, err = cli("compare", tiny[1], "--plot", tmp_path / "c.png")
    assert code == 0, err
    assert "1 run(s)" in out and "tiny +" in out and "0.8000" in out and (tmp_path / "c.png").is_file()
    code, out, err = cli("compare", tiny[1], "--no-plot", "--json")
    assert code == 0 and json.loads(out)["runs"][0]["head"] == "gap" and json.loads(out)["plot"] is None
    code, out, err = cli("evaluate", "--help")
    assert code == 0 and "Example: tlkit evaluate" in out


# --------------------------------------------------------------------------- a real run


def test_evaluation_of_a_trained_run_reproduces_its_validation_accuracy(tiny_data, tmp_path):
    import tlkit
    from tlkit.evaluation.evaluate import evaluate

    result = tlkit.train(
        data=str(tiny_data),
        base="mobilenet_v2",
        weights="none",
        image_size=32,
        batch_size=8,
        epochs=2,
        head="linear",
        output=str(tmp_path / "runs"),
        verbose=False,
    )
    evaluation = evaluate(result.run_dir)
    assert evaluation.num_images == 9
    # model.keras holds the epoch metrics.json names (the best one): evaluation reproduces its val accuracy
    assert evaluation.accuracy == pytest.approx(result.metrics["best_val_accuracy"], abs=1e-6)
    assert (result.run_dir / "evaluation" / "metrics.json").is_file()


def test_module_names_do_not_shadow_the_api_functions():
    """``tlkit.compare`` etc. must stay functions once the submodules are imported."""
    import tlkit
    import tlkit.evaluation.compare  # noqa: F401
    import tlkit.evaluation.evaluate  # noqa: F401
    import tlkit.evaluation.report  # noqa: F401
    import tlkit.exporting.exporter  # noqa: F401
    import tlkit.inference.prediction  # noqa: F401

    for name in ("evaluate", "predict", "compare", "write_report", "export"):
        value = getattr(tlkit, name, None)  # None until tlkit/__init__ exports it
        assert value is None or callable(value), f"tlkit.{name} is {value!r}"
