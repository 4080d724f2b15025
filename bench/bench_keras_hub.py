"""Images/s of the KerasHub bases (tlkit-keras-hub's curated list) on this CPU: TensorFlow vs ONNX Runtime.

For each base, in its own process (a ViT-B's tf2onnx export holds GBs): build it through tlkit
(``--weights none``: random weights at the base's default size — weights do not change speed),
check ``count_params()`` against the spec's ``param_count``, put tlkit's preprocessing in front
(what the feature pass runs), then

- **TensorFlow**: tlkit's ``TensorFlowEngine`` (a compiled ``tf.function``) at batch 8;
- **ONNX Runtime**: ``export_onnx`` (timed) then tlkit's ``OnnxRuntimeEngine`` (batch 8, as the
  feature pass runs it), its output checked against TensorFlow's (max |Δ|);

over ``--images`` random images per round, TF and ORT alternating for ``--rounds`` rounds; a
rate is the best round (other processes share these 2 cores).  ``mobilenet_v2`` and ``resnet50``
(``keras.applications``) run as references in the same run.

Prints a Markdown table (and ``--json`` the raw numbers).  Offline, so no accuracy: real weights
cannot be downloaded here.

Usage::

    .venv/bin/python bench/bench_keras_hub.py                     # every curated base, ~10 min
    .venv/bin/python bench/bench_keras_hub.py --bases dinov2_small mobilenetv3_large_100 --images 16
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_BASES = [
    "dinov2_small",
    "dinov2_base",
    "deit_small",
    "vit_base",
    "efficientnetv2_rw_s",
    "resnet50_a1",
    "mobilenetv3_large_100",
    "mobilenet_v2",
    "resnet50",
]


def measure(name: str, images: int, rounds: int, batch: int) -> dict:
    """One base, in this process."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import numpy as np

    from tlkit.features.engines import OnnxRuntimeEngine, TensorFlowEngine
    from tlkit.features.onnx_export import export_onnx
    from tlkit.registry.manager import get_registry

    spec = get_registry().base(name)
    size = spec.default_size
    started = time.perf_counter()
    backbone = spec.build((size, size, 3), None)
    built_s = time.perf_counter() - started
    pixels = keras.Input((size, size, 3))
    x = pixels
    for layer in spec.preprocess():
        x = layer(x)
    model = keras.Model(pixels, backbone(x, training=False))
    rng = np.random.default_rng(0)
    data = rng.uniform(0, 255, (images, size, size, 3)).astype("float32")
    calibrate(backbone, model, data[:8])
    row = {
        "base": name,
        "plugin": spec.plugin,
        "size": size,
        "params": int(backbone.count_params()),
        "spec_params": spec.param_count,
        "output": list(backbone.output.shape[1:]),
        "build_s": round(built_s, 1),
    }
    engines = {"tensorflow": TensorFlowEngine(model)}
    with tempfile.TemporaryDirectory(prefix="bench-keras-hub-") as tmp:
        try:
            started = time.perf_counter()
            export_onnx(model, Path(tmp) / "base.onnx", size)
            row["onnx_export_s"] = round(time.perf_counter() - started, 1)
            engines["onnxruntime"] = OnnxRuntimeEngine(Path(tmp) / "base.onnx")
            reference = np.asarray(engines["tensorflow"](data[:2]))
            got = engines["onnxruntime"](data[:2])
            row["ort_max_abs_diff"] = float(np.max(np.abs(reference - got)))
            row["ort_rel_diff"] = row["ort_max_abs_diff"] / (float(np.max(np.abs(reference))) or 1.0)
        except Exception as exc:  # noqa: BLE001 - the point is to report it
            row["onnx_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        rates: dict[str, list[float]] = {k: [] for k in engines}
        for engine in engines.values():  # warm-up: graph tracing, kernel selection
            engine(data[:batch])
        for _ in range(rounds):
            for key, engine in engines.items():
                started = time.perf_counter()
                for i in range(0, images, batch):
                    engine(data[i : i + batch])
                rates[key].append(images / (time.perf_counter() - started))
        row["images_per_s"] = {k: round(max(v), 1) for k, v in rates.items()}
        row["rounds"] = {k: [round(r, 1) for r in v] for k, v in rates.items()}
    return row


def calibrate(backbone, model, pixels) -> None:
    """Give every BatchNormalization the statistics of its input on ``pixels`` (one training-mode pass
    with momentum 0), as bench/make_weights.py does: with the initial 0/1 statistics a random CNN's
    activations grow to ~1e5 (EfficientNetV2 at 288 px), and TF vs ORT parity means nothing."""
    import keras

    norms = [layer for layer in backbone._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    if not norms:
        return
    for layer in norms:
        layer.momentum = 0.0
    x = pixels
    for layer in model.layers[1:-1]:  # the preprocessing layers
        x = layer(x)
    backbone(x, training=True)


def table(rows: list[dict]) -> str:
    lines = [
        "| base | plugin | size | params | output | TF img/s | ORT img/s | ORT/TF | ONNX export | ORT max \\|Δ\\| / max \\|y\\| |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['base']} | | | | | failed: {r['error']} | | | | |")
            continue
        tf = r["images_per_s"]["tensorflow"]
        ort = r["images_per_s"].get("onnxruntime")
        out = "×".join(str(d) for d in r["output"])
        params = f"{r['params'] / 1e6:.1f}M" + (
            "" if r["params"] == r["spec_params"] else f" (spec {r['spec_params']:,})"
        )
        lines.append(
            f"| {r['base']} | {r['plugin']} | {r['size']} | {params} | {out} | {tf} | "
            + (
                f"{ort} | {ort / tf:.2f}× | {r['onnx_export_s']} s | {r['ort_rel_diff']:.1e} |"
                if ort
                else f"— ({r.get('onnx_error')}) | | | |"
            )
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bases", nargs="+", default=DEFAULT_BASES)
    parser.add_argument("--images", type=int, default=24, help="images per round (default 24)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--json", type=Path, help="also write the raw rows here")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one base in this process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.images, args.rounds, args.batch)))
        return
    rows = []
    for name in args.bases:
        started = time.perf_counter()
        cmd = [sys.executable, __file__, "--one", name, "--images", str(args.images), "--rounds", str(args.rounds)]
        cmd += ["--batch", str(args.batch)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            rows.append({"base": name, "error": (done.stderr.strip().splitlines() or ["?"])[-1][:200]})
        else:
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(
            f"{name}: {time.perf_counter() - started:.0f} s {rows[-1].get('images_per_s', rows[-1].get('error'))}",
            file=sys.stderr,
            flush=True,
        )
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
