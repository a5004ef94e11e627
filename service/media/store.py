"""`MediaStore`: every picture the service keeps of a tracklet, and the footage it spools, on a `MediaBackend`
(the layout and the order of the writes are in `service.media`'s docstring)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import cv2
import numpy as np

from service.errors import StorageUnavailableError
from service.media.backends import TEMPORARY_SUFFIX, LocalMediaBackend, MediaBackend

log = logging.getLogger(__name__)

THUMBNAILS = "thumbnails"
FRAMES = "frames"
ATTENTION = "attention"
FOOTAGE = "footage"
#: Thumbnails are at most this tall (model crops are 256 px at most; small is enough to recognise a match).
MAX_HEIGHT = 128
JPEG_QUALITY = 85
FRAME_JPEG_QUALITY = 90
#: The spooled video's name under footage/<job id>/.
FOOTAGE_VIDEO = "video"
#: On a shared store (S3) other replicas may be between their media write and their record write when this
#: process starts: the orphan sweep only removes objects this much older than its start. An enroll's store
#: step takes at most a few storage timeouts; an hour also covers clocks that disagree by minutes.
SHARED_SWEEP_GRACE_S = 3600.0


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


def encode_png(image_rgb: np.ndarray) -> bytes:
    ok, buffer = cv2.imencode(".png", cv2.cvtColor(np.asarray(image_rgb), cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("the overlay could not be encoded as PNG")
    return buffer.tobytes()


def key_name(identifier: str) -> str:
    """An id as one path segment: percent-encoded, so no id can name a key (or a path) elsewhere."""
    name = quote(identifier, safe="")
    return name.replace(".", "%2E") if name in (".", "..") else name


class MediaStore:
    """Thumbnails, sampled frames and cached attention overlays of each tracklet, and spooled footage.

    ``backend`` is a `MediaBackend`, or a directory for the local one. REID_STORE_THUMBNAILS=false and
    REID_STORE_FRAMES=false (``store_thumbnails``, ``store_frames``) keep no pictures of people."""

    def __init__(self, backend: MediaBackend | Path | str, store_thumbnails: bool = True, store_frames: bool = True):
        self.backend: MediaBackend = LocalMediaBackend(Path(backend)) if isinstance(backend, (str, Path)) else backend
        self.enabled = store_thumbnails
        self.store_frames = store_frames
        if isinstance(self.backend, LocalMediaBackend):  # today's folders, there from the start
            for folder in (THUMBNAILS, FRAMES, ATTENTION):
                (self.backend.root / folder).mkdir(exist_ok=True)

    # -- keys ------------------------------------------------------------------------------------------------
    @staticmethod
    def thumbnail_key(tracklet_id: str) -> str:
        return f"{THUMBNAILS}/{key_name(tracklet_id)}.jpg"

    @staticmethod
    def frames_prefix(tracklet_id: str) -> str:
        return f"{FRAMES}/{key_name(tracklet_id)}/"

    @staticmethod
    def attention_prefix(tracklet_id: str) -> str:
        return f"{ATTENTION}/{key_name(tracklet_id)}/"

    @staticmethod
    def footage_key(job_id: str, name: str = FOOTAGE_VIDEO) -> str:
        return f"{FOOTAGE}/{key_name(job_id)}/{key_name(name)}"

    def path(self, tracklet_id: str) -> Path:
        """The thumbnail's file (the local backend only)."""
        if not isinstance(self.backend, LocalMediaBackend):
            raise TypeError("only the local media backend keeps files")
        return self.backend.path(self.thumbnail_key(tracklet_id))

    # -- thumbnails ------------------------------------------------------------------------------------------
    def write(self, tracklet_id: str, image_rgb: np.ndarray) -> bool:
        """Stores the thumbnail durably; False (nothing written) when thumbnails are off."""
        return self.write_media(tracklet_id, image_rgb, None)[0]

    def read(self, tracklet_id: str) -> bytes | None:
        return self.backend.get(self.thumbnail_key(tracklet_id))

    # -- frames ----------------------------------------------------------------------------------------------
    def write_frames(self, tracklet_id: str, frames_rgb: np.ndarray) -> int:
        """Stores the (T, H, W, 3) RGB frames as JPEGs, replacing any earlier ones (and their overlays);
        the number stored (0 when frames are off)."""
        return self.write_media(tracklet_id, None, frames_rgb)[1]

    def write_media(self, tracklet_id: str, thumbnail_rgb: np.ndarray | None,
                    frames_rgb: np.ndarray | None) -> tuple[bool, int]:
        """Stores a tracklet's thumbnail and frames (either may be None; each only when kept), the frames
        replacing any earlier ones and their overlays; (thumbnail stored, frames stored).

        The new pictures are written over the old keys first, and only then are the old frames beyond the new
        count and the overlays (rendered from the old frames) removed: a replace that fails mid-way (507 / 503,
        the storage, not the request) leaves the old record a whole set of pictures (some perhaps already the
        new ones), never none. What a failed first enroll wrote no record claims: `add_with_media` removes
        it, or the start-up sweep when the store went away."""
        items: list[tuple[str, bytes]] = []
        frames_count = 0
        if frames_rgb is not None and self.store_frames:
            prefix = self.frames_prefix(tracklet_id)
            for index, frame in enumerate(np.asarray(frames_rgb)):
                ok, buffer = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR),
                                          [cv2.IMWRITE_JPEG_QUALITY, FRAME_JPEG_QUALITY])  # fmt: skip
                if not ok:
                    raise ValueError("a frame could not be encoded as JPEG")
                items.append((f"{prefix}{index}.jpg", buffer.tobytes()))
            frames_count = len(items)
        thumbnail = thumbnail_rgb is not None and self.enabled
        if thumbnail:
            items.append((self.thumbnail_key(tracklet_id), encode_thumbnail(thumbnail_rgb)))
        if not items:
            return False, 0
        self.backend.put_many(items)
        if frames_count:
            written = {key for key, _ in items}
            prefix = self.frames_prefix(tracklet_id)
            for key in [key for key, _ in self.backend.list(prefix) if key not in written]:
                self.backend.delete(key)  # frames of an earlier, longer set
            self.backend.delete_prefix(self.attention_prefix(tracklet_id))
        return thumbnail, frames_count

    def frame_count(self, tracklet_id: str) -> int:
        prefix = self.frames_prefix(tracklet_id)
        indices = set()
        for key, _ in self.backend.list(prefix):
            name = key[len(prefix):]
            if name.endswith(".jpg") and name[:-4].isdigit():
                indices.add(int(name[:-4]))
        count = 0
        while count in indices:
            count += 1
        return count

    def read_frame(self, tracklet_id: str, index: int) -> bytes | None:
        return self.backend.get(f"{self.frames_prefix(tracklet_id)}{int(index)}.jpg")

    def load_frames(self, tracklet_id: str) -> np.ndarray | None:
        """The stored frames decoded back to (T, H, W, 3) uint8 RGB; None when none are kept."""
        count = self.frame_count(tracklet_id)
        if not count:
            return None
        frames = []
        for index in range(count):
            data = self.read_frame(tracklet_id, index)
            image = None if data is None else cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            if image is None:
                return None
            frames.append(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
        return np.stack(frames)

    # -- attention overlays (a cache of renderings) ----------------------------------------------------------
    def read_attention(self, tracklet_id: str, granularity: int) -> bytes | None:
        return self.backend.get(f"{self.attention_prefix(tracklet_id)}{int(granularity)}.png")

    def write_attention(self, tracklet_id: str, granularity: int, png: bytes) -> None:
        """Caches a rendering; a store that refuses it costs a rendering next time, not this answer."""
        try:
            self.backend.put(f"{self.attention_prefix(tracklet_id)}{int(granularity)}.png", png)
        except StorageUnavailableError as error:
            log.warning("attention overlay of %s not cached: %s", tracklet_id, error.message)

    # -- every kind ------------------------------------------------------------------------------------------
    def delete(self, tracklet_id: str) -> None:
        """Removes all of the tracklet's media (after its record)."""
        self.backend.delete(self.thumbnail_key(tracklet_id))
        self.backend.delete_prefix(self.frames_prefix(tracklet_id))
        self.backend.delete_prefix(self.attention_prefix(tracklet_id))

    def remove_orphans(self, has_thumbnail: Callable[[str], bool], older_than: float,
                       has_record: Callable[[str], bool] | None = None) -> int:
        """Removes media no record claims: thumbnails whose tracklet has no record saying has_thumbnail, and
        (with ``has_record``) frame and overlay sets whose tracklet has no record, and stray temporary files.
        Only media last written before ``older_than`` (epoch seconds: the start of this process, so no enroll
        in progress here is touched), less SHARED_SWEEP_GRACE_S on a shared store (enrolls in progress on
        other replicas). Returns how many thumbnails and sets were removed."""
        if self.backend.shared:
            older_than -= SHARED_SWEEP_GRACE_S
        removed = 0
        try:
            for key, modified in list(self.backend.list(f"{THUMBNAILS}/")):
                name = key[len(THUMBNAILS) + 1:]
                if modified >= older_than:
                    continue
                if "/" in name or not name.endswith(".jpg") or not has_thumbnail(unquote(name[:-4])):
                    self.backend.delete(key)
                    removed += 1
            if has_record is not None:
                for folder in (FRAMES, ATTENTION):
                    newest: dict[str, float] = {}
                    for key, modified in list(self.backend.list(f"{folder}/")):
                        name = key[len(folder) + 1:].split("/", 1)[0]
                        if key.endswith(TEMPORARY_SUFFIX) and modified < older_than:
                            self.backend.delete(key)  # a crash mid-write
                            continue
                        newest[name] = max(modified, newest.get(name, modified))
                    for name, modified in newest.items():
                        if modified < older_than and not has_record(unquote(name)):
                            self.backend.delete_prefix(f"{folder}/{name}/")
                            removed += 1
        except StorageUnavailableError as error:
            log.warning("media sweep stopped (the next start resumes it): %s", error.message)
        if removed:
            log.info("removed %d pieces of media without a record (left by a crash or an outage)", removed)
        return removed

    # -- footage -----------------------------------------------------------------------------------------------
    def put_footage(self, job_id: str, local_path: Path, name: str = FOOTAGE_VIDEO) -> None:
        """Stores a job's file (its spooled video by default, or e.g. its tracks) where every worker can read
        it: footage/<job id>/<name>. The local backend hard-links it when it can (no copy)."""
        self.backend.put_file(self.footage_key(job_id, name), Path(local_path))

    def fetch_footage(self, job_id: str, dest_path: Path, name: str = FOOTAGE_VIDEO) -> bool:
        """Writes the job's file to ``dest_path``; False when it has none."""
        return self.backend.get_file(self.footage_key(job_id, name), Path(dest_path))

    def delete_footage(self, job_id: str) -> None:
        """Removes every file of the job (once it finished)."""
        self.backend.delete_prefix(f"{FOOTAGE}/{key_name(job_id)}/")

    def describe(self) -> str:
        return self.backend.describe()


def add_with_media(gallery: Any, media: MediaStore, record: Any, embedding: np.ndarray,
                   thumbnail_rgb: np.ndarray | None, frames_rgb: np.ndarray | None, replace: bool = False) -> Any:
    """Enrolls ``record`` in the documented order: its frames and thumbnail first, then the record (with
    has_thumbnail set) in one gallery transaction. Returns the stored record. When anything fails and no
    record of that id exists, every piece of media written for it is removed."""
    try:
        written, _ = media.write_media(record.id, thumbnail_rgb, frames_rgb)
        return gallery.add(record.model_copy(update={"has_thumbnail": written}), embedding, replace)
    except BaseException:
        # Nothing was stored; the media stays only if a record of that id (a replaced one) still claims it,
        # or if the gallery cannot tell (then the start-up sweep decides, once it can).
        with contextlib.suppress(Exception):
            if gallery.get(record.id) is None:
                media.delete(record.id)
        raise
