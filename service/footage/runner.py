"""The footage worker pool: a bounded number of job threads, at a lower CPU priority than requests.

Footage must never starve enroll and query, so:
- at most REID_FOOTAGE_WORKERS jobs run at once, and at most REID_FOOTAGE_QUEUE_SIZE more wait; past that,
  POST /footage answers 503 with Retry-After before reading the body (`admit`);
- each worker thread lowers its own scheduling priority (Linux nice values are per thread), so request
  threads and the embedding thread win the CPU when both want it;
- a job embeds one clip at a time through the shared batcher and waits while the embedding queue is more
  than half full, leaving the rest of the queue to requests (see `service.footage.work`).

Threads rather than processes: decoding, detection and embedding run in OpenCV, numpy and onnxruntime,
which release the GIL, and a thread shares the one loaded model and the batcher instead of loading a copy.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from service.errors import ServiceBusyError
from service.footage.jobs import Job, JobStatus, JobStore

log = logging.getLogger(__name__)

#: Nice value added to each footage worker thread.
WORKER_NICENESS = 10
_STOP = None


class JobStopped(Exception):
    """Raised inside a job body when it should stop (cancelled, or the service is shutting down)."""


@dataclass
class JobControl:
    """What a running job body is given to cooperate with the pool."""

    job_id: str
    cancel_requested: threading.Event = field(default_factory=threading.Event)
    shutting_down: threading.Event = field(default_factory=threading.Event)

    def should_stop(self) -> bool:
        return self.cancel_requested.is_set() or self.shutting_down.is_set()


#: A job body: runs the job to its end, raising JobStopped when it honoured ``control.should_stop()``;
#: any other exception fails the job with its message.
JobBody = Callable[[Job, JobControl], None]


def _lower_thread_priority() -> None:
    with contextlib.suppress(AttributeError, OSError, PermissionError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WORKER_NICENESS)


class FootageJobRunner:
    """Runs queued footage jobs on ``workers`` threads; ``on_finished(job_id)`` cleans up after each.

    Args:
        store: the job table (the source of truth for statuses).
        body: the job body.
        workers: jobs running at once.
        queue_size: jobs waiting beyond the running ones before `admit` refuses.
        on_finished: called with the job id once the job reached a final status (e.g. to delete its video).
    """

    def __init__(
        self,
        store: JobStore,
        body: JobBody,
        workers: int,
        queue_size: int,
        on_finished: Callable[[str], None] | None = None,
    ):
        self.store = store
        self.body = body
        self.workers = workers
        self.queue_size = queue_size
        self.on_finished = on_finished or (lambda job_id: None)
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._running: dict[str, JobControl] = {}
        self._finished = threading.Condition()
        self._shutting_down = threading.Event()

    # -- admission and submission --------------------------------------------------------------------------
    def admit(self) -> None:
        """Raises ServiceBusyError (503) when the pool and its queue are full."""
        unfinished = self.store.count_unfinished()
        if unfinished >= self.workers + self.queue_size:
            raise ServiceBusyError(
                f"{unfinished} footage jobs are running or queued, the limit; retry once one has finished.",
                retry_after_s=30,
            )

    def submit(self, job_id: str) -> None:
        self._queue.put(job_id)

    def start(self) -> None:
        """Starts the worker threads and queues the jobs a previous process left queued, oldest first."""
        for job_id in self.store.ids_with_status(JobStatus.queued):
            self._queue.put(job_id)
        for index in range(self.workers):
            thread = threading.Thread(target=self._work, name=f"footage-worker-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout_s: float = 30.0) -> None:
        """Asks running jobs to stop (they end as failed, 'interrupted by a shutdown'); queued jobs stay
        queued for the next start."""
        self._shutting_down.set()
        for control in list(self._running.values()):
            control.shutting_down.set()
        for _ in self._threads:
            self._queue.put(_STOP)
        for thread in self._threads:
            thread.join(timeout_s)
        self._threads.clear()

    # -- cancel --------------------------------------------------------------------------------------------
    def cancel(self, job_id: str, wait_s: float = 10.0) -> bool:
        """Cancels a queued or running job; True if it was queued or running. A running job stops at its next
        frame (an enroll in progress completes and stays listed); this waits up to ``wait_s`` for that."""
        if self.store.cancel_if_queued(job_id):
            self.on_finished(job_id)
            return True
        control = self._running.get(job_id)
        if control is None:
            return False
        control.cancel_requested.set()
        with self._finished:
            self._finished.wait_for(lambda: job_id not in self._running, timeout=wait_s)
        return True

    # -- workers -------------------------------------------------------------------------------------------
    def _work(self) -> None:
        _lower_thread_priority()
        while True:
            job_id = self._queue.get()
            if job_id is _STOP or self._shutting_down.is_set():
                return
            try:
                self._run_one(job_id)
            except Exception:  # a worker must survive whatever one job does
                log.exception("footage job %s: unexpected failure in the worker", job_id)

    def _run_one(self, job_id: str) -> None:
        control = JobControl(job_id)
        if self._shutting_down.is_set():
            return
        self._running[job_id] = control
        try:
            run_job(self.store, self.body, job_id, control, SHUTDOWN_REASON)
        finally:
            # Clean up (the spooled video) before the job leaves the running set, so whoever waits for it
            # (DELETE /jobs/{id}) sees the job wholly finished.
            with contextlib.suppress(Exception):
                job = self.store.get(job_id)
                if job is not None and job.status.finished:
                    self.on_finished(job_id)
            with self._finished:
                self._running.pop(job_id, None)
                self._finished.notify_all()


SHUTDOWN_REASON = (
    "The service was shut down while this job was running; what it had enrolled is kept and listed. Upload the "
    "footage again to process the rest."
)


def run_job(store: Any, body: JobBody, job_id: str, control: JobControl, shutdown_reason: str) -> JobStatus | None:
    """Runs one queued job to its final status (None when it was no longer queued: cancelled meanwhile).
    Shared by the in-process pool and the Redis queue's workers (`service.footage.queue`), so a job ends the
    same way whoever runs it: done; cancelled (a cancel was asked for); failed with ``shutdown_reason`` when the
    runner is stopping; failed with the error's message otherwise."""
    if not store.start(job_id):  # cancelled while queued
        return None
    job = store.get(job_id)
    log.info("footage job %s started (%s, camera %s)", job_id, job.mode.value, job.camera_id)
    status, error = JobStatus.done, None
    try:
        body(job, control)
    except JobStopped as stopped:
        if control.cancel_requested.is_set():
            status = JobStatus.cancelled
        else:
            status, error = JobStatus.failed, str(stopped) or shutdown_reason
    except Exception as failure:
        status = JobStatus.failed
        error = getattr(failure, "message", None) or f"{type(failure).__name__}: {failure}"
        log.warning("footage job %s failed: %s", job_id, error, exc_info=not hasattr(failure, "message"))
    store.finish(job_id, status, error)
    log.info("footage job %s %s", job_id, status.value)
    return status
