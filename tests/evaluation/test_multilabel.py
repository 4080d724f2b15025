"""``--multi-label``: sigmoid outputs, binary cross-entropy, thresholds (fixed or tuned), per-label metrics."""

from __future__ import annotations

import json
import types
from pathlib import Path

import numpy as np
import pytest

import tlkit
from tests.support import invoke_tlkit
from tlkit.data.labels_csv import scan_labels_csv
from tlkit.errors import TlkitError
from tlkit.evaluation.multilabel import decide, multilabel_metrics, tune_thresholds
from tlkit.io.rundir import RunDir
from tlkit.registry import manager as _registry
from tlkit.testing import registry_with, write_images

# --------------------------------------------------------------------------- thresholds and metrics (numpy)


def _f1(pred: np.ndarray, truth: np.ndarray) -> float:
    tp, fp, fn = (pred & truth).sum(), (pred & ~truth).sum(), (~pred & truth).sum()
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def test_tuned_thresholds_maximise_each_labels_f1():
    rng = np.random.default_rng(0)
    truth = rng.random((60, 4)) < [0.5, 0.2, 0.7, 0.05]
    probs = np.clip(truth * rng.uniform(0.2, 0.9, truth.shape) + rng.uniform(0, 0.6, truth.shape), 0, 1)
    tuned = tune_thresholds(probs, truth)
    grid = np.linspace(0, 1, 2001)
    for j in range(4):
        best_on_grid = max(_f1(probs[:, j] >= t, truth[:, j]) for t in grid)
        assert _f1(probs[:, j] >= tuned[j], truth[:, j]) == pytest.approx(best_on_grid)
        assert best_on_grid > _f1(probs[:, j] >= 0.5, truth[:, j]) - 1e-12
    # A label without positives keeps the default; a perfectly separable one gets a midpoint.
    assert tune_thresholds(np.array([[0.2], [0.9]]), np.array([[False], [False]]))[0] == 0.5
    assert tune_thresholds(np.array([[0.2], [0.9]]), np.array([[False], [True]]))[0] == pytest.approx(0.55)


