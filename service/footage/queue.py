"""Footage jobs on a shared queue (REID_JOB_QUEUE=redis): RQ on Redis carries the jobs, `RedisJobStore` their
state, so any API replica accepts a job, answers for it and cancels it, and any worker process
(`python -m service.worker`) runs it.

- An API replica streams the upload to the spool, records the job (queued) and enqueues an RQ job of the
  same id that calls `perform`. It runs no jobs itself: its CPU stays with enroll and query.
- A worker (`FootageWorker`, an RQ SimpleWorker: the job runs in the worker process itself, which loaded the
  model, the gallery and the media store once, like an API replica) takes one job at a time and runs the
  same `FootageJobBody` as the in-process pool, through the same `run_job`, so a job ends the same way.
- Cancel: the replica that is asked sets a flag in the job's Redis hash; the worker polls it (`should_stop`)
  and stops at its next frame, so the cancel reaches whichever worker holds the job. A queued job is
  cancelled at once (the worker that dequeues it later finds it no longer queued and skips it).
- A worker that dies (SIGKILL, OOM, a lost host): while it runs a job, a thread of the worker refreshes RQ's
  heartbeat of the job every REID_JOB_HEARTBEAT_S; RQ's registry of started jobs expires the job 3 heartbeats
  after the last one, and every process's `Reaper` (API replicas and workers) runs RQ's clean-up of that
  registry, then fails each of our running jobs that RQ no longer holds, after settling its enroll journal
  with the gallery (`RedisJobStore.reap`). So a job never reads running for more than about 4 heartbeats
  after its worker died, and lists exactly the tracklets the gallery holds from it. It is failed, not
  re-queued: its tracklets are numbered from its start, and a rerun would enroll the footage a second time.
- A worker stopped with SIGTERM stops its job at the next frame (failed, with what it enrolled kept) and exits.
- A queued job whose RQ entry is lost (the replica died between recording and enqueueing it; a worker died
  between taking it and starting it; Redis refused the start) is queued again by the `Reaper` once the entry
  stayed lost for REQUEUE_AFTER_S: nothing of it ran, so a rerun is exact. One process does it (a short
  Redis claim), so the job is queued once, and `run_job` starts a job only while it is queued, so it runs once.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis
from rq import Queue, SimpleWorker
from rq.exceptions import NoSuchJobError
from rq.job import Job as RQJob
from rq.job import JobStatus as RQStatus
from rq.registry import StartedJobRegistry

from service.errors import ServiceBusyError, StorageUnavailableError
from service.footage.jobs import JobStatus
from service.footage.redis_jobs import RedisJobStore
from service.footage.runner import JobControl, run_job

log = logging.getLogger(__name__)

QUEUE_NAME = "reid-footage"
#: Heartbeats missed before a job's worker counts as dead.
LEASE_HEARTBEATS = 3
#: How long RQ keeps a failed RQ job (our job record is kept regardless).
FAILURE_TTL_S = 7 * 24 * 3600
#: How long a queued job's RQ entry must stay lost before a reaper queues the job again (a replica enqueues it
#: one Redis call after recording it).
REQUEUE_AFTER_S = 60.0
#: RQ statuses of an entry that no worker will run: the job it stands for is lost while ours says queued.
_LOST_ENTRY = (None, RQStatus.FAILED, RQStatus.FINISHED, RQStatus.STOPPED, RQStatus.CANCELED)
DEAD_WORKER_REASON = (
    "The worker running this job stopped (killed, crashed or cut off from Redis: its heartbeat ended)"
)
WORKER_SHUTDOWN_REASON = (
    "The worker running this job was shut down; what it had enrolled is kept and listed. Upload the footage "
    "again to process the rest."
)


def redis_client(url: str, text: bool = True) -> redis.Redis:
    """A client of REID_REDIS_URL with bounded waits (a dead Redis is a 503, not a hang); ``text``: answers
    decoded (the job store), else bytes (RQ, which needs them)."""
    return redis.Redis.from_url(url, decode_responses=text, socket_connect_timeout=5, socket_timeout=30,
                                health_check_interval=30)  # fmt: skip


def footage_queue(url: str) -> Queue:
    # RQ pickles the job's call; ours is only ``perform(job_id)``.
    return Queue(QUEUE_NAME, connection=redis_client(url, text=False))


def lease_s(heartbeat_s: float) -> int:
    return max(2, round(LEASE_HEARTBEATS * heartbeat_s))


def enqueue(queue: Queue, job_id: str) -> None:
    """Puts recorded job ``job_id`` on the RQ queue (an RQ job of the same id calling `perform`)."""
    queue.enqueue("service.footage.queue.perform", job_id, job_id=job_id, job_timeout=-1, result_ttl=0,
                  failure_ttl=FAILURE_TTL_S, description=f"footage job {job_id}")  # fmt: skip


def rq_status(queue: Queue, job_id: str) -> RQStatus | None:
    try:
        return RQJob.fetch(job_id, connection=queue.connection).get_status()
    except NoSuchJobError:
        return None


@dataclass
class RedisJobControl(JobControl):
    """A job's control in a worker: a cancel is a flag in Redis, polled at most every ``poll_s``."""

    store: RedisJobStore | None = None
    poll_s: float = 0.2
    _polled_at: float = field(default=0.0, repr=False)

    def should_stop(self) -> bool:
        if self.shutting_down.is_set() or self.cancel_requested.is_set():
            return True
        now = time.monotonic()
        if now - self._polled_at >= self.poll_s:
            self._polled_at = now
            with contextlib.suppress(StorageUnavailableError):  # Redis away: keep going, the lease decides
                if self.store.cancel_requested(self.job_id):
                    self.cancel_requested.set()
        return self.cancel_requested.is_set()


