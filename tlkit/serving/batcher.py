"""The micro-batcher: concurrent requests' images share one model call.

>>> batcher = MicroBatcher(model_fn, max_batch_size=32, max_wait_ms=5, max_queue=256)
>>> await batcher.start()                   # inside the server's event loop
>>> probs = await batcher.predict(pixels)   # (n, size, size, 3) uint8 → (n, classes), from any request

A request's images are queued as chunks of at most ``max_batch_size``.  One task
in the event loop takes the oldest chunk and, while the batch has room and other
requests are still being read or decoded (each holds a :meth:`MicroBatcher.incoming`
ticket until its images are queued), waits for them until the oldest chunk has
waited ``max_wait_ms`` (counted from its arrival: a chunk that queued while the
model was busy does not wait again).  Then it runs the model once on all of them
**in a worker thread**, so the event loop keeps reading requests meanwhile, and
resolves each chunk's future with its rows.  Under load the queue fills while
the model runs, batches grow, and throughput grows with them; a request that
comes alone waits for nobody.  ``max_wait_ms=0`` turns batching off: each chunk
runs alone (the baseline of ``bench/bench_serve.py``).

The model runs in one thread, so a runtime that is not thread-safe (the TFLite
interpreter) is safe here, and TensorFlow or ONNX Runtime parallelise inside the
call.  A chunk whose request went away (the client hung up) is dropped before
the model sees it.  At most ``max_queue`` images wait: beyond, :class:`Busy` is
raised at once (the app answers 503), so memory stays bounded under overload.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Busy", "MicroBatcher", "Ticket"]


class Busy(Exception):
    """The queue is full: the request is refused at once (503, retry later)."""


@dataclass
class _Chunk:
    pixels: np.ndarray
    future: asyncio.Future
    arrived: float


@dataclass
class BatchStats:
    """What the batcher has done since start: requests' chunks, images, model calls, the largest batch."""

    chunks: int = 0
    images: int = 0
    model_calls: int = 0
    largest_batch: int = 0
    sizes: dict[int, int] = field(default_factory=dict)  # batch size → model calls of that size

    def as_dict(self) -> dict[str, object]:
        return {
            "chunks": self.chunks,
            "images": self.images,
            "model_calls": self.model_calls,
            "largest_batch": self.largest_batch,
            "mean_batch": round(self.images / self.model_calls, 2) if self.model_calls else 0.0,
            "batch_sizes": {str(k): v for k, v in sorted(self.sizes.items())},
        }


