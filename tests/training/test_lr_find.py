"""`tlkit lr-find` / `tlkit.lr_find`: the exponential sweep on cached features, the documented
suggestion rule, the files it writes, the train command it prints, and its refusals."""

from __future__ import annotations

import dataclasses
import json
import math
import shlex
import tomllib

import pytest

import tlkit
from tests import support
from tests.support import CLASS_COLORS, invoke_tlkit, snapshot
from tlkit import TlkitError
from tlkit.config.options import config_from_mapping, to_toml
from tlkit.testing import write_images
from tlkit.training.lr_finder import lr_text, suggest

FAST = {**support.FAST, "engine": "tensorflow"}
CLI_FAST = [*support.CLI_FAST, "--engine", "tensorflow"]


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """One sweep for the module: (data folder, its files before, the output folder, the result).

    The classes are imbalanced (14/5/5): even a head on a random base's near-constant features
    can then lower the loss (through its bias), so the curve has a real descent.
    """
    root = tmp_path_factory.mktemp("lr-find")
    data = root / "data"
    for k, (name, count) in enumerate((("cat", 14), ("dog", 5), ("fox", 5))):
        write_images(data / "train" / name, count, CLASS_COLORS[name], seed=k)
        write_images(data / "val" / name, 2, CLASS_COLORS[name], seed=10 + k)
    before = snapshot(data)
    output = root / "lr"
    result = tlkit.lr_find(data=str(data), head="linear", output=str(output), epochs=3, verbose=False, **FAST)
    return data, before, output, result


def _rule(lrs, smoothed):
    """docs/training.md's rule, written out again: steepest descent before the lowest smoothed
    loss (first 10 % skipped) if the loss fell ≥ 1 % to it, else lowest ÷ 10."""
    n = len(lrs)
    lowest = smoothed.index(min(smoothed))
    best = None
    for k in range(max(1, int(n * 0.1)), lowest):
        slope = (smoothed[k + 1] - smoothed[k]) / (math.log(lrs[k + 1]) - math.log(lrs[k]))
        if best is None or slope < best[1]:
            best = (k, slope)
    highest_before = max(smoothed[: lowest + 1])
    if best and best[1] < 0 and highest_before - smoothed[lowest] >= 0.01 * highest_before:
        return lrs[best[0]], "steepest"
    return lrs[lowest] / 10, "minimum/10"


def test_sweep_is_exponential_and_the_suggestion_follows_the_rule(swept):
    data, before, output, result = swept
    saved = json.loads(result.curve_json.read_text())
    points = saved["points"]
    lrs = [p["lr"] for p in points]
    losses = [p["loss"] for p in points]
    smoothed = [p["smoothed"] for p in points]
    # one pass of 3 batches is fewer than 50 steps: the train set is repeated
    assert saved["steps_per_epoch"] == 3 and saved["steps_planned"] == 50
    assert 2 <= len(points) <= 50 and [p["step"] for p in points] == list(range(1, len(points) + 1))
    for i, lr in enumerate(lrs):
        assert lr == pytest.approx(1e-7 * (10 / 1e-7) ** (i / 49), rel=1e-9)
    assert all(math.isfinite(loss) for loss in losses)
    average = 0.0
    for t, (loss, value) in enumerate(zip(losses, smoothed), start=1):
        average = 0.98 * average + 0.02 * loss
        assert value == pytest.approx(average / (1 - 0.98**t), rel=1e-9)
    if len(points) < 50:  # stopped early: only because the loss diverged
        assert smoothed[-1] > 4 * min(smoothed) and "diverged" in saved["stopped"]
    suggestion, rule = _rule(lrs, smoothed)
    assert rule == "steepest"  # the imbalanced classes give the curve a descent
    assert (saved["rule"], saved["suggestion"]) == (rule, suggestion) == (result.rule, result.suggestion)
    assert 1e-7 <= result.suggestion <= 10 and result.lrs == lrs and result.smoothed == smoothed
    # the files: a new folder under --output, never the data folder
    assert result.folder.parent == output and [p.name for p in output.iterdir()] == [result.folder.name]
    assert result.plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = result.curve_csv.read_text().splitlines()
    assert rows[0] == "step,lr,loss,smoothed" and len(rows) == len(points) + 1
    assert snapshot(data) == before


