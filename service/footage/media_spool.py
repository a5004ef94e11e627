"""Footage files through the shared media store, for REID_JOB_QUEUE=redis with REID_MEDIA_BACKEND=s3: the
replica that accepts an upload and the worker that runs its job may be on different hosts.

- ``put`` (the accepting replica, after the upload streamed to its spool folder): the video goes to the store
  (footage/<job>/video) and the local copy is removed.
- ``fetch`` (the worker): the video comes back into the worker's own spool folder.
- ``remove`` (once the job ended): the video, here and in the store. The job's tracks stay.
- tracks: written by the worker to the store (footage/<job>/tracks.txt, through a local file it then removes);
  read from the store by whichever replica answers GET /jobs/{id}/tracks.
- orphans (a crash between the upload and the job, or a store that failed at ``remove``): videos of jobs that
  are not unfinished, older than the process less the shared store's grace, are removed at start-up.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from service.errors import NotFoundError, ServiceError
from service.footage.work import TRACKS_FILE, FootageFolders, write_text_atomically
from service.media import MediaStore
from service.media.store import FOOTAGE, FOOTAGE_VIDEO, SHARED_SWEEP_GRACE_S

log = logging.getLogger(__name__)


class MediaFootageFolders(FootageFolders):
    """`FootageFolders` whose spool and tracks are shared through ``media`` (see the module docstring)."""

    def __init__(self, data_dir: Path, media: MediaStore):
        super().__init__(data_dir)
        self.media = media

    def put(self, job_id: str) -> None:
        self.media.put_footage(job_id, self.video(job_id))
        self.remove_video(job_id)  # the worker fetches it from the store

    def fetch(self, job_id: str) -> Path:
        path = self.video(job_id)
        if not path.is_file() and not self.media.fetch_footage(job_id, path):
            raise NotFoundError(f"The video of job {job_id} is not in the media store ({self.media.describe()}).")
        return path

    def remove(self, job_id: str) -> None:
        self.remove_video(job_id)
        try:
            self.media.backend.delete(self.media.footage_key(job_id))
        except ServiceError as error:
            log.warning("the video of job %s stays until a start-up sweep: %s", job_id, error.message)

    def save_tracks(self, job_id: str, text: str) -> None:
        """Into the store only: the local file is a step of the upload (a worker keeps nothing of a job)."""
        path = self.tracks(job_id)
        write_text_atomically(path, text)
        try:
            self.media.put_footage(job_id, path, name=TRACKS_FILE)
        finally:
            with contextlib.suppress(OSError):
                path.unlink()
                path.parent.rmdir()

    def read_tracks(self, job_id: str) -> str | None:
        data = self.media.backend.get(self.media.footage_key(job_id, TRACKS_FILE))
        return None if data is None else data.decode()

    def remove_orphan_videos(self, keep: set[str], older_than: float | None = None) -> int:
        removed = super().remove_orphan_videos(keep, older_than)
        if older_than is None:
            return removed
        with contextlib.suppress(ServiceError):
            for key, modified in list(self.media.backend.list(f"{FOOTAGE}/")):
                parts = key.split("/")
                if (len(parts) == 3 and parts[2] == FOOTAGE_VIDEO and modified < older_than - SHARED_SWEEP_GRACE_S
                        and parts[1] not in keep):  # fmt: skip
                    self.media.backend.delete(key)
                    removed += 1
        return removed
