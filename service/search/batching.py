"""`SearchBatcher`: concurrent queries share one index call.

One query reads the whole index once (memory-bound); a batch of queries reads it once for all of them
(FAISS' BLAS path, service/gallery/index_kinds.py). A worker thread takes every query waiting when it
becomes free, groups them by (top_k, filter) (one FAISS call takes one selector), and runs one gallery
search per group. It never waits for stragglers: a lone query starts at once, and queries arriving while
a search runs form the next batch. Hand-written like service/batching.py (its `QueueWorker`): a queue and
a thread.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from service.batching import QueueWorker
from service.gallery.base import Match, TrackletFilter


@dataclass
class _Query:
    vector: np.ndarray
    top_k: int
    tracklet_filter: TrackletFilter | None
    future: Future

    def key(self) -> tuple[int, str]:
        return self.top_k, self.tracklet_filter.model_dump_json() if self.tracklet_filter is not None else ""


class SearchBatcher(QueueWorker):
    """Runs single-query searches through ``search(queries (n, d), top_k, filter)`` in batches.

    Args:
        search: the gallery's search.
        max_batch: most queries per index call.
        on_batch: called with each index call's number of queries (metrics, tests).
    """

    thread_name = "search-batcher"

    def __init__(
        self,
        search: Callable[[np.ndarray, int, TrackletFilter | None], list[list[Match]]],
        max_batch: int = 64,
        on_batch: Callable[[int], None] | None = None,
    ):
        super().__init__()
        self._search = search
        self.max_batch = max_batch
        self.on_batch = on_batch

    def search(self, vector: np.ndarray, top_k: int, tracklet_filter: TrackletFilter | None) -> list[Match]:
        """Blocking: the matches of one query (dim,), searched together with whatever else is waiting."""
        self._refuse_unless_running("The search worker is not running (the service is starting or stopping).")
        job = _Query(np.ascontiguousarray(vector, dtype=np.float32).ravel(), top_k, tracklet_filter, Future())
        self._queue.put(job)
        return job.future.result()

    def _run(self) -> None:
        for batch in self._batches(self.max_batch, max_wait_s=0.0):  # never waits for stragglers
            groups: dict[tuple[int, str], list[_Query]] = {}
            for job in batch:
                groups.setdefault(job.key(), []).append(job)
            for jobs in groups.values():
                self._answer(jobs)

    def _answer(self, jobs: list[_Query]) -> None:
        try:
            results = self._search(np.stack([job.vector for job in jobs]), jobs[0].top_k, jobs[0].tracklet_filter)
        except Exception as error:  # every waiting query must learn of the failure
            for job in jobs:
                job.future.set_exception(error)
            return
        if self.on_batch is not None:
            self.on_batch(len(jobs))
        for job, matches in zip(jobs, results, strict=True):
            job.future.set_result(matches)