def test_metrics_match_a_hand_computation():
    probs = np.array([[0.9, 0.2, 0.6], [0.4, 0.7, 0.1], [0.8, 0.6, 0.3], [0.1, 0.1, 0.9]])
    truth = np.array([[1, 0, 1], [0, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=bool)
    m = multilabel_metrics(probs, truth, ["a", "b", "c"], np.array([0.5, 0.5, 0.5]))
    # a: tp 2 fp 0 fn 0; b: tp 1 fp 1 fn 0; c: tp 1 fp 1 fn 0
    assert [m["per_class"][k]["precision"] for k in "abc"] == [1.0, 0.5, 0.5]
    assert [m["per_class"][k]["recall"] for k in "abc"] == [1.0, 1.0, 1.0]
    assert [m["per_class"][k]["support"] for k in "abc"] == [2, 1, 1]
    assert m["micro_avg"]["f1"] == pytest.approx(2 * 4 / (2 * 4 + 2))
    assert m["macro_avg"]["f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    assert m["subset_accuracy"] == 0.5 and m["hamming_accuracy"] == pytest.approx(10 / 12)


# --------------------------------------------------------------------------- a tiny multi-label run

# Labels come from the colour: a channel above 128 is that colour's label; dark images have none.
COLOURS = {
    "r": (200, 40, 40),
    "g": (40, 200, 40),
    "b": (40, 40, 200),
    "rg": (200, 200, 40),
    "rb": (200, 40, 200),
    "dark": (40, 40, 40),
}
NAMES = {"r": "red", "g": "green", "b": "blue"}


def _labels(key: str) -> list[str]:
    return sorted(NAMES[ch] for ch in key if ch in NAMES) if key != "dark" else []


def _pooling_base() -> types.ModuleType:
    """A plugin whose base averages 8×8 patches and mixes channels (1×1 conv): features that keep the colour."""
    module = types.ModuleType("colour_base_plugin")

    def build(input_shape, weights):
        import keras
        from keras import layers

        inputs = keras.Input(input_shape)
        x = layers.AveragePooling2D(8)(inputs)
        return keras.Model(inputs, layers.Conv2D(8, 1, kernel_initializer=keras.initializers.GlorotUniform(seed=0))(x))

    def preprocess():
        import keras

        return [keras.layers.Rescaling(1 / 255.0, name="preprocess_unit")]

    @tlkit.hookimpl
    def register_bases(register):
        register(
            tlkit.BaseSpec(
                name="colour_pool",
                build=build,
                preprocess=preprocess,
                description="8x8 average pooling",
                default_size=32,
                min_size=8,
            )
        )

    module.register_bases = register_bases
    return module


@pytest.fixture(scope="module")
def ml_run(tmp_path_factory):
    """One tiny multi-label run (thresholds tuned on val): (run dir, data root, CSV path)."""
    folder = tmp_path_factory.mktemp("multilabel")
    root = folder / "data"
    rows = ["path,labels,split"]
    for k, (key, colour) in enumerate(COLOURS.items()):
        write_images(root / "img", 5, colour, size=32, seed=k, prefix=key, noise=20)
        rows += [f"img/{key}_{i:03d}.png,{'|'.join(_labels(key))},{'val' if i == 4 else 'train'}" for i in range(5)]
    csv_path = folder / "labels.csv"
    csv_path.write_text("\n".join(rows) + "\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_registry, "_REGISTRY", registry_with(_pooling_base()))
        result = invoke_tlkit(
            "train", "--data", root, "--labels", csv_path, "--multi-label", "--threshold", "tuned",
            "--base", "colour_pool", "--weights", "none", "--head", "linear", "--head-param", "dropout=0",
            "--epochs", "8", "--lr", "0.05", "--batch-size", "8", "--output", folder / "runs", "--json",
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return Path(json.loads(result.stdout)["run_dir"]), root, csv_path


@pytest.fixture(scope="module")
def val_probs(ml_run):
    """model.keras's probabilities on the validation images, computed here by hand, and their truth."""
    from tlkit.data.decode import load_image
    from tlkit.inference.prediction import load_keras_model

    run_dir, root, csv_path = ml_run
    scan = scan_labels_csv(csv_path, root, multi_label=True)
    model = load_keras_model(RunDir(run_dir).model_path)
    pixels = np.stack([load_image(f, 32) for f in scan.val.files]).astype(np.float32)
    return np.asarray(model.predict_on_batch(pixels), dtype=np.float64), scan.val.labels.astype(bool), scan, model


def test_the_model_ends_in_a_sigmoid_and_trains_with_binary_cross_entropy(ml_run, val_probs):
    run_dir, _, _ = ml_run
    probs, truth, scan, model = val_probs
    assert model.get_layer("head").layers[-1].get_config()["activation"] == "sigmoid"
    assert not np.allclose(probs.sum(axis=1), 1.0)  # independent probabilities, not a softmax
    run = RunDir(run_dir)
    assert run.read_classes() == ["blue", "green", "red"]
    history, _, _ = run.read_history()
    best = run.read_metrics()["best_epoch"]
    bce = -(truth * np.log(probs) + ~truth * np.log(1 - probs)).mean()
    assert history["val_loss"][best - 1] == pytest.approx(bce, abs=1e-4)  # the loss was binary cross-entropy


def test_thresholds_are_tuned_on_val_and_evaluate_reports_per_label_metrics(ml_run, val_probs):
    run_dir, _, _ = ml_run
    probs, truth, scan, model = val_probs
    saved = RunDir(run_dir).read_thresholds()
    thresholds = np.array([saved[name] for name in scan.classes])
    assert thresholds == pytest.approx(tune_thresholds(probs, truth), abs=1e-4)

    evaluation = tlkit.evaluate(run_dir, model=model)
    assert evaluation.multi_label and evaluation.num_images == 6
    decided = decide(probs, thresholds)
    for j, name in enumerate(scan.classes):
        tp = int((decided[:, j] & truth[:, j]).sum())
        fp = int((decided[:, j] & ~truth[:, j]).sum())
        fn = int((~decided[:, j] & truth[:, j]).sum())
        got = evaluation.per_class[name]
        assert got["support"] == int(truth[:, j].sum())
        assert got["precision"] == pytest.approx(tp / (tp + fp) if tp + fp else 0.0)
        assert got["recall"] == pytest.approx(tp / (tp + fn) if tp + fn else 0.0)
        assert got["threshold"] == pytest.approx(thresholds[j])
    assert evaluation.metrics["subset_accuracy"] == pytest.approx((decided == truth).all(axis=1).mean())
    assert evaluation.micro["f1"] > 0.8  # colour-derived labels are learnable
    written = RunDir(run_dir).read_evaluation()
    assert written["multi_label"] is True and written["micro_avg"] == evaluation.micro


def test_predict_prints_every_label_above_its_threshold(ml_run, val_probs):
    run_dir, root, _ = ml_run
    probs, _, scan, _ = val_probs
    saved = RunDir(run_dir).read_thresholds()
    result = invoke_tlkit("predict", run_dir, *scan.val.files, "--format", "json")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    for line, row in zip(lines, probs):
        expected = {name for j, name in enumerate(scan.classes) if row[j] >= saved[name]}
        assert {item["label"] for item in line["labels"]} == expected
    assert {item["label"] for item in lines[3]["labels"]} == {"green", "red"}  # rg_004.png: yellow
    csv_out = invoke_tlkit("predict", run_dir, root / "img" / "rg_004.png", "--format", "csv")
    assert csv_out.stdout.splitlines()[0] == "path,labels,probs"
    assert csv_out.stdout.splitlines()[1].split(",")[1] in ("red|green", "green|red")


def test_single_label_only_features_are_refused_with_multi_label(ml_run, tmp_path):
    run_dir, root, csv_path = ml_run
    result = invoke_tlkit("train", "--data", root, "--labels", csv_path, "--multi-label", "--class-weight", "balanced")
    assert result.returncode != 0 and "--class-weight balanced is for single-label data" in result.stderr
    with pytest.raises(TlkitError, match="multi-label run: evaluate it on a labels CSV"):
        tlkit.evaluate(run_dir, data=root, write=False)
    with pytest.raises(TlkitError, match="--multi-label run, which tlkit export does not support"):
        tlkit.export(run_dir, "onnx", output=tmp_path / "x")
