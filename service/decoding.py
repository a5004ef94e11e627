"""Uploaded media -> the model's T frames: RGB uint8 (T, H, W, 3) at the model card's size.

Three kinds of upload are accepted: a video file (decoded with cv2.VideoCapture from memory where OpenCV
allows it, else from a temporary file), a list of image files (order = upload order), and a .zip/.tar of
image files (order = file names, natural order so that ``2.jpg`` comes before ``10.jpg``). Every frame
must decode; only the T sampled frames are converted and resized (the exported graph normalises, so
frames stay uint8). Limits are checked as early as the format allows: image sizes from the file header
before decoding, video sizes from the container before the first frame, archive sizes from the entry
headers before any entry is read.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import stat
import struct
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

import cv2
import numpy as np

from service.errors import InvalidMediaError, LimitExceededError, UnsafeArchiveError
from service.sampling import sample_frame_indices

log = logging.getLogger(__name__)



def quiet_opencv_logging() -> None:
    """OpenCV and FFmpeg would print warnings to stderr for every upload that is not a clean video."""
    # Read by OpenCV's FFmpeg backend when it first starts; 8 = AV_LOG_FATAL.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "8")
    with contextlib.suppress(AttributeError, ImportError):
        import cv2.utils.logging as cv2_logging

        cv2_logging.setLogLevel(cv2_logging.LOG_LEVEL_ERROR)


@dataclass(frozen=True)
class DecodeLimits:
    """Upper bounds on what one upload may make the service decode."""

    max_frames: int = 2000
    max_frame_dimension: int = 4096
    max_archive_entries: int = 2000
    max_archive_bytes: int = 128 * 1024 * 1024


@dataclass(frozen=True)
class NamedMedia:
    """One uploaded file: its name (for error messages and archive order) and its bytes."""

    name: str
    data: bytes


@dataclass(frozen=True)
class DecodedTracklet:
    """The model input for one tracklet and how it was obtained."""

    frames: np.ndarray
    """(T, H, W, 3) uint8 RGB, the sampled frames in temporal order."""
    frames_decoded: int
    """Frames the upload held (all of them decoded or counted)."""
    frame_indices: tuple[int, ...]
    """Which decoded frame each of the T model frames is."""

    @property
    def frames_used(self) -> int:
        """Distinct decoded frames among the T model frames (fewer than T when the tracklet is short)."""
        return len(set(self.frame_indices))


def _shorten(name: str, limit: int = 80) -> str:
    """A client-supplied name, cut for error messages."""
    return name if len(name) <= limit else name[: limit - 3] + "..."


def to_model_frame(image_bgr: np.ndarray, height: int, width: int) -> np.ndarray:
    """One decoded OpenCV image (BGR) -> RGB uint8 (height, width, 3), exactly as training prepares frames."""
    rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
    return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_LINEAR)


# ----------------------------------------------------------------------------------------------------------
# image headers


def _png_size(data: bytes) -> tuple[int, int] | None:
    if data[:8] != b"\x89PNG\r\n\x1a\n" or len(data) < 24 or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    if data[:2] != b"\xff\xd8":
        return None
    position = 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in (0x01, *range(0xD0, 0xDA)):  # markers without a length field
            position += 2
            continue
        (segment_length,) = struct.unpack(">H", data[position + 2 : position + 4])
        # SOF0..SOF15 carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) share the range but do not.
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if position + 9 > len(data):
                return None
            height, width = struct.unpack(">HH", data[position + 5 : position + 9])
            return width, height
        if marker == 0xDA:  # start of scan: no frame header before it
            return None
        position += 2 + segment_length
    return None


def _gif_size(data: bytes) -> tuple[int, int] | None:
    if data[:6] not in (b"GIF87a", b"GIF89a") or len(data) < 10:
        return None
    return struct.unpack("<HH", data[6:10])


def _bmp_size(data: bytes) -> tuple[int, int] | None:
    if data[:2] != b"BM" or len(data) < 26:
        return None
    (header_size,) = struct.unpack("<I", data[14:18])
    if header_size == 12:
        return struct.unpack("<HH", data[18:22])
    width, height = struct.unpack("<ii", data[18:26])
    return abs(width), abs(height)


def _webp_size(data: bytes) -> tuple[int, int] | None:
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP" or len(data) < 30:
        return None
    chunk = data[12:16]
    if chunk == b"VP8X":
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return width, height
    if chunk == b"VP8L":
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 ":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    return None


def image_header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) read from a PNG, JPEG, GIF, BMP or WebP header without decoding; None if unknown."""
    for reader in (_png_size, _jpeg_size, _gif_size, _bmp_size, _webp_size):
        try:
            size = reader(data)
        except struct.error:
            size = None
        if size is not None:
            return size
    return None


