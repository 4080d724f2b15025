"""Time the audit's checks on 50,000 synthetic 1280-d embeddings (a benchmark, not a test).

What ``tlkit audit`` does after the feature pass, on features shaped like MobileNetV2's pooled
ones (non-negative, clustered by class), with planted problems so that every step has work:

- 50,000 images in 20 classes, 1280 features each (float32, 256 MB);
- 200 near-duplicate pairs: the copy's embedding is the original's plus a little noise, and both
  have real image files (a 64×64 texture with natural images' 1/f spectrum, and its JPEG q=75
  re-encode shifted by 1 px), so the perceptual confirmation runs; no other file is ever read;
- 5 % of the labels flipped at random; 50 far-away points (sparse vectors).

Steps, each timed: the shared neighbour search (:func:`tlkit.auditing.duplicates.nearest_neighbours`),
``near_groups``, ``out_of_fold_probabilities``, ``label_issues``, ``outliers``.  Peak RSS is the
process's high-water mark (``resource.getrusage``).  Target: all of it within 2 minutes, peak RSS
≤ 2 GB, on the 2-core development machine.

Usage::

    python bench/audit_scale.py            # 50,000 × 1280
    python bench/audit_scale.py --n 5000   # a quick run
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from tlkit.auditing import duplicates, labels


def peak_rss_mb() -> float:
    """The process's peak resident set size so far, in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synthetic(n: int, dim: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """ReLU-like clustered features: relu(class centre + noise), nearest-neighbour cosine ≈ 0.8."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, dim), dtype=np.float32)
    y = rng.integers(0, classes, n)
    x = np.empty((n, dim), np.float32)
    for start in range(0, n, 5000):  # in chunks: no float64 temporaries of the whole set
        stop = min(n, start + 5000)
        chunk = centres[y[start:stop]] + 0.9 * rng.standard_normal((stop - start, dim), dtype=np.float32)
        x[start:stop] = np.maximum(chunk, 0.0)
    return x, y


def natural_texture(size: int, rng: np.random.Generator) -> np.ndarray:
    """A colour image with natural images' 1/f amplitude spectrum and random phases."""
    fy, fx = np.fft.fftfreq(size)[:, None], np.fft.rfftfreq(size)[None, :]
    amplitude = 1.0 / np.maximum(np.sqrt(fy**2 + fx**2), 1.0 / size)
    channels = []
    for _ in range(3):
        plane = np.fft.irfft2(amplitude * np.exp(2j * np.pi * rng.random(amplitude.shape)), s=(size, size))
        channels.append((plane - plane.mean()) / plane.std())
    return np.clip(np.stack(channels, axis=-1) * 50 + 128, 0, 255).astype(np.uint8)


def plant_copies(x: np.ndarray, folder: Path, pairs: int, seed: int) -> tuple[list[str], list[tuple[int, int]]]:
    """Make ``pairs`` near-duplicate pairs: rows 2i and 2i+1 get a copy's embedding and real files
    (a 64×64 texture as PNG, and its JPEG q=75 re-encode shifted right by 1 px)."""
    rng = np.random.default_rng(seed)
    files = [str(folder / "never-read.png")] * len(x)
    planted = []
    for p in range(pairs):
        a, b = 2 * p, 2 * p + 1
        x[b] = np.maximum(x[a] + 0.05 * rng.standard_normal(x.shape[1], dtype=np.float32), 0.0)
        pixels = natural_texture(64, rng)
        shifted = np.concatenate([pixels[:, :1], pixels[:, :-1]], axis=1)
        Image.fromarray(pixels).save(folder / f"{a}.png")
        Image.fromarray(shifted).save(folder / f"{b}.jpg", quality=75)
        files[a], files[b] = str(folder / f"{a}.png"), str(folder / f"{b}.jpg")
        planted.append((a, b))
    return files, planted


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    x, y = synthetic(args.n, args.dim, args.classes, args.seed)
    rng = np.random.default_rng(args.seed + 1)
    outliers = rng.choice(np.arange(400, args.n), 50, replace=False)
    # sparse, each on its own few features: far from every class and from one another
    x[outliers] = (
        np.abs(rng.standard_normal((50, args.dim), dtype=np.float32)) * (rng.random((50, args.dim)) < 0.05) * 3.0
    )
    noisy = y.copy()
    flipped = rng.choice(args.n, args.n // 20, replace=False)
    noisy[flipped] = (y[flipped] + rng.integers(1, args.classes, len(flipped))) % args.classes
    paths = [f"img/{i:06d}.png" for i in range(args.n)]
    splits = {p: ("val" if i % 5 == 0 else "train") for i, p in enumerate(paths)}
    class_names = [f"c{c}" for c in range(args.classes)]
    print(f"{args.n} × {args.dim} features ({x.nbytes / 2**20:.0f} MiB), peak RSS {peak_rss_mb():.0f} MB so far")

    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        files, planted = plant_copies(x, Path(tmp), 200, args.seed)
        start = time.perf_counter()
        neighbours = duplicates.nearest_neighbours(x)
        timings["nearest_neighbours"] = time.perf_counter() - start

        start = time.perf_counter()
        groups = duplicates.near_groups(paths, x, files, {}, neighbours=neighbours)
        timings["near_groups"] = time.perf_counter() - start

    start = time.perf_counter()
    probs = labels.out_of_fold_probabilities(x, noisy, args.classes, neighbours=neighbours)
    timings["out_of_fold_probabilities"] = time.perf_counter() - start

    start = time.perf_counter()
    issues = labels.label_issues(paths, noisy, probs, class_names, splits)
    timings["label_issues"] = time.perf_counter() - start

    start = time.perf_counter()
    odd = labels.outliers(paths, x, noisy, splits, neighbours=neighbours)
    timings["outliers"] = time.perf_counter() - start

    found_pairs = {tuple(g.paths) for g in groups}
    planted_found = sum((paths[a], paths[b]) in found_pairs for a, b in planted)
    flagged = {paths.index(i.path) for i in issues} if len(issues) < 10_000 else set()
    outlier_found = len({paths[i] for i in outliers} & {o.path for o in odd})
    for name, seconds in timings.items():
        print(f"{name:28s} {seconds:7.1f} s")
    print(f"{'total':28s} {sum(timings.values()):7.1f} s")
    print(f"peak RSS {peak_rss_mb():.0f} MB")
    print(
        f"near-duplicate pairs found {planted_found}/{len(planted)} ({len(groups)} groups); "
        f"label issues {len(issues)} (recall {len(flagged & set(flipped.tolist())) / len(flipped):.2f}); "
        f"outliers {outlier_found}/{len(outliers)} found, {len(odd)} reported; "
        f"OOF accuracy on clean labels {(probs.argmax(1) == y).mean():.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
