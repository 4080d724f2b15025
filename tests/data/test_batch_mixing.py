"""Batch-mixing augmentations (mixup, cutmix) and RandAugment: the mixing itself, the training
input pipeline with soft labels, the refusals, and one tiny end-to-end run shared by the CLI checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import tlkit
from tests import support
from tests.support import CLASS_COLORS, invoke_tlkit, write_images
from tlkit.errors import TlkitError
from tlkit.registry.manager import get_registry

FAST = [*support.CLI_FAST, "--head", "linear"]


def _mixer(name: str, seed: int = 3, **params):
    return get_registry().augmentation(name).build(seed, **params)


def _constant_batch(n: int = 6, size: int = 8):
    """Image i is the constant 10·i; its label is one-hot i: every mix can be read off both."""
    import tensorflow as tf

    images = tf.constant(
        np.arange(n, dtype=np.float32)[:, None, None, None] * np.full((n, size, size, 3), 10.0, np.float32)
    )
    return images, tf.one_hot(np.arange(n), n)


def _seed(a: int, b: int):
    import tensorflow as tf

    return tf.constant([a, b], tf.int64)


def test_mixup_is_a_convex_combination_of_images_and_labels_deterministic_in_the_seed():
    images, labels = _constant_batch()
    mix = _mixer("mixup", alpha=1.0)
    mixed, soft = (np.asarray(t) for t in mix(images, labels, _seed(0, 5)))
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, atol=1e-6)
    assert not np.allclose(soft, np.asarray(labels)), "mixup(alpha=1) mixed nothing"
    for i, row in enumerate(soft):
        lam = row[i] if np.count_nonzero(row > 1e-6) == 2 else 1.0  # mixed with itself: λ + (1-λ) = 1
        partner = int(np.argmax(np.where(np.arange(len(row)) == i, -1, row))) if lam < 1 else i
        expected = lam * 10 * i + (1 - lam) * 10 * partner
        np.testing.assert_allclose(mixed[i], expected, rtol=1e-5, atol=1e-4)
    again = mix(images, labels, _seed(0, 5))
    np.testing.assert_array_equal(np.asarray(again[0]), mixed)
    other = mix(images, labels, _seed(0, 6))
    assert not np.array_equal(np.asarray(other[1]), soft), "a new batch seed must draw a new mix"


def test_cutmix_label_weight_is_the_pasted_box_area_fraction():
    images, labels = _constant_batch(size=16)
    mix = _mixer("cutmix", alpha=1.0)
    checked = 0
    for step in range(4):
        mixed, soft = (np.asarray(t) for t in mix(images, labels, _seed(1, step)))
        np.testing.assert_allclose(soft.sum(axis=1), 1.0, atol=1e-6)
        for i, row in enumerate(soft):
            channel = mixed[i, :, :, 0]
            own = np.mean(channel == 10 * i)
            if own < 1.0:  # a box of another image was pasted in
                partner = int(round(channel[channel != 10 * i][0] / 10))
                np.testing.assert_allclose(row[i], own, atol=1e-6)
                np.testing.assert_allclose(row[partner], 1 - own, atol=1e-6)
                checked += 1
        np.testing.assert_array_equal(np.asarray(mix(images, labels, _seed(1, step))[0]), mixed)
    assert checked, "cutmix pasted no box in 4 batches"


def test_pipeline_mixes_training_batches_with_class_weights_and_resumes_the_same_mixes():
    from tlkit.data.decode import DecodedSplit
    from tlkit.data.mixing import hard_label_metrics
    from tlkit.data.pipelines import make_dataset

    rng = np.random.default_rng(0)
    decoded = DecodedSplit(rng.integers(0, 255, (12, 8, 8, 3), dtype=np.uint8), np.arange(12) % 3, [], [])
    mixers = [_mixer("mixup", alpha=1.0), _mixer("cutmix", seed=4)]

    def epochs(first_pass: int, count: int):
        dataset = make_dataset(
            decoded,
            batch_size=4,
            num_classes=3,
            shuffle=True,
            seed=0,
            first_pass=first_pass,
            mixers=mixers,
            class_weights=[1.0, 2.0, 3.0],
        )
        return [[tuple(np.asarray(t) for t in batch) for batch in dataset] for _ in range(count)]

    first, second = epochs(0, 2)
    for _images, soft, weights in first + second:
        np.testing.assert_allclose(soft.sum(axis=1), 1.0, atol=1e-6)
        np.testing.assert_allclose(weights, soft @ np.array([1.0, 2.0, 3.0]), rtol=1e-6)
    assert any(np.count_nonzero(s > 1e-6, axis=1).max() > 1 for _, s, _ in first), "no batch was mixed"
    (resumed,) = epochs(1, 1)  # a run resumed at epoch 2 sees the mixes an uninterrupted one saw
    for (a, la, _), (b, lb, _) in zip(second, resumed):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(la, lb)

    # Training metrics on soft labels use their argmax (here: F1 as on the hard labels).
    import keras

    soft = np.array([[0.7, 0.3, 0.0], [0.2, 0.0, 0.8], [0.4, 0.6, 0.0]], np.float32)
    pred = np.array([[0.9, 0.1, 0.0], [0.1, 0.1, 0.8], [0.8, 0.1, 0.1]], np.float32)
    (wrapped,) = hard_label_metrics([keras.metrics.F1Score(average="macro", name="f1")])
    plain = keras.metrics.F1Score(average="macro", name="f1")
    wrapped.update_state(soft, pred)
    plain.update_state(np.eye(3, dtype=np.float32)[soft.argmax(axis=1)], pred)
    assert wrapped.name == "f1"
    np.testing.assert_allclose(float(wrapped.result()), float(plain.result()), atol=1e-6)


def test_listing_and_info_show_the_mixing_and_randaugment(tmp_path):
    listed = invoke_tlkit("list-augmentations", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert rows["mixup"]["mixes_batch"] and rows["cutmix"]["mixes_batch"]
    assert not rows["randaugment"]["mixes_batch"] and not rows["flip_horizontal"]["mixes_batch"]
    assert {p["name"] for p in rows["randaugment"]["params"]} == {"num_ops", "magnitude"}
    info = invoke_tlkit("info", "mixup", "--json")
    assert info.returncode == 0, info.stderr
    (row,) = json.loads(info.stdout)
    assert row["kind"] == "augmentation" and [p["name"] for p in row["params"]] == ["alpha"]


def test_mixing_with_cached_views_is_refused_in_one_line(tmp_path):
    write_images(tmp_path / "data" / "train" / "a", 2, (200, 0, 0))
    write_images(tmp_path / "data" / "train" / "b", 2, (0, 200, 0))
    result = invoke_tlkit(
        "train", "--data", tmp_path / "data", *FAST, "--aug", "mixup", "--aug-views", "2", "--output", tmp_path / "r"
    )
    assert result.returncode != 0
    message = (result.stderr or result.stdout).strip()
    assert len(message.splitlines()) == 1 and "Traceback" not in message
    assert "--aug-views 2" in message and "mixup" in message
    assert not (tmp_path / "r").exists()
    with pytest.raises(TlkitError, match="cutmix"):  # the Python API refuses it the same way
        tlkit.train(data=str(tmp_path / "data"), augmentations=["cutmix"], aug_views=1, output=str(tmp_path / "r"))


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory) -> Path:
    """One tiny run with RandAugment, mixup and cutmix (switched per batch) and balanced class weights."""
    root = tmp_path_factory.mktemp("mixing")
    for k, (name, color) in enumerate(CLASS_COLORS.items()):
        write_images(root / "data" / "train" / name, 6 + 2 * k, color, seed=k)
        write_images(root / "data" / "val" / name, 2, color, seed=10 + k)
    result = invoke_tlkit(
        "train",
        "--data",
        root / "data",
        *FAST,
        "--epochs",
        "1",
        "--aug",
        "randaugment:num_ops=1,magnitude=5",
        "--aug",
        "mixup:alpha=0.4",
        "--aug",
        "cutmix",
        "--class-weight",
        "balanced",
        "--output",
        root / "runs",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    assert "Batch mixing (mixup, cutmix): training batches get soft labels" in result.stderr
    return Path(json.loads(result.stdout)["run_dir"])


def test_mixup_run_trains_end_to_end_and_saves_a_model_without_mixing(mixed_run):
    import keras

    from tlkit.exporting.formats import inference_model

    metrics = json.loads((mixed_run / "metrics.json").read_text())
    assert metrics["training_path"] == "end-to-end" and "mixing" in metrics["training_path_reason"]
    assert metrics["epochs_run"] == 1 and metrics["best_epoch"] == 1
    assert metrics["best_val_accuracy"] is not None and metrics["best_val_f1"] is not None

    model = keras.saving.load_model(mixed_run / "model.keras")
    names = [layer.name for layer in model.layers]
    assert names[1] == "aug_randaugment"
    kinds = {type(layer).__name__ for layer in model.layers}
    assert not {"MixUp", "CutMix"} & kinds and not [n for n in names if "mix" in n]
    x = np.random.default_rng(1).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    # RandAugment is the identity at inference: the model equals its augmentation-free graph.
    clean, stripped = inference_model(model, 1, x)
    assert stripped == ["aug_randaugment"]
    np.testing.assert_allclose(model(x, training=False), clean(x, training=False), atol=1e-6)
    layer = model.get_layer("aug_randaugment")
    assert (layer.num_ops, round(float(layer.factor[1]) * 30)) == (1, 5)
    np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)
    assert not np.allclose(np.asarray(layer(x, training=True)), x)
