"""Raw ONNX Runtime throughput of an exported base: the ceiling for tlkit's feature pass.

Loads the ``.onnx`` file (e.g. the one tlkit cached under ``$TLKIT_CACHE_DIR/onnx/``)
into an ``InferenceSession`` with default CPU options (as tlkit does) and times
``session.run`` over ``--images`` images at each batch size, split into
``--rounds`` rounds (batch sizes interleaved, one untimed warm-up batch each);
a batch size's rate is its best round, which filters out bursts of load from
other processes.

With ``--ab-images K`` (and tlkit importable) it also runs an interleaved A/B on
the same session: raw ``session.run`` over K images vs tlkit's own feature
pass (``tlkit.features.store.FeatureStore.load_or_compute``: uint8 memmap in, float32 memmap out)
over the same K images at ``--ab-batch-size``, alternating, best of the rounds
— tlkit's pipeline overhead, measured side by side rather than minutes apart.

Prints one JSON object on stdout.

Usage::

    python bench/ort_throughput.py --model ~/.cache/tlkit/onnx/resnet50-....onnx --images 1000
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def _rate(fn, images: int, batch_size: int) -> float:
    done = 0
    started = time.perf_counter()
    while done < images:
        n = min(batch_size, images - done)
        fn(n)
        done += n
    return done / (time.perf_counter() - started)


def sweep(session, name: str, size: int, images: int, batch_sizes: list[int], rounds: int, rng) -> dict:
    import numpy as np

    batches = {b: rng.uniform(0, 255, (b, size, size, 3)).astype(np.float32) for b in batch_sizes}
    for batch in batches.values():
        session.run(None, {name: batch})  # warm-up (allocations, kernel selection)
    per_round = max(1, -(-images // rounds))
    rates: dict[int, list[float]] = {b: [] for b in batch_sizes}
    for r in range(rounds):
        for b, batch in batches.items():
            rate = _rate(lambda n, batch=batch: session.run(None, {name: batch[:n]}), per_round, b)
            rates[b].append(round(rate, 2))
            print(f"round {r + 1}/{rounds}, batch {b}: {rate:.1f} images/s", file=sys.stderr, flush=True)
    return {"images_per_round": per_round, "rounds": rates, "images_per_s": {str(b): max(v) for b, v in rates.items()}}


def ab_test(session, name: str, size: int, images: int, batch_size: int, rounds: int, rng) -> dict:
    """Raw session.run vs FeatureStore.load_or_compute on the same session, alternating."""
    import numpy as np

    from tlkit.features import store as features

    out_shape = session.get_outputs()[0].shape
    feature_shape = tuple(int(d) for d in out_shape[1:])
    batch = rng.uniform(0, 255, (batch_size, size, size, 3)).astype(np.float32)
    session.run(None, {name: batch})

    def engine(x):
        return session.run(None, {name: x})[0]

    raw, pipeline = [], []
    with tempfile.TemporaryDirectory(prefix="tlkit-bench-ab-") as tmp:
        store = features.FeatureStore(tmp)
        pixels = np.memmap(Path(tmp) / "pixels.u8", dtype=np.uint8, mode="w+", shape=(images, size, size, 3))
        pixels[:] = rng.integers(0, 256, pixels.shape, dtype=np.uint8)
        pixels.flush()
        labels = np.arange(images, dtype=np.int32) % 10
        for r in range(rounds):
            raw.append(round(_rate(lambda n: session.run(None, {name: batch[:n]}), images, batch_size), 2))
            started = time.perf_counter()
            fs = store.load_or_compute(
                key=f"ab{r}",
                pixels=pixels,
                labels=labels,
                feature_shape=feature_shape,
                engine=engine,
                batch_size=batch_size,
            )
            pipeline.append(round(images / (time.perf_counter() - started), 2))
            del fs
            print(
                f"A/B round {r + 1}/{rounds}: raw {raw[-1]:.1f}, tlkit pipeline {pipeline[-1]:.1f} images/s",
                file=sys.stderr,
                flush=True,
            )
        del pixels
    return {
        "images": images,
        "batch_size": batch_size,
        "raw_images_per_s": raw,
        "tlkit_pipeline_images_per_s": pipeline,
        "ratio_best": round(max(pipeline) / max(raw), 3),
        "ratio_per_round": [round(p / r, 3) for p, r in zip(pipeline, raw)],
        "tlkit": features.__file__,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--images", type=int, default=1000, help="images timed per batch size (all rounds)")
    parser.add_argument("--batch-sizes", default="8,16,32,64")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ab-images", type=int, default=0, help="images per A/B round (0: no A/B)")
    parser.add_argument("--ab-batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(args.model), options, providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    size = int(inp.shape[1])
    rng = np.random.default_rng(args.seed)
    result = {"model": str(args.model), "image_size": size, "images": args.images, "onnxruntime": ort.__version__}
    result.update(
        sweep(session, inp.name, size, args.images, [int(b) for b in args.batch_sizes.split(",")], args.rounds, rng)
    )
    best = max(result["images_per_s"], key=result["images_per_s"].get)
    result["best_batch_size"] = int(best)
    result["best_images_per_s"] = result["images_per_s"][best]
    if args.ab_images:
        try:
            result["ab"] = ab_test(session, inp.name, size, args.ab_images, args.ab_batch_size, args.rounds, rng)
        except Exception as exc:  # noqa: BLE001 - the A/B is extra; the sweep still counts
            result["ab"] = {"skipped": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
