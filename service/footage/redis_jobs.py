"""Footage job state in Redis (REID_JOB_QUEUE=redis): the same operations as the SQLite `JobStore`, so any
API replica answers GET /jobs/{id} and lists, and any worker records progress, results and the enroll
journal of the job it runs.

Keys, under ``reid:footage:``:
- ``job:<id>`` a hash: ``status`` and ``seq`` as plain text, every other field JSON (the `Job` fields, plus
  ``cancel`` once a cancel was asked for, ``worker`` the RQ worker that started it, ``reaping`` while another
  process settles a job whose worker died);
- ``job:<id>:results`` a list of ``{"kind": "enrolled"|"query", "payload": ...}`` (appended, never rewritten);
- ``job:<id>:pending`` the enroll journal (a set of tracklet ids), ``job:<id>:listed`` the enrolled ids;
- ``jobs`` and ``status:<status>`` sorted sets of job ids by creation order (lists, counts).

Status changes are Lua scripts (atomic in Redis), each conditional on the current status, like the SQLite
table's ``UPDATE ... WHERE status = ...``: a job is started once, finished once, cancelled only while queued.

The journal across processes. A worker journals each enroll (``mark_pending``, refused unless the job is
running and no one is reaping it), enrolls, then settles it. When a worker dies, another process (see
`service.footage.queue.Reaper`) marks the job ``reaping`` (no new journal entries from then on), asks the
gallery about each pending id, lists the committed ones, then fails the job. If the worker was not dead but
only cut off from Redis, its enroll may commit after the gallery was asked: its settle then answers False
(neither pending nor listed any more) and the worker deletes that tracklet again (`FootageJobBody.withdraw`),
so the gallery holds exactly what the job lists, whichever way the race goes.

Any Redis failure is StorageUnavailableError (503 with the reason), never a 500.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from typing import Any

import redis

from service.errors import StorageUnavailableError
from service.footage.jobs import Job, JobProgress, JobStatus, interrupted_error

PREFIX = "reid:footage:"

# KEYS: none (one Redis, not a cluster: the scripts name the job's keys from the prefix and id).
# ARGV: prefix, job id, allowed current statuses (comma-separated), new status, time, error (JSON or "").
_TRANSITION = """
local key = ARGV[1] .. 'job:' .. ARGV[2]
local status = redis.call('HGET', key, 'status')
if not status then return false end
local allowed = false
for name in string.gmatch(ARGV[3], '[^,]+') do if name == status then allowed = true end end
if not allowed then return false end
local seq = redis.call('HGET', key, 'seq')
redis.call('ZREM', ARGV[1] .. 'status:' .. status, ARGV[2])
redis.call('ZADD', ARGV[1] .. 'status:' .. ARGV[4], seq, ARGV[2])
redis.call('HSET', key, 'status', ARGV[4])
if ARGV[4] == 'running' then
  redis.call('HSET', key, 'started_at', ARGV[5], 'worker', ARGV[6])
else
  redis.call('HSET', key, 'finished_at', ARGV[5])
  if ARGV[6] ~= '' then redis.call('HSET', key, 'error', ARGV[6]) end
end
return status
"""

# ARGV: prefix, job id, tracklet id. 1: journalled; 0: the job is not running (or is being reaped).
_MARK_PENDING = """
local key = ARGV[1] .. 'job:' .. ARGV[2]
if redis.call('HGET', key, 'status') ~= 'running' or redis.call('HEXISTS', key, 'reaping') == 1 then return 0 end
redis.call('SADD', key .. ':pending', ARGV[3])
return 1
"""

# ARGV: prefix, job id, result JSON. 1: listed; 0: the job is not running (or is being reaped): not listed.
_ADD_QUERY_RESULT = """
local key = ARGV[1] .. 'job:' .. ARGV[2]
if redis.call('HGET', key, 'status') ~= 'running' or redis.call('HEXISTS', key, 'reaping') == 1 then return 0 end
redis.call('RPUSH', key .. ':results', ARGV[3])
return 1
"""

# ARGV: prefix, job id, tracklet id, result JSON ("" when the enroll did not commit).
# 1: the job lists the tracklet (now, or already, settled by a reaper); 0: it does not.
_SETTLE = """
local key = ARGV[1] .. 'job:' .. ARGV[2]
if redis.call('SREM', key .. ':pending', ARGV[3]) == 1 then
  if ARGV[4] == '' then return 0 end
  redis.call('RPUSH', key .. ':results', ARGV[4])
  redis.call('SADD', key .. ':listed', ARGV[3])
  return 1
