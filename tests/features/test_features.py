"""The frozen-base feature cache, the ONNX Runtime engine and the training path choice."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

import tlkit
from tests import support
from tests.support import run_tlkit, write_images
from tlkit import TlkitError
from tlkit.features.store import FeatureStore, cache_root

FAST = {**support.FAST, "epochs": 1, "verbose": False}


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("TLKIT_CACHE_DIR", str(root))
    return root


def _train(data, tmp_path, **options):
    return tlkit.train(data=str(data), output=str(tmp_path / "runs"), **{**FAST, **options})


@pytest.mark.parametrize("base", ["mobilenet_v2", "efficientnet_b0"])
def test_onnxruntime_features_match_keras(base, tmp_path):
    pytest.importorskip("onnxruntime")
    from tlkit.api import resolve_head
    from tlkit.features.engines import OnnxRuntimeEngine
    from tlkit.features.onnx_export import export_onnx
    from tlkit.model.builder import assemble
    from tlkit.registry.manager import get_registry

    head, params = resolve_head("linear", {})
    parts = assemble(get_registry().base(base), head, 3, image_size=32, weights=None, head_params=params)
    images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    expected = np.asarray(parts.feature_model(images, training=False))
    path = export_onnx(parts.feature_model, tmp_path / "base.onnx", 32)
    got = OnnxRuntimeEngine(path)(images)  # EfficientNet: its Normalization constants are folded
    assert got.shape == expected.shape
    assert np.max(np.abs(got - expected)) <= 1e-4 * np.max(np.abs(expected))


def test_second_run_with_another_head_reuses_the_cache(tiny_data, tmp_path, cache):
    first = _train(tiny_data, tmp_path, head="dense256")
    assert first.metrics["training_path"] == "features"
    features = first.metrics["features"]
    assert features["train"]["cache"] == "computed" and features["val"]["cache"] == "computed"
    assert features["train"]["images_per_s"] > 0
    # linear starts with global average pooling: its cache entry is the pooled vector, made from
    # the cached map of the first run (no base pass), and reused as it is by a third run.
    second = _train(tiny_data, tmp_path, head="linear", lr=0.01, epochs=2)
    assert second.metrics["features"]["train"]["cache"] == "hit"
    assert second.metrics["features"]["val"]["cache"] == "hit"
    entries = {e["name"]: e for e in FeatureStore().entries() if e["kind"] == "features"}
    pooled = entries[Path(second.metrics["features"]["train"]["entry"]).name]
    assert pooled["pooled_from"] == Path(features["train"]["entry"]).name
    channels = entries[pooled["pooled_from"]]["shape"][-1]
    assert pooled["shape"] == [1, 24, channels]  # (views, images, C): no 1×1 map
    assert len(entries) == 4 and {e["split"] for e in entries.values()} == {"train", "val"}
    third = _train(tiny_data, tmp_path, head="linear", epochs=1)
    assert third.metrics["features"]["train"]["entry"] == second.metrics["features"]["train"]["entry"]
    assert len([e for e in FeatureStore().entries() if e["kind"] == "features"]) == 4


def test_a_fully_cached_run_decodes_nothing_exports_nothing_and_evaluates_from_features(
    tiny_data, tmp_path, cache, monkeypatch
):
    from tlkit.data import decode as data
    from tlkit.features import engines

    first = _train(tiny_data, tmp_path)
    assert first.metrics["timings"]["decode"] > 0
    onnx_files = {p: p.stat().st_mtime_ns for p in FeatureStore().models_dir.iterdir()}

    def refuse(*args, **kwargs):
        raise AssertionError("a fully cached run must not do this")

    # Neither decoding an image nor exporting/loading the base may happen now.
    monkeypatch.setattr(data, "decode_split", refuse)
    monkeypatch.setattr(data, "load_image", refuse)
    monkeypatch.setattr(engines, "make_engine", refuse)
    second = _train(tiny_data, tmp_path, head="linear", lr=0.01, epochs=2)
    assert "decode" not in second.metrics["timings"]
    assert second.metrics["features"]["engine"] == "cache"
    assert {p: p.stat().st_mtime_ns for p in FeatureStore().models_dir.iterdir()} == onnx_files
    # the end-of-training evaluation (from the cached features and the head) agrees with training
    evaluation = json.loads((second.run_dir / "evaluation" / "metrics.json").read_text())
    best = second.metrics["best_epoch"]
    assert evaluation["accuracy"] == pytest.approx(second.history["val_accuracy"][best - 1], abs=1e-6)


def test_changed_image_or_size_makes_a_new_entry(tiny_data, tmp_path, cache):
    first = _train(tiny_data, tmp_path)
    write_images(tiny_data / "train" / "cat", 1, (10, 10, 10), seed=99)  # overwrites img_000.png
    changed = _train(tiny_data, tmp_path)
    assert changed.metrics["features"]["train"]["cache"] == "computed"
    assert changed.metrics["features"]["val"]["cache"] == "hit"  # val images did not change
    bigger = _train(tiny_data, tmp_path, image_size=40)
    assert bigger.metrics["features"]["val"]["cache"] == "computed"
    assert first.metrics["features"]["train"]["entry"] != changed.metrics["features"]["train"]["entry"]


def test_saved_model_equals_the_head_trained_on_cached_features(tiny_data, tmp_path, cache):
    import keras

    result = _train(tiny_data, tmp_path, head="dense256", head_params={"units": 16}, epochs=2)  # caches the map
    model = keras.saving.load_model(result.model_path)
    from tlkit.data.decode import decode_split
    from tlkit.data.folders import scan_dataset

    scan = scan_dataset(tiny_data)
    val = decode_split(scan.val, 32, tmp_path / "px", name="val")
    end_to_end = model.predict(np.asarray(val.pixels, dtype="float32"), verbose=0)
    cached = FeatureStore().lookup(Path(result.metrics["features"]["val"]["entry"]).name)
    head_only = model.get_layer("head").predict(np.asarray(cached[0]), verbose=0)
    np.testing.assert_allclose(end_to_end, head_only, atol=1e-4)
    accuracy = float((end_to_end.argmax(1) == val.labels).mean())
    assert accuracy == pytest.approx(result.history["val_accuracy"][-1], abs=1e-6)


def test_a_pooling_head_trains_on_pooled_vectors_and_equals_the_saved_model(tiny_data, tmp_path, cache):
    import keras

    from tlkit.data.decode import decode_split
    from tlkit.data.folders import scan_dataset

    result = _train(tiny_data, tmp_path, head="mlp", head_params={"units": (8,), "pooling": "max"}, epochs=2)
    cached = FeatureStore().lookup(Path(result.metrics["features"]["val"]["entry"]).name)
    assert cached.ndim == 3  # (views, images, C): the pooled vector was cached, not the map
    model = keras.saving.load_model(result.model_path)
    val = decode_split(scan_dataset(tiny_data).val, 32, tmp_path / "px", name="val")
    end_to_end = model.predict(np.asarray(val.pixels, dtype="float32"), verbose=0)
    head = model.get_layer("head")
    tail = keras.Model(head.get_layer("head_pool").output, head.output)
    np.testing.assert_allclose(end_to_end, tail.predict(np.asarray(cached[0]), verbose=0), atol=1e-4)


def test_float16_entries_are_half_the_size_and_train_the_same_head(tiny_data, tmp_path, cache):
    float32 = _train(tiny_data, tmp_path, head="dense256", head_params={"units": 8}, epochs=2)
    float16 = _train(tiny_data, tmp_path, head="dense256", head_params={"units": 8}, epochs=2, feature_dtype="float16")
    assert float16.metrics["features"]["train"]["cache"] == "computed"  # its own entry, keyed by dtype
    entries, store = {}, FeatureStore()
    for result in (float32, float16):
        key = Path(result.metrics["features"]["train"]["entry"]).name
        meta = store.meta(key)
        entries[meta["dtype"]] = (meta, store.data_path(key, meta["dtype"]).stat().st_size)
    assert entries["float16"][0]["shape"] == entries["float32"][0]["shape"]
    assert entries["float16"][1] * 2 == entries["float32"][1]
    # Same seed, features equal to float16 rounding: the training follows the same path.
    np.testing.assert_allclose(float16.history["loss"], float32.history["loss"], rtol=1e-2)


def test_half_written_entries_are_never_used(tmp_path, cache):
    class Engine:
        name = "fake"
        calls = 0

        def __call__(self, batch):
            Engine.calls += 1
            return np.ones((len(batch), 2, 2, 3), np.float32) * batch[:, :1, :1, :1]

    pixels = np.arange(4 * 4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 4, 3)
    labels = np.arange(4, dtype=np.int32)
    kwargs = dict(key="k1", pixels=pixels, labels=labels, feature_shape=(2, 2, 3), engine=Engine(), batch_size=2)
    store = FeatureStore()
    # A crashed run's leftovers: a temp folder and an entry without its completion mark.
    (store.entries_dir / ".tmp-k1-crashed").mkdir(parents=True)
    store.entry_path("k1").mkdir()
    store.data_path("k1").write_bytes(b"\0" * 10)
    first = store.load_or_compute(**kwargs)
    assert not first.hit and Engine.calls == 2
    second = store.load_or_compute(**kwargs)
    assert second.hit and Engine.calls == 2
    np.testing.assert_array_equal(second.features[0, :, 0, 0, 0], pixels[:, 0, 0, 0])
    entries, freed = store.clear()
    assert entries == 1 and freed > 0 and not any(store.entries_dir.iterdir())


def test_augmentation_path_choice_and_aug_views(tiny_data, tmp_path, cache):
    plain = _train(tiny_data, tmp_path, augmentations=["flip_horizontal"])
    assert plain.metrics["training_path"] == "end-to-end"
    assert "--aug-views" in plain.metrics["training_path_reason"]
    assert plain.metrics["features"] is None
    views = _train(tiny_data, tmp_path, augmentations=["flip_horizontal"], aug_views=2, epochs=3)
    assert views.metrics["training_path"] == "features"
    assert views.metrics["features"]["train"]["views"] == 2 and views.metrics["features"]["val"]["views"] == 1
    stored = FeatureStore().lookup(Path(views.metrics["features"]["train"]["entry"]).name)
    difference = np.max(np.abs(np.asarray(stored[0]) - np.asarray(stored[1])))
    assert difference > 1e-3 * np.max(np.abs(stored[0])), "the two views are identical"
    off = _train(tiny_data, tmp_path, feature_cache=False)
    assert off.metrics["training_path"] == "end-to-end" and "--no-feature-cache" in off.metrics["training_path_reason"]


def test_engine_choice_and_cache_commands(tiny_data, tmp_path, cache):
    result = _train(tiny_data, tmp_path, engine="tensorflow")
    assert result.metrics["features"]["engine"] == "tensorflow"
    with pytest.raises(TlkitError, match="unknown --engine 'onnx'"):
        _train(tiny_data, tmp_path, engine="onnx")
    env = {"TLKIT_CACHE_DIR": str(cache)}
    info = json.loads(run_tlkit("cache", "info", "--json", env=env).stdout)
    assert info["root"] == str(cache) and len([e for e in info["entries"] if e["kind"] == "features"]) == 2
    cleared = run_tlkit("cache", "clear", "--json", env=env)
    assert cleared.returncode == 0 and json.loads(cleared.stdout)["entries_removed"] >= 2
    assert json.loads(run_tlkit("cache", "info", "--json", env=env).stdout)["entries"] == []


def test_cache_dir_default_is_the_user_cache(monkeypatch):
    monkeypatch.delenv("TLKIT_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", "/somewhere")
    assert cache_root() == Path("/somewhere/tlkit")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_root() == Path(os.path.expanduser("~/.cache/tlkit"))


# -- per-image reuse across entries --------------------------------------------------------


@pytest.fixture
def counted(monkeypatch):
    """The images that go through the base (every engine made is wrapped to count them)."""
    from tlkit.features import engines

    seen = {"images": 0, "engines": 0}
    make = engines.make_engine

    def counting(*args, **kwargs):
        engine, reason = make(*args, **kwargs)
        seen["engines"] += 1

        class Counting:
            name, batch_size = engine.name, getattr(engine, "batch_size", None)

            def __call__(self, batch):
                seen["images"] += len(batch)
                return engine(batch)

        return Counting(), reason

    monkeypatch.setattr(engines, "make_engine", counting)
    return seen


def _rows_by_image(result) -> dict[str, np.ndarray]:
    """content hash → features row, over both splits' entries of a run."""
    store, rows = FeatureStore(), {}
    for name in ("train", "val"):
        key = Path(result.metrics["features"][name]["entry"]).name
        features = store.lookup(key)
        rows.update((h, np.asarray(features[0, i])) for i, h in enumerate(store.meta(key)["file_hashes"]))
    return rows


