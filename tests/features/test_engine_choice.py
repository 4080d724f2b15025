"""``--engine auto``: ONNX Runtime unless its export fails or TensorFlow is clearly faster, decided
once per exported base and machine and kept beside the ONNX file."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from tlkit.cli import app
from tlkit.features import engines
from tlkit.features.store import FeatureStore

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def feature_model():
    import keras

    inputs = keras.Input((16, 16, 3))
    outputs = keras.layers.Conv2D(4, 3, activation="relu")(keras.layers.Rescaling(1 / 255)(inputs))
    return keras.Model(inputs, outputs)


@pytest.fixture
def sample():
    return np.random.default_rng(0).uniform(0, 255, (2, 16, 16, 3)).astype(np.float32)


def _rates(monkeypatch, tf_rate: float, ort_rate: float) -> list[str]:
    """Make the race see these images/s; returns the engines it timed, in order."""
    timed: list[str] = []

    def fake(engine, batch):
        assert batch.shape == (8, 16, 16, 3)  # the sample repeated to a batch
        timed.append(engine.name)
        return tf_rate if engine.name == "tensorflow" else ort_rate

    monkeypatch.setattr(engines, "_images_per_second", fake)
    return timed


def test_tensorflow_wins_only_when_clearly_faster_and_the_decision_is_kept(
    feature_model, sample, tmp_path, monkeypatch
):
    onnx = FeatureStore(tmp_path).model_path("base-16.onnx")
    timed = _rates(monkeypatch, tf_rate=10.0, ort_rate=4.0)
    engine, reason = engines.make_engine(feature_model, "auto", onnx, sample)
    assert engine.name == "tensorflow" and timed == ["tensorflow", "onnxruntime"]
    assert reason == "TensorFlow (2.5× faster than ONNX Runtime on this base here, 10.0 vs 4.0 images/s)"
    kept = json.loads(engines.decision_path(onnx).read_text())
    assert kept["engine"] == "tensorflow" and kept["tensorflow_ips"] == 10.0 and kept["machine"]["cpus"]
    assert engines.decision_path(onnx).name.startswith(".")  # not listed as a cache entry, but shown in its row
    monkeypatch.setenv("TLKIT_CACHE_DIR", str(tmp_path))
    listed = CliRunner().invoke(app, ["cache", "info", "--json"])
    (row,) = json.loads(listed.stdout)["entries"]
    assert row["kind"] == "onnx" and row["engine"] == "tensorflow" and row["engine_reason"].startswith("2.5× faster")
    assert engines.expected_engine("auto", onnx) == "tensorflow"  # the cache key a run looks up first
    assert engines.expected_engine("onnxruntime", onnx) == "onnxruntime"

    # The next run follows the decision without timing or converting anything.
    timed.clear()
    onnx.unlink()
    engine, reason = engines.make_engine(feature_model, "auto", onnx, sample)
    assert engine.name == "tensorflow" and timed == [] and not onnx.exists()
    assert reason.startswith("TensorFlow (2.5× faster") and ".base-16.onnx.engine.json" in reason
    # --engine onnxruntime still means ONNX Runtime.
    engine, reason = engines.make_engine(feature_model, "onnxruntime", onnx, sample)
    assert engine.name == "onnxruntime" and reason == "ONNX Runtime (--engine onnxruntime)" and timed == []


def test_onnx_runtime_stays_unless_tensorflow_is_a_quarter_faster(feature_model, sample, tmp_path, monkeypatch):
    onnx = tmp_path / "base.onnx"
    _rates(monkeypatch, tf_rate=10.0, ort_rate=8.5)  # TensorFlow 1.18× faster: not enough
    engine, reason = engines.make_engine(feature_model, "auto", onnx, sample)
    assert engine.name == "onnxruntime" and reason == "ONNX Runtime"
    assert engines.read_decision(onnx)["engine"] == "onnxruntime"
    timed = _rates(monkeypatch, tf_rate=100.0, ort_rate=1.0)
    assert engines.make_engine(feature_model, "auto", onnx, sample)[0].name == "onnxruntime" and timed == []


def test_a_decision_from_other_packages_or_cores_is_made_again(feature_model, sample, tmp_path, monkeypatch):
    onnx = tmp_path / "base.onnx"
    _rates(monkeypatch, tf_rate=10.0, ort_rate=1.0)
    engines.make_engine(feature_model, "auto", onnx, sample)
    machine = engines._machine()
    monkeypatch.setattr(engines, "_machine", lambda: {**machine, "cpus": (machine["cpus"] or 1) + 1})
    assert engines.read_decision(onnx) is None and engines.expected_engine("auto", onnx) == "onnxruntime"
    timed = _rates(monkeypatch, tf_rate=1.0, ort_rate=10.0)
    assert engines.make_engine(feature_model, "auto", onnx, sample)[0].name == "onnxruntime"
    assert timed == ["tensorflow", "onnxruntime"]
    engines.decision_path(onnx).write_text("{not json")
    assert engines.read_decision(onnx) is None  # unreadable: decided again


def test_the_workers_of_a_multi_worker_run_never_race(feature_model, sample, tmp_path, monkeypatch):
    onnx = tmp_path / "base.onnx"
    timed = _rates(monkeypatch, tf_rate=10.0, ort_rate=1.0)
    engine, _ = engines.make_engine(feature_model, "auto", onnx, sample, race=False)
    assert engine.name == "onnxruntime" and timed == [] and engines.read_decision(onnx) is None
    # A decision this machine kept from a single-process run is not followed either: the other
    # workers' machines may have kept another one, and every worker must compute with one engine.
    engines.make_engine(feature_model, "auto", onnx, sample)
    assert engines.read_decision(onnx)["engine"] == "tensorflow"
    engine, _ = engines.make_engine(feature_model, "auto", onnx, sample, race=False)
    assert engine.name == "onnxruntime"


def test_a_failed_export_is_not_retried_on_every_run(feature_model, sample, tmp_path, monkeypatch):
    onnx = tmp_path / "base.onnx"

    def broken(*args, **kwargs):
        raise RuntimeError("tf2onnx: unsupported op XlaCallModule")

    monkeypatch.setattr(engines, "export_onnx", broken)
    engine, reason = engines.make_engine(feature_model, "auto", onnx, sample)
    assert engine.name == "tensorflow"
    assert reason == "TensorFlow (ONNX export failed: tf2onnx: unsupported op XlaCallModule)"

    def never(*args, **kwargs):
        raise AssertionError("the export was tried again")

    monkeypatch.setattr(engines, "export_onnx", never)
    engine, reason = engines.make_engine(feature_model, "auto", onnx, sample)
    assert engine.name == "tensorflow" and reason.startswith("TensorFlow (ONNX export failed: tf2onnx: unsupported op")
    with pytest.raises(Exception, match="the export was tried again"):  # asked for, it is tried
        engines.make_engine(feature_model, "onnxruntime", onnx, sample)


def test_a_disk_error_is_not_kept(feature_model, sample, tmp_path, monkeypatch):
    onnx = tmp_path / "base.onnx"

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(engines, "export_onnx", full)
    assert engines.make_engine(feature_model, "auto", onnx, sample)[0].name == "tensorflow"
    assert engines.read_decision(onnx) is None  # next time the disk may have room
