"""The footage side of the service as one object: the job table, the spool and job folders, and the worker
pool, opened by the lifespan beside the gallery and closed before it."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from service.decoding.video import video_container
from service.errors import ServiceError, StartupError
from service.footage.jobs import JobStatus, JobStore
from service.footage.reader import probe_footage
from service.footage.runner import FootageJobRunner
from service.footage.work import FootageFolders, FootageJobBody
from service.gallery import TrackletRecord
from service.gallery.base import from_epoch_seconds
from service.media import LocalMediaBackend

log = logging.getLogger(__name__)


class FootageService:
    """Args:
    settings: the service settings (data_dir, footage_* limits, job_queue).
    card: the model card (input size and T for the crops).
    batcher: the shared embedding batcher.
    enroll: stores one footage tracklet through the enroll path; returns its record as a dict.
    search: (embedding, top_k) -> matches as dicts.
    enrolled_record: tracklet id -> its record as a dict, or None (recovery asks the gallery).
    withdraw: deletes one tracklet and its media (REID_JOB_QUEUE=redis: see `FootageJobBody`).
    media: the media store; with REID_JOB_QUEUE=redis on a shared one (s3), spooled videos and tracks go through
    it (`service.footage.media_spool`), so a worker on any host reads the upload.

    REID_JOB_QUEUE=local: the job table is SQLite in the data directory and `runner` runs the jobs on threads of
    this process. redis: the table is in Redis, `runner` enqueues the jobs for `python -m service.worker`
    processes (`service.footage.queue`), and `body` is what such a worker runs.
    """

    def __init__(
        self,
        settings: Any,
        card: Any,
        batcher: Any,
        enroll: Callable[..., dict[str, Any]],
        search: Callable[[np.ndarray, int], list[dict[str, Any]]],
        enrolled_record: Callable[[str], dict[str, Any] | None],
        providers: list[str] | None = None,
        withdraw: Callable[[str], None] | None = None,
        media: Any = None,
    ):
        self.settings = settings
        # (A local backend is `shared` under the Redis queue too, by the processes of one host: they share the
        # data directory, where the spool already is.)
        if settings.job_queue == "redis" and media is not None and not isinstance(media.backend, LocalMediaBackend):
            # Workers on other hosts: uploads and tracks go through the shared media store (REID_MEDIA_BACKEND).
            from service.footage.media_spool import MediaFootageFolders

            self.folders = MediaFootageFolders(settings.data_dir, media)
        else:
            self.folders = FootageFolders(settings.data_dir)
        #: Where uploads wait for their job (`put` on upload, `fetch` in the worker, `remove` at the end).
        self.spool = self.folders
        if settings.job_queue == "redis":
            self._open_redis(enrolled_record)
        else:
            self._open_local(enrolled_record)
        self.body = FootageJobBody(
            self.store, self.folders, settings, card, batcher, enroll, search, providers, withdraw
        )
        if settings.job_queue != "redis":
            self.runner = FootageJobRunner(
                self.store, self.body, settings.footage_workers, settings.footage_queue_size,
                on_finished=self.spool.remove,
            )  # fmt: skip
        self.runner.start()

    def _open_local(self, enrolled_record: Callable[[str], dict[str, Any] | None]) -> None:
        self.store = JobStore(self.settings.data_dir)
        interrupted = self.store.recover(enrolled_record)
        if interrupted:
            log.warning(
                "%d footage jobs were interrupted by the last stop and are marked failed: %s",
                len(interrupted),
                ", ".join(interrupted),
            )
        queued = set(self.store.ids_with_status(JobStatus.queued))
        self.folders.remove_orphan_videos(keep=queued)
        if queued:
            log.info("%d queued footage jobs resume", len(queued))

    def _open_redis(self, enrolled_record: Callable[[str], dict[str, Any] | None]) -> None:
        from service.footage.media_spool import MediaFootageFolders
        from service.footage.queue import Reaper, RedisJobRunner, footage_queue, redis_client
        from service.footage.redis_jobs import RedisJobStore
        from service.media.store import SHARED_SWEEP_GRACE_S

        settings = self.settings
        if settings.gallery_backend != "milvus" or settings.milvus_uri.endswith(".db"):
            raise StartupError(
                "REID_JOB_QUEUE=redis: footage workers enroll from other processes, so the gallery must be one they "
                "share: REID_GALLERY_BACKEND=milvus with a Milvus server address in REID_MILVUS_URI (not a Milvus "
                "Lite .db file)"
            )
        started = time.time()
        try:
            client = redis_client(settings.redis_url)
        except ValueError as error:  # not a URL redis-py reads (the message names no password)
            raise StartupError(
                f"REID_REDIS_URL is not a Redis URL (redis://[:password@]host:port/db): {error}"
            ) from None
        self.store = RedisJobStore(client)
        try:
            unfinished = {*self.store.ids_with_status(JobStatus.queued), *self.store.ids_with_status(JobStatus.running)}
        except ServiceError as error:
            raise StartupError(f"REID_JOB_QUEUE=redis: {error.message}") from None
        # Other processes may be receiving uploads into the shared spool: only files older than this process,
        # and, where they share this data directory's spool (local media), older by the shared stores' grace: a
        # replica records the job only after the upload is whole and probed.
        if not isinstance(self.folders, MediaFootageFolders):
            started -= SHARED_SWEEP_GRACE_S
        self.folders.remove_orphan_videos(keep=unfinished, older_than=started)
        queue = footage_queue(settings.redis_url)
        reaper = Reaper(self.store, queue, settings.job_heartbeat_s, enrolled_record, self.spool.remove)
        self.runner = RedisJobRunner(self.store, queue, settings.footage_queue_size, reaper, self.spool.remove)

    def read_tracks(self, job_id: str) -> str | None:
        """A finished job's tracks as MOTChallenge text (None when it saved none)."""
        return self.folders.read_tracks(job_id)

    def probe(self, path: Path, name: str) -> Any:
        """The container's frame size, rate and count, read before decoding: InvalidMediaError (422) when it
        is not a video, LimitExceededError (413) when its frames are over REID_MAX_FRAME_DIMENSION."""
        try:
            with path.open("rb") as file:
                # Only real containers reach FFmpeg (no playlists, image sequences or raw streams).
                video_container(file.read(4096))
            return probe_footage(path, self.settings.max_frame_dimension)
        except ServiceError as error:
            # Messages name the upload as the client called it, not the spool file.
            message = error.message.replace(f"'{path.name}'", f"'{name}'")
            error.message = message if f"'{name}'" in message else f"'{name}': {message}"
            error.args = (error.message,)
            raise

    def close(self) -> None:
        self.runner.stop()
        self.store.close()