class Reaper:
    """Fails the running jobs whose worker died and queues again the queued jobs whose RQ entry was lost (see the
    module docstring); one thread per process."""

    def __init__(self, store: RedisJobStore, queue: Queue, interval_s: float,
                 enrolled_record: Callable[[str], dict[str, Any] | None], on_reaped: Callable[[str], None],
                 requeue_after_s: float = REQUEUE_AFTER_S):  # fmt: skip
        self.store = store
        self.queue = queue
        self.interval_s = interval_s
        self.enrolled_record = enrolled_record
        self.on_reaped = on_reaped
        self.requeue_after_s = requeue_after_s
        self._lost_since: dict[str, float] = {}  # queued job -> when this process first saw its entry lost
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def reap_once(self) -> list[str]:
        """One pass; returns the ids of the jobs it failed."""
        StartedJobRegistry(queue=self.queue).cleanup()  # RQ: expired executions -> failed
        reaped = []
        for job_id in self.store.ids_with_status(JobStatus.running):
            status = rq_status(self.queue, job_id)
            if status == RQStatus.STARTED:
                continue
            if self.store.reap(job_id, DEAD_WORKER_REASON, self.enrolled_record):
                log.warning("footage job %s: its worker stopped (RQ status %s); failed", job_id, status)
                reaped.append(job_id)
                with contextlib.suppress(Exception):
                    self.on_reaped(job_id)
        self._requeue_lost()
        return reaped

    def _requeue_lost(self) -> None:
        now = time.monotonic()
        lost_since = {}
        for job_id in self.store.ids_with_status(JobStatus.queued):
            if rq_status(self.queue, job_id) not in _LOST_ENTRY:
                continue
            lost_since[job_id] = self._lost_since.get(job_id, now)
            if now - lost_since[job_id] < self.requeue_after_s:
                continue
            # One process queues it again: the claim outlives the new entry's way to QUEUED or STARTED.
            claim = f"{self.store.prefix}requeue:{job_id}"
            if not self.queue.connection.set(claim, "1", nx=True, ex=max(60, round(self.requeue_after_s))):
                continue
            job = self.store.get(job_id)
            if job is None or job.status is not JobStatus.queued or rq_status(self.queue, job_id) not in _LOST_ENTRY:
                continue
            with contextlib.suppress(NoSuchJobError):
                RQJob.fetch(job_id, connection=self.queue.connection).delete()  # out of RQ's failed registry
            enqueue(self.queue, job_id)
            lost_since.pop(job_id)
            log.warning("footage job %s: queued, but no worker would ever run it (its queue entry was lost); "
                        "queued again", job_id)  # fmt: skip
        self._lost_since = lost_since

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.reap_once()
            except Exception as error:  # Redis or the gallery away: the next pass tries again
                log.warning("footage reaper: %s", error)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="footage-reaper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)


