"""`MicroBatcher`: many concurrent requests share one embedder.

Each request puts one tracklet on a bounded queue; a worker thread takes up to ``max_batch`` of them
(waiting at most ``max_wait_s`` for stragglers), runs one embed call over the batch and resolves each
request's future. Hand-written rather than a library: it is a queue and a thread, and it must refuse
work at once when full (503) and drop clips whose request went away.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from service.errors import ServiceBusyError

log = logging.getLogger(__name__)

_STOP = object()


@dataclass
class _Job:
    clip: np.ndarray
    future: Future


class MicroBatcher:
    """Bounded queue + worker thread that groups concurrent tracklets into one embed call.

    Args:
        embed_batch: function from clips (B, T, H, W, 3) to embeddings (B, dim), e.g. `OnnxEmbedder.embed`.
        max_batch: most clips per call.
        max_wait_s: how long the first clip of a batch waits for others.
        queue_size: most clips waiting; `submit` raises ServiceBusyError beyond it.
        on_batch: called with (batch size, seconds) after each call, for metrics.
    """

    def __init__(
        self,
        embed_batch: Callable[[np.ndarray], np.ndarray],
        max_batch: int = 8,
        max_wait_s: float = 0.005,
        queue_size: int = 64,
        on_batch: Callable[[int, float], None] | None = None,
    ):
        self.embed_batch = embed_batch
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.on_batch = on_batch
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._worker: threading.Thread | None = None
        self._closed = False

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    @property
    def queue_is_full(self) -> bool:
        return self._queue.full()

    def start(self) -> None:
        if self._worker is None:
            self._worker = threading.Thread(target=self._run, name="embed-batcher", daemon=True)
            self._worker.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Finishes the jobs already queued, then stops the worker."""
        if self._worker is None:
            return
        self._closed = True
        try:
            self._queue.put(_STOP, timeout=timeout)  # waits only while the worker drains a full queue
        except queue.Full:
            log.warning("the embedder did not drain its queue within %.0f s", timeout)
        self._worker.join(timeout)
        self._worker = None

    def submit(self, clip: np.ndarray) -> Future:
        """Queues one clip (T, H, W, 3); the future resolves to its embedding (dim,)."""
        if self._closed or self._worker is None:
            raise ServiceBusyError("The embedder is not running (the service is starting or stopping).")
        job = _Job(clip, Future())
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise ServiceBusyError("The embedding queue is full; retry shortly.") from None
        return job.future

    async def embed(self, clip: np.ndarray) -> np.ndarray:
        """The embedding of one clip, awaited without blocking the event loop."""
        return await asyncio.wrap_future(self.submit(clip))

    def _collect(self, first: _Job) -> tuple[list[_Job], bool]:
        batch = [first]
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                return batch, True
            batch.append(item)
        return batch, False

    def _run(self) -> None:
        stopping = False
        while not stopping:
            item = self._queue.get()
            if item is _STOP:
                break
            batch, stopping = self._collect(item)
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
