"""The plugin as installed: entry point, registry, CLI listing, tlkit end to end, saved models."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from importlib import metadata

import numpy as np

import tlkit


def _run(code: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout
    )


def test_import_does_not_pull_in_tensorflow_keras_or_torch():
    result = _run("""
        import sys, tlkit_torchvision
        tlkit_torchvision.TV_MOBILENET_V2.locate_weights()
        heavy = [m for m in ("tensorflow", "keras", "torch", "numpy") if m in sys.modules]
        print(",".join(heavy))
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"importing the plugin imported {result.stdout.strip()}"


def test_entry_point_is_installed():
    eps = [ep for ep in metadata.entry_points(group="tlkit") if ep.name == "torchvision"]
    assert len(eps) == 1 and eps[0].value == "tlkit_torchvision"
    assert eps[0].dist.name == "tlkit-torchvision"


def test_registry_finds_the_base():
    from tlkit.registry.manager import Registry

    spec = Registry().base("tv_mobilenet_v2")
    assert spec.plugin == "torchvision" and spec.family == "torchvision"
    assert spec.weight_file_suffixes == (".pth", ".pt")
    assert spec.weights_file == "mobilenet_v2-b0353104.pth"


def test_list_bases_json_includes_it():
    result = subprocess.run(
        [sys.executable, "-m", "tlkit", "list-bases", "--json"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["tv_mobilenet_v2"]["feature_shape"] == "7×7×1280 at 224 px"
    assert rows["tv_mobilenet_v2"]["plugin"] == "torchvision"


def test_headless_base_builds_through_tlkit():
    model = tlkit.build_model("tv_mobilenet_v2", "linear", 3, image_size=64, weights="none")
    assert model.output.shape == (None, 3)
    assert model.get_layer("tv_normalize") is not None


def test_corrupt_imagenet_file_through_tlkit(tmp_path, weights_path):
    bad = tmp_path / "mobilenet_v2-b0353104.pth"
    data = bytearray(weights_path.read_bytes())
    data[-1] ^= 0xFF
    bad.write_bytes(bytes(data))
    import pytest

    with pytest.raises(tlkit.TlkitError, match="SHA-256 does not start with b0353104"):
        tlkit.build_model("tv_mobilenet_v2", "linear", 3, image_size=64, weights=str(bad))


def test_saved_model_loads_without_tlkit(tmp_path):
    from tlkit_torchvision.weights import locate_weights

    found = locate_weights()  # the real weights when installed, else random ones
    model = tlkit.build_model("tv_mobilenet_v2", "linear", 3, image_size=96, weights=str(found) if found else "none")
    pixels = np.random.default_rng(0).integers(0, 256, (2, 96, 96, 3)).astype("float32")
    expected = np.asarray(model(pixels, training=False))
    model.save(tmp_path / "model.keras")
    np.save(tmp_path / "pixels.npy", pixels)
    result = _run(
        f"""
        import sys

        # Importing any of these fails, and they stay absent from sys.modules: a None entry there
        # breaks libraries that probe for torch (SciPy's array-API helpers, imported by Keras).
        class Blocked:
            names = ("tlkit", "tlkit_torchvision", "tlkit_builtins", "torch")

            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in self.names:
                    raise ImportError(name + " is blocked in this test")
                return None

        sys.meta_path.insert(0, Blocked())
        import numpy as np, keras
        model = keras.saving.load_model({str(tmp_path / "model.keras")!r}, safe_mode=True)
        out = model(np.load({str(tmp_path / "pixels.npy")!r}), training=False)
        np.save({str(tmp_path / "out.npy")!r}, np.asarray(out))
    """,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, atol=1e-6)
