"""The micro-batcher on a stand-in model (no TensorFlow): concurrent requests share model calls, rows
go back to their requests, batching off runs each alone, and nothing a request does stops it."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from tlkit.serving.batcher import Busy, MicroBatcher


class Model:
    """Probabilities that identify the image: row i is (pixel value, 1 - pixel value); records each call."""

    def __init__(self, seconds: float = 0.0, fail_on: int | None = None) -> None:
        self.calls: list[int] = []
        self.threads: set[str] = set()
        self.seconds = seconds
        self.fail_on = fail_on

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        self.calls.append(len(pixels))
        self.threads.add(threading.current_thread().name)
        time.sleep(self.seconds)
        values = pixels[:, 0, 0, 0].astype(np.float64) / 255.0
        if self.fail_on is not None and self.fail_on in pixels[:, 0, 0, 0]:
            raise RuntimeError("the model broke")
        return np.stack([values, 1 - values], axis=1)


def images(*values: int) -> np.ndarray:
    return np.stack([np.full((4, 4, 3), v, np.uint8) for v in values])


def run(batcher: MicroBatcher, *requests: np.ndarray, stagger: float = 0.0) -> list:
    async def main():
        await batcher.start()
        try:

            async def one(i, pixels):
                await asyncio.sleep(i * stagger)
                try:
                    return await batcher.predict(pixels)
                except Exception as exc:  # noqa: BLE001
                    return exc

            return await asyncio.gather(*(one(i, r) for i, r in enumerate(requests)))
        finally:
            await batcher.stop()

    return asyncio.run(main())


def expected(pixels: np.ndarray) -> np.ndarray:
    values = pixels[:, 0, 0, 0] / 255.0
    return np.stack([values, 1 - values], axis=1)


def test_concurrent_requests_share_calls_and_get_their_own_rows():
    model = Model()
    batcher = MicroBatcher(model, max_batch_size=8, max_wait_ms=200, max_queue=64)
    requests = [images(10 * i + 1, 10 * i + 2) for i in range(6)]  # 12 images
    answers = run(batcher, *requests)
    for request, answer in zip(requests, answers):
        np.testing.assert_array_equal(answer, expected(request))
    assert model.calls == [8, 4]  # whole requests per call, never more than max_batch_size
    assert model.threads == {"tlkit-model_0"}  # one worker thread: the event loop never runs the model
    stats = batcher.stats.as_dict()
    assert (stats["chunks"], stats["images"], stats["model_calls"], stats["largest_batch"]) == (6, 12, 2, 8)


def test_batching_off_runs_each_request_alone():
    model = Model()
    answers = run(MicroBatcher(model, max_batch_size=8, max_wait_ms=0), images(1, 2), images(3), images(4, 5, 6))
    assert model.calls == [2, 1, 3]
    np.testing.assert_array_equal(answers[2], expected(images(4, 5, 6)))


def test_a_large_request_is_split_into_batches_and_joined_in_order():
    model = Model()
    request = images(*range(1, 21))
    (answer,) = run(MicroBatcher(model, max_batch_size=8, max_wait_ms=0, max_queue=32), request)
    assert model.calls == [8, 8, 4]
    np.testing.assert_array_equal(answer, expected(request))


def test_a_lone_request_waits_for_nobody():
    model = Model()
    started = time.perf_counter()
    run(MicroBatcher(model, max_batch_size=8, max_wait_ms=2000), images(1))
    assert time.perf_counter() - started < 1.0 and model.calls == [1]


def test_it_waits_for_requests_on_their_way_at_most_max_wait():
    """A ticket is a request still being read/decoded: the batcher waits for its images, up to max_wait."""

    def scenario(arrives_after: float) -> tuple[list[int], float]:
        model = Model()
        batcher = MicroBatcher(model, max_batch_size=8, max_wait_ms=300)

        async def main():
            await batcher.start()

            async def late():
                with batcher.incoming() as ticket:
                    await asyncio.sleep(arrives_after)  # reading and decoding
                    return await batcher.predict(images(2), ticket)

            started = time.perf_counter()
            later = asyncio.ensure_future(late())
            await asyncio.sleep(0.01)
            first = await batcher.predict(images(1))
            waited = time.perf_counter() - started
            np.testing.assert_array_equal(await later, expected(images(2)))
            np.testing.assert_array_equal(first, expected(images(1)))
            await batcher.stop()
            return waited

        waited = asyncio.run(main())
        return model.calls, waited

    calls, waited = scenario(0.1)  # arrives within max_wait: one call for both
    assert calls == [2] and 0.09 < waited < 0.3
    calls, waited = scenario(1.0)  # too late: the first goes alone after max_wait
    assert calls == [1, 1] and 0.29 < waited < 0.9


def test_requests_that_queue_while_the_model_runs_share_the_next_call():
    # The first call takes 0.3 s; the next five arrive meanwhile and go in one call, with no extra wait.
    model = Model(seconds=0.3)
    run(MicroBatcher(model, max_batch_size=8, max_wait_ms=1), *[images(i) for i in range(1, 7)], stagger=0.02)
    assert model.calls == [1, 5]


def test_a_full_queue_refuses_at_once_and_a_model_error_fails_only_its_batch():
    model = Model(seconds=0.2, fail_on=7)
    batcher = MicroBatcher(model, max_batch_size=2, max_wait_ms=0, max_queue=4)
    answers = run(batcher, images(7), images(1, 2), images(3, 4), images(5), stagger=0.01)
    assert isinstance(answers[0], RuntimeError) and str(answers[0]) == "the model broke"
    assert isinstance(answers[3], Busy) and "--max-queue 4" in str(answers[3])
    np.testing.assert_array_equal(answers[1], expected(images(1, 2)))
    np.testing.assert_array_equal(answers[2], expected(images(3, 4)))


def test_a_request_that_went_away_is_never_run():
    model = Model(seconds=0.2)
    batcher = MicroBatcher(model, max_batch_size=1, max_wait_ms=0)

    async def main():
        await batcher.start()
        first = asyncio.ensure_future(batcher.predict(images(1)))
        await asyncio.sleep(0.05)  # the model is busy with the first
        gone = asyncio.ensure_future(batcher.predict(images(2)))
        await asyncio.sleep(0.01)
        gone.cancel()  # the client hung up
        third = await batcher.predict(images(3))
        await first
        await batcher.stop()
        return third

    np.testing.assert_array_equal(asyncio.run(main()), expected(images(3)))
    assert model.calls == [1, 1]


def test_predict_before_start_is_refused():
    with pytest.raises(Busy):
        asyncio.run(MicroBatcher(Model()).predict(images(1)))
