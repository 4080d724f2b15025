"""A study's outputs: trials.csv, best.toml (round trip), the plots, report.html (self-contained, in a
browser), and the ``tlkit tune`` command's one-line errors for bad inputs.

The :class:`TuneResult` and the Optuna study are built by hand (an in-memory study with trials added
through ``optuna.trial.create_trial``), so these tests check the outputs alone.  The browser test
needs Debian's chromium (``apt-get install -y chromium``); without /usr/bin/chromium it is skipped.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import os
import re
from pathlib import Path

import numpy as np
import pytest

import tlkit.api
from tests.support import CHROMIUM, NEEDS_CHROMIUM, chromium, invoke_tlkit
from tlkit.config.options import TrainConfig, load_config_file
from tlkit.io.toml import read_toml
from tlkit.tuning.outputs import (
    BEST_TOML,
    REPORT_HTML,
    SECTIONS,
    TRIAL_COLUMNS,
    TRIALS_CSV,
    display_storage,
    write_outputs,
)
from tlkit.tuning.result import TrialRecord, TuneResult

SPACE = ["lr=1e-4..1e-2:log", "head=dense256,mlp,linear", "head.dropout=0..0.6"]
PARAMS = ["lr", "head", "head.dropout"]
# The bad-search test needs the engine: its parser (tlkit/tuning/space.py) and the API function it runs behind.
HAS_ENGINE = importlib.util.find_spec("tlkit.tuning.space") is not None and hasattr(tlkit.api, "tune")


def _study(trials: list[TrialRecord]):
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution
    from optuna.trial import TrialState, create_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    distributions = {
        "lr": FloatDistribution(1e-4, 1e-2, log=True),
        "head": CategoricalDistribution(["dense256", "mlp", "linear"]),
        "head.dropout": FloatDistribution(0.0, 0.6),
    }
    states = {"complete": TrialState.COMPLETE, "pruned": TrialState.PRUNED, "failed": TrialState.FAIL}
    study = optuna.create_study(direction="maximize", study_name="demo")
    for t in trials:
        study.add_trial(
            create_trial(
                params=t.params,
                distributions={k: distributions[k] for k in t.params},
                value=t.value if t.state == "complete" else None,
                state=states[t.state],
                intermediate_values=dict(enumerate(t.intermediate)),
            )
        )
    return study


def _result(folder: Path, trials: list[TrialRecord] | None = None) -> TuneResult:
    trials = trials or [
        TrialRecord(0, "complete", 0.80, {"lr": 1e-3, "head": "mlp", "head.dropout": 0.2}, 3, 1.5, (0.6, 0.7, 0.8)),
        TrialRecord(1, "complete", 0.85, {"lr": 3e-3, "head": "linear", "head.dropout": 0.4}, 3, 1.2, (0.7, 0.8, 0.85)),
        TrialRecord(2, "pruned", None, {"lr": 2e-4, "head": "dense256", "head.dropout": 0.1}, 1, 0.4, (0.3,)),
        TrialRecord(3, "failed", None, {"lr": 5e-3, "head": "mlp"}, 0, 0.1),
    ]
    base = TrainConfig(data="data", base="mobilenet_v2", weights="none", image_size=32)
    complete = [t for t in trials if t.state == "complete"]
    best = max(complete, key=lambda t: t.value or 0.0) if complete else None
    best_config = (
        dataclasses.replace(base, lr=best.params["lr"], head=best.params["head"], head_params={"dropout": 0.4})
        if best
        else None
    )
    folder.mkdir(parents=True, exist_ok=True)
    return TuneResult(
        study_name="demo",
        storage=f"sqlite:///{folder / 'study.db'}",
        config=base,
        space=list(SPACE),
        trials=trials,
        best=best,
        best_config=best_config,
        objective="accuracy on a 20 % hold-out of train (stratified, seed 0)",
        best_val_accuracy=0.9 if best else None,
        default_val_accuracy=0.82 if best else None,
        folder=folder,
    )


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> TuneResult:
    result = _result(tmp_path_factory.mktemp("tune") / "20261205-101500-demo")
    write_outputs(result, _study(result.trials))
    return result


def test_every_file_is_written(written):
    folder = written.folder
    assert set(written.files) == {"trials_csv", "best_toml", "report", "history_plot", "importance_plot"}
    for path in written.files.values():
        assert path.parent == folder and path.is_file() and path.stat().st_size > 0
    assert written.files["report"].name == REPORT_HTML
    for key in ("history_plot", "importance_plot"):
        assert written.files[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert written.train_command == f"tlkit train --config {folder / BEST_TOML}"
    assert not [p for p in folder.iterdir() if p.name.startswith(".")], "a temporary file was left behind"


def test_trials_csv_has_a_row_per_trial_and_a_column_per_parameter(written):
    with open(written.files["trials_csv"], newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
        assert reader.fieldnames == [*TRIAL_COLUMNS, *PARAMS]
    assert written.files["trials_csv"].name == TRIALS_CSV
    assert [r["number"] for r in rows] == ["0", "1", "2", "3"]
    assert [r["state"] for r in rows] == ["complete", "complete", "pruned", "failed"]
    assert float(rows[1]["value"]) == 0.85 and rows[2]["value"] == "" and rows[3]["value"] == ""
    assert rows[0]["head"] == "mlp" and float(rows[1]["lr"]) == 3e-3 and rows[3]["head.dropout"] == ""
    assert rows[0]["epochs"] == "3" and float(rows[0]["seconds"]) == 1.5


def test_best_toml_round_trips_to_the_best_configuration(written):
    path = written.files["best_toml"]
    assert load_config_file(path) == written.best_config
    provenance = read_toml(path)["tlkit"]
    assert provenance["study"] == "demo" and provenance["trial"] == 1 and provenance["holdout_value"] == 0.85
    assert provenance["searched"]["head"] == "linear"
    assert path.read_text(encoding="utf-8").startswith("# ")  # the header says how to use it


def test_report_is_self_contained_with_every_section(written):
    text = written.files["report"].read_text(encoding="utf-8")
    for section in SECTIONS:
        assert f'<section id="{section}">' in text
    assert not re.search(r"https?://", text)
    sources = re.findall(r'(?:src|href)="([^"]*)"', text)
    assert sources and all(s.startswith(("data:image/png;base64,", "#")) for s in sources), sources
    assert text.count('src="data:image/png;base64,') == 2
    assert "<script" not in text and "<link" not in text
    assert "90.00%" in text and "82.00%" in text and "+8.0 points" in text  # best val vs default val
    assert written.train_command in text
    # the trials table is sorted by value: trial 1 (0.85) before trial 0 (0.8), pruned then failed last
    rows = re.findall(r'<tr(?: class="best")?><td class="num">(\d+)</td>', text)
    assert rows == ["1", "0", "2", "3"]


def test_few_trials_skip_the_importance_plot_with_a_note(tmp_path):
    one = [TrialRecord(0, "complete", 0.7, {"lr": 1e-3, "head": "mlp", "head.dropout": 0.1}, 2, 0.5, (0.6, 0.7))]
    result = _result(tmp_path / "study", one)
    write_outputs(result, _study(one))
    assert "importance_plot" not in result.files and "history_plot" in result.files
    assert any("importance" in note for note in result.notes)
    assert "importance" in result.files["report"].read_text(encoding="utf-8")


def test_without_a_study_the_importances_come_from_the_storage(tmp_path):
    import optuna

    result = _result(tmp_path / "study")
    result.storage = f"sqlite:///{tmp_path / 'study' / 'study.db'}"
    in_memory = _study(result.trials)
    stored = optuna.create_study(study_name="demo", storage=result.storage, direction="maximize")
    for trial in in_memory.trials:
        stored.add_trial(trial)
    write_outputs(result)
    assert "importance_plot" in result.files, result.notes


def test_no_complete_trial_writes_no_best_toml(tmp_path):
    failed = [TrialRecord(0, "failed", None, {"lr": 1e-3}, 0, 0.1)]
    result = _result(tmp_path / "study", failed)
    write_outputs(result, _study(failed))
    assert set(result.files) == {"trials_csv", "report"} and result.train_command == ""
    assert not (result.folder / BEST_TOML).exists()


def test_storage_passwords_are_masked():
    assert display_storage("postgresql://me:secret@db:5432/tlkit") == "postgresql://me:***@db:5432/tlkit"
    assert display_storage("sqlite:////tmp/x/study.db") == "sqlite:////tmp/x/study.db"


@pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason=NEEDS_CHROMIUM,
)
def test_report_renders_in_a_headless_browser(written, tmp_path):
    from PIL import Image

    url = written.files["report"].resolve().as_uri()
    dom = chromium("--dump-dom", url, tmp=tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    for section in SECTIONS:
        assert re.search(rf'<section id="{section}">', dom.stdout), f"section {section} missing in the DOM"
    assert "All trials (4)" in dom.stdout

    png = tmp_path / "report.png"
    shot = chromium(f"--screenshot={png}", "--window-size=1200,2600", url, tmp=tmp_path)
    assert shot.returncode == 0 and png.is_file(), shot.stderr[-2000:]
    with Image.open(png) as image:
        pixels = np.asarray(image.convert("RGB")).astype(int)
    r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    # The plots' blue points and bars (#1f77b4) show: the inlined PNGs were decoded and laid out.
    blue = int(((abs(r - 0x1F) < 20) & (abs(g - 0x77) < 20) & (abs(b - 0xB4) < 20)).sum())
    assert blue > 2000, f"only {blue} plot-blue pixels: the plots were not shown"


# --------------------------------------------------------------------------- the command's bad inputs


@pytest.mark.parametrize("given", ["5x", "1h30", "-5m", "m"])
def test_a_bad_timeout_is_one_line(given, tmp_path):
    res = invoke_tlkit("tune", "--data", tmp_path, "--timeout", given)
    assert res.returncode != 0
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--timeout" in lines[0], res.stderr


def test_timeouts_parse():
    from tlkit.cli.tune import parse_duration

    assert [parse_duration(t) for t in ("90", "90s", "10m", "1h30m", "2h", "1.5h")] == [90, 90, 600, 5400, 7200, 5400]


@pytest.mark.skipif(not HAS_ENGINE, reason="the search engine (tlkit/tuning/space.py, tlkit.api.tune) is not there yet")
@pytest.mark.parametrize("given", ["lr", "lr=", "lr=1e-2..1e-4:log", "nosuchoption=1..2"])
def test_a_bad_search_is_one_line(given, tmp_path):
    from tlkit.testing import write_images

    for split in ("train", "val"):
        for cls, color in (("cat", (200, 40, 40)), ("dog", (40, 200, 40))):
            write_images(tmp_path / "data" / split / cls, 2, color, prefix=cls)
    res = invoke_tlkit(
        "tune", "--data", tmp_path / "data", "--weights", "none", "--output", tmp_path / "tune", "--search", given
    )
    assert res.returncode != 0
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:"), res.stderr
    assert given.split("=")[0] in lines[0]


def test_a_search_table_in_the_config_becomes_search_strings(tmp_path):
    from tlkit.cli.tune import read_tune_config

    path = tmp_path / "tune.toml"
    path.write_text(
        'data = "data"\nepochs = 5\n\n[search]\nlr = "1e-4..1e-2:log"\nhead = ["dense256", "mlp"]\n'
        '"head.dropout" = "0..0.6"\n\n[search.base_params]\nx = "1,2"\n'
    )
    config, search = read_tune_config(path)
    assert config.epochs == 5 and config.data == "data"
    assert search == ["lr=1e-4..1e-2:log", "head=dense256,mlp", "head.dropout=0..0.6", "base_params.x=1,2"]


def test_the_command_passes_its_options_and_prints_the_summary(written, tmp_path, monkeypatch):
    """The engine stubbed: what the command hands to tlkit.tune, and the summary, --quiet and --json."""
    import json

    calls = []

    def fake_tune(config=None, **kwargs):
        calls.append((config, kwargs))
        return written

    monkeypatch.setattr(tlkit.api, "tune", fake_tune, raising=False)
    path = tmp_path / "tune.toml"
    path.write_text('data = "data"\nepochs = 4\n\n[search]\nlr = "1e-4..1e-2:log"\nhead = ["dense256", "mlp"]\n')
    args = ["tune", "--config", path, "--search", "head=mlp,linear", "--search", "head.dropout=0..0.6"]
    res = invoke_tlkit(*args, "--trials", "7", "--timeout", "1h30m", "--pruner", "hyperband", "--lr", "0.01")
    assert res.returncode == 0, res.stderr
    config, kwargs = calls[-1]
    assert config.epochs == 4
    assert kwargs["search"] == ["lr=1e-4..1e-2:log", "head=mlp,linear", "head.dropout=0..0.6"]
    assert kwargs["trials"] == 7 and kwargs["timeout"] == 5400 and kwargs["pruner"] == "hyperband"
    assert kwargs["lr"] == 0.01 and "output" in kwargs and "epochs" not in kwargs  # only the flags given
    assert "+8.0 points" in res.stdout and "0.8500" in res.stdout and "trial 1" in res.stdout
    assert res.stdout.rstrip().splitlines()[-1] == written.train_command  # on its own line, unwrapped

    quiet = invoke_tlkit("tune", "--data", "data", "--quiet")
    assert quiet.returncode == 0 and quiet.stdout == written.train_command + "\n"
    as_json = invoke_tlkit("tune", "--data", "data", "--json")
    assert json.loads(as_json.stdout)["best"]["number"] == 1


def test_bad_command_inputs_are_one_line(tmp_path):
    bad_table = tmp_path / "bad.toml"
    bad_table.write_text('data = "data"\n[search]\nlr = 3\n')
    for args in (["--trials", "0"], ["--pruner", "sometimes"], ["--config", bad_table]):
        res = invoke_tlkit("tune", "--data", tmp_path, *args)
        lines = [line for line in res.stderr.splitlines() if line.strip()]
        assert res.returncode != 0 and len(lines) == 1 and lines[0].startswith("Error:"), res.stderr
