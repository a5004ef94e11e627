"""Persistent state of footage jobs: SQLite in the data directory (``jobs.sqlite3``), one row per job in
``footage_jobs`` plus its results in ``footage_job_results`` (one row per enrolled record or query result,
appended; so a job with thousands of tracklets never rewrites a growing list).

A job is written before the upload is acknowledged (202), and every change of its state commits with
``synchronous=FULL``, so what a client was told survives a crash. The life of a job:

    queued -> running -> done | failed | cancelled        (queued -> cancelled too)

After a restart, a job found ``running`` was interrupted: it becomes ``failed`` with the reason, and keeps
the list of what it had enrolled. ``queued`` jobs still have their video in the spool and run again.

Enrolls are journalled so that the job's list is exactly what the gallery holds: before a tracklet is
enrolled its id is written to the job's ``pending`` column; after the gallery commit it moves to the
``enrolled`` list. A crash between the two leaves the id in ``pending``, and recovery asks the gallery
whether that enroll committed (each tracklet enrolls in one gallery transaction, so it either did or not).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from service import sqlite_storage
from service.errors import StorageFullError, StorageUnavailableError

DATABASE_NAME = "jobs.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS footage_jobs (
    row_id INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    mode TEXT NOT NULL,
    camera_id TEXT NOT NULL,
    start_time REAL,
    top_k INTEGER NOT NULL,
    video_name TEXT NOT NULL,
    video_bytes INTEGER NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    frames_processed INTEGER NOT NULL DEFAULT 0,
    frames_total INTEGER,
    tracks INTEGER NOT NULL DEFAULT 0,
    tracklets INTEGER NOT NULL DEFAULT 0,
    fps REAL,
    error TEXT,
    warnings TEXT NOT NULL DEFAULT '[]',
    pending TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS footage_jobs_status ON footage_jobs(status);
CREATE TABLE IF NOT EXISTS footage_job_results (
    row_id INTEGER PRIMARY KEY,
    job_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS footage_job_results_job ON footage_job_results(job_id);
"""


class JobStatus(str, Enum):
    queued = "queued"
    running = "running"
    done = "done"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.done, JobStatus.failed, JobStatus.cancelled)


class JobMode(str, Enum):
    enroll = "enroll"
    query = "query"


class JobProgress(BaseModel):
    frames_processed: int = Field(0, description="Frames read and tracked so far.")
    frames_total: int | None = Field(
        None, description="Frames the video declares (its container's count; null when it does not say)."
    )
    tracks: int = Field(0, description="People tracks started so far.")
    tracklets: int = Field(0, description="Tracklets cut so far (enrolled, or searched in query mode).")
    fps: float | None = Field(None, description="Frames per second of the whole job so far (all stages).")


class Job(BaseModel):
    """One footage job as stored; `service.footage.schemas.JobOut` is what clients see."""

    id: str
    status: JobStatus
    mode: JobMode
    camera_id: str
    start_time: float | None = None
    top_k: int = 10
    video_name: str = ""
    video_bytes: int = 0
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    progress: JobProgress = Field(default_factory=JobProgress)
    error: str | None = None
    warnings: list[str] = Field(default_factory=list)
    pending: list[str] = Field(default_factory=list)
    enrolled: list[dict[str, Any]] = Field(default_factory=list)
    queries: list[dict[str, Any]] = Field(default_factory=list)


_COLUMNS = (
    "id, status, mode, camera_id, start_time, top_k, video_name, video_bytes, created_at, started_at, finished_at, "
    "frames_processed, frames_total, tracks, tracklets, fps, error, warnings, pending"
)


