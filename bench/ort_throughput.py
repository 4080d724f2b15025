"""Raw ONNX Runtime throughput of an exported base: the ceiling for tlkit's feature pass.

Loads the ``.onnx`` file (e.g. the one tlkit cached under ``$TLKIT_CACHE_DIR/onnx/``)
into an ``InferenceSession`` with default CPU options (as tlkit does) and times
``session.run`` over ``--images`` images at each batch size, after one untimed
warm-up batch per size.  Prints JSON: images/s per batch size and the best.

Usage::

    python bench/ort_throughput.py --model ~/.cache/tlkit/onnx/resnet50-....onnx --images 1000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--images", type=int, default=1000, help="images timed per batch size")
    parser.add_argument("--batch-sizes", default="8,16,32,64")
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
    results = {}
    for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
        batch = rng.uniform(0, 255, (batch_size, size, size, 3)).astype(np.float32)
        session.run(None, {inp.name: batch})  # warm-up (allocations, kernel selection)
        done = 0
        started = time.perf_counter()
        while done < args.images:
            n = min(batch_size, args.images - done)
            session.run(None, {inp.name: batch[:n]})
            done += n
        seconds = time.perf_counter() - started
        results[str(batch_size)] = round(done / seconds, 2)
        print(f"batch {batch_size}: {done / seconds:.1f} images/s", file=sys.stderr)
    best = max(results, key=results.get)
    print(json.dumps({
        "model": str(args.model), "image_size": size, "images": args.images,
        "images_per_s": results, "best_batch_size": int(best), "best_images_per_s": results[best],
        "onnxruntime": ort.__version__,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
