"""Tracklet thumbnails: one small JPEG per tracklet (its best crop for footage, the middle sampled frame
for uploads), kept in ``thumbnails/`` beside the gallery and served at GET /tracklets/{id}/thumbnail.

These are pictures of people. REID_STORE_THUMBNAILS=false keeps none (records then say has_thumbnail false).

Order of writes, so a record never points at a missing picture and no picture outlives its record for long:
- enroll: the JPEG is written (temporary file, fsync, rename) BEFORE the record commits with
  has_thumbnail=true. A crash between the two leaves a file without a record, never a record without its
  file; such orphans are deleted at start-up (`remove_orphans`).
- delete: the record is deleted first, then the file; a crash between leaves an orphan, deleted likewise.
- a failed enroll (full disk, a conflict) deletes the file it wrote unless a record of that id claims it;
  a replace that fails therefore leaves the new picture beside the old record (a rare, harmless mismatch).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import cv2
import numpy as np

from service.errors import StorageFullError, StorageUnavailableError

log = logging.getLogger(__name__)

#: Thumbnails are at most this tall (model crops are 256 px at most; small is enough to recognise a match).
MAX_HEIGHT = 128
JPEG_QUALITY = 85
FOLDER = "thumbnails"
SUFFIX = ".jpg"


def media_write_error(error: OSError, what: str) -> StorageFullError | StorageUnavailableError:
    """The service error for a failed media write (the disk, not the request): 507 when the disk is full, else
    503, both saying that nothing was half-written, like the gallery's own writes."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFullError(
            "The gallery's disk is full, so the tracklet was not stored (nothing was half-written). "
            "Searches still work; free space in the data directory and retry."
        )
    return StorageUnavailableError(
        f"The tracklet's {what} cannot be written right now ({error.strerror or error}), so the tracklet was not "
        "stored (nothing was half-written); retry later."
    )


def encode_thumbnail(image_rgb: np.ndarray) -> bytes:
    """A JPEG of an RGB uint8 image, scaled down to at most MAX_HEIGHT pixels tall."""
    height, width = image_rgb.shape[:2]
    if height > MAX_HEIGHT:
        width = max(1, round(width * MAX_HEIGHT / height))
        image_rgb = cv2.resize(image_rgb, (width, MAX_HEIGHT), interpolation=cv2.INTER_AREA)
    bgr = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
    ok, buffer = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ValueError("the thumbnail could not be encoded as JPEG")
    return buffer.tobytes()


class ThumbnailStore:
    """JPEG files named after the tracklet id, percent-encoded (so no id can name a path elsewhere)."""

    def __init__(self, data_dir: Path, enabled: bool = True):
        self.enabled = enabled
        self.folder = data_dir / FOLDER
        self.folder.mkdir(parents=True, exist_ok=True)

    def path(self, tracklet_id: str) -> Path:
        return self.folder / f"{quote(tracklet_id, safe='')}{SUFFIX}"

    def write(self, tracklet_id: str, image_rgb: np.ndarray) -> bool:
        """Stores the thumbnail durably; False (nothing written) when thumbnails are off."""
        if not self.enabled:
            return False
        data = encode_thumbnail(image_rgb)
        path = self.path(tracklet_id)
        temporary = path.with_suffix(".tmp")
        try:
            with temporary.open("wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except OSError as error:
            # The disk, not the request: 507 or 503 like the gallery's own writes, nothing left behind.
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise media_write_error(error, "thumbnail") from None
        return True

    def read(self, tracklet_id: str) -> bytes | None:
        try:
            return self.path(tracklet_id).read_bytes()
        except FileNotFoundError:
            return None

    def delete(self, tracklet_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(tracklet_id).unlink()

    def remove_orphans(self, has_thumbnail: Callable[[str], bool], older_than: float) -> int:
        """Deletes files written before ``older_than`` (epoch seconds: the start of this process, so no enroll
        in progress is touched) whose tracklet has no record claiming a thumbnail, and stray temporary files."""
        removed = 0
        for path in self.folder.iterdir():
            try:
                if path.stat().st_mtime >= older_than:
                    continue
                if path.suffix != SUFFIX or not has_thumbnail(unquote(path.name[: -len(SUFFIX)])):
                    path.unlink()
                    removed += 1
            except OSError:
                continue
        if removed:
            log.info("removed %d thumbnails without a record (left by a crash)", removed)
        return removed


def add_with_thumbnail(gallery: Any, thumbnails: ThumbnailStore, record: Any, embedding: np.ndarray,
                       image_rgb: np.ndarray | None, replace: bool = False) -> Any:
    """Enrolls ``record`` with its thumbnail in the documented order: file first, then the record (with
    has_thumbnail set) in one gallery transaction. Returns the stored record."""
    written = image_rgb is not None and thumbnails.write(record.id, image_rgb)
    try:
        return gallery.add(record.model_copy(update={"has_thumbnail": written}), embedding, replace)
    except BaseException:
        # Nothing was stored; the file stays only if a record of that id (a replaced one) still claims it.
        with contextlib.suppress(Exception):
            if written and gallery.get(record.id) is None:
                thumbnails.delete(record.id)
        raise
