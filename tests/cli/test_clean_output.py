"""Output read later (a log, ``| tee``, CI) is not wrapped, and a normal run prints no library noise."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from tests.support import CLI_FAST, TLKIT
from tlkit.testing import make_image_folder

# What third-party libraries print when left alone: TensorFlow/absl log lines, Python warnings,
# matplotlib's missing glyphs and font lookups, Keras/TF deprecations.
NOISE = re.compile(
    r"UserWarning|DeprecationWarning|FutureWarning|RuntimeWarning|Glyph \d+|findfont|"
    r"^[IWE]\d{4} |oneDNN|cuda|absl|^WARNING:|Traceback",
    re.M,
)


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "FORCE_COLOR", "TERM")}
    return subprocess.run([TLKIT, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


def test_a_piped_run_wraps_no_line_and_prints_no_library_noise(tmp_path):
    # Non-Latin class names: DejaVu Sans (matplotlib's font) has no CJK glyphs.
    data = make_image_folder(tmp_path / "data", classes=("猫", "犬", "Ωmega"), per_class=6, val_per_class=3, size=40)
    output = tmp_path / ("a-long-output-folder-name-" * 3) / "runs"
    trained = _run("train", "--data", str(data), *CLI_FAST, "--epochs", "1", "--output", str(output), cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    run_dir = next(output.iterdir())
    assert f"{run_dir}/model.keras" in trained.stdout, "the final table split a path across lines"
    assert f"Run directory: {run_dir}" in trained.stderr
    epoch = next(line for line in trained.stderr.splitlines() if line.startswith("epoch"))
    assert "val_accuracy" in epoch, "the epoch line was wrapped"
    assert not NOISE.search(trained.stderr), trained.stderr
    assert (run_dir / "plots" / "accuracy.png").is_file() and (run_dir / "report.html").is_file()

    evaluated = _run("evaluate", str(run_dir), "--data", str(data / "val"), cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    assert not NOISE.search(evaluated.stderr + evaluated.stdout), evaluated.stderr
