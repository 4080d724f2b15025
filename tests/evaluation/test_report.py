"""`tlkit report`: one self-contained HTML file per run, checked in a real headless browser.

The browser test needs Debian's chromium (`apt-get install -y chromium`, see
docs/evaluation.md); without /usr/bin/chromium it is skipped, saying so.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from tests.evaluation.test_evaluate import make_data, make_run
from tests.support import CHROMIUM, NEEDS_CHROMIUM, chromium
from tlkit.errors import TlkitError

SECTIONS = ["config", "dataset", "curves", "metrics", "confusion", "mistakes"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("report")
    data = make_data(root / "data")
    return make_run(root / "runs", data, stages=("head", "head", "fine_tune", "fine_tune"))


@pytest.fixture(scope="module")
def report(run_dir) -> Path:
    from tlkit.evaluation.report import write_report

    return write_report(run_dir)


def test_report_is_self_contained_with_every_section(report, run_dir):
    assert report == run_dir / "report.html"
    text = report.read_text(encoding="utf-8")
    for section in SECTIONS:
        assert f'<section id="{section}">' in text
    sources = re.findall(r'(?:src|href)="([^"]*)"', text)
    assert sources and all(s.startswith(("data:image/", "#")) for s in sources), sources
    assert "<script" not in text and "<link" not in text and "url(" not in text
    assert text.count('src="data:image/png;base64,') >= 4  # 2 curves, confusion matrix, mistakes
    assert text.count('src="data:image/jpeg;base64,') == 3 * 4  # 4 sample images per class
    # the run had no evaluation: the report made one on the validation data
    evaluation = json.loads((run_dir / "evaluation" / "metrics.json").read_text())
    assert evaluation["confusion_matrix"]["counts"] == [[3, 1, 0], [0, 3, 0], [1, 0, 2]]
    assert "80.0%" in text and "fine_tune (epochs 3–4)" in text and "flip_horizontal" in text
    assert "v3_dog.png" in text  # the most confident mistake is listed


def test_report_reuses_the_evaluation_once_evaluated(report, run_dir, monkeypatch):
    """Once the run is evaluated, a new report neither loads the model nor evaluates again
    (that is what makes it fast; timing itself belongs in bench/)."""
    import keras

    from tlkit.evaluation import evaluate as evaluation
    from tlkit.evaluation.report import write_report

    def refuse(*args, **kwargs):
        raise AssertionError("the report evaluated (or loaded the model) again")

    monkeypatch.setattr(evaluation, "evaluate", refuse)
    monkeypatch.setattr(keras.saving, "load_model", refuse)
    text = write_report(run_dir).read_text()
    assert "80.0%" in text  # the saved evaluation is shown


def test_report_without_evaluation_or_data(run_dir, tmp_path):
    from tlkit.evaluation.report import write_report

    copy = tmp_path / run_dir.name
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("evaluation", "logs", "report.html"))
    text = write_report(copy, evaluate=False).read_text()
    assert "Not evaluated yet." in text and not (copy / "evaluation").exists()

    config = (copy / "config.toml").read_text()
    (copy / "config.toml").write_text(re.sub(r'data = ".*"', 'data = "/nonexistent/data"', config))
    text = write_report(copy).read_text()
    assert "is not available here" in text and "Evaluation failed" in text and "no longer exists" in text
    for section in SECTIONS:
        assert f'<section id="{section}">' in text

    with pytest.raises(TlkitError, match="not a tlkit run directory"):
        write_report(tmp_path)


@pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason=NEEDS_CHROMIUM,
)
def test_report_renders_in_a_headless_browser(report, tmp_path):
    url = report.resolve().as_uri()
    dom = chromium("--dump-dom", url, tmp=tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    for section in SECTIONS:
        assert re.search(rf'<section id="{section}">', dom.stdout), f"section {section} missing in the DOM"
    assert "Training curves" in dom.stdout and "Confusion matrix" in dom.stdout

    png = tmp_path / "report.png"
    shot = chromium(f"--screenshot={png}", "--window-size=1200,2400", url, tmp=tmp_path)
    assert shot.returncode == 0 and png.is_file(), shot.stderr[-2000:]
    from PIL import Image

    with Image.open(png) as image:
        assert image.size == (1200, 2400)
        colours = image.convert("RGB").resize((60, 120)).getcolors(60 * 120)
        assert colours is not None and len(colours) > 20, "the screenshot looks blank"


def test_cli_report(run_dir):
    from typer.testing import CliRunner

    from tlkit.cli import app
    from tlkit.cli.evaluate import register

    register(app)
    result = CliRunner().invoke(app, ["report", str(run_dir), "--json"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {"report": str(run_dir / "report.html")}
