"""Every command that finds no readable image says which files and why (the first few, then "and N more")."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import invoke_tlkit


@pytest.fixture
def unreadable(tmp_path) -> Path:
    """A folder of 7 files that are not images (so the first 5 are listed, then "and 2 more")."""
    folder = tmp_path / "broken"
    for name in ("cat", "dog", "fox"):
        (folder / name).mkdir(parents=True)
    for k in range(7):
        (folder / ("cat", "dog", "fox")[k % 3] / f"img{k}.png").write_text("not a picture")
    return folder


def _named(stderr: str, folder: Path, listed: int) -> None:
    named = [line for line in stderr.splitlines() if line.strip().startswith(str(folder)) and ": " in line]
    assert len(named) == listed and all("not" in line.split(": ", 1)[1] for line in named), stderr
    assert "and 2 more" in stderr, stderr


def test_explain_names_the_files_it_could_not_read(calibrated_run, unreadable, tmp_path):
    _, run_dir = calibrated_run
    result = invoke_tlkit("explain", run_dir, unreadable, "--output", tmp_path / "out")
    assert result.returncode != 0 and "none of the 7 image file(s) could be read" in result.stderr
    _named(result.stderr.split("Error:", 1)[1], unreadable, 5)
    assert not (tmp_path / "out").exists()


def test_evaluate_names_the_files_it_could_not_read(calibrated_run, unreadable, tmp_path):
    _, run_dir = calibrated_run
    result = invoke_tlkit("evaluate", run_dir, "--data", unreadable, "--output", tmp_path / "eval")
    assert result.returncode != 0 and "none of the 7 images" in result.stderr, result.stderr
    _named(result.stderr.split("Error:", 1)[1], unreadable, 5)


def test_export_names_the_calibration_files_it_could_not_read(calibrated_run, tmp_path):
    _, run_dir = calibrated_run
    data = tmp_path / "broken"
    for split in ("train", "val"):
        for k, name in enumerate(("cat", "dog", "fox") * 3):
            (data / split / name).mkdir(parents=True, exist_ok=True)
            (data / split / name / f"img{k}.png").write_text("not a picture")
    result = invoke_tlkit(
        "export", run_dir, "--format", "tflite", "--quantize", "int8", "--data", data, "--output", tmp_path / "x"
    )
    assert result.returncode != 0 and "none of the 9 training images" in result.stderr, result.stderr
    listed = [line for line in result.stderr.splitlines() if line.strip().startswith(str(data / "train"))]
    assert len(listed) == 5 and "and 4 more" in result.stderr and not (tmp_path / "x").exists()
