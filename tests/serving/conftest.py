"""Fixtures of the serving tests: the shared calibrated run, a few of its images, and what
``tlkit predict --json`` says about them (the numbers every /predict answer must repeat)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support import invoke_tlkit


@pytest.fixture(scope="package")
def run_dir(calibrated_run) -> Path:
    return calibrated_run[1]


@pytest.fixture(scope="package")
def images(calibrated_run) -> list[Path]:
    """Two validation images of each class (40 px PNGs)."""
    data = calibrated_run[0]
    return [p for name in ("cat", "dog", "fox") for p in sorted((data / "val" / name).glob("*.png"))[:2]]


@pytest.fixture(scope="package")
def expected(run_dir, images) -> dict[str, dict]:
    """``tlkit predict RUN IMAGES --json``: one object per image, by file name."""
    result = invoke_tlkit("predict", run_dir, *images, "--json")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == len(images)
    return {Path(line["path"]).name: line for line in lines}
