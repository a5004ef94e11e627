"""Video files, decoded with OpenCV's FFmpeg backend, opened so that an upload cannot make FFmpeg read
anything but the upload itself.

FFmpeg has demuxers that open other resources named inside the data: concat and HLS playlists, image2
patterns, redirecting formats, and through them the ``file`` protocol or the network. Two locks keep them
shut:

1. An allowlist of real containers, identified by their leading magic bytes before FFmpeg sees anything:
   MP4/QuickTime (``ftyp`` or a QuickTime top-level atom), Matroska/WebM (EBML), AVI (RIFF ``AVI ``) and
   MPEG transport streams (0x47 sync bytes every 188 bytes). MPEG program streams, FLV, Ogg, raw codec
   streams and everything else are refused. Text (playlists) never matches any of them.
2. The capture is opened with FFmpeg options that allow only the demuxer the magic bytes named
   (``format_whitelist``) and no protocol but ``pipe`` (``protocol_whitelist``): the upload is read
   through OpenCV's in-memory reader, which needs no protocol, so a nested open of a file or a URL fails.

OpenCV passes FFmpeg options only through the OPENCV_FFMPEG_CAPTURE_OPTIONS environment variable, which it
reads when a capture is opened; `open_capture` sets it for the duration of the open under a lock, and
restores what was there before (other code in the process, e.g. footage reading, may set its own).
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import threading
from collections.abc import Iterator

import cv2

from service.errors import InvalidMediaError

_CAPTURE_OPTIONS = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
_OPEN_LOCK = threading.Lock()
ACCEPTED_VIDEOS_TEXT = "MP4/MOV, MKV/WebM, AVI or MPEG-TS"
# QuickTime files written without an ``ftyp`` box start with one of these top-level atoms.
_QUICKTIME_ATOMS = (b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot")
_TS_PACKET = 188


def quiet_opencv_logging() -> None:
    """OpenCV and FFmpeg would print warnings to stderr for every upload that is not a clean video."""
    # Read by OpenCV's FFmpeg backend when it first starts; 8 = AV_LOG_FATAL.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "8")
    with contextlib.suppress(AttributeError, ImportError):
        import cv2.utils.logging as cv2_logging

        cv2_logging.setLogLevel(cv2_logging.LOG_LEVEL_ERROR)


def video_container(data: bytes) -> str:
    """The FFmpeg demuxer for the bytes, from their magic bytes; InvalidMediaError for anything else.

    The message is the same for every refused upload, so it tells nothing about the server (a playlist
    naming a file that exists and one naming a file that does not are refused alike, before FFmpeg)."""
    if data[4:8] == b"ftyp" or (data[4:8] in _QUICKTIME_ATOMS and int.from_bytes(data[:4], "big") >= 8):
        return "mov"
    if data[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"
    if data[:4] == b"RIFF" and data[8:12] == b"AVI ":
        return "avi"
    if len(data) >= 3 * _TS_PACKET and all(data[k * _TS_PACKET] == 0x47 for k in range(3)):
        return "mpegts"
    raise InvalidMediaError(
        f"The video is not a supported container ({ACCEPTED_VIDEOS_TEXT}, recognised by its first bytes)."
    )


def capture_options(demuxer: str, allow_files: bool = False) -> str:
    """OPENCV_FFMPEG_CAPTURE_OPTIONS value: only ``demuxer``, and no protocol but pipe (file too when the
    capture itself must read a file, as on OpenCV without in-memory reading)."""
    protocols = "file,pipe" if allow_files else "pipe"
    return f"format_whitelist;{demuxer}|protocol_whitelist;{protocols}"


@contextlib.contextmanager
def _capture_options(options: str) -> Iterator[None]:
    with _OPEN_LOCK:
        previous = os.environ.get(_CAPTURE_OPTIONS)
        os.environ[_CAPTURE_OPTIONS] = options
        try:
            yield
        finally:
            if previous is None:
                os.environ.pop(_CAPTURE_OPTIONS, None)
            else:
                os.environ[_CAPTURE_OPTIONS] = previous


def new_capture(source: object, demuxer: str, raw: bool, allow_files: bool) -> cv2.VideoCapture:
    """The one place that opens an FFmpeg VideoCapture: over ``source`` (a readable binary stream, or a
    path when ``allow_files``), restricted to ``demuxer`` and the pipe (and file) protocols under the
    options' lock; ``raw`` as in `open_capture`. Check ``isOpened()``: a refused source is not an error."""
    params = [cv2.CAP_PROP_FORMAT, -1] if raw else []
    with _capture_options(capture_options(demuxer, allow_files)):
        return cv2.VideoCapture(source, cv2.CAP_FFMPEG, params)


@contextlib.contextmanager
def open_capture(data: bytes, spill: list[str], raw: bool = False) -> Iterator[cv2.VideoCapture]:
    """A VideoCapture over the bytes, restricted to the container their magic bytes name: from memory when
    this OpenCV can, else from a temporary file. ``raw``: grab() reads packets without decoding them and
    retrieve() returns the packet's bytes (OpenCV's CAP_PROP_FORMAT = -1).

    ``spill`` holds the temporary file's path once one was needed, so a second pass reuses it.
    """
    demuxer = video_container(data)
    capture = None
    # OpenCV reads this stream through callbacks but holds no Python reference to it: it must stay alive
    # here until the capture is released, or FFmpeg reads freed memory.
    stream = io.BytesIO(data)
    if not spill:
        try:
            capture = new_capture(stream, demuxer, raw, allow_files=False)
        except (TypeError, cv2.error):
            # OpenCV before 4.11 has no stream-reading backend.
            capture = None
    if capture is None:
        if not spill:
            handle, path = tempfile.mkstemp(prefix="reid-upload-", suffix=".video")
            with os.fdopen(handle, "wb") as file:
                file.write(data)
            spill.append(path)
        capture = new_capture(spill[0], demuxer, raw, allow_files=True)
    try:
        yield capture
    finally:
        capture.release()
        del stream