def _job_from_row(row: tuple, results: list[tuple[str, str]]) -> Job:
    (identifier, status, mode, camera_id, start_time, top_k, video_name, video_bytes, created_at, started_at,
     finished_at, frames_processed, frames_total, tracks, tracklets, fps, error, warnings, pending) = row  # fmt: skip
    return Job(
        id=identifier, status=JobStatus(status), mode=JobMode(mode), camera_id=camera_id, start_time=start_time,
        top_k=top_k, video_name=video_name, video_bytes=video_bytes, created_at=created_at, started_at=started_at,
        finished_at=finished_at,
        progress=JobProgress(frames_processed=frames_processed, frames_total=frames_total, tracks=tracks,
                             tracklets=tracklets, fps=fps),
        error=error, warnings=json.loads(warnings), pending=json.loads(pending),
        enrolled=[json.loads(payload) for kind, payload in results if kind == "enrolled"],
        queries=[json.loads(payload) for kind, payload in results if kind == "query"],
    )  # fmt: skip


def storage_error(error: sqlite3.Error) -> StorageFullError | StorageUnavailableError:
    return sqlite_storage.storage_error(
        error,
        full="The data directory's disk is full, so the footage job could not be recorded.",
        unavailable=f"The footage job table cannot be written right now ({error}).",
    )


def interrupted_error(job: Job, reason: str) -> str:
    """The error of a job failed because what ran it went away: ``reason``, then how far it got and what it
    kept."""
    if job.mode is JobMode.enroll:
        kept = f"the {len(job.enrolled)} tracklets it had enrolled are kept and listed"
    else:
        kept = f"the results of its {len(job.queries)} searched tracklets are kept"
    return (f"{reason} after {job.progress.frames_processed} frames; {kept}. Upload the footage again to process "
            "the rest.")


