"""A cache hit is checked cheaply (size, mtime, sampled chunks); the whole SHA-256 on demand and after a reboot."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from tests.support import invoke_tlkit
from tlkit.features import integrity
from tlkit.features.store import FeatureStore

ROWS, WIDTH = 64, 32 * 1024  # 8 MB of float32: far more than the ~2 MB the quick check samples


@pytest.fixture
def store(tmp_path):
    store = FeatureStore(tmp_path / "cache")
    store.publish("big", np.arange(ROWS * WIDTH, dtype=np.float32).reshape(1, ROWS, WIDTH), {"split": "train"})
    return store


def _flip(path, offset: int, *, keep_mtime: bool) -> None:
    """Flip one byte at ``offset`` in place; ``keep_mtime``: as bit rot would, not as an edit does."""
    stat = path.stat()
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))
    if keep_mtime:
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def _unsampled_offset(size: int) -> int:
    """An offset inside no sampled chunk."""
    step = (size - integrity.CHUNK) / (integrity.SAMPLE_CHUNKS - 1)
    return int(step) + integrity.CHUNK + 10


def test_a_hit_never_hashes_the_whole_file(store, monkeypatch):
    def whole_file_hashed(*_args, **_kwargs):
        raise AssertionError("a cache hit hashed the whole features file")

    monkeypatch.setattr(integrity, "sha256_file", whole_file_hashed)
    assert store.lookup("big") is not None


@pytest.mark.parametrize("where", ["first chunk", "last chunk"])
def test_damage_in_a_sampled_chunk_is_a_miss_even_with_the_mtime_kept(store, where):
    data = store.data_path("big")
    _flip(data, 5 if where == "first chunk" else data.stat().st_size - 5, keep_mtime=True)
    assert store.lookup("big") is None and not store.verify("big")


def test_an_edit_that_moves_the_mtime_is_a_miss(store):
    data = store.data_path("big")
    _flip(data, _unsampled_offset(data.stat().st_size), keep_mtime=False)
    assert store.lookup("big") is None


def test_bit_rot_between_samples_is_found_by_cache_verify(store, monkeypatch):
    data = store.data_path("big")
    _flip(data, _unsampled_offset(data.stat().st_size), keep_mtime=True)
    assert store.lookup("big") is not None  # the quick check cannot see it (documented) ...
    assert not store.verify("big")  # ... the full one does
    env = {"TLKIT_CACHE_DIR": str(store.root)}
    checked = invoke_tlkit("cache", "verify", env=env)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert "1 damaged" in checked.stdout and "big" in checked.stdout
    removed = invoke_tlkit("cache", "verify", "--remove", "--json", env=env)
    assert removed.returncode == 0 and json.loads(removed.stdout)["damaged"] == ["big"]
    assert store.lookup("big") is None and not store.entry_path("big").exists()


def test_the_first_hit_after_a_reboot_checks_fully_once(store, monkeypatch):
    calls = []
    whole = integrity.sha256_file
    monkeypatch.setattr(integrity, "sha256_file", lambda path: calls.append(path) or whole(path))
    monkeypatch.setattr(integrity, "boot_id", lambda: "a-later-boot")
    assert store.lookup("big") is not None and len(calls) == 1
    assert store.lookup("big") is not None and len(calls) == 1, "the stamp should make the next hit quick"
    _flip(store.data_path("big"), _unsampled_offset(store.data_path("big").stat().st_size), keep_mtime=True)
    monkeypatch.setattr(integrity, "boot_id", lambda: "yet-another-boot")
    assert store.lookup("big") is None, "a full check after a reboot must catch what sampling misses"


def test_an_entry_without_a_seal_is_checked_fully(store):
    meta_path = store.meta_path("big")
    meta = json.loads(meta_path.read_text())
    for field in ("sample_sha256", "data_mtime_ns", "boot_id"):
        del meta[field]  # as written before the quick check existed
    meta_path.write_text(json.dumps(meta))
    assert store.lookup("big") is not None
    _flip(store.data_path("big"), _unsampled_offset(store.data_path("big").stat().st_size), keep_mtime=True)
    assert store.lookup("big") is None


def test_a_copy_with_new_mtimes_is_checked_whole_once_then_quickly(store, monkeypatch):
    data = store.data_path("big")
    stat = data.stat()
    os.utime(data, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # as `cp -r` leaves it
    calls = []
    whole = integrity.sha256_file
    monkeypatch.setattr(integrity, "sha256_file", lambda path: calls.append(path) or whole(path))
    assert store.lookup("big") is not None and len(calls) == 1
    assert store.lookup("big") is not None and len(calls) == 1, "the copy should be quick after one whole check"
    _flip(data, 5, keep_mtime=False)  # an edit after that moves the mtime again
    assert store.lookup("big") is None
