"""The feature cache under several writers of one entry, and a killed writer's leftover (real processes).

A feature pass killed mid-entry, in a real ``tlkit train``: tests/chaos/test_killed_runs.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

from tests.chaos.children import entry_names
from tests.support import invoke_tlkit
from tlkit.features.store import FeatureStore


def _cache(*args: str, cache: Path):
    return invoke_tlkit("cache", *args, env={"TLKIT_CACHE_DIR": str(cache)})


# One writer of entry "k" (the public FeatureStore path a run's feature pass takes): it waits for
# the GO file, so all start at once, and its engine sleeps per batch, so their writes overlap.
_WRITER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    import numpy as np
    from tlkit.features.store import FeatureStore

    cache, go = sys.argv[1], Path(sys.argv[2])
    pixels = (np.arange(48 * 4 * 4 * 3) % 251).astype(np.uint8).reshape(48, 4, 4, 3)

    def engine(batch):
        time.sleep(0.03)
        return batch.reshape(len(batch), -1)[:, :6].astype(np.float32) * 0.5 + 1.0

    engine.name = "slow-numpy"
    while not go.exists():
        time.sleep(0.001)
    found = FeatureStore(cache).load_or_compute(
        key="k", pixels=pixels, labels=np.arange(48) % 3, feature_shape=(6,), engine=engine, batch_size=4,
        family="f", hashes=[f"h{i}" for i in range(48)],
    )
    print(json.dumps({"hit": found.hit, "features": np.asarray(found.features).tolist()}))
    """
)


def test_processes_computing_the_same_entry_at_once_all_finish_with_one_entry(tmp_path):
    """Three processes miss entry "k" and compute it at the same time: all exit 0 with the same
    features, the cache holds one entry that verifies, and no writer's folder is left."""
    cache, go = tmp_path / "cache", tmp_path / "go"
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(cache), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    try:
        time.sleep(0.5)  # imports
        go.touch()
        store = FeatureStore(cache)
        seen = 0
        deadline = time.monotonic() + 120
        while any(w.poll() is None for w in writers) and time.monotonic() < deadline:
            seen = max(seen, len(entry_names(store.entries_dir)[1]))
            time.sleep(0.002)
        results = [w.communicate(timeout=60) for w in writers]
    finally:
        for w in writers:
            w.kill()
    for writer, (_, err) in zip(writers, results):
        assert writer.returncode == 0, err
    assert seen >= 2, f"the writers never overlapped (at most {seen} writing at once)"
    found = [json.loads(out) for out, _ in results]
    assert not any(f["hit"] for f in found)  # each computed it; all but the first to publish lost the race
    expected = (np.arange(48 * 4 * 4 * 3) % 251).reshape(48, -1)[:, :6] * 0.5 + 1.0
    for f in found:
        np.testing.assert_array_equal(np.asarray(f["features"])[0], expected)
    assert entry_names(store.entries_dir) == (["k"], [])
    assert store.verify("k")
    verify = _cache("verify", cache=cache)
    assert verify.returncode == 0 and "Checked 1 feature entries" in verify.stdout, verify.stdout


_HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from tlkit.io.files import building_folder

    with building_folder(Path(sys.argv[1]), ".tmp-k-") as tmp:
        (tmp / "features.float32").write_bytes(b"half")
        print(tmp, flush=True)
        time.sleep(120)
    """
)


def test_only_a_dead_writers_old_folder_is_removed(tmp_path):
    """remove_abandoned: a folder a living process holds stays, however old; the same folder
    after SIGKILL goes once it is old enough (and not before)."""
    from tlkit.io.files import remove_abandoned

    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        folder = Path(holder.stdout.readline().strip())
        hour_ago = time.time() - 3600
        for path in (folder / "features.float32", folder):
            os.utime(path, (hour_ago, hour_ago))
        assert remove_abandoned(tmp_path, ".tmp-", idle=600) == 0 and folder.is_dir()  # held: a live writer
    finally:
        holder.kill()
        holder.wait(timeout=60)
    assert remove_abandoned(tmp_path, ".tmp-", idle=2 * 3600) == 0 and folder.is_dir()  # not idle long enough
    assert remove_abandoned(tmp_path, ".tmp-", idle=600) == 1 and not folder.exists()