def test_a_cleaned_labels_csv_reuses_every_image_without_running_the_base(tiny_data, tmp_path, cache, counted):
    from tlkit.features.fingerprint import file_fingerprint

    first = _train(tiny_data, tmp_path, engine="tensorflow")
    assert counted["images"] == 24 + 9
    before = _rows_by_image(first)
    train = sorted((tiny_data / "train").rglob("*.png"))
    val = sorted((tiny_data / "val").rglob("*.png"))
    dropped, moved = {train[0], train[9]}, train[17]  # two duplicates dropped, one image moved to val
    lines = ["path,label,split"]
    lines += [f"{f.relative_to(tiny_data)},{f.parent.name},train" for f in train if f not in dropped and f != moved]
    lines += [f"{f.relative_to(tiny_data)},{f.parent.name},val" for f in [*val, moved]]
    (tiny_data / "labels.csv").write_text("\n".join(lines) + "\n")
    second = _train(tiny_data, tmp_path, engine="tensorflow", labels=str(tiny_data / "labels.csv"))
    assert counted == {"images": 24 + 9, "engines": 1}, "the base ran again"
    features = second.metrics["features"]
    assert features["engine"] == "cache" and "decode" not in second.metrics["timings"]
    assert features["train"]["cache"] == "hit" and features["train"]["derived_from"] == 1
    assert features["val"]["cache"] == "hit" and features["val"]["derived_from"] == 2  # old val + old train
    after = _rows_by_image(second)
    assert set(after) == {file_fingerprint(f) for f in [*train, *val] if f not in dropped}
    for digest, row in after.items():
        np.testing.assert_array_equal(row, before[digest])  # the very rows of the first run


def test_new_images_are_the_only_ones_through_the_base(tiny_data, tmp_path, cache, counted):
    _train(tiny_data, tmp_path, engine="tensorflow")
    write_images(tiny_data / "train" / "cat", 2, (90, 90, 90), seed=5, prefix="new")
    grown = _train(tiny_data, tmp_path, engine="tensorflow")
    assert counted["images"] == 24 + 9 + 2
    train = grown.metrics["features"]["train"]
    assert train["cache"] == "computed" and train["computed_images"] == 2 and train["derived_from"] == 1
    assert grown.metrics["features"]["val"]["cache"] == "hit"


def test_another_size_or_weights_never_reuses_rows(tiny_data, tmp_path, cache, counted):
    _train(tiny_data, tmp_path, engine="tensorflow")
    bigger = _train(tiny_data, tmp_path, engine="tensorflow", image_size=40)
    reseeded = _train(tiny_data, tmp_path, engine="tensorflow", seed=1)  # random weights: another seed, others
    assert counted["images"] == 3 * (24 + 9)
    for result in (bigger, reseeded):
        for name in ("train", "val"):
            info = result.metrics["features"][name]
            assert info["cache"] == "computed" and "derived_from" not in info
