"""``tlkit serve`` under load: requests/s and p50/p99 latency, per model format, with and without micro-batching.

A MobileNetV2 run (random weights, 224 px, the default ``dense256`` head, one
epoch on a few generated images) is served three ways — its ``model.keras``
(the run directory), its ONNX export and its TFLite export — each twice: with
micro-batching off (``--max-wait-ms 0``: every request runs alone) and on (the
defaults: ``--max-wait-ms 5 --max-batch-size 32``).  Each server is the real
``tlkit serve`` command in its own process on a free port; both of a format's
servers run at once.  Against each, 1, 8 and 32 concurrent clients send one
224 px JPEG per request (multipart, as ``curl -F`` does), each client waiting
for its answer before sending again, for ``--seconds`` per level after a one-second
warm-up.  The two arms alternate level by level (which goes first alternates too)
and the whole sequence repeats ``--rounds`` times, so a burst of load from other
processes hits both arms alike;
each cell reports its best round (the most requests/s, with that round's latencies).

The clients run in this process on one asyncio loop, speaking HTTP/1.1 over
keep-alive sockets with a request built once, so they cost the two cores as
little as possible (a client library would take CPU the server needs).
Latency is per request, send to last byte; requests/s is completed requests
over the level's wall time.  Each answer is checked (status 200, one
prediction).  The machine is shared, so compare ratios within one run; the
load average is recorded per row, and every round is in the JSON.

Results: ``bench/.data/serve-<timestamp>.json`` (after every row) and a Markdown
table on stdout.  Everything generated lives under ``bench/.data/serve/`` (git-ignored).

Usage::

    .venv/bin/python bench/bench_serve.py                  # ~7 min on 2 cores
    .venv/bin/python bench/bench_serve.py --seconds 3 --formats keras,tflite
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HERE = Path(__file__).resolve().parent
TLKIT = str(Path(sys.executable).parent / "tlkit")
BATCHING = {"off": ["--max-wait-ms", "0"], "on": ["--max-wait-ms", "5", "--max-batch-size", "32"]}


def request_bytes(image: bytes, port: int) -> bytes:
    boundary = "benchboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="bench.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + image
        + f"\r\n--{boundary}--\r\n".encode()
    )
    head = (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


async def client(port: int, request: bytes, until: float, latencies: list[float], errors: list[str]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < until:
            started = time.perf_counter()
            writer.write(request)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
            body = await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if not head.startswith(b"HTTP/1.1 200") or body.count(b'"path"') != 1:
                errors.append(head.split(b"\r\n", 1)[0].decode() + " " + body[:200].decode(errors="replace"))
    finally:
        writer.close()


async def load(port: int, request: bytes, clients: int, seconds: float) -> dict:
    await asyncio.gather(*(client(port, request, time.perf_counter() + 1.0, [], []) for _ in range(clients)))  # warm-up
    latencies: list[float] = []
    errors: list[str] = []
    started = time.perf_counter()
    await asyncio.gather(*(client(port, request, started + seconds, latencies, errors) for _ in range(clients)))
    wall = time.perf_counter() - started
    ordered = sorted(latencies)
    return {
        "clients": clients,
        "requests": len(latencies),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "requests_per_s": round(len(latencies) / wall, 1),
        "p50_ms": round(1000 * statistics.median(ordered), 1),
        "p99_ms": round(1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 1),
    }


def start_server(source: Path, extra: list[str]) -> tuple[subprocess.Popen, int]:
    process = subprocess.Popen(
        [TLKIT, "serve", str(source), "--port", "0", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "300"},
    )
    assert process.stdout is not None
    lines = []
    for line in process.stdout:
        lines.append(line)
        found = re.search(r"^Serving .* at http://127\.0\.0\.1:(\d+)$", line.strip())
        if found:
            return process, int(found.group(1))
    raise RuntimeError("tlkit serve did not start:\n" + "".join(lines))


def stop_server(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGINT)
    process.wait(60)


def metadata(port: int) -> dict:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metadata", timeout=30) as response:
        return json.loads(response.read())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--formats", default="keras,onnx,tflite")
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", type=Path, default=HERE / ".data" / "serve")
    args = parser.parse_args(argv)

    import numpy as np
    from PIL import Image

    import tlkit
    from tlkit.exporting.exporter import export
    from tlkit.testing import make_image_folder

    stamp = time.strftime("%Y%m%d-%H%M%S")
    results_path = HERE / ".data" / f"serve-{stamp}.json"
    shutil.rmtree(args.work, ignore_errors=True)
    data = make_image_folder(args.work / "data", classes=("a", "b", "c"), per_class=4, val_per_class=2, size=64)
    run = Path(
        tlkit.train(
            data=str(data),
            base="mobilenet_v2",
            weights="none",
            image_size=args.image_size,
            epochs=1,
            batch_size=8,
            verbose=False,
            output=str(args.work / "runs"),
        ).run_dir
    )
    sources = {"keras": run}
    for fmt in [f for f in args.formats.split(",") if f != "keras"]:
        sources[fmt] = export(run, fmt, force=True, output=args.work / "exports" / fmt).path
    pixels = np.random.default_rng(0).integers(0, 256, (args.image_size, args.image_size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    image = buffer.getvalue()

    report = {"started": stamp, "cpus": os.cpu_count(), "image_bytes": len(image), "args": vars(args), "rows": []}
    levels = [int(c) for c in args.clients.split(",")]
    for fmt in [f for f in args.formats.split(",") if f]:
        servers = {batching: start_server(sources[fmt], extra) for batching, extra in BATCHING.items()}
        try:
            best: dict[tuple[int, str], dict] = {}
            # Both servers stay up; the arms alternate level by level and the rounds repeat it all, so
            # a burst of load from other processes hits both arms alike; the best round of each cell counts.
            for round_ in range(args.rounds):
                for clients in levels:
                    arms = list(servers.items())
                    for batching, (_, port) in arms if round_ % 2 == 0 else arms[::-1]:
                        before = metadata(port)["stats"]
                        row = {
                            "format": fmt,
                            "batching": batching,
                            "round": round_,
                            "loadavg": os.getloadavg()[0],
                            **asyncio.run(load(port, request_bytes(image, port), clients, args.seconds)),
                        }
                        after = metadata(port)["stats"]  # the level's model calls, its warm-up second included
                        calls = after["model_calls"] - before["model_calls"]
                        row["mean_batch"] = round((after["images"] - before["images"]) / max(calls, 1), 1)
                        print(json.dumps(row), file=sys.stderr, flush=True)
                        report["rows"].append(row)
                        key = (clients, batching)
                        if key not in best or row["requests_per_s"] > best[key]["requests_per_s"]:
                            best[key] = row
                        results_path.parent.mkdir(parents=True, exist_ok=True)
                        results_path.write_text(json.dumps(report, indent=2, default=str))
            report.setdefault("best", []).extend(best[(c, b)] for c in levels for b in BATCHING)
        finally:
            for process, _ in servers.values():
                stop_server(process)
    results_path.write_text(json.dumps(report, indent=2, default=str))

    print(f"Results: {results_path}\n")
    print("| model | micro-batching | clients | requests/s | p50 (ms) | p99 (ms) | mean batch |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in report["best"]:
        print(
            f"| {r['format']} | {r['batching']} | {r['clients']} | {r['requests_per_s']} | {r['p50_ms']} | "
            f"{r['p99_ms']} | {r['mean_batch']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
