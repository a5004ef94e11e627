"""Footage frames as a stream: one decoded frame at a time, never the whole video in memory.

OpenCV's FFmpeg backend reads the file as a stream (the API spools footage to disk before a job starts),
restricted like uploads to an allowlist of containers recognised by their magic bytes. The frame size and
frame count come from the container before the first frame is decoded, so a frame size over the limit is
refused without decoding anything. A stream that stops before the frame count its container announced is
reported as truncated: what decoded is kept.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from service.decoding.video import new_capture, video_container
from service.errors import InvalidMediaError, LimitExceededError

#: Frame rate assumed when the container does not say (or says something absurd).
DEFAULT_FPS = 25.0


@dataclass(frozen=True)
class FootageInfo:
    """What the container says about a video, read without decoding a frame."""

    width: int
    height: int
    fps: float
    """Frames per second (DEFAULT_FPS when the container gives none)."""
    frame_count: int
    """Frames the container announces; 0 when unknown (some streams do not say)."""


class _Capture:
    """A VideoCapture over a footage file, opened the way uploads are (service.decoding.video): the
    container is identified from the file's magic bytes against the allowlist before FFmpeg sees it, and
    FFmpeg may use only that demuxer. The file is handed to OpenCV as a stream (read as it decodes, never
    whole), so no protocol but ``pipe`` is allowed either; an OpenCV without stream reading opens the path."""

    def __init__(self, path: Path):
        try:
            self.handle = open(path, "rb")  # noqa: SIM115 (lives as long as the capture)
        except OSError as error:
            raise InvalidMediaError(f"'{path.name}' cannot be read: {error.strerror}.") from error
        head = self.handle.read(4096)
        self.handle.seek(0)
        try:
            demuxer = video_container(head)
            try:
                self.capture = new_capture(self.handle, demuxer, raw=False, allow_files=False)
            except (TypeError, cv2.error):
                self.capture = new_capture(str(path), demuxer, raw=False, allow_files=True)
        except Exception:
            self.handle.close()
            raise
        if not self.capture.isOpened():
            self.release()
            raise InvalidMediaError(
                f"'{path.name}' is not a video OpenCV/FFmpeg can open (damaged, or cut off before its index)."
            )

    def release(self) -> None:
        self.capture.release()
        self.handle.close()


def _info(capture: cv2.VideoCapture) -> FootageInfo:
    width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
    height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    fps = float(capture.get(cv2.CAP_PROP_FPS))
    if not np.isfinite(fps) or not 0.1 <= fps <= 1000:
        fps = DEFAULT_FPS
    count = capture.get(cv2.CAP_PROP_FRAME_COUNT)
    frame_count = int(count) if np.isfinite(count) and count > 0 else 0
    return FootageInfo(width=width, height=height, fps=fps, frame_count=frame_count)


def _check_size(info: FootageInfo, max_frame_dimension: int, name: str) -> None:
    if info.width <= 0 or info.height <= 0:
        raise InvalidMediaError(f"'{name}' holds no video stream with a frame size.")
    if max(info.width, info.height) > max_frame_dimension:
        raise LimitExceededError(
            f"'{name}' has {info.width}x{info.height} frames; the limit is {max_frame_dimension} pixels a side."
        )


def probe_footage(path: str | Path, max_frame_dimension: int = 4096) -> FootageInfo:
    """The container's frame size, rate and count; InvalidMediaError (4xx) if it is not a video,
    LimitExceededError (413) if its frames are larger than ``max_frame_dimension`` on a side."""
    path = Path(path)
    opened = _Capture(path)
    try:
        info = _info(opened.capture)
    finally:
        opened.release()
    _check_size(info, max_frame_dimension, path.name)
    return info


class FrameReader:
    """Iterates over (frame index, BGR uint8 frame) of a video file, decoding one frame at a time.

    ``truncated`` is set after the iteration when the stream ended before the frame count its container
    announced (a cut-off upload, a damaged file); the frames before that point were delivered.
    """

    def __init__(self, path: str | Path, max_frame_dimension: int = 4096, max_frames: int | None = None):
        self.path = Path(path)
        self._opened = _Capture(self.path)
        self._capture = self._opened.capture
        self.info = _info(self._capture)
        try:
            _check_size(self.info, max_frame_dimension, self.path.name)
        except Exception:
            self._opened.release()
            raise
        self.max_frames = max_frames
        self.frames_read = 0
        self.truncated = False
        self.limited = False
        """True when reading stopped at ``max_frames``."""

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        try:
            while self.max_frames is None or self.frames_read < self.max_frames:
                ok, frame = self._capture.read()
                if not ok or frame is None:
                    break
                if frame.shape[1] != self.info.width or frame.shape[0] != self.info.height:
                    # The stream changed size mid-way (possible in some containers): keep the announced size.
                    frame = cv2.resize(frame, (self.info.width, self.info.height), interpolation=cv2.INTER_AREA)
                index = self.frames_read
                self.frames_read += 1
                yield index, frame
            else:
                self.limited = True
        finally:
            self.close()
        # A few containers over-announce by a frame or two; only a real shortfall counts as truncation.
        expected = self.info.frame_count
        if not self.limited and expected > 0 and self.frames_read < expected - max(2, expected // 100):
            self.truncated = True

    def close(self) -> None:
        self._opened.release()

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
