"""MicroBatcher: concurrent clips share one embed call, bounded queue, failures and shutdown; the search
batcher built on the same worker."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from service.batching import MicroBatcher
from service.errors import ServiceBusyError
from service.search.batching import SearchBatcher


class RecordingModel:
    """Stands in for the session: row i of the output is 10 * clip value, and each call's size is kept."""

    def __init__(self, delay_s: float = 0.0):
        self.batch_sizes: list[int] = []
        self.delay_s = delay_s
        self.release = threading.Event()
        self.release.set()

    def __call__(self, clips: np.ndarray) -> np.ndarray:
        self.release.wait(5)
        time.sleep(self.delay_s)
        self.batch_sizes.append(len(clips))
        return clips.reshape(len(clips), -1)[:, :2].astype(np.float32) * 10


def clip_of(value: int) -> np.ndarray:
    return np.full((2, 2, 2, 3), value, np.uint8)


def test_concurrent_clips_share_one_call_and_get_their_own_rows():
    model = RecordingModel()
    model.release.clear()  # hold the worker so all clips queue up behind the first
    observed = []
    batcher = MicroBatcher(model, max_batch=4, max_wait_s=0.05, queue_size=16,
                           on_batch=lambda size, seconds: observed.append(size))
    batcher.start()
    futures = [batcher.submit(clip_of(value)) for value in range(6)]
    model.release.set()
    results = [future.result(timeout=5) for future in futures]
    batcher.stop()
    assert [result.tolist() for result in results] == [[10.0 * value] * 2 for value in range(6)]
    assert sum(model.batch_sizes) == 6 and max(model.batch_sizes) == 4 and len(model.batch_sizes) <= 3
    assert observed == model.batch_sizes


def test_a_lone_clip_waits_at_most_max_wait():
    model = RecordingModel()
    batcher = MicroBatcher(model, max_batch=8, max_wait_s=0.02, queue_size=4)
    batcher.start()
    started = time.perf_counter()
    batcher.submit(clip_of(1)).result(timeout=5)
    assert time.perf_counter() - started < 1.0
    assert model.batch_sizes == [1]
    batcher.stop()


def test_full_queue_is_service_busy():
    model = RecordingModel()
    model.release.clear()
    batcher = MicroBatcher(model, max_batch=1, max_wait_s=0.0, queue_size=2)
    batcher.start()
    first = batcher.submit(clip_of(0))
    time.sleep(0.1)  # the worker took the first clip and is blocked on it
    queued = [batcher.submit(clip_of(1)), batcher.submit(clip_of(2))]
    with pytest.raises(ServiceBusyError) as error:
        batcher.submit(clip_of(3))
    assert error.value.status_code == 503 and error.value.headers["Retry-After"] == "1"
    model.release.set()
    assert [future.result(timeout=5)[0] for future in [first, *queued]] == [0.0, 10.0, 20.0]
    batcher.stop()


def test_a_failing_batch_fails_every_waiting_request_and_the_worker_survives():
    calls = []

    def flaky(clips):
        calls.append(len(clips))
        if len(calls) == 1:
            raise RuntimeError("boom")
        return np.zeros((len(clips), 2), np.float32)

    batcher = MicroBatcher(flaky, max_batch=4, max_wait_s=0.0, queue_size=4)
    batcher.start()
    with pytest.raises(RuntimeError, match="boom"):
        batcher.submit(clip_of(0)).result(timeout=5)
    assert batcher.submit(clip_of(0)).result(timeout=5).tolist() == [0.0, 0.0]
    batcher.stop()


def test_stopped_batcher_refuses_work():
    batcher = MicroBatcher(RecordingModel(), queue_size=2)
    with pytest.raises(ServiceBusyError):
        batcher.submit(clip_of(0))  # not started
    batcher.start()
    batcher.stop()
    with pytest.raises(ServiceBusyError):
        batcher.submit(clip_of(0))


def test_async_embed_does_not_block_the_event_loop():
    model = RecordingModel(delay_s=0.2)
    batcher = MicroBatcher(model, max_batch=2, max_wait_s=0.0, queue_size=4)
    batcher.start()

    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        result = await batcher.embed(clip_of(3))
        task.cancel()
        return result, ticks

    result, ticks = asyncio.run(main())
    batcher.stop()
    assert result.tolist() == [30.0, 30.0]
    assert ticks >= 5  # the loop kept running while the model worked for 0.2 s


def test_search_batcher_groups_waiting_queries_answers_them_at_stop_then_refuses():
    """The search batcher shares the worker above (QueueWorker): queries queued while a search runs form the
    next batch, one index call per (top_k, filter); stop answers what is queued, then refuses."""
    calls: list[tuple[int, int]] = []
    release = threading.Event()

    def search(queries, top_k, tracklet_filter):
        calls.append((len(queries), top_k))
        release.wait(5)  # the first call holds the worker while the others queue up
        return [[f"{top_k}:{query[0]:.0f}"] for query in queries]

    batcher = SearchBatcher(search, max_batch=8)
    with pytest.raises(ServiceBusyError):
        batcher.search(np.zeros(2, np.float32), 1, None)  # not started
    batcher.start()
    answers: dict[int, list] = {}

    def ask(value: int, top_k: int) -> None:
        answers[value] = batcher.search(np.full(2, value, np.float32), top_k, None)

    first = threading.Thread(target=ask, args=(0, 1))
    first.start()
    while not calls:
        time.sleep(0.01)
    others = [threading.Thread(target=ask, args=(value, 1 + value % 2)) for value in range(1, 6)]
    for thread in others:
        thread.start()
    while batcher._queue.qsize() < 5:
        time.sleep(0.01)
    stopper = threading.Thread(target=batcher.stop)
    stopper.start()  # queued behind the five waiting queries
    release.set()
    for thread in [first, *others, stopper]:
        thread.join(10)
    assert calls[0] == (1, 1) and sorted(calls[1:]) == [(2, 1), (3, 2)]
    assert answers == {value: [f"{1 + value % 2 if value else 1}:{value}"] for value in range(6)}
    with pytest.raises(ServiceBusyError):
        batcher.search(np.zeros(2, np.float32), 1, None)