def open_footage(settings: Any, embedder: Any, batcher: Any, gallery: Any, media: Any) -> FootageService:
    """The footage service over the loaded model, batcher, gallery and media store."""
    # Imported here: the pipeline module imports the service state, which holds this footage service.
    from service.pipeline import delete_record, store_record

    card = embedder.card

    def enroll(
        *,
        tracklet_id: str,
        camera_id: str,
        job_id: str,
        track_id: int,
        num_frames: int,
        embedding: np.ndarray,
        thumbnail: np.ndarray,
        frames: np.ndarray | None,
        start_time: float,
        end_time: float,
        frame_start: int,
        frame_end: int,
    ) -> dict[str, Any]:
        record = TrackletRecord(
            id=tracklet_id, camera_id=camera_id, metadata={"track_id": track_id}, frames_decoded=num_frames,
            frames_used=min(num_frames, card.num_frames), start_time=from_epoch_seconds(start_time),
            end_time=from_epoch_seconds(end_time), job_id=job_id, frame_start=frame_start, frame_end=frame_end,
        )  # fmt: skip
        return store_record(gallery, record, embedding, False, media, thumbnail, frames).model_dump(mode="json")

    def search(embedding: np.ndarray, top_k: int) -> list[dict[str, Any]]:
        (matches,) = gallery.search(np.asarray(embedding, np.float32).reshape(1, -1), top_k)
        return [
            {"rank": rank, "distance": match.distance,
             **match.record.model_dump(mode="json", include={"id", "person_id", "camera_id", "start_time", "end_time",
                                                             "job_id", "metadata"})}
            for rank, match in enumerate(matches, start=1)
        ]  # fmt: skip

    def enrolled_record(tracklet_id: str) -> dict[str, Any] | None:
        record = gallery.get(tracklet_id)
        return record.model_dump(mode="json") if record is not None else None

    def withdraw(tracklet_id: str) -> None:
        delete_record(gallery, media, tracklet_id)

    return FootageService(settings, card, batcher, enroll, search, enrolled_record, providers=embedder.providers,
                          withdraw=withdraw, media=media)