class RedisJobRunner:
    """What an API replica does with jobs under REID_JOB_QUEUE=redis: admit, enqueue, cancel (the same
    interface as `FootageJobRunner`, which runs them in-process)."""

    def __init__(self, store: RedisJobStore, queue: Queue, queue_size: int, reaper: Reaper,
                 on_cancelled: Callable[[str], None]):
        self.store = store
        self.queue = queue
        self.queue_size = queue_size
        self.reaper = reaper
        self.on_cancelled = on_cancelled

    def admit(self) -> None:
        """Raises ServiceBusyError (503) when REID_FOOTAGE_QUEUE_SIZE jobs already wait for a worker."""
        waiting = self.store.count(JobStatus.queued)
        if waiting >= max(1, self.queue_size):
            raise ServiceBusyError(
                f"{waiting} footage jobs are waiting for a worker, the limit; retry once one has started.",
                retry_after_s=30,
            )

    def submit(self, job_id: str) -> None:
        """Enqueues the recorded job; if Redis refuses, the job is failed with the reason and the error raised."""
        try:
            enqueue(self.queue, job_id)
        except redis.RedisError as error:
            with contextlib.suppress(Exception):
                self.store.finish(job_id, JobStatus.failed, f"The job could not be queued ({error}).")
            raise StorageUnavailableError(f"The footage queue (Redis) cannot be reached right now ({error}).") from None

    def start(self) -> None:
        self.reaper.start()

    def stop(self) -> None:
        self.reaper.stop()

    def cancel(self, job_id: str, wait_s: float = 10.0) -> bool:
        """Cancels a queued or running job; True if it was queued or running. A running job stops at its next
        frame on whichever worker holds it; this waits up to ``wait_s`` for that."""
        if self.store.cancel_if_queued(job_id):
            with contextlib.suppress(Exception):
                RQJob.fetch(job_id, connection=self.queue.connection).cancel()
            self.on_cancelled(job_id)
            return True
        if not self.store.request_cancel(job_id):
            return False
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            job = self.store.get(job_id)
            if job is None or job.status.finished:
                break
            time.sleep(0.05)
        return True


# -- the worker side ---------------------------------------------------------------------------------------
@dataclass
class WorkerContext:
    """What `perform` runs with, in a worker process: set once by `service.worker` before it works."""

    footage: Any  # service.footage.service.FootageService
    shutting_down: threading.Event = field(default_factory=threading.Event)


_CONTEXT: WorkerContext | None = None


def perform(job_id: str) -> str | None:
    """The RQ job: runs footage job ``job_id`` to its final status (returns it; None when it was cancelled
    before it started)."""
    if _CONTEXT is None:
        raise RuntimeError("footage jobs run in `python -m service.worker`, which loads the model and gallery")
    footage = _CONTEXT.footage
    control = RedisJobControl(job_id, shutting_down=_CONTEXT.shutting_down, store=footage.store)

    def body(job: Any, control: JobControl) -> None:
        footage.body(job, control, video=footage.spool.fetch(job.id))

    try:
        status = run_job(footage.store, body, job_id, control, WORKER_SHUTDOWN_REASON)
    finally:
        with contextlib.suppress(Exception):
            job = footage.store.get(job_id)
            if job is not None and job.status.finished:
                footage.spool.remove(job_id)
    return status.value if status else None


class FootageWorker(SimpleWorker):
    """An RQ SimpleWorker whose running job keeps a short heartbeat (``heartbeat_s``; RQ's own is minutes),
    refreshed by a thread while the job runs in the main thread; SIGTERM also stops the running job."""

    heartbeat_s: float = 10.0

    def get_heartbeat_ttl(self, job: RQJob, working_time: float = 0.0) -> int:
        return lease_s(self.heartbeat_s)

    def execute_job(self, job: RQJob, queue: Queue) -> None:
        from rq.worker import WorkerStatus

        execution = self.prepare_execution(job)
        done = threading.Event()

        def beat() -> None:
            while not done.wait(self.heartbeat_s):
                try:
                    self.maintain_heartbeats(job, execution)
                except Exception as error:  # Redis away: the lease may lapse, and the job be reaped
                    log.warning("footage job %s: heartbeat not sent (%s)", job.id, error)

        thread = threading.Thread(target=beat, name="footage-heartbeat", daemon=True)
        thread.start()
        try:
            self.perform_job(job, queue, execution)
        finally:
            done.set()
            thread.join()
        self.set_state(WorkerStatus.IDLE)

    def request_stop(self, signum: Any, frame: Any) -> None:
        if _CONTEXT is not None:
            _CONTEXT.shutting_down.set()
        super().request_stop(signum, frame)


def work(footage: Any, heartbeat_s: float, name: str | None = None, burst: bool = False) -> None:
    """Runs a worker on the footage queue until SIGTERM/SIGINT (or, with ``burst``, until it is empty)."""
    global _CONTEXT
    _CONTEXT = WorkerContext(footage)
    FootageWorker.heartbeat_s = heartbeat_s
    worker = FootageWorker([footage.runner.queue], connection=footage.runner.queue.connection, name=name,
                           worker_ttl=max(30, lease_s(heartbeat_s) * 2))  # fmt: skip
    worker.work(burst=burst, logging_level=None)