class JobStore:
    """The footage job table; thread-safe (one connection behind a lock, like the gallery's)."""

    def __init__(self, data_dir: Path):
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / DATABASE_NAME
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock, sqlite_storage.write_transaction(self._db, storage_error) as db:
            yield db

    # -- reads ---------------------------------------------------------------------------------------------
    def _results(self, job_id: str) -> list[tuple[str, str]]:
        return self._db.execute(
            "SELECT kind, payload FROM footage_job_results WHERE job_id = ? ORDER BY row_id", (job_id,)
        ).fetchall()

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM footage_jobs WHERE id = ?", (job_id,)).fetchone()
            return _job_from_row(row, self._results(job_id)) if row else None

    def list(self, status: JobStatus | None, offset: int, limit: int) -> tuple[list[Job], int]:
        """Newest first."""
        where, parameters = ("WHERE status = ?", (status.value,)) if status else ("", ())
        with self._lock:
            total = self._db.execute(f"SELECT COUNT(*) FROM footage_jobs {where}", parameters).fetchone()[0]
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM footage_jobs {where} ORDER BY row_id DESC LIMIT ? OFFSET ?",
                (*parameters, limit, offset),
            ).fetchall()
            return [_job_from_row(row, self._results(row[0])) for row in rows], total

    def count_unfinished(self) -> int:
        with self._lock:
            return self._db.execute(
                "SELECT COUNT(*) FROM footage_jobs WHERE status IN ('queued', 'running')"
            ).fetchone()[0]

    def ids_with_status(self, status: JobStatus) -> list[str]:
        """Oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT id FROM footage_jobs WHERE status = ? ORDER BY row_id", (status.value,))
            return [row[0] for row in rows]

    # -- writes --------------------------------------------------------------------------------------------
    def create(self, job: Job) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO footage_jobs(id, status, mode, camera_id, start_time, top_k, video_name, video_bytes, "
                "created_at, frames_total) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (job.id, job.status.value, job.mode.value, job.camera_id, job.start_time, job.top_k, job.video_name,
                 job.video_bytes, job.created_at, job.progress.frames_total),
            )  # fmt: skip

    def start(self, job_id: str) -> bool:
        """queued -> running; False when the job is no longer queued (cancelled meanwhile)."""
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE footage_jobs SET status = 'running', started_at = ? WHERE id = ? AND status = 'queued'",
                (time.time(), job_id),
            )
            return cursor.rowcount == 1

    def update_progress(self, job_id: str, progress: JobProgress) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE footage_jobs SET frames_processed = ?, frames_total = COALESCE(?, frames_total), tracks = ?, "
                "tracklets = ?, fps = ? WHERE id = ?",
                (progress.frames_processed, progress.frames_total, progress.tracks, progress.tracklets, progress.fps,
                 job_id),
            )  # fmt: skip

    def add_warning(self, job_id: str, warning: str) -> None:
        with self._transaction() as db:
            (warnings,) = db.execute("SELECT warnings FROM footage_jobs WHERE id = ?", (job_id,)).fetchone()
            db.execute("UPDATE footage_jobs SET warnings = ? WHERE id = ?",
                       (json.dumps([*json.loads(warnings), warning]), job_id))  # fmt: skip

    def _add_result(self, db: sqlite3.Connection, job_id: str, kind: str, payload: dict[str, Any]) -> None:
        db.execute("INSERT INTO footage_job_results(job_id, kind, payload) VALUES (?, ?, ?)",
                   (job_id, kind, json.dumps(payload)))  # fmt: skip

    def _append(self, db: sqlite3.Connection, job_id: str, column: str, item: Any) -> None:
        (text,) = db.execute(f"SELECT {column} FROM footage_jobs WHERE id = ?", (job_id,)).fetchone()
        db.execute(
            f"UPDATE footage_jobs SET {column} = ? WHERE id = ?", (json.dumps([*json.loads(text), item]), job_id)
        )

    def mark_pending(self, job_id: str, tracklet_id: str) -> None:
        """Journals an enroll about to happen (see the module docstring)."""
        with self._transaction() as db:
            self._append(db, job_id, "pending", tracklet_id)

    def settle_pending(self, job_id: str, tracklet_id: str, record: dict[str, Any] | None) -> bool:
        """The journalled enroll ended: committed (``record``) or not (None). True: the job lists the record
        (always here: one process owns the table; the Redis store may answer False, see there)."""
        with self._transaction() as db:
            (pending,) = db.execute("SELECT pending FROM footage_jobs WHERE id = ?", (job_id,)).fetchone()
            remaining = [identifier for identifier in json.loads(pending) if identifier != tracklet_id]
            db.execute("UPDATE footage_jobs SET pending = ? WHERE id = ?", (json.dumps(remaining), job_id))
            if record is not None:
                self._add_result(db, job_id, "enrolled", record)
        return True

    def add_query_result(self, job_id: str, result: dict[str, Any]) -> None:
        with self._transaction() as db:
            self._add_result(db, job_id, "query", result)

    def finish(
        self, job_id: str, status: JobStatus, error: str | None = None, progress: JobProgress | None = None
    ) -> None:
        """Running/queued -> a final status (kept as is when the job already finished)."""
        assert status.finished
        with self._transaction() as db:
            db.execute(
                "UPDATE footage_jobs SET status = ?, error = ?, finished_at = ? WHERE id = ? "
                "AND status IN ('queued', 'running')",
                (status.value, error, time.time(), job_id),
            )
        if progress is not None:
            self.update_progress(job_id, progress)

    def cancel_if_queued(self, job_id: str) -> bool:
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE footage_jobs SET status = 'cancelled', finished_at = ? WHERE id = ? AND status = 'queued'",
                (time.time(), job_id),
            )
            return cursor.rowcount == 1

    def recover(self, enrolled_record: Callable[[str], dict[str, Any] | None]) -> list[str]:
        """At start-up: every job left ``running`` becomes ``failed`` with the reason; its journalled enrolls
        are settled by asking the gallery (``enrolled_record(tracklet_id)``: the record, or None). Returns the
        ids of the jobs it failed."""
        interrupted = self.ids_with_status(JobStatus.running)
        for job_id in interrupted:
            job = self.get(job_id)
            for tracklet_id in job.pending:
                self.settle_pending(job_id, tracklet_id, enrolled_record(tracklet_id))
            self.finish(job_id, JobStatus.failed, interrupted_error(
                self.get(job_id), "The service stopped (restart or crash) while this job was running,"))
        return interrupted