class Ticket:
    """A request on its way to the batcher (being read or decoded): the batcher may wait for it."""

    def __init__(self, batcher: MicroBatcher) -> None:
        self._batcher: MicroBatcher | None = batcher
        batcher._incoming += 1

    def release(self) -> None:
        """Its images are queued, or it failed: nothing more to wait for (idempotent)."""
        if self._batcher is not None:
            self._batcher._incoming -= 1
            if self._batcher._wakeup is not None:
                self._batcher._wakeup.set()
            self._batcher = None

    def __enter__(self) -> Ticket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class MicroBatcher:
    """Queues images from concurrent requests and runs ``model_fn`` on batches of them (see the module doc).

    ``model_fn`` takes uint8 pixels ``(n, size, size, 3)`` and returns ``(n, classes)`` probabilities;
    it runs in one worker thread.
    """

    def __init__(
        self,
        model_fn: Callable[[np.ndarray], np.ndarray],
        *,
        max_batch_size: int = 32,
        max_wait_ms: float = 5.0,
        max_queue: int = 256,
    ) -> None:
        self.model_fn = model_fn
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.stats = BatchStats()
        self._chunks: deque[_Chunk] = deque()
        self._queued = 0  # images in self._chunks
        self._incoming = 0  # requests holding a Ticket: being read or decoded
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._thread: ThreadPoolExecutor | None = None

    @property
    def queued(self) -> int:
        """Images waiting for the model now."""
        return self._queued

    async def start(self) -> None:
        """Start the batching task in the running event loop."""
        self._wakeup = asyncio.Event()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tlkit-model")
        self._task = asyncio.get_running_loop().create_task(self._run(), name="tlkit-micro-batcher")

    async def stop(self) -> None:
        """Stop taking work; waiting requests fail with :class:`Busy`; an in-flight model call finishes."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        while self._chunks:
            chunk = self._chunks.popleft()
            if not chunk.future.done():
                chunk.future.set_exception(Busy("the server is shutting down"))
        self._queued = 0
        if self._thread is not None:
            self._thread.shutdown(wait=True)
            self._thread = None

    def incoming(self) -> Ticket:
        """A ticket for a request that will bring images: ``with batcher.incoming() as ticket:`` read and
        decode, then ``await batcher.predict(pixels, ticket)``.  While tickets are out the batcher waits
        (at most ``max_wait_ms``) for their images; with none out it runs what it has at once."""
        return Ticket(self)

    async def predict(self, pixels: np.ndarray, ticket: Ticket | None = None) -> np.ndarray:
        """Probabilities ``(n, classes)`` of ``pixels`` ``(n, size, size, 3)``, batched with other requests'.
        ``ticket`` (from :meth:`incoming`) is released once the images are queued.

        Raises:
            Busy: more than ``max_queue`` images would wait (or the batcher is stopping).
            Exception: whatever the model raised for the batch these images were in.
        """
        try:
            if self._task is None or self._wakeup is None:
                raise Busy("the model is not running (the server is starting or stopping)")
            n = len(pixels)
            if n == 0:
                raise ValueError("no images to predict")
            if self._queued + n > self.max_queue:
                raise Busy(
                    f"{self._queued} images are waiting for the model (--max-queue {self.max_queue}); retry shortly"
                )
        finally:
            if ticket is not None:
                ticket.release()
        loop = asyncio.get_running_loop()
        now = loop.time()
        futures = []
        for start in range(0, n, self.max_batch_size):
            chunk = _Chunk(pixels[start : start + self.max_batch_size], loop.create_future(), now)
            self._chunks.append(chunk)
            self._queued += len(chunk.pixels)
            futures.append(chunk.future)
        self._wakeup.set()
        results = await asyncio.gather(*futures)
        return results[0] if len(results) == 1 else np.concatenate(results)

    # ------------------------------------------------------------------ the batching task

    def _full(self) -> bool:
        return self._queued >= self.max_batch_size

    async def _run(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            while not self._chunks:
                self._wakeup.clear()
                await self._wakeup.wait()
            if self.max_wait > 0:
                deadline = self._chunks[0].arrived + self.max_wait
                while not self._full() and self._incoming > 0 and (left := deadline - loop.time()) > 0:
                    self._wakeup.clear()
                    try:
                        await asyncio.wait_for(self._wakeup.wait(), left)
                    except TimeoutError:
                        break
            batch = self._take()
            if not batch:
                continue
            pixels = batch[0].pixels if len(batch) == 1 else np.concatenate([c.pixels for c in batch])
            self._count(len(batch), len(pixels))
            try:
                probs = await loop.run_in_executor(self._thread, self.model_fn, pixels)
            except asyncio.CancelledError:
                for chunk in batch:
                    if not chunk.future.done():
                        chunk.future.set_exception(Busy("the server is shutting down"))
                raise
            except Exception as exc:  # noqa: BLE001 - the model's failure is each waiting request's answer
                for chunk in batch:
                    if not chunk.future.done():
                        chunk.future.set_exception(exc)
                continue
            row = 0
            for chunk in batch:
                count = len(chunk.pixels)
                if not chunk.future.done():
                    chunk.future.set_result(probs[row : row + count])
                row += count

    def _take(self) -> list[_Chunk]:
        """The chunks of the next model call: the oldest, then (batching on) whole chunks while they fit."""
        batch: list[_Chunk] = []
        rows = 0
        while self._chunks:
            chunk = self._chunks[0]
            if chunk.future.done():  # its request went away: never run it
                self._chunks.popleft()
                self._queued -= len(chunk.pixels)
                continue
            if batch and (self.max_wait <= 0 or rows + len(chunk.pixels) > self.max_batch_size):
                break
            self._chunks.popleft()
            self._queued -= len(chunk.pixels)
            batch.append(chunk)
            rows += len(chunk.pixels)
        return batch

    def _count(self, chunks: int, images: int) -> None:
        stats = self.stats
        stats.chunks += chunks
        stats.images += images
        stats.model_calls += 1
        stats.largest_batch = max(stats.largest_batch, images)
        stats.sizes[images] = stats.sizes.get(images, 0) + 1
