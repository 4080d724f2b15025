"""What ``tlkit serve`` takes: where to listen, the micro-batcher's settings and the upload limits,
checked before any model is loaded.  Light to import (the CLI reads its defaults for ``--help``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from tlkit.errors import TlkitError

__all__ = ["ALL_INTERFACES", "ServeOptions"]

#: Hosts that listen on every network interface (``tlkit serve`` warns when asked for one).
ALL_INTERFACES = ("0.0.0.0", "::", "[::]", "")

#: PIL's own limit (``Image.MAX_IMAGE_PIXELS``): above it PIL only warns; the server refuses.
DEFAULT_MAX_PIXELS = 89_478_485


@dataclass(frozen=True)
class ServeOptions:
    """How a model is served.  Every field is a ``tlkit serve`` flag (``max_wait_ms`` → ``--max-wait-ms``)."""

    host: str = "127.0.0.1"
    """Interface to listen on; ``0.0.0.0`` or ``::`` listen on every interface (a warning says so)."""
    port: int = 8000
    """TCP port; 0 picks a free one (the start-up line names it)."""
    top_k: int = 3
    """Classes per image in ``/predict``'s answer unless the request asks (``?top_k=``)."""
    max_batch_size: int = 32
    """At most this many images per model call; concurrent requests' images share a call up to it."""
    max_wait_ms: float = 5.0
    """How long the oldest queued image may wait for others to fill its batch; 0 turns batching off
    (each request's images run alone)."""
    max_queue: int = 256
    """Images waiting for the model beyond which a request is refused with 503 (retry later)."""
    max_upload_mb: float = 20.0
    """Largest request body, in MB (10^6 bytes): larger ones are refused with 413."""
    max_files: int = 64
    """Most images in one request (413 beyond)."""
    max_pixels: int = DEFAULT_MAX_PIXELS
    """Largest image, width × height, read from its header before decoding (a decompression bomb is refused)."""
    access_log: bool = False
    """Log one line per request (uvicorn's access log)."""

    @classmethod
    def make(cls, options: ServeOptions | None = None, **overrides: Any) -> ServeOptions:
        """``options`` (or the defaults) with ``overrides`` applied, checked; unknown names are refused."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TlkitError(f"unknown serve option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        values = {**asdict(options or cls()), **overrides}
        made = cls(**values)
        made.check()
        return made

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1_000_000)

    @property
    def all_interfaces(self) -> bool:
        """True when the host listens on every network interface."""
        return self.host.strip() in ALL_INTERFACES

    def check(self) -> None:
        """One line per wrong value, naming its flag."""
        if not isinstance(self.host, str):
            raise TlkitError(f"--host must be a host name or address, got {self.host!r}")
        _int_in("--port", self.port, 0, 65535)
        _int_in("--top-k", self.top_k, 1, 10_000)
        _int_in("--max-batch-size", self.max_batch_size, 1, 4096)
        _int_in("--max-queue", self.max_queue, 1, 1_000_000)
        _int_in("--max-files", self.max_files, 1, 10_000)
        _int_in("--max-pixels", self.max_pixels, 1, 10**12)
        if not 0 <= self.max_wait_ms <= 10_000:
            raise TlkitError(f"--max-wait-ms must be between 0 (no batching) and 10000, got {self.max_wait_ms!r}")
        if not 0 < self.max_upload_mb <= 10_000:
            raise TlkitError(f"--max-upload-mb must be above 0 and at most 10000, got {self.max_upload_mb!r}")
        if self.max_queue < self.max_batch_size:
            raise TlkitError(
                f"--max-queue ({self.max_queue}) must be at least --max-batch-size ({self.max_batch_size}): "
                "a full batch has to fit in the queue"
            )


def _int_in(flag: str, value: Any, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise TlkitError(f"{flag} must be an integer from {low} to {high}, got {value!r}")
