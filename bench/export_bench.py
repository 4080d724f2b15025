"""CPU latency and throughput of tlkit's exported models, per format and quantization, and their sizes.

For each base (default MobileNetV2 and ResNet50, random weights, 224 px, the
default ``dense256`` head) it trains a one-epoch run on a few generated
images (``tlkit.train``), exports it with ``tlkit.exporting.exporter.export`` to every
format × quantization (``force=True``: with random weights parity means
nothing here, only speed and size do), loads each artefact with the same
loader ``tlkit predict`` uses (``tlkit.inference.artifacts.load_artifact``: TFLite
interpreter, ONNX Runtime, SavedModel signature; ``model.keras`` through
Keras' ``predict_on_batch`` as the reference) and times ``predict_on_batch``
on random 0–255 pixels:

- latency: batch 1, median of ``--latency-calls`` calls after a warm-up call;
- throughput: batch 32, images/s of the best of ``--rounds`` calls after a
  warm-up call (best, not mean, to filter out bursts of load from other processes).

Sizes are the artefact's bytes (a SavedModel: its folder).  Results go to
``bench/.data/export-<timestamp>.json`` (after every row) and a Markdown table
on stdout.  Everything generated lives under ``bench/.data/export/`` (git-ignored).

Usage::

    .venv/bin/python bench/export_bench.py                       # both bases, ~10 min on 2 cores
    .venv/bin/python bench/export_bench.py --bases mobilenet_v2  # ~3 min
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HERE = Path(__file__).resolve().parent
COMBOS = [
    ("savedmodel", "none"),
    ("tflite", "none"),
    ("tflite", "float16"),
    ("tflite", "dynamic"),
    ("tflite", "int8"),
    ("onnx", "none"),
    ("onnx", "dynamic"),
]


def _time_calls(model, x, calls: int) -> list[float]:
    model.predict_on_batch(x)  # warm-up: allocation, kernel selection, (re)tracing
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        model.predict_on_batch(x)
        times.append(time.perf_counter() - started)
    return times


def measure(model, size: int, latency_calls: int, rounds: int, rng) -> dict:
    import numpy as np

    one = rng.uniform(0, 255, (1, size, size, 3)).astype(np.float32)
    batch = rng.uniform(0, 255, (32, size, size, 3)).astype(np.float32)
    latency = _time_calls(model, one, latency_calls)
    throughput = _time_calls(model, batch, rounds)
    return {
        "latency_ms": round(1000 * statistics.median(latency), 2),
        "latency_ms_min": round(1000 * min(latency), 2),
        "images_per_s": round(32 / min(throughput), 1),
        "images_per_s_rounds": [round(32 / t, 1) for t in throughput],
    }


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bases", default="mobilenet_v2,resnet50")
    parser.add_argument("--head", default="dense256")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--calibration-images", type=int, default=20)
    parser.add_argument("--latency-calls", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--combos", default=",".join(f"{f}:{q}" for f, q in COMBOS), help="format:quantization pairs, comma-separated"
    )
    parser.add_argument("--work", type=Path, default=HERE / ".data" / "export")
    args = parser.parse_args(argv)

    import numpy as np

    import tlkit
    from tlkit.exporting.exporter import export
    from tlkit.inference.artifacts import load_artifact
    from tlkit.inference.prediction import load_keras_model
    from tlkit.testing import make_image_folder

    combos = [tuple(c.split(":")) for c in args.combos.split(",") if c]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    results_path = HERE / ".data" / f"export-{stamp}.json"
    shutil.rmtree(args.work, ignore_errors=True)
    data = make_image_folder(args.work / "data", classes=("a", "b", "c"), per_class=8, val_per_class=4, size=64)
    rng = np.random.default_rng(0)
    report = {
        "started": stamp,
        "cpus": os.cpu_count(),
        "image_size": args.image_size,
        "head": args.head,
        "args": {k: str(v) for k, v in vars(args).items()},
        "rows": [],
    }

    def save(row: dict) -> None:
        report["rows"].append(row)
        report["loadavg_now"] = os.getloadavg()
        results_path.parent.mkdir(parents=True, exist_ok=True)
        results_path.write_text(json.dumps(report, indent=2))
        print(json.dumps(row), file=sys.stderr, flush=True)

    for base in [b for b in args.bases.split(",") if b]:
        run = tlkit.train(
            data=str(data),
            base=base,
            head=args.head,
            weights="none",
            image_size=args.image_size,
            epochs=1,
            batch_size=8,
            verbose=False,
            output=str(args.work / "runs"),
        ).run_dir
        keras_model = load_keras_model(Path(run) / "model.keras")
        save(
            {
                "base": base,
                "format": "keras",
                "quantization": "none",
                "bytes": _size(Path(run) / "model.keras"),
                "export_s": None,
                "runtime": "keras predict_on_batch",
                "loadavg": os.getloadavg()[0],
                **measure(keras_model, args.image_size, args.latency_calls, args.rounds, rng),
            }
        )
        del keras_model
        for fmt, quantize in combos:
            started = time.perf_counter()
            result = export(
                run,
                fmt,
                quantize=quantize,
                force=True,
                calibration_images=args.calibration_images,
                output=args.work / "exports" / f"{base}-{fmt}-{quantize}",
            )
            export_s = round(time.perf_counter() - started, 1)
            model = load_artifact(result.artifact, fmt)
            save(
                {
                    "base": base,
                    "format": fmt,
                    "quantization": quantize,
                    "bytes": result.size_bytes,
                    "export_s": export_s,
                    "runtime": model.engine,
                    "loadavg": os.getloadavg()[0],
                    **measure(model, args.image_size, args.latency_calls, args.rounds, rng),
                }
            )
            del model

    print(f"Results: {results_path}\n")
    print(
        "| base | format | quantization | size (MB) | latency, batch 1 (ms) | throughput, batch 32 (images/s) "
        "| export (s) |"
    )
    print("|---|---|---|---:|---:|---:|---:|")
    for r in report["rows"]:
        print(
            f"| {r['base']} | {r['format']} ({r['runtime']}) | {r['quantization']} | {r['bytes'] / 1e6:.1f} | "
            f"{r['latency_ms']:.1f} | {r['images_per_s']:.1f} | {r['export_s'] if r['export_s'] is not None else '—'} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