end
return redis.call('SISMEMBER', key .. ':listed', ARGV[3])
"""

# ARGV: prefix, job id. 1: the caller may reap (the job is running); 0: not running.
_BEGIN_REAP = """
local key = ARGV[1] .. 'job:' .. ARGV[2]
if redis.call('HGET', key, 'status') ~= 'running' then return 0 end
redis.call('HSET', key, 'reaping', '1')
return 1
"""

_FIELDS = ("mode", "camera_id", "start_time", "top_k", "video_name", "video_bytes", "created_at", "started_at",
           "finished_at", "progress", "error", "warnings")  # fmt: skip


def _unavailable(method: Callable) -> Callable:
    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except redis.RedisError as error:
            raise StorageUnavailableError(
                f"The footage job store (Redis, REID_REDIS_URL) cannot be reached right now ({error})."
            ) from None

    return wrapper


class RedisJobStore:
    """The footage job table in Redis; thread-safe (redis-py's connection pool)."""

    def __init__(self, client: redis.Redis, prefix: str = PREFIX):
        self.redis = client
        self.prefix = prefix
        self._transition = client.register_script(_TRANSITION)
        self._mark_pending = client.register_script(_MARK_PENDING)
        self._add_query_result = client.register_script(_ADD_QUERY_RESULT)
        self._settle = client.register_script(_SETTLE)
        self._begin_reap = client.register_script(_BEGIN_REAP)

    def close(self) -> None:
        self.redis.close()

    def _key(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    # -- reads ---------------------------------------------------------------------------------------------
    def _load(self, job_ids: list[str]) -> list[Job | None]:
        pipeline = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            key = self._key(job_id)
            pipeline.hgetall(key)
            pipeline.lrange(f"{key}:results", 0, -1)
            pipeline.smembers(f"{key}:pending")
        answers = pipeline.execute()
        jobs: list[Job | None] = []
        for index, job_id in enumerate(job_ids):
            fields, results, pending = answers[3 * index: 3 * index + 3]
            if not fields:
                jobs.append(None)
                continue
            values = {name: json.loads(fields[name]) for name in _FIELDS if name in fields}
            items = [json.loads(item) for item in results]
            jobs.append(Job(
                id=job_id, status=JobStatus(fields["status"]), **values, pending=sorted(pending),
                enrolled=[item["payload"] for item in items if item["kind"] == "enrolled"],
                queries=[item["payload"] for item in items if item["kind"] == "query"],
            ))  # fmt: skip
        return jobs

    @_unavailable
    def get(self, job_id: str) -> Job | None:
        return self._load([job_id])[0]

    @_unavailable
    def list(self, status: JobStatus | None, offset: int, limit: int) -> tuple[list[Job], int]:
        """Newest first."""
        index = f"{self.prefix}status:{status.value}" if status else f"{self.prefix}jobs"
        total = self.redis.zcard(index)
        job_ids = self.redis.zrevrange(index, offset, offset + limit - 1) if offset < total else []
        return [job for job in self._load(job_ids) if job is not None], total

    @_unavailable
    def count_unfinished(self) -> int:
        return self.redis.zcard(f"{self.prefix}status:queued") + self.redis.zcard(f"{self.prefix}status:running")

    @_unavailable
    def count(self, status: JobStatus) -> int:
        return self.redis.zcard(f"{self.prefix}status:{status.value}")

    @_unavailable
    def ids_with_status(self, status: JobStatus) -> list[str]:
        """Oldest first."""
        return self.redis.zrange(f"{self.prefix}status:{status.value}", 0, -1)

    @_unavailable
    def cancel_requested(self, job_id: str) -> bool:
        return bool(self.redis.hexists(self._key(job_id), "cancel"))

    # -- writes --------------------------------------------------------------------------------------------
    @_unavailable
    def create(self, job: Job) -> None:
        seq = self.redis.incr(f"{self.prefix}seq")
        values = job.model_dump(mode="json", include=set(_FIELDS))
        pipeline = self.redis.pipeline(transaction=True)
        pipeline.hset(self._key(job.id), mapping={
            "status": job.status.value, "seq": seq, **{name: json.dumps(value) for name, value in values.items()},
        })  # fmt: skip
        pipeline.zadd(f"{self.prefix}jobs", {job.id: seq})
        pipeline.zadd(f"{self.prefix}status:{job.status.value}", {job.id: seq})
        pipeline.execute()

    def _change(self, job_id: str, allowed: tuple[JobStatus, ...], status: JobStatus, extra: str = "") -> bool:
        previous = self._transition(args=[self.prefix, job_id, ",".join(item.value for item in allowed),
                                          status.value, json.dumps(time.time()), extra])  # fmt: skip
        return previous is not None

    @_unavailable
    def start(self, job_id: str, worker: str = "") -> bool:
        """queued -> running; False when the job is no longer queued (cancelled meanwhile)."""
        return self._change(job_id, (JobStatus.queued,), JobStatus.running, json.dumps(worker))

    @_unavailable
    def update_progress(self, job_id: str, progress: JobProgress) -> None:
        key = self._key(job_id)
        if progress.frames_total is None:
            stored = self.redis.hget(key, "progress")
            if stored is not None:
                progress = progress.model_copy(update={"frames_total": json.loads(stored).get("frames_total")})
        self.redis.hset(key, "progress", progress.model_dump_json())

    @_unavailable
    def add_warning(self, job_id: str, warning: str) -> None:
        key = self._key(job_id)  # one writer: the worker running the job
        warnings = json.loads(self.redis.hget(key, "warnings") or "[]")
        self.redis.hset(key, "warnings", json.dumps([*warnings, warning]))

    @_unavailable
    def mark_pending(self, job_id: str, tracklet_id: str) -> None:
        """Journals an enroll about to happen; JobStopped (the job was declared lost) when the job is no longer
        running here."""
        from service.footage.runner import JobStopped
        from service.footage.work import LOST_REASON

        if not self._mark_pending(args=[self.prefix, job_id, tracklet_id]):
            raise JobStopped(LOST_REASON)

    @_unavailable
    def settle_pending(self, job_id: str, tracklet_id: str, record: dict[str, Any] | None) -> bool:
        """The journalled enroll ended: committed (``record``) or not (None). True when the job lists the
        tracklet; False when it does not (a reaper settled it as not committed: the caller withdraws it)."""
        payload = json.dumps({"kind": "enrolled", "payload": record}) if record is not None else ""
        return bool(self._settle(args=[self.prefix, job_id, tracklet_id, payload]))

    @_unavailable
    def add_query_result(self, job_id: str, result: dict[str, Any]) -> None:
        """Lists one searched tracklet; JobStopped (the job was declared lost) when the job is no longer running
        here, so a failed job's list stays what its error says."""
        from service.footage.runner import JobStopped
        from service.footage.work import LOST_REASON

        if not self._add_query_result(args=[self.prefix, job_id, json.dumps({"kind": "query", "payload": result})]):
            raise JobStopped(LOST_REASON)

    @_unavailable
    def finish(
        self, job_id: str, status: JobStatus, error: str | None = None, progress: JobProgress | None = None
    ) -> None:
        """Running/queued -> a final status (kept as is when the job already finished)."""
        assert status.finished
        self._change(job_id, (JobStatus.queued, JobStatus.running), status, json.dumps(error) if error else "")
        if progress is not None:
            self.update_progress(job_id, progress)

    @_unavailable
    def cancel_if_queued(self, job_id: str) -> bool:
        return self._change(job_id, (JobStatus.queued,), JobStatus.cancelled)

    @_unavailable
    def request_cancel(self, job_id: str) -> bool:
        """Asks the worker running the job to stop (it polls `cancel_requested`); False unless it is running."""
        key = self._key(job_id)
        self.redis.hset(key, "cancel", "1")
        return self.redis.hget(key, "status") == JobStatus.running.value

    @_unavailable
    def reap(self, job_id: str, reason: str, enrolled_record: Callable[[str], dict[str, Any] | None]) -> bool:
        """Fails a running job whose worker is gone, after settling its journal with the gallery
        (``enrolled_record(tracklet_id)``: the record, or None). ``reason`` is completed with what the job kept.
        Idempotent and safe to run from several processes at once; False when the job was not running."""
        if not self._begin_reap(args=[self.prefix, job_id]):
            return False
        for tracklet_id in sorted(self.redis.smembers(f"{self._key(job_id)}:pending")):
            self.settle_pending(job_id, tracklet_id, enrolled_record(tracklet_id))
        self.finish(job_id, JobStatus.failed, interrupted_error(self.get(job_id), reason))
        return True
