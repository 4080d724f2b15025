"""The yardstick of a failed 8-bit parity check: how steady model.keras is under pixel noise.

The model here reads one pixel value and answers class 0 above 100, class 1 below: an image whose
pixel is exactly 100 flips with the sign of the noise, one at 0 or 255 never does.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tlkit.exporting import stability
from tlkit.exporting.stability import measure_stability, stability_sentence

SIZE = 8


def _threshold_model():
    import keras

    inputs = keras.Input((SIZE, SIZE, 3))
    pixel = keras.layers.Flatten()(keras.layers.Cropping2D(((0, SIZE - 1), (0, SIZE - 1)))(inputs))
    dense = keras.layers.Dense(2, activation="softmax")
    outputs = dense(pixel)
    dense.set_weights([np.array([[1.0, -1.0], [0, 0], [0, 0]], np.float32), np.array([-100.0, 100.0], np.float32)])
    return keras.Model(inputs, outputs)


def _images(folder, values):
    folder.mkdir()
    paths = []
    for i, value in enumerate(values):
        pixels = np.full((SIZE, SIZE, 3), 30, np.uint8)
        pixels[0, 0, 0] = value
        path = folder / f"{i:03d}.png"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def model():
    return _threshold_model()


def test_steady_images_never_change_and_edge_images_follow_the_noise(model, tmp_path):
    steady = _images(tmp_path / "steady", [0, 255] * 5)
    edge = _images(tmp_path / "edge", [100] * 20)
    want_steady = np.array([1, 0] * 5)
    record = measure_stability(model, steady, want_steady, SIZE, batch_size=4)
    assert record == {"images": 10, "noise_grey_levels": [1, 2], "self_agreement": [1.0, 1.0]}

    # At exactly 100 both classes tie: the clean answer is class 0 and about half the noisy ones are.
    record = measure_stability(model, steady + edge, np.concatenate([want_steady, np.zeros(20, int)]), SIZE, 4)
    assert record["images"] == 30
    for agreement in record["self_agreement"]:
        assert 10 / 30 < agreement < 1.0  # the steady ten always agree, some of the edge twenty do not
    again = measure_stability(model, steady + edge, np.concatenate([want_steady, np.zeros(20, int)]), SIZE, 4)
    assert again == record  # seeded

    # A wrong reference is caught as disagreement, not averaged away.
    assert measure_stability(model, steady, 1 - want_steady, SIZE, 4)["self_agreement"] == [0.0, 0.0]


def test_at_most_max_images_are_perturbed_spread_over_all(model, tmp_path, monkeypatch):
    paths = _images(tmp_path / "many", [0] * 6 + [255] * 6)
    monkeypatch.setattr(stability, "MAX_IMAGES", 4)
    want = np.array([1] * 6 + [0] * 6)
    record = measure_stability(model, paths, want, SIZE, 8)
    assert record["images"] == 4 and record["self_agreement"] == [1.0, 1.0]
    # Spread evenly: a reference that is wrong only for the second half shows up as half.
    wrong_second_half = np.array([1] * 6 + [1] * 6)
    assert measure_stability(model, paths, wrong_second_half, SIZE, 8)["self_agreement"] == [0.5, 0.5]
    with pytest.raises(ValueError, match="12 files but 3"):
        measure_stability(model, paths, want[:3], SIZE, 8)


def test_unreadable_images_are_left_out(model, tmp_path):
    paths = _images(tmp_path / "some", [0, 255])
    broken = tmp_path / "some" / "broken.png"
    broken.write_bytes(b"not a png")
    record = measure_stability(model, [*paths, broken], np.array([1, 0, 0]), SIZE, 4)
    assert record["images"] == 2 and record["self_agreement"] == [1.0, 1.0]


def test_the_sentence_says_whether_the_model_or_the_rounding_is_to_blame():
    fragile = {"images": 500, "noise_grey_levels": [1, 2], "self_agreement": [0.972, 0.906]}
    text = stability_sentence(fragile, agreement=0.946, threshold=0.97, export="tflite int8")
    assert text == (
        "pixel noise of ±1 / ±2 grey levels alone changes 2.8 % / 9.4 % of model.keras's answers (500 images), "
        "and the export no more than ±2 does: this model is too fragile for tflite int8 to keep 97 % of its answers"
    )
    steady = {"images": 100, "noise_grey_levels": [1, 2], "self_agreement": [1.0, 0.99]}
    text = stability_sentence(steady, agreement=0.9, threshold=0.97, export="onnx dynamic")
    assert text.endswith("(100 images), and the export more than ±2 does: the loss is the quantization's")
