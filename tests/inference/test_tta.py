"""Test-time augmentation: the documented views, the averaging, ``evaluate --tta`` and ``predict --tta``.

One tiny run (mobilenet_v2, random weights, 32 px, 1 epoch) is trained once for the module;
its flip-sensitive predictions are recomputed by hand from the decoded images and compared.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.support import CLASS_COLORS, invoke_tlkit
from tlkit.errors import TlkitError
from tlkit.inference.tta import CROP_FRACTION, MAX_VIEWS, VIEWS, parse_tta, resize_bilinear, view

ROOT = Path(__file__).resolve().parents[2]
SIZE = 32


@pytest.fixture(scope="module")
def trained(calibrated_run):
    """(data folder, run directory, its loaded model, the validation files) of the suite's shared
    calibrated MobileNetV2 run (conftest.calibrated_run): its base's BatchNorm statistics are
    calibrated on the training images, so that the model's probabilities depend on the image."""
    from tlkit.inference.prediction import load_keras_model

    data, run = calibrated_run
    files = sorted((data / "val").rglob("*.png"))
    return data, run, load_keras_model(run / "model.keras"), files


def _by_hand(model, files, views) -> np.ndarray:
    """The model's probabilities averaged over ``views`` (functions of a uint8 batch), computed directly."""
    from tlkit.data.decode import load_image

    pixels = np.stack([load_image(f, SIZE) for f in files])
    runs = [np.asarray(model.predict_on_batch(v(pixels).astype("float32")), dtype=np.float64) for v in views]
    return np.mean(runs, axis=0)


def _crop(top: int, left: int):
    c = round(SIZE * CROP_FRACTION)
    return lambda x: resize_bilinear(x[:, top : top + c, left : left + c], SIZE, SIZE)


# --------------------------------------------------------------------------- views and parsing (no model)


