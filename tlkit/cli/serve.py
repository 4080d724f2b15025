"""The ``serve`` command (an HTTP server for a model), added to the main app by :func:`register`.

This module imports neither FastAPI nor TensorFlow at import time; the command imports what it needs when it runs.
"""

from __future__ import annotations

from pathlib import Path

import typer

from tlkit.cli.common import handles_errors, out
from tlkit.serving.options import ServeOptions

_EPILOG = (
    "Example: tlkit serve runs/20261128-101500-mobilenet_v2-dense256 --port 8000 && "
    "curl -F files=@cat.jpg http://127.0.0.1:8000/predict"
)
_D = ServeOptions()


def serve_command(
    source: Path = typer.Argument(
        ...,
        metavar="RUN_DIR|MODEL|EXPORT_DIR",
        help="A run directory, a .keras model file or an exported model (.tflite, .onnx, SavedModel or "
        "`tlkit export` folder).",
    ),
    host: str = typer.Option(
        _D.host, "--host", help="Interface to listen on; 0.0.0.0 or :: listen on every interface (with a warning)."
    ),
    port: int = typer.Option(_D.port, "--port", help="TCP port; 0 picks a free one."),
    top_k: int = typer.Option(_D.top_k, "--top-k", help="Classes per image unless a request asks (?top_k=)."),
    max_batch_size: int = typer.Option(
        _D.max_batch_size, "--max-batch-size", help="Most images per model call (micro-batching)."
    ),
    max_wait_ms: float = typer.Option(
        _D.max_wait_ms,
        "--max-wait-ms",
        help="How long a queued image may wait for others to share its model call; 0 turns batching off.",
    ),
    max_queue: int = typer.Option(
        _D.max_queue, "--max-queue", help="Images waiting for the model beyond which requests get 503."
    ),
    max_upload_mb: float = typer.Option(
        _D.max_upload_mb, "--max-upload-mb", help="Largest request body in MB (413 beyond)."
    ),
    max_files: int = typer.Option(_D.max_files, "--max-files", help="Most images per request (413 beyond)."),
    max_pixels: int = typer.Option(
        _D.max_pixels, "--max-pixels", help="Largest image, width x height (a decompression bomb gets 422)."
    ),
    access_log: bool = typer.Option(False, "--access-log", help="Log one line per request."),
) -> None:
    """Serve a model over HTTP: a page at /, POST /predict, /metadata, /healthz, API docs at /docs.

    The model is loaded once, before the port is bound; concurrent requests share model
    calls (micro-batching: --max-batch-size, --max-wait-ms).  Uploads are read in memory,
    never written to disk; bad ones get a 4xx JSON error naming the file.  Ctrl+C stops.
    """
    from tlkit.api import serve  # lazy: the API loads numpy and PIL; `tlkit --help` stays without them

    serve(
        source,
        console=out,
        host=host,
        port=port,
        top_k=top_k,
        max_batch_size=max_batch_size,
        max_wait_ms=max_wait_ms,
        max_queue=max_queue,
        max_upload_mb=max_upload_mb,
        max_files=max_files,
        max_pixels=max_pixels,
        access_log=access_log,
    )


def register(app: typer.Typer) -> None:
    """Add ``serve`` to ``app`` (a no-op if it is already there)."""
    if "serve" not in {command.name for command in app.registered_commands}:
        app.command("serve", epilog=_EPILOG)(handles_errors(serve_command))
