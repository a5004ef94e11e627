"""Video files, decoded with OpenCV's FFmpeg backend."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Iterator

import cv2


def quiet_opencv_logging() -> None:
    """OpenCV and FFmpeg would print warnings to stderr for every upload that is not a clean video."""
    # Read by OpenCV's FFmpeg backend when it first starts; 8 = AV_LOG_FATAL.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "8")
    with contextlib.suppress(AttributeError, ImportError):
        import cv2.utils.logging as cv2_logging

        cv2_logging.setLogLevel(cv2_logging.LOG_LEVEL_ERROR)


@contextlib.contextmanager
def open_capture(data: bytes, spill: list[str]) -> Iterator[cv2.VideoCapture]:
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
