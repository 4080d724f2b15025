"""Shared fixtures and the test environment (helpers: tests/support.py)."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.support import CLASS_COLORS
from tlkit.testing import write_images

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The suite gives the same results from any shell: output is parsed at a fixed width (rich reads
# COLUMNS when a console is made, so before tlkit.cli is imported), text is UTF-8 in any locale,
# and neither the caller's Keras cache (~/.keras, read once when Keras is imported) nor their
# tlkit cache (see _isolated_feature_cache) is read or written.
os.environ["COLUMNS"] = "200"
os.environ.pop("LINES", None)
os.environ["PYTHONIOENCODING"] = "utf-8"
os.environ["LC_ALL"] = os.environ["LANG"] = "C.UTF-8"
_KERAS_HOME = tempfile.mkdtemp(prefix="tlkit-tests-keras-")
os.environ["KERAS_HOME"] = _KERAS_HOME
atexit.register(shutil.rmtree, _KERAS_HOME, True)


@pytest.fixture(autouse=True, scope="session")
def _isolated_feature_cache(tmp_path_factory):
    """Tests (and the tlkit subprocesses they start) never touch the user's ~/.cache/tlkit."""
    os.environ["TLKIT_CACHE_DIR"] = str(tmp_path_factory.mktemp("tlkit-cache"))
    os.environ.pop("XDG_CACHE_HOME", None)
    yield


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    """data/{train,val}/{cat,dog,fox}/*.png — 8 train and 3 val images per class."""
    root = tmp_path / "data"
    for k, (name, color) in enumerate(CLASS_COLORS.items()):
        write_images(root / "train" / name, 8, color, seed=k)
        write_images(root / "val" / name, 3, color, seed=10 + k)
    return root


@pytest.fixture(scope="session")
def calibrated_run(tmp_path_factory) -> tuple[Path, Path]:
    """(data folder, run directory) of one real ``tlkit.train`` run, shared by every test that only reads it.

    MobileNetV2 at 32 px with random weights whose BatchNorm statistics are calibrated on the
    training images (so predictions differ per image), one epoch, the default head, a flip
    augmentation; classes cat/dog/fox, 8 train and 6 val images each.  Tests must not write into it.
    """
    import tlkit
    from tlkit.testing import calibrated_mobilenet_v2_weights, make_image_folder

    root = tmp_path_factory.mktemp("calibrated-run")
    data = make_image_folder(root / "data", classes=tuple(CLASS_COLORS), per_class=8, val_per_class=6, size=40)
    weights = calibrated_mobilenet_v2_weights(data / "train", 32, root / "mobilenet_v2_32.weights.h5")
    result = tlkit.train(
        data=str(data),
        base="mobilenet_v2",
        weights=str(weights),
        image_size=32,
        epochs=1,
        batch_size=4,
        augmentations=["flip_horizontal"],
        engine="tensorflow",  # for a few images, cheaper than converting the base for ONNX Runtime
        verbose=False,
        output=str(root / "runs"),
    )
    return data, Path(result.run_dir)