def test_synthetic_curves_pin_the_rule():
    lrs = [1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0]
    falling = [2.0, 2.0, 1.9, 1.0, 0.5, 0.4, 0.3, 0.9, 5.0]  # steepest: 1e-5 → 1e-4; lowest at 0.1
    assert suggest(lrs, falling) == (1e-5, "steepest", 1e-5, 1e-1)
    flat = [1.0986, 1.0986, 1.0985, 1.0986, 1.0987, 1.099, 1.2, 1.5, 3.0]
    assert suggest(lrs, flat) == (pytest.approx(1e-6), "minimum/10", None, 1e-5)


def test_the_printed_command_is_a_valid_train_invocation(swept, capsys):
    data, _, _, result = swept
    words = shlex.split(result.train_command)
    assert words[:2] == ["tlkit", "train"] and words[words.index("--lr") + 1] == lr_text(result.suggestion)
    assert words[words.index("--data") + 1] == str(data) and words[words.index("--epochs") + 1] == "3"
    proc = invoke_tlkit(*words[1:], "--print-config")
    assert proc.returncode == 0, proc.stderr
    parsed = config_from_mapping(tomllib.loads(proc.stdout))
    assert parsed == dataclasses.replace(result.config, lr=float(lr_text(result.suggestion)))
    from tlkit.cli.lr_find import print_summary

    print_summary(result)
    shown = capsys.readouterr().out
    assert f"suggested --lr   │ {result.suggested_lr_text}" in shown and result.train_command in shown


def test_a_second_sweep_from_the_cli_runs_no_base(swept, monkeypatch):
    from tlkit.data import decode as datamod
    from tlkit.features import engines

    data, before, output, first = swept

    def refuse(*args, **kwargs):
        raise AssertionError("the second sweep must take the features from the cache")

    monkeypatch.setattr(datamod, "decode_split", refuse)
    monkeypatch.setattr(datamod, "load_image", refuse)
    monkeypatch.setattr(engines, "make_engine", refuse)
    proc = invoke_tlkit(
        "lr-find", "--data", data, "--head", "linear", *CLI_FAST, "--aug", "flip_horizontal", "--steps", "20",
        "--start-lr", "1e-5", "--output", output, "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["features"]["engine"] == "cache" and result["features"]["train"]["cache"] == "hit"
    assert result["steps_planned"] == 20 and result["points"][0]["lr"] == pytest.approx(1e-5)
    assert "un-augmented" in proc.stderr  # the sweep says what it leaves out
    words = shlex.split(result["train_command"])
    assert words[words.index("--aug") + 1].startswith("flip_horizontal")  # ...and the command keeps it
    assert sorted(p.name for p in output.iterdir()) == sorted([first.folder.name, result["folder"].split("/")[-1]])
    assert first.curve_json.is_file()  # the first sweep's folder is untouched
    assert snapshot(data) == before


def test_the_command_round_trips_lists_tables_and_switches(tmp_path):
    from tlkit.api import resolve_config
    from tlkit.training.lr_finder import train_command

    write_images(tmp_path / "data" / "train" / "a", 1, (0, 0, 0))
    config = resolve_config(
        data=str(tmp_path / "data"), base="mobilenet_v2", head="mlp", head_params={"units": "512,256"},
        augmentations=["rotation:factor=0.2", "flip_horizontal"], metrics=["accuracy", "top_k"],
        feature_cache=False, per_replica_batch=False, image_size=96, weight_decay=1e-4, lr=0.5, seed=3,
    )  # fmt: skip
    words = shlex.split(train_command(config, 0.0123))
    assert words.count("--aug") == 2 and "--no-feature-cache" in words and "--global-batch" in words
    proc = invoke_tlkit(*words[1:], "--print-config")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == to_toml(dataclasses.replace(config, lr=0.012))  # the same configuration, lr aside


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--start-lr", "0"], "--start-lr must be a positive number"),
        (["--start-lr", "1", "--end-lr", "0.5"], "--end-lr 0.5 must be larger than --start-lr 1"),
        (["--steps", "3"], "--steps must be an integer ≥ 10"),
        (["--base", "mobilnet_v2"], "mobilenet_v2"),
        (["--optimizer", "adamm"], "unknown optimizer 'adamm'"),
    ],
)
def test_bad_options_are_one_line_errors(swept, args, expected):
    data, before, output, _ = swept
    proc = invoke_tlkit("lr-find", "--data", data, *CLI_FAST, *args, "--output", output)
    assert proc.returncode != 0 and expected in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_output_inside_the_data_folder_is_refused(swept):
    data, before, _, _ = swept
    with pytest.raises(TlkitError, match="inside the data folder"):
        tlkit.lr_find(data=str(data), output=str(data / "lr"), verbose=False, **FAST)
    assert snapshot(data) == before
