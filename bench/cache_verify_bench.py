"""What a feature-cache hit costs in checking, before (whole SHA-256) and after (size, mtime, sampled chunks).

    .venv/bin/python bench/cache_verify_bench.py [--mb 250 1000] [--rounds 5]

Writes one entry of each size into a temporary store and times ``FeatureStore.lookup`` (the quick
check a run does on a hit) against ``FeatureStore.verify`` (the whole SHA-256: what every hit cost
before, and what ``tlkit cache verify`` does), interleaved, best of ``--rounds``. The file is in the
page cache both ways (written a moment ago): the numbers are the hashing, not the disk.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

from tlkit.features.store import FeatureStore


def best_of(rounds: int, call) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        assert call()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, nargs="+", default=[250, 1000])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print("| entry | hit, whole SHA-256 (before) | hit, quick check (now) | ratio |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as root:
        store = FeatureStore(root)
        for mb in args.mb:
            rows = mb * (1 << 20) // (4 * 1280)
            store.publish(f"e{mb}", np.ones((1, rows, 1280), np.float32), {"split": "train"})
            key = f"e{mb}"
            full = best_of(args.rounds, lambda key=key: store.verify(key))
            quick = best_of(args.rounds, lambda key=key: store.lookup(key) is not None)
            print(f"| {mb} MB | {full * 1e3:.0f} ms | {quick * 1e3:.1f} ms | {full / quick:.0f}× |")


if __name__ == "__main__":
    main()
