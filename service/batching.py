"""`MicroBatcher`: many concurrent requests share one embedder.

Each request puts one tracklet on a bounded queue; a worker thread takes up to ``max_batch`` of them
(waiting at most ``max_wait_s`` for stragglers), runs one embed call over the batch and resolves each
request's future. Hand-written rather than a library: it is a queue and a thread, and it must refuse
work at once when full (503) and drop clips whose request went away. Its thread, its start and stop and
its batching off the queue are `QueueWorker`'s, shared with the search batcher (service/search/batching.py).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from service.errors import ServiceBusyError

log = logging.getLogger(__name__)

_STOP = object()


class QueueWorker:
    """A queue drained by one worker thread (``_run``, written by the subclass): starting and stopping the
    thread, refusing work while it is not running, and taking a batch off the queue.

    ``stop`` queues ``_STOP`` behind the work already waiting; ``_run`` ends when it meets it.
    """

    thread_name = "queue-worker"

    def __init__(self, queue_size: int = 0):
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._worker: threading.Thread | None = None
        self._closed = False

    def start(self) -> None:
        if self._worker is None:
            self._worker = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
            self._worker.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Finishes the work already queued, then stops the worker."""
        if self._worker is None:
            return
        self._closed = True
        try:
            self._queue.put(_STOP, timeout=timeout)  # waits only while the worker drains a full queue
        except queue.Full:
            log.warning("the %s did not drain its queue within %.0f s", self.thread_name, timeout)
        self._worker.join(timeout)
        self._worker = None

    def _refuse_unless_running(self, message: str) -> None:
        if self._closed or self._worker is None:
            raise ServiceBusyError(message)

    def _batches(self, max_batch: int, max_wait_s: float) -> Iterator[list]:
        """The queued items in batches, until the stop marker: each batch is the first item waiting and what
        else is queued, up to ``max_batch`` items, waiting at most ``max_wait_s`` for more."""
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch = [first]
            deadline = time.monotonic() + max_wait_s
            while len(batch) < max_batch:
                remaining = deadline - time.monotonic()
                try:
                    item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    yield batch
                    return
                batch.append(item)
            yield batch

    def _run(self) -> None:
        raise NotImplementedError


@dataclass
class _Job:
    clip: np.ndarray
    future: Future


class MicroBatcher(QueueWorker):
    """Bounded queue + worker thread that groups concurrent tracklets into one embed call.

    Args:
        embed_batch: function from clips (B, T, H, W, 3) to embeddings (B, dim), e.g. `OnnxEmbedder.embed`.
        max_batch: most clips per call.
        max_wait_s: how long the first clip of a batch waits for others.
        queue_size: most clips waiting; `submit` raises ServiceBusyError beyond it.
        on_batch: called with (batch size, seconds) after each call, for metrics.
    """

    thread_name = "embed-batcher"

    def __init__(
        self,
        embed_batch: Callable[[np.ndarray], np.ndarray],
        max_batch: int = 8,
        max_wait_s: float = 0.005,
        queue_size: int = 64,
        on_batch: Callable[[int, float], None] | None = None,
    ):
        super().__init__(queue_size)
        self.embed_batch = embed_batch
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.on_batch = on_batch

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    @property
    def queue_is_full(self) -> bool:
        return self._queue.full()

    def submit(self, clip: np.ndarray) -> Future:
        """Queues one clip (T, H, W, 3); the future resolves to its embedding (dim,)."""
        self._refuse_unless_running("The embedder is not running (the service is starting or stopping).")
        job = _Job(clip, Future())
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise ServiceBusyError("The embedding queue is full; retry shortly.") from None
        return job.future

    async def embed(self, clip: np.ndarray) -> np.ndarray:
        """The embedding of one clip, awaited without blocking the event loop."""
        return await asyncio.wrap_future(self.submit(clip))

    def _run(self) -> None:
        for batch in self._batches(self.max_batch, self.max_wait_s):
            # A request that went away (client disconnect) cancelled its future: skip its clip.
            live = [job for job in batch if job.future.set_running_or_notify_cancel()]
            if not live:
                continue
            started = time.perf_counter()
            try:
                embeddings = self.embed_batch(np.stack([job.clip for job in live]))
            except Exception as error:  # every waiting request must learn of the failure
                log.exception("embedding a batch of %d failed", len(live))
                for job in live:
                    job.future.set_exception(error)
                continue
            elapsed = time.perf_counter() - started
            for job, embedding in zip(live, embeddings, strict=True):
                job.future.set_result(embedding)
            if self.on_batch is not None:
                self.on_batch(len(live), elapsed)
        # Anything queued behind the stop marker is refused rather than left hanging.
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP and item.future.set_running_or_notify_cancel():
                item.future.set_exception(ServiceBusyError("The service is stopping."))
