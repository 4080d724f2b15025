"""The Keras MobileNetV2 against torchvision: architecture, real photos, exact logits, weight errors."""

from __future__ import annotations

import numpy as np
import pytest
from tv_photos import PHOTOS, photo

import tlkit
import tlkit_torchvision
from tlkit_torchvision import mobilenet_v2

CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO, CUP = 967, 968


def test_headless_architecture_and_param_count():
    model = mobilenet_v2.build_features((224, 224, 3), None)
    assert model.output.shape == (None, 7, 7, 1280)
    assert model.count_params() == tlkit_torchvision.PARAMS == tlkit_torchvision.TV_MOBILENET_V2.param_count
    names = {layer.name for layer in model.layers}
    assert {"features_0_0", "features_3_conv_1_0", "features_3_add", "features_18_2"} <= names
    # Symmetric padding everywhere, no "same" padding, torch's BN epsilon.
    import keras

    for layer in model.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
            assert layer.padding == "valid" and not layer.use_bias, layer.name
        if isinstance(layer, keras.layers.ZeroPadding2D):
            assert layer.padding == ((1, 1), (1, 1)), layer.name
        if isinstance(layer, keras.layers.BatchNormalization):
            assert layer.epsilon == 1e-5, layer.name


@pytest.mark.parametrize("size, side", [(32, 1), (33, 2), (97, 4)])
def test_odd_and_small_sizes_follow_torch_arithmetic(size, side):
    # torch: out = floor((n + 2 - 3) / 2) + 1 per stride-2 layer, five of them.
    model = mobilenet_v2.build_features((size, size, 3), None)
    assert model.output.shape == (None, side, side, 1280)


def test_photo_crops_match_the_fixture(reference):
    pytest.importorskip("skimage", reason="scikit-image (the test extra) provides the photos")
    assert list(reference["names"]) == list(PHOTOS)
    for name, stored in zip(PHOTOS, reference["inputs"]):
        crop = photo(name)
        assert crop.shape == stored.shape == (224, 224, 3)
        assert np.abs(crop.astype(int) - stored.astype(int)).max() <= 1, name


def test_real_photos_classify_and_match_torch(classifier, reference, capsys):
    logits = np.asarray(classifier(reference["inputs"].astype("float32"), training=False))
    diff = float(np.abs(logits - reference["logits"]).max())
    with capsys.disabled():
        print(f"\nmax |Keras - torch| logit difference: {diff:.2e}")
        for name, row in zip(PHOTOS, logits):
            print(f"  {name} top-5: {np.argsort(row)[::-1][:5].tolist()}")
    assert diff < 1e-3
    chelsea, coffee = (int(np.argmax(row)) for row in logits)
    assert chelsea in CAT_CLASSES
    assert coffee in (ESPRESSO, CUP)
    assert np.argsort(logits, axis=1)[:, -5:].tolist() == np.argsort(reference["logits"], axis=1)[:, -5:].tolist()


def test_spec_build_imagenet_matches_the_classifier_features(classifier, reference):
    base = tlkit_torchvision.TV_MOBILENET_V2.build((224, 224, 3), "imagenet")
    normalize = mobilenet_v2.preprocess()[0]
    x = normalize(reference["inputs"][:1].astype("float32"))
    features = np.asarray(base(x, training=False))
    expected = np.asarray(classifier.get_layer("tv_mobilenet_v2")(x, training=False))
    assert features.shape == (1, 7, 7, 1280)
    np.testing.assert_allclose(features, expected, atol=1e-5)


def test_preprocess_is_torchvision_normalisation():
    import keras

    (layer,) = mobilenet_v2.preprocess()
    assert isinstance(layer, keras.layers.Normalization) and layer.name == "tv_normalize"
    pixels = np.random.default_rng(0).integers(0, 256, (2, 4, 4, 3)).astype("float32")
    want = (pixels / 255 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(np.asarray(layer(pixels)), want, atol=1e-5)


def test_other_architecture_names_first_mismatch(fixtures):
    with pytest.raises(tlkit.TlkitError) as info:
        tlkit_torchvision.build((64, 64, 3), str(fixtures / "wrong_arch.pth"))
    message = str(info.value)
    assert "'features.0.0.weight'" in message
    assert "(8, 3, 3, 3)" in message and "(32, 3, 3, 3)" in message
    assert "wrong_arch.pth" in message


def test_unrelated_state_dict_names_first_missing_key(fixtures):
    with pytest.raises(tlkit.TlkitError, match=r"has no 'features\.0\.0\.weight' \(expected shape \(32, 3, 3, 3\)\)"):
        tlkit_torchvision.build((64, 64, 3), str(fixtures / "tensors_zip.pth"))


def test_extra_tensors_are_reported(state_dict):
    extra = dict(state_dict)
    extra["features.19.0.weight"] = np.zeros((3, 3), "float32")
    with pytest.raises(tlkit.TlkitError, match=r"no place for, first 'features\.19\.0\.weight'"):
        mobilenet_v2.build_features((32, 32, 3), extra)