def test_views_are_the_documented_ones_and_deterministic():
    x = np.random.default_rng(0).integers(0, 256, size=(2, SIZE, SIZE, 3), dtype=np.uint8)
    before = x.copy()
    assert VIEWS[:2] == ("original", "hflip") and len(VIEWS) == MAX_VIEWS == 12
    np.testing.assert_array_equal(view(x, "original"), x)
    np.testing.assert_array_equal(view(x, "hflip"), np.flip(x, axis=2))
    c = round(SIZE * CROP_FRACTION)  # 29: the 90 % crops
    corners = {
        "crop_center": ((SIZE - c) // 2, (SIZE - c) // 2),
        "crop_top_left": (0, 0),
        "crop_top_right": (0, SIZE - c),
        "crop_bottom_left": (SIZE - c, 0),
        "crop_bottom_right": (SIZE - c, SIZE - c),
    }
    for name, (top, left) in corners.items():
        crop = view(x, name)
        assert crop.shape == x.shape and crop.dtype == np.uint8
        np.testing.assert_array_equal(crop, _crop(top, left)(x))
        np.testing.assert_array_equal(view(x, f"hflip_{name}"), _crop(top, left)(np.flip(x, axis=2)))
        assert not np.array_equal(crop, x)
    # the resize is a plain bilinear one: a flat image stays flat, a same-size resize changes nothing
    flat = np.full((1, c, c, 3), 77, dtype=np.uint8)
    assert (resize_bilinear(flat, SIZE, SIZE) == 77).all()
    np.testing.assert_array_equal(resize_bilinear(x, SIZE, SIZE), x)
    # deterministic, and the input is left alone
    for name in VIEWS:
        np.testing.assert_array_equal(view(x, name), view(x, name))
    np.testing.assert_array_equal(x, before)

    assert parse_tta(None) is None and parse_tta("none") is None
    assert parse_tta("flips").views == ("original", "hflip")
    assert parse_tta("4").views == VIEWS[:4] and parse_tta(4) == parse_tta("4")
    assert len(parse_tta(MAX_VIEWS)) == MAX_VIEWS
    # every view is documented in the user guide
    section = (ROOT / "docs" / "evaluation.md").read_text(encoding="utf-8").split("## Test-time augmentation")[1]
    for name in VIEWS[:7]:
        assert f"`{name}`" in section, name


@pytest.mark.parametrize("value", ["0", "1", "13", "foo", "2.5", ""])
def test_bad_tta_values_are_one_line_errors(value):
    with pytest.raises(TlkitError, match=r"--tta must be flips or a number of views from 2 to 12") as info:
        parse_tta(value)
    assert "\n" not in str(info.value)


def test_cli_rejects_bad_tta_before_loading_anything(tmp_path):
    for command in (["evaluate", tmp_path / "no-run"], ["predict", tmp_path / "no-run", tmp_path]):
        for value in ("0", "foo"):
            result = invoke_tlkit(*command, "--tta", value)
            text = result.stdout + result.stderr
            assert result.returncode != 0, text
            assert "--tta must be flips or a number of views from 2 to 12" in text, text
            assert "Traceback" not in text and len(text.strip().splitlines()) == 1, text


# --------------------------------------------------------------------------- with a trained run


def test_predict_tta_is_the_mean_over_the_views_by_hand(trained):
    import tlkit

    data, run, model, files = trained
    plain = _by_hand(model, files, [lambda x: x])
    flips = _by_hand(model, files, [lambda x: x, lambda x: np.flip(x, axis=2)])
    c = round(SIZE * CROP_FRACTION)
    four = _by_hand(
        model, files, [lambda x: x, lambda x: np.flip(x, axis=2), _crop((SIZE - c) // 2, (SIZE - c) // 2), _crop(0, 0)]
    )

    def probs(predictions) -> np.ndarray:
        rows = []
        for p in predictions:
            row = dict(zip(p.labels, p.probs))
            rows.append([row[name] for name in CLASS_COLORS])
        return np.asarray(rows)

    got_plain = probs(tlkit.predict(run, files, top_k=3, model=model))
    got_flips = probs(tlkit.predict(run, files, top_k=3, model=model, tta="flips"))
    got_four = probs(tlkit.predict(run, files, top_k=3, model=model, tta=4, batch_size=4))
    np.testing.assert_allclose(got_plain, plain, atol=1e-5)
    np.testing.assert_allclose(got_flips, flips, atol=1e-5)
    np.testing.assert_allclose(got_four, four, atol=1e-5)
    assert np.abs(got_flips - got_plain).max() > 1e-4  # the mirror really changes what the model says
    assert np.abs(got_four - got_flips).max() > 1e-4

    # the CLI prints the same TTA-averaged top-k (JSON Lines)
    result = invoke_tlkit("predict", run, data / "val", "--tta", "flips", "--json", "--top-k", "3")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    cli = np.asarray([[{t["label"]: t["prob"] for t in line["top"]}[name] for name in CLASS_COLORS] for line in lines])
    np.testing.assert_allclose(cli, flips, atol=1e-5)
    assert "test-time augmentation flips (2 views: original, hflip)" in result.stderr


def test_evaluate_tta_reports_both_accuracies(trained, tmp_path):
    import tlkit
    from tlkit.evaluation.evaluate import compute_metrics

    data, run, model, files = trained
    labels = np.asarray([list(CLASS_COLORS).index(f.parent.name) for f in files])
    flips = _by_hand(model, files, [lambda x: x, lambda x: np.flip(x, axis=2)])
    expected = compute_metrics(flips, labels, list(CLASS_COLORS), top_k=2)
    plain = tlkit.evaluate(run, model=model, write=False, top_k=2)

    result = tlkit.evaluate(run, model=model, tta="flips", top_k=2, write=False)
    assert result.tta["setting"] == "flips" and result.tta["views"] == ["original", "hflip"]
    assert result.tta["without_tta"]["accuracy"] == pytest.approx(plain.accuracy)
    assert result.tta["without_tta"]["log_loss"] == pytest.approx(plain.log_loss)
    assert result.tta["with_tta"]["accuracy"] == pytest.approx(expected["accuracy"])
    # the result's own metrics, confusion matrix and mistakes are those of the TTA predictions
    assert result.accuracy == pytest.approx(expected["accuracy"])
    assert result.log_loss == pytest.approx(expected["log_loss"]) != pytest.approx(plain.log_loss)
    assert result.confusion == expected["confusion_matrix"]["counts"]
    assert len(result.mistakes) == result.tta["with_tta"]["num_mistakes"]
    assert plain.as_dict()["tta"] is None and result.as_dict()["tta"] == result.tta

    # CLI: the table shows both columns, --json and metrics.json hold both
    table = invoke_tlkit("evaluate", run, "--tta", "flips", "--top-k", "2", "--output", tmp_path / "cli")
    assert table.returncode == 0, table.stderr
    assert "without TTA" in table.stdout and "with TTA (2 views)" in table.stdout
    saved = json.loads((tmp_path / "cli" / "metrics.json").read_text())
    assert saved["tta"]["views"] == ["original", "hflip"] and saved["accuracy"] == pytest.approx(result.accuracy)
    for side in ("without_tta", "with_tta"):
        assert saved["tta"][side] == pytest.approx(result.tta[side])
    accuracy_row = next(line for line in table.stdout.splitlines() if "│ accuracy" in line)
    assert f"{plain.accuracy:.4f}" in accuracy_row and f"{expected['accuracy']:.4f}" in accuracy_row
    log_loss_row = next(line for line in table.stdout.splitlines() if "│ log loss" in line)
    assert f"{plain.log_loss:.4f}" in log_loss_row and f"{expected['log_loss']:.4f}" in log_loss_row
    as_json = invoke_tlkit("evaluate", run, "--tta", "flips", "--top-k", "2", "--json", "--output", tmp_path / "j")
    assert as_json.returncode == 0, as_json.stderr
    printed = json.loads(as_json.stdout)
    assert printed["tta"]["without_tta"]["accuracy"] == pytest.approx(plain.accuracy)
    assert printed["tta"]["with_tta"]["log_loss"] == pytest.approx(expected["log_loss"])
    assert json.loads((tmp_path / "j" / "metrics.json").read_text())["tta"] == printed["tta"]
