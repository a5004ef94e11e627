"""Every picture the service keeps of a tracklet, in one place (a later media-store interface with an S3
backend replaces this module only). Layout under REID_DATA_DIR, file and folder names the percent-encoded
tracklet id (so no id can name a path elsewhere):

    thumbnails/<id>.jpg       one small JPEG (`service.thumbnails`; REID_STORE_THUMBNAILS)
    frames/<id>/<i>.jpg       the T frames the model embedded, at the model's input size (REID_STORE_FRAMES)
    attention/<id>/<g>.png    granularity g's attention over those frames, rendered on first request (a cache)

These are pictures of people: REID_STORE_THUMBNAILS=false and REID_STORE_FRAMES=false keep none of them.
Writes follow `service.thumbnails`' order: files first (temporary name, fsync, rename), then the record; on
delete the record first, then the files; files no record claims (a crash between) are swept at start-up.

Attention overlays are rendered from the stored frames on request rather than at enroll time: an enroll
then costs one JPEG per frame and nothing more, and an overlay is computed once per tracklet and
granularity, when someone looks (bench/ui_media.md measures both).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote, unquote

import cv2
import numpy as np

from service.thumbnails import ThumbnailStore, add_with_thumbnail, media_write_error

log = logging.getLogger(__name__)

FRAMES_FOLDER = "frames"
ATTENTION_FOLDER = "attention"
FRAME_JPEG_QUALITY = 90


def _write_durably(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


class MediaStore(ThumbnailStore):
    """Thumbnails (inherited), sampled frames and cached attention overlays of each tracklet."""

    def __init__(self, data_dir: Path, store_thumbnails: bool = True, store_frames: bool = True):
        super().__init__(data_dir, store_thumbnails)
        self.store_frames = store_frames
        self.frames_root = data_dir / FRAMES_FOLDER
        self.attention_root = data_dir / ATTENTION_FOLDER
        self.frames_root.mkdir(parents=True, exist_ok=True)
        self.attention_root.mkdir(parents=True, exist_ok=True)

    def _frames_dir(self, tracklet_id: str) -> Path:
        return self.frames_root / quote(tracklet_id, safe="")

    def _attention_dir(self, tracklet_id: str) -> Path:
        return self.attention_root / quote(tracklet_id, safe="")

    # -- frames ----------------------------------------------------------------------------------------------
    def write_frames(self, tracklet_id: str, frames_rgb: np.ndarray) -> int:
        """Stores the (T, H, W, 3) RGB frames as JPEGs, replacing any earlier ones (and their overlays);
        the number stored (0 when frames are off)."""
        if not self.store_frames:
            return 0
        folder = self._frames_dir(tracklet_id)
        encoded = []
        for frame in np.asarray(frames_rgb):
            ok, buffer = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR),
                                      [cv2.IMWRITE_JPEG_QUALITY, FRAME_JPEG_QUALITY])  # fmt: skip
            if not ok:
                raise ValueError("a frame could not be encoded as JPEG")
            encoded.append(buffer.tobytes())
        try:
            self._remove_tree(self._attention_dir(tracklet_id))
            self._remove_tree(folder)
            folder.mkdir(parents=True)
            for index, data in enumerate(encoded):
                _write_durably(folder / f"{index}.jpg", data)
        except OSError as error:
            # The disk, not the request: 507 or 503 like the gallery's own writes, nothing left behind.
            self._remove_tree(folder)
            raise media_write_error(error, "frames") from None
        return len(encoded)

    def frame_count(self, tracklet_id: str) -> int:
        folder = self._frames_dir(tracklet_id)
        count = 0
        while (folder / f"{count}.jpg").is_file():
            count += 1
        return count

    def read_frame(self, tracklet_id: str, index: int) -> bytes | None:
        try:
            return (self._frames_dir(tracklet_id) / f"{int(index)}.jpg").read_bytes()
        except FileNotFoundError:
            return None

    def load_frames(self, tracklet_id: str) -> np.ndarray | None:
        """The stored frames decoded back to (T, H, W, 3) uint8 RGB; None when none are kept."""
        count = self.frame_count(tracklet_id)
        if not count:
            return None
        frames = []
        for index in range(count):
            image = cv2.imread(str(self._frames_dir(tracklet_id) / f"{index}.jpg"), cv2.IMREAD_COLOR)
            if image is None:
                return None
            frames.append(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
        return np.stack(frames)

    # -- attention overlays (a cache of renderings) ----------------------------------------------------------
    def read_attention(self, tracklet_id: str, granularity: int) -> bytes | None:
        try:
            return (self._attention_dir(tracklet_id) / f"{int(granularity)}.png").read_bytes()
        except FileNotFoundError:
            return None

    def write_attention(self, tracklet_id: str, granularity: int, png: bytes) -> None:
        folder = self._attention_dir(tracklet_id)
        folder.mkdir(parents=True, exist_ok=True)
        _write_durably(folder / f"{int(granularity)}.png", png)

    # -- every kind ------------------------------------------------------------------------------------------
    def delete(self, tracklet_id: str) -> None:
        """Removes all of the tracklet's media (after its record)."""
        super().delete(tracklet_id)
        self._remove_tree(self._frames_dir(tracklet_id))
        self._remove_tree(self._attention_dir(tracklet_id))

    def remove_orphans(self, has_thumbnail: Callable[[str], bool], older_than: float,
                       has_record: Callable[[str], bool] | None = None) -> int:
        """Thumbnails as `ThumbnailStore.remove_orphans`; frame and overlay folders older than ``older_than``
        whose tracklet has no record (``has_record``)."""
        removed = super().remove_orphans(has_thumbnail, older_than)
        if has_record is None:
            return removed
        for root in (self.frames_root, self.attention_root):
            for folder in root.iterdir():
                try:
                    if folder.stat().st_mtime < older_than and not has_record(unquote(folder.name)):
                        self._remove_tree(folder)
                        removed += 1
                except OSError:
                    continue
        return removed

    @staticmethod
    def _remove_tree(folder: Path) -> None:
        with contextlib.suppress(OSError):
            shutil.rmtree(folder)


def encode_png(image_rgb: np.ndarray) -> bytes:
    ok, buffer = cv2.imencode(".png", cv2.cvtColor(np.asarray(image_rgb), cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("the overlay could not be encoded as PNG")
    return buffer.tobytes()


def add_with_media(gallery, media: MediaStore, record, embedding: np.ndarray, thumbnail_rgb: np.ndarray | None,
                   frames_rgb: np.ndarray | None, replace: bool = False):
    """Enrolls ``record`` after writing its frames and thumbnail (`service.thumbnails.add_with_thumbnail`).
    When anything fails and no record of that id exists, every file written for it is removed."""
    try:
        if frames_rgb is not None:
            media.write_frames(record.id, frames_rgb)
        return add_with_thumbnail(gallery, media, record, embedding, thumbnail_rgb, replace)
    except BaseException:
        with contextlib.suppress(Exception):
            if gallery.get(record.id) is None:
                media.delete(record.id)
        raise
