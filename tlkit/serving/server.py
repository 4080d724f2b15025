"""``tlkit serve``: check, load once, bind, then run the app under uvicorn until stopped.

>>> tlkit.serve("runs/20261128-101500-mobilenet_v2-dense256", port=8000)   # Ctrl+C stops it

The order is the point: the options and the path are checked and the port is
tried first (a taken port fails in a second, not after the model loaded), then
the model is loaded, and only then is the port bound and the URL announced — so
a server that answers is a server whose model is ready.  One process: the
micro-batcher needs every request in one queue, a second process would hold a
second copy of the model, and TensorFlow / ONNX Runtime already use every core
inside one call.

Light to import: FastAPI and uvicorn are imported when :func:`serve` runs.
"""

from __future__ import annotations

import socket
import warnings
from pathlib import Path
from typing import Any

from PIL import Image

from tlkit.errors import TlkitError
from tlkit.observer import TrainingObserver
from tlkit.serving.options import ServeOptions

__all__ = ["bind", "serve"]


def serve(
    source: str | Path,
    options: ServeOptions | None = None,
    *,
    observer: TrainingObserver | None = None,
    **overrides: Any,
) -> None:
    """Serve a run, a ``.keras`` file or an exported model over HTTP until interrupted (Ctrl+C, SIGTERM).

    ``options`` and the keywords are the fields of :class:`tlkit.serving.options.ServeOptions`
    (``host``, ``port``, ``max_batch_size``, ``max_wait_ms``, ``max_upload_mb``, …; keywords win).
    The start-up lines (what is served, at which URL, a warning when every interface listens) go
    to ``observer`` (:func:`tlkit.serve` draws them with rich).

    Raises:
        TlkitError: a wrong option, a path that is no run/model/export, a port that is taken or
            not allowed; all before the model loads, except a model that cannot be loaded.
    """
    options = ServeOptions.make(options, **overrides)
    observer = observer or TrainingObserver()
    path = Path(source).expanduser()
    if not path.exists():
        raise TlkitError(
            f"{path} does not exist; pass a run directory, a .keras model file or an exported model "
            "(.tflite, .onnx, SavedModel or `tlkit export` folder)"
        )
    bind(options.host, options.port).close()  # taken or forbidden: say so before the model loads
    if options.all_interfaces:
        observer.message(
            f"--host {options.host or '0.0.0.0'} listens on every network interface: anyone who can reach this "
            "machine can use the model (there is no authentication)",
            level="warning",
        )

    import uvicorn  # lazy: uvicorn and FastAPI load only to serve, `import tlkit.api` stays without them

    # lazy: FastAPI, and the model's runtime, load only to serve
    from tlkit.serving.app import create_app
    from tlkit.serving.model import ServedModel

    # A decompression bomb between PIL's warning and error limits is an error here (--max-pixels also checks).
    warnings.simplefilter("error", Image.DecompressionBombWarning)
    observer.message(f"Loading {path} …")
    served = ServedModel.load(path)
    for note in served.source.notes:
        observer.message(note, level="warning")
    app = create_app(served, options)
    sock = bind(options.host, options.port)
    config = uvicorn.Config(
        app,
        log_level="info" if options.access_log else "warning",
        access_log=options.access_log,
        timeout_graceful_shutdown=5,
    )
    url = _url(sock)
    what = ", ".join(
        part
        for part in (
            served.kind,
            served.format,
            f"base {served.metadata()['base']}" if served.metadata()["base"] else "",
            f"{len(served.classes)} classes",
            f"{served.image_size} px",
            "Grad-CAM" if served.explainer is not None else "",
        )
        if part
    )
    observer.message(f"Serving {path} ({what}) at {url}")
    observer.message(
        f"page {url}/ · POST {url}/predict · docs {url}/docs · micro-batching "
        + (
            f"up to {options.max_batch_size} images, {options.max_wait_ms:g} ms wait"
            if options.max_wait_ms > 0
            else "off"
        )
        + " · Ctrl+C stops"
    )
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn shut down gracefully, then passed Ctrl+C on: the normal way to stop
        pass
    finally:
        sock.close()
    observer.message("Stopped.")


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host``:``port`` (an IPv6 address or ``::`` too; port 0 = a free one).

    Raises:
        TlkitError: the port is taken, not allowed, or the host is not an address of this machine.
    """
    host = host.strip().strip("[]") or "0.0.0.0"
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise TlkitError(f"--host {host} is not a known name or address: {exc.strerror}") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and host == "::":
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # "::" serves IPv4 too
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        reason = exc.strerror or str(exc)
        raise TlkitError(
            f"cannot listen on {host}:{port}: {reason}; pick another --port (0 picks a free one) or stop what uses it"
        ) from None
    sock.set_inheritable(True)
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    if sock.family == socket.AF_INET6:
        host = f"[{host}]"
    return f"http://{host}:{port}"