# ----------------------------------------------------------------------------------------------------------
# archives

_DIGITS = re.compile(r"(\d+)")


def natural_sort_key(name: str) -> tuple:
    """Sort key that orders embedded numbers by value: frame2 < frame10."""
    parts = _DIGITS.split(name)
    # split() alternates text and digit runs starting with text, so positions always compare alike.
    return tuple(int(part) if index % 2 else part.lower() for index, part in enumerate(parts)), name


def _is_ignored_entry(path: PurePosixPath) -> bool:
    """Operating-system clutter in archives (macOS resource forks, hidden files) that is not a frame."""
    return path.parts[0] == "__MACOSX" or path.name.startswith(".") or path.name == "Thumbs.db"


def safe_entry_path(name: str) -> PurePosixPath:
    """The entry's relative path; raises UnsafeArchiveError for absolute paths or ones that climb out."""
    normalised = name.replace("\\", "/")
    if normalised.startswith("/") or re.match(r"^[A-Za-z]:", normalised):
        raise UnsafeArchiveError(f"Archive entry '{name}' has an absolute path.")
    path = PurePosixPath(normalised)
    if ".." in path.parts:
        raise UnsafeArchiveError(f"Archive entry '{name}' climbs out of the archive with '..'.")
    if not path.parts:
        raise UnsafeArchiveError(f"Archive entry '{name}' has an empty path.")
    return path


def _read_capped(stream: io.BufferedIOBase, remaining_budget: int, name: str, max_bytes: int) -> bytes:
    data = stream.read(remaining_budget + 1)
    if len(data) > remaining_budget:
        raise LimitExceededError(
            f"The archive expands to more than {max_bytes} bytes (at entry '{name}').",
            code="archive_too_large",
        )
    return data


_ZIP_END_OF_CENTRAL_DIRECTORY = b"PK\x05\x06"
_ZIP64_LOCATOR = b"PK\x06\x07"
_ZIP64_END_OF_CENTRAL_DIRECTORY = b"PK\x06\x06"


def declared_zip_entry_count(data: bytes) -> int | None:
    """Entries a .zip declares in its end-of-central-directory record (read without parsing the
    directory, so a zip of 100,000 entries is refused at once); None when the record is not found."""
    # The record is 22 bytes plus a comment of at most 65535 bytes, at the very end of the file.
    position = data.rfind(_ZIP_END_OF_CENTRAL_DIRECTORY, max(0, len(data) - 22 - 65535))
    if position < 0 or position + 22 > len(data):
        return None
    (total_entries,) = struct.unpack("<H", data[position + 10 : position + 12])
    if total_entries != 0xFFFF:
        return total_entries
    # 0xFFFF: the count is in the zip64 record, found through the locator just before this record.
    locator = position - 20
    if locator < 0 or data[locator : locator + 4] != _ZIP64_LOCATOR:
        return None
    (record,) = struct.unpack("<Q", data[locator + 8 : locator + 16])
    if record + 40 > len(data) or data[record : record + 4] != _ZIP64_END_OF_CENTRAL_DIRECTORY:
        return None
    (total_entries,) = struct.unpack("<Q", data[record + 32 : record + 40])
    return total_entries


def _zip_members(data: bytes, limits: DecodeLimits) -> list[NamedMedia]:
    declared_entries = declared_zip_entry_count(data)
    if declared_entries is not None and declared_entries > limits.max_archive_entries:
        raise LimitExceededError(
            f"The archive has {declared_entries} entries; at most {limits.max_archive_entries} are allowed.",
            code="archive_too_many_entries",
        )
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
        raise InvalidMediaError(f"The archive is not a readable .zip file ({error}).") from error
    with archive:
        entries = archive.infolist()
        if len(entries) > limits.max_archive_entries:
            raise LimitExceededError(
                f"The archive has {len(entries)} entries; at most {limits.max_archive_entries} are allowed.",
                code="archive_too_many_entries",
            )
        declared = sum(entry.file_size for entry in entries)
        if declared > limits.max_archive_bytes:
            raise LimitExceededError(
                f"The archive expands to {declared} bytes; at most {limits.max_archive_bytes} are allowed.",
                code="archive_too_large",
            )
        members = []
        budget = limits.max_archive_bytes
        for entry in entries:
            path = safe_entry_path(entry.filename)
            # Unix zips keep st_mode in the high half of external_attr; many writers set permissions only.
            file_type = stat.S_IFMT(entry.external_attr >> 16)
            if file_type == stat.S_IFLNK:
                raise UnsafeArchiveError(f"Archive entry '{entry.filename}' is a symbolic link.")
            if file_type and file_type not in (stat.S_IFREG, stat.S_IFDIR):
                raise UnsafeArchiveError(f"Archive entry '{entry.filename}' is not a regular file.")
            if entry.is_dir() or _is_ignored_entry(path):
                continue
            if entry.flag_bits & 0x1:
                raise InvalidMediaError(f"Archive entry '{entry.filename}' is encrypted.")
            try:
                # The declared size can lie; reading is capped by the remaining budget all the same.
                with archive.open(entry) as stream:
                    content = _read_capped(stream, budget, entry.filename, limits.max_archive_bytes)
            except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as error:
                raise InvalidMediaError(f"Archive entry '{entry.filename}' cannot be read ({error}).") from error
            budget -= len(content)
            members.append(NamedMedia(str(path), content))
    return members


