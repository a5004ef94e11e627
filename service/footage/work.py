"""The body of one footage job: run the vision pipeline over the spooled video and enroll or search each
tracklet as it is cut, recording progress, results and the tracks in the job table and its folder.

Each tracklet goes through the same enroll path as an upload (one gallery transaction per tracklet, the
thumbnail file written before the record commits), journalled in the job row first, so a cancel, a
failure or a crash leaves whole tracklets only, every one of them listed by the job.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from service.errors import ServiceBusyError
from service.footage.jobs import Job, JobMode, JobProgress, JobStore
from service.footage.runner import JobControl, JobStopped
from service.media.backends import write_durably

log = logging.getLogger(__name__)

#: How often a running job's progress is written to the job table.
PROGRESS_INTERVAL_S = 1.0
TRACKS_FILE = "tracks.txt"
LOST_REASON = (
    "The worker running this job lost its hold on it (its heartbeat did not reach Redis in time) and the job was "
    "failed by another process; what it had enrolled is kept and listed."
)


def iso_time(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class FootageFolders:
    """Where footage lives on disk, under the data directory: ``footage-spool/`` (uploaded videos, deleted
    once their job finished) and ``footage-jobs/<id>/`` (the job's tracks, kept with the job)."""

    def __init__(self, data_dir: Path):
        self.spool = data_dir / "footage-spool"
        self.jobs = data_dir / "footage-jobs"
        self.spool.mkdir(parents=True, exist_ok=True)
        self.jobs.mkdir(parents=True, exist_ok=True)

    def video(self, job_id: str) -> Path:
        return self.spool / f"{job_id}.video"

    def tracks(self, job_id: str) -> Path:
        return self.jobs / job_id / TRACKS_FILE

    def save_tracks(self, job_id: str, text: str) -> None:
        write_text_atomically(self.tracks(job_id), text)

    def read_tracks(self, job_id: str) -> str | None:
        """The job's tracks (MOTChallenge text), or None when it saved none."""
        try:
            return self.tracks(job_id).read_text()
        except FileNotFoundError:
            return None

    # The spool as the job queue sees it: `put` by the replica that accepted the upload, `fetch` by the worker
    # that runs the job, `remove` once it ended. Every process of a deployment shares the data directory here.
    def put(self, job_id: str) -> None:
        """The video is already at `video(job_id)`, which every process sees."""

    def fetch(self, job_id: str) -> Path:
        return self.video(job_id)

    def remove(self, job_id: str) -> None:
        self.remove_video(job_id)

    def remove_video(self, job_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.video(job_id).unlink()

    def remove_orphan_videos(self, keep: set[str], older_than: float | None = None) -> int:
        """Deletes spooled videos of jobs that are not in ``keep`` (a crash mid-upload or mid-cleanup); with
        ``older_than``, only files last written before that time (other processes may be receiving uploads)."""
        removed = 0
        for path in self.spool.iterdir():
            with contextlib.suppress(OSError):
                if older_than is not None and path.stat().st_mtime >= older_than:
                    continue
            if path.name.removesuffix(".video") not in keep:
                with contextlib.suppress(OSError):
                    path.unlink()
                    removed += 1
        return removed


def write_text_atomically(path: Path, text: str) -> None:
    """Written to a temporary file and renamed, so a reader never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_durably(path, text.encode())


class FairEmbedder:
    """Embeds one footage clip at a time through the shared batcher, yielding to requests: it waits while
    the embedding queue is more than half full, so uploads always find room (503 is for them to decide)."""

    def __init__(self, batcher: Any, queue_size: int, should_stop: Callable[[], bool]):
        self.batcher = batcher
        self.room = max(1, queue_size // 2)
        self.should_stop = should_stop

    def __call__(self, clip: np.ndarray) -> np.ndarray:
        while True:
            if self.should_stop():
                raise JobStopped
            if self.batcher.queue_depth < self.room:
                try:
                    future = self.batcher.submit(clip)
                    break
                except ServiceBusyError:
                    pass
            time.sleep(0.01)
        return np.asarray(future.result(), dtype=np.float32)


class FootageJobBody:
    """Runs one job (a `service.footage.runner.JobBody`). ``enroll(record fields, embedding, thumbnail)``
    stores one tracklet through the service's enroll path and returns its record as a dict;
    ``search(embedding, top_k)`` returns the matches as dicts; ``withdraw(tracklet_id)`` deletes a tracklet this
    job enrolled after its journal entry was settled without it (a shared job store only: the job was declared
    lost while this worker was still running it, see `service.footage.redis_jobs`)."""

    def __init__(
        self,
        store: JobStore,
        folders: FootageFolders,
        settings: Any,
        card: Any,
        batcher: Any,
        enroll: Callable[..., dict[str, Any]],
        search: Callable[[np.ndarray, int], list[dict[str, Any]]],
        providers: list[str] | None = None,
        withdraw: Callable[[str], None] | None = None,
    ):
        self.providers = providers
        self.withdraw = withdraw
        self.store = store
        self.folders = folders
        self.settings = settings
        self.card = card
        self.batcher = batcher
        self.enroll = enroll
        self.search = search

    def __call__(self, job: Job, control: JobControl, video: Path | None = None) -> None:
        """Runs ``job`` over ``video`` (default: its spooled file under the data directory)."""
        from service.footage.pipeline import format_mot, run_footage  # the vision half

        progress = JobProgress(frames_total=job.progress.frames_total)
        last_saved = [0.0]

        def on_progress(update: Any) -> None:
            progress.frames_processed = update.frames_processed
            progress.frames_total = update.frames_total or progress.frames_total
            progress.tracks = update.tracks
            progress.fps = round(update.fps, 2)
            if time.monotonic() - last_saved[0] >= PROGRESS_INTERVAL_S:
                last_saved[0] = time.monotonic()
                self.store.update_progress(job.id, progress)

        def absolute(seconds: float) -> float:
            return (job.start_time or 0.0) + seconds

        def on_tracklet(tracklet: Any) -> None:
            # Each clip of the card's test-time mode embedded and averaged, exactly as an upload is.
            test_time = self.card.test_time
            clips = tracklet.clips(self.card.num_frames, test_time.mode, test_time.max_clips)
            try:
                embedding = np.mean([embed(clip) for clip in clips], axis=0, dtype=np.float64).astype(np.float32)
            except JobStopped:
                # Cancelled while this tracklet waited for the embedder: it is dropped, and the pipeline stops
                # at its next frame (it asks the same should_stop), so its tracks so far are still saved.
                return
            # Kept for the web page (REID_STORE_FRAMES): the T chunk centres, as an upload's middle clip.
            clip = tracklet.clip(self.card.num_frames)
            progress.tracklets += 1
            provenance = {
                "start_time": absolute(tracklet.start_s), "end_time": absolute(tracklet.end_s),
                "frame_start": tracklet.frame_start, "frame_end": tracklet.frame_end,
            }  # fmt: skip
            if job.mode is JobMode.enroll:
                tracklet_id = f"{job.id}-{progress.tracklets:05d}"
                self.store.mark_pending(job.id, tracklet_id)
                record = None
                try:
                    record = self.enroll(
                        tracklet_id=tracklet_id, camera_id=job.camera_id, job_id=job.id, track_id=tracklet.track_id,
                        num_frames=tracklet.num_frames, embedding=embedding, thumbnail=tracklet.best_crop, frames=clip,
                        **provenance,
                    )  # fmt: skip
                finally:
                    listed = self.store.settle_pending(job.id, tracklet_id, record)
                if record is not None and listed is False:
                    # The job was declared lost meanwhile and its journal settled without this tracklet.
                    if self.withdraw is not None:
                        self.withdraw(tracklet_id)
                    raise JobStopped(LOST_REASON)
            else:
                matches = self.search(embedding, job.top_k)
                self.store.add_query_result(job.id, {
                    "track_id": tracklet.track_id, **provenance, "num_frames": tracklet.num_frames,
                    "matches": matches,
                })  # fmt: skip
            self.store.update_progress(job.id, progress)

        embed = FairEmbedder(self.batcher, self.settings.queue_size, control.should_stop)
        summary = run_footage(
            video or self.folders.video(job.id), on_tracklet=on_tracklet, settings=self.settings, card=self.card,
            camera_id=job.camera_id, providers=self.providers, on_progress=on_progress,
            should_stop=control.should_stop,
        )  # fmt: skip
        self.folders.save_tracks(job.id, format_mot(summary.tracks))
        progress.frames_processed = summary.frames_processed
        progress.frames_total = summary.frames_total or progress.frames_total
        progress.tracks = len(summary.tracks)
        elapsed = summary.seconds.get("total", 0.0)
        progress.fps = round(summary.frames_processed / elapsed, 2) if elapsed > 0 else None
        self.store.update_progress(job.id, progress)
        if summary.truncated:
            self.store.add_warning(
                job.id,
                f"The video is truncated or damaged: it stopped decoding after {summary.frames_processed} frames "
                f"of the {summary.frames_total} its container announces; the frames that decoded were processed.",
            )
        if summary.stopped or control.should_stop():
            raise JobStopped