def _tar_members(data: bytes, limits: DecodeLimits) -> list[NamedMedia]:
    try:
        archive = tarfile.open(fileobj=io.BytesIO(data), mode="r:*")
    except (tarfile.TarError, OSError, EOFError, ValueError) as error:
        raise InvalidMediaError("The archive is neither a readable .zip nor a .tar file.") from error
    members = []
    entry_count = 0
    budget = limits.max_archive_bytes
    with archive:
        try:
            # Iterating reads one header at a time, so a compressed bomb is stopped at its first
            # oversized header instead of being expanded to find the next one.
            for member in archive:
                entry_count += 1
                if entry_count > limits.max_archive_entries:
                    raise LimitExceededError(
                        f"The archive has more than {limits.max_archive_entries} entries.",
                        code="archive_too_many_entries",
                    )
                path = safe_entry_path(member.name)
                if member.issym() or member.islnk():
                    raise UnsafeArchiveError(f"Archive entry '{member.name}' is a link.")
                if member.isdir():
                    continue
                if not member.isreg():
                    raise UnsafeArchiveError(f"Archive entry '{member.name}' is a device, pipe or special file.")
                if member.size > budget:
                    raise LimitExceededError(
                        f"The archive expands to more than {limits.max_archive_bytes} bytes "
                        f"(at entry '{member.name}').",
                        code="archive_too_large",
                    )
                if _is_ignored_entry(path):
                    continue
                stream = archive.extractfile(member)
                if stream is None:
                    raise UnsafeArchiveError(f"Archive entry '{member.name}' is not a regular file.")
                content = _read_capped(stream, budget, member.name, limits.max_archive_bytes)
                budget -= len(content)
                members.append(NamedMedia(str(path), content))
        except (tarfile.TarError, OSError, EOFError, ValueError) as error:
            raise InvalidMediaError(f"The .tar archive is truncated or corrupt ({error}).") from error
    return members


def read_archive(data: bytes, limits: DecodeLimits) -> list[NamedMedia]:
    """The frame files of a .zip or .tar (optionally compressed) upload, in natural file-name order."""
    if not data:
        raise InvalidMediaError("The archive is empty.")
    if zipfile.is_zipfile(io.BytesIO(data)):
        members = _zip_members(data, limits)
    else:
        members = _tar_members(data, limits)
    members.sort(key=lambda member: natural_sort_key(member.name))
    return members


# ----------------------------------------------------------------------------------------------------------
# video


@contextlib.contextmanager
def _open_capture(data: bytes, spill: list[str]) -> Iterator[cv2.VideoCapture]:
    """A VideoCapture over the bytes: from memory when this OpenCV can, else from a temporary file.

    ``spill`` holds the temporary file's path once one was needed, so a second pass reuses it.
    """
    capture = None
    # OpenCV reads this stream through callbacks but holds no Python reference to it: it must stay alive
    # here until the capture is released, or FFmpeg reads freed memory.
    stream = io.BytesIO(data)
    if not spill:
        try:
            capture = cv2.VideoCapture(stream, cv2.CAP_FFMPEG, [])
        except (TypeError, cv2.error):
            # OpenCV before 4.11 has no stream-reading backend.
            capture = None
    if capture is None:
        if not spill:
            handle, path = tempfile.mkstemp(prefix="reid-upload-", suffix=".video")
            with os.fdopen(handle, "wb") as file:
                file.write(data)
            spill.append(path)
        capture = cv2.VideoCapture(spill[0], cv2.CAP_FFMPEG)
    try:
        yield capture
    finally:
        capture.release()
        del stream


class TrackletDecoder:
    """Turns uploads into `DecodedTracklet` for a model of the given input size and T.

    Args:
        height: model input height (the model card's).
        width: model input width.
        num_frames: T, frames per tracklet the model takes.
        limits: upper bounds on what one upload may make the decoder do.
    """

    def __init__(self, height: int, width: int, num_frames: int, limits: DecodeLimits | None = None):
        self.height = height
        self.width = width
        self.num_frames = num_frames
        self.limits = limits or DecodeLimits()
        quiet_opencv_logging()

    # -- helpers -------------------------------------------------------------------------------------------
    def _check_frame_count(self, count: int, what: str) -> None:
        if count > self.limits.max_frames:
            raise LimitExceededError(
                f"The {what} has more than {self.limits.max_frames} frames."
                if what == "video"
                else f"The {what} has {count} frames; at most {self.limits.max_frames} are allowed.",
                code="too_many_frames",
            )

    def _check_dimensions(self, width: int, height: int, what: str) -> None:
        limit = self.limits.max_frame_dimension
        if width > limit or height > limit:
            raise LimitExceededError(
                f"{what} is {width}x{height} pixels; frames may be at most {limit} pixels on a side.",
                code="frame_too_large",
            )

    def _pack(self, frames_by_index: dict[int, np.ndarray], indices: np.ndarray, decoded: int) -> DecodedTracklet:
        clip = np.stack([frames_by_index[int(index)] for index in indices])
        return DecodedTracklet(clip, decoded, tuple(int(index) for index in indices))

    # -- public --------------------------------------------------------------------------------------------
    def decode_images(self, images: Sequence[NamedMedia]) -> DecodedTracklet:
        """Frames given as image files, in the given order. Every file must be an image OpenCV reads."""
        if not images:
            raise InvalidMediaError("No frames were uploaded.")
        self._check_frame_count(len(images), "upload")
        indices = sample_frame_indices(len(images), self.num_frames)
        wanted = set(indices.tolist())
        kept: dict[int, np.ndarray] = {}
        for position, image in enumerate(images):
            label = f"Frame {position + 1} ('{_shorten(image.name)}')"
            header_size = image_header_size(image.data)
            if header_size is not None:
                self._check_dimensions(*header_size, label)
            buffer = np.frombuffer(image.data, dtype=np.uint8)
            decoded = cv2.imdecode(buffer, cv2.IMREAD_COLOR) if buffer.size else None
            if decoded is None or decoded.size == 0:
                raise InvalidMediaError(f"{label} is not an image OpenCV can read.")
            self._check_dimensions(decoded.shape[1], decoded.shape[0], label)
            if position in wanted:
                kept[position] = to_model_frame(decoded, self.height, self.width)
        return self._pack(kept, indices, len(images))

    def decode_archive(self, data: bytes) -> DecodedTracklet:
        """Frames given as a .zip or .tar of image files, ordered by file name."""
        members = read_archive(data, self.limits)
        if not members:
            raise InvalidMediaError("The archive holds no frame files.")
        return self.decode_images(members)

    def decode_video(self, data: bytes) -> DecodedTracklet:
        """Frames of a video file. Two passes: count the frames, then decode only the sampled ones."""
        if not data:
            raise InvalidMediaError("The video file is empty.")
        spill: list[str] = []
        try:
            with _open_capture(data, spill) as capture:
                if not capture.isOpened():
                    raise InvalidMediaError(
                        "The video could not be opened: not a video OpenCV can decode, or truncated."
                    )
                width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
                height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
                self._check_dimensions(width, height, "The video")
                declared_count = capture.get(cv2.CAP_PROP_FRAME_COUNT)
                # grab() decodes without the colour conversion, so counting costs less than reading.
                frame_count = 0
                while capture.grab():
                    frame_count += 1
                    self._check_frame_count(frame_count, "video")
            if frame_count == 0:
                raise InvalidMediaError("The video has no decodable frames.")
            # A cut-off .avi or .mkv still opens and decodes up to the cut; its header gives it away. The
            # slack absorbs containers whose count is estimated from duration x frame rate.
            if declared_count >= 1 and frame_count < min(0.9 * declared_count, declared_count - 1):
                raise InvalidMediaError(
                    f"The video is truncated or corrupt: its header declares {int(declared_count)} frames "
                    f"but only {frame_count} decode."
                )
            indices = sample_frame_indices(frame_count, self.num_frames)
            wanted = set(indices.tolist())
            last_wanted = max(wanted)
            kept: dict[int, np.ndarray] = {}
            with _open_capture(data, spill) as capture:
                for position in range(last_wanted + 1):
                    if not capture.grab():
                        raise InvalidMediaError(f"Frame {position + 1} of the video could not be decoded.")
                    if position not in wanted:
                        continue
                    ok, image = capture.retrieve()
                    if not ok or image is None or image.size == 0:
                        raise InvalidMediaError(f"Frame {position + 1} of the video could not be decoded.")
                    self._check_dimensions(image.shape[1], image.shape[0], f"Frame {position + 1} of the video")
                    if image.ndim == 2:
                        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
                    kept[position] = to_model_frame(image, self.height, self.width)
            return self._pack(kept, indices, frame_count)
        finally:
            for path in spill:
                with contextlib.suppress(OSError):
                    os.unlink(path)
