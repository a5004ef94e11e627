"""`TrackletDecoder`: an upload of any media kind -> the model's T frames.

Work is bounded before it is done: frame counts and sizes come from headers (images, archive entries,
video containers and, for Motion JPEG and VP8, every frame's own header) before any pixel is decoded; only the
frames that sampling picks are decoded (video frames before the last sampled one are decoded by the codec,
since later frames depend on them, but never converted); the pixels decoded for one upload are capped by
``max_decoded_pixels``. Any error of a decoder is the client's (InvalidMediaError, 422), never a 500.

Image frames (a list of files or an archive) are decoded and resized in parallel, on a thread pool bounded by
the cores this process may use (OpenCV releases the GIL while it decodes and resizes); a video's frames
depend on each other, so its codec runs in order while the sampled frames' conversion and resize run on the
pool beside it. bench/bench_decoding.py measures what the pool gains.
"""

from __future__ import annotations

import contextlib
import lzma
import os
import struct
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import cv2
import numpy as np

from models import MAX_TEST_CLIPS, sample_clip_indices
from service.decoding.archives import read_archive
from service.decoding.common import DecodedTracklet, DecodeLimits, NamedMedia, shorten
from service.decoding.images import (
    ACCEPTED_IMAGES_TEXT,
    image_format,
    image_header_size,
    jpeg_size,
    reduced_read_flag,
    to_model_frame,
)
from service.decoding.video import open_capture, quiet_opencv_logging
from service.errors import InvalidMediaError, LimitExceededError

# Codec tags of Motion JPEG: every packet is a whole JPEG image with its own frame header.
_MJPEG_TAGS = frozenset({b"MJPG", b"mjpg", b"MJPA", b"mjpa", b"AVRn", b"AVDJ", b"jpeg", b"JPEG", b"dmb1", b"LJPG"})
_VP8_TAGS = frozenset({b"VP80", b"vp80"})


def vp8_keyframe_size(packet: bytes) -> tuple[int, int] | None:
    """(width, height) of a VP8 key frame from its uncompressed header (RFC 6386 section 9.1); None for an
    inter frame, which keeps the size of the key frame before it."""
    if len(packet) < 10 or packet[0] & 1 or packet[3:6] != b"\x9d\x01\x2a":
        return None
    width, height = struct.unpack("<HH", packet[6:10])
    return width & 0x3FFF, height & 0x3FFF


# Errors the decoding libraries raise on bad input: always the client's (422), never a 500.
_LIBRARY_ERRORS = (cv2.error, zlib.error, lzma.LZMAError, struct.error, EOFError)


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - platforms without affinity masks
        return max(1, os.cpu_count() or 1)


@contextlib.contextmanager
def _input_errors_are_the_clients(what: str) -> Iterator[None]:
    try:
        yield
    except _LIBRARY_ERRORS as error:
        raise InvalidMediaError(f"The {what} cannot be decoded ({type(error).__name__}).") from error


class TrackletDecoder:
    """Turns uploads into `DecodedTracklet` for a model of the given input size and T.

    Args:
        height: model input height (the model card's).
        width: model input width.
        num_frames: T, frames per tracklet the model takes.
        limits: upper bounds on what one upload may make the decoder do.
        workers: threads decoding and resizing one upload's frames; None for the cores this process may
            use, never more than that (1: every frame in the calling thread). Shared by all uploads.
    """

    def __init__(
        self,
        height: int,
        width: int,
        num_frames: int,
        limits: DecodeLimits | None = None,
        test_mode: str = "centres",
        max_clips: int | None = MAX_TEST_CLIPS,
        workers: int | None = None,
    ):
        self.height = height
        self.width = width
        self.num_frames = num_frames
        self.limits = limits or DecodeLimits()
        #: The test-time sampling (models.sample_clip_indices): the service passes its model card's
        #: (models.DEFAULT_TEST_MODE unless exported otherwise), the same as offline evaluation.
        self.test_mode = test_mode
        self.max_clips = max_clips
        cores = available_cores()
        self.workers = cores if workers is None else max(1, min(int(workers), cores))
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        quiet_opencv_logging()

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="decode")
            return self._pool

    def _map(self, work: Callable[[int], np.ndarray], positions: Sequence[int]) -> dict[int, np.ndarray]:
        """{position: work(position)}, on the pool when it has more than one thread and there is more than one
        frame. The first failure in position order is raised, as in a serial loop."""
        if self.workers == 1 or len(positions) < 2:
            return {position: work(position) for position in positions}
        return dict(zip(positions, self._executor().map(work, positions), strict=True))

    def close(self) -> None:
        """Stops the pool's threads (after the work in flight); the decoder starts a new pool if used again."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

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

    def _check_pixel_budget(self, pixels: int, what: str) -> None:
        if pixels > self.limits.max_decoded_pixels:
            raise LimitExceededError(
                f"The {what} would decode {pixels} pixels; at most {self.limits.max_decoded_pixels} are "
                "decoded per request (REID_MAX_DECODED_PIXELS).",
                code="too_many_pixels",
            )

    def _sample(self, count: int) -> np.ndarray:
        """The (K, L) clips of frame indices the model sees for a tracklet of ``count`` frames."""
        return sample_clip_indices(count, self.num_frames, self.test_mode, self.max_clips)

    def _pack(self, frames_by_index: dict[int, np.ndarray], clips: np.ndarray, decoded: int) -> DecodedTracklet:
        indices = clips.reshape(-1)
        frames = np.stack([frames_by_index[int(index)] for index in indices])
        return DecodedTracklet(frames, decoded, tuple(int(index) for index in indices), int(clips.shape[1]))

    def _decode_image(self, image: NamedMedia, kind: str, size: tuple[int, int], label: str) -> np.ndarray:
        flag, divisor = reduced_read_flag(kind, *size, self.width, self.height)
        buffer = np.frombuffer(image.data, dtype=np.uint8)
        try:
            decoded = cv2.imdecode(buffer, flag)
        except cv2.error as error:  # e.g. over OpenCV's own pixel limit, or a codec failure
            raise InvalidMediaError(f"{label} cannot be decoded ({kind}).") from error
        if decoded is None or decoded.size == 0:
            raise InvalidMediaError(f"{label} is not an image OpenCV can read.")
        # The decoded size must be the one the header promised (at the reduced scale).
        self._check_dimensions(decoded.shape[1] * divisor, decoded.shape[0] * divisor, label)
        if decoded.ndim == 2:
            decoded = cv2.cvtColor(decoded, cv2.COLOR_GRAY2BGR)
        return decoded

    # -- public --------------------------------------------------------------------------------------------
    def decode_images(self, images: Sequence[NamedMedia]) -> DecodedTracklet:
        """Frames given as image files, in the given order. Every file must be an allowed image format whose
        header gives a size within the limit; only the sampled ones are decoded."""
        if not images:
            raise InvalidMediaError("No frames were uploaded.")
        with _input_errors_are_the_clients("upload"):
            return self._decode_images(images)

    def _decode_images(self, images: Sequence[NamedMedia]) -> DecodedTracklet:
        self._check_frame_count(len(images), "upload")
        headers: list[tuple[str, tuple[int, int], str]] = []
        for position, image in enumerate(images):
            label = f"Frame {position + 1} ('{shorten(image.name)}')"
            kind = image_format(image.data)
            if kind is None:
                raise InvalidMediaError(
                    f"{label} is not an image in an accepted format ({ACCEPTED_IMAGES_TEXT})."
                )
            size = image_header_size(image.data)
            if size is None or 0 in size:
                raise InvalidMediaError(f"{label} is a {kind} file whose header cannot be read.")
            self._check_dimensions(*size, label)
            headers.append((kind, size, label))
        clips = self._sample(len(images))
        wanted = sorted(set(clips.reshape(-1).tolist()))
        self._check_pixel_budget(sum(headers[k][1][0] * headers[k][1][1] for k in wanted), "upload")
        kept = self._map(
            lambda position: to_model_frame(self._decode_image(images[position], *headers[position]),
                                            self.height, self.width),
            wanted,
        )
        return self._pack(kept, clips, len(images))

    def decode_archive(self, data: bytes) -> DecodedTracklet:
        """Frames given as a .zip or .tar of image files, ordered by file name."""
        with _input_errors_are_the_clients("archive"):
            members = read_archive(data, self.limits)
        if not members:
            raise InvalidMediaError("The archive holds no frame files.")
        return self.decode_images(members)

    def decode_video(self, data: bytes) -> DecodedTracklet:
        """Frames of a video file in an allowed container. Two passes: read the packets without decoding
        them (count them, and check each Motion JPEG frame's size from its header), then decode up to the
        last sampled frame and convert only the sampled ones."""
        if not data:
            raise InvalidMediaError("The video file is empty.")
        spill: list[str] = []
        try:
            frame_count, declared_count, width, height = self._scan_video(data, spill)
            if frame_count == 0:
                raise InvalidMediaError("The video has no decodable frames.")
            # A cut-off .avi or .mkv still opens and decodes up to the cut; its header gives it away. The
            # slack absorbs containers whose count is estimated from duration x frame rate.
            if declared_count >= 1 and frame_count < min(0.9 * declared_count, declared_count - 1):
                raise InvalidMediaError(
                    f"The video is truncated or corrupt: its header declares {int(declared_count)} frames "
                    f"but only {frame_count} are in it."
                )
            clips = self._sample(frame_count)
            wanted = set(clips.reshape(-1).tolist())
            last_wanted = max(wanted)
            self._check_pixel_budget((last_wanted + 1) * width * height, "video")
            kept: dict[int, np.ndarray | Future] = {}
            # The codec decodes in order; each sampled frame's conversion and resize go to the pool meanwhile.
            convert = (self._executor().submit if self.workers > 1 and len(wanted) > 1
                       else lambda work, *args: work(*args))
            with open_capture(data, spill) as capture:
                for position in range(last_wanted + 1):
                    # grab() decodes (later frames depend on earlier ones) without converting the image.
                    if not capture.grab():
                        raise InvalidMediaError(f"Frame {position + 1} of the video could not be decoded.")
                    if position not in wanted:
                        continue
                    ok, image = capture.retrieve()
                    if not ok or image is None or image.size == 0:
                        raise InvalidMediaError(f"Frame {position + 1} of the video could not be decoded.")
                    self._check_dimensions(image.shape[1], image.shape[0], f"Frame {position + 1} of the video")
                    kept[position] = convert(self._video_frame, image)
            frames = {position: frame.result() if isinstance(frame, Future) else frame
                      for position, frame in kept.items()}
            return self._pack(frames, clips, frame_count)
        except _LIBRARY_ERRORS as error:
            raise InvalidMediaError("The video cannot be decoded.") from error
        finally:
            for path in spill:
                with contextlib.suppress(OSError):
                    os.unlink(path)

    def _video_frame(self, image: np.ndarray) -> np.ndarray:
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        return to_model_frame(image, self.height, self.width)

    def _scan_video(self, data: bytes, spill: list[str]) -> tuple[int, float, int, int]:
        """(packets, declared frame count, width, height) without decoding a frame."""
        with open_capture(data, spill, raw=True) as capture:
            if not capture.isOpened():
                raise InvalidMediaError("The video could not be opened: not a video OpenCV can decode, or truncated.")
            width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
            height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
            self._check_dimensions(width, height, "The video")
            declared_count = capture.get(cv2.CAP_PROP_FRAME_COUNT)
            tag = struct.pack("<I", int(capture.get(cv2.CAP_PROP_FOURCC)) & 0xFFFFFFFF)
            motion_jpeg = tag in _MJPEG_TAGS
            vp8 = tag in _VP8_TAGS
            frame_count = 0
            while capture.grab():
                ok, packet = capture.retrieve()
                payload = packet.tobytes() if ok and packet is not None else b""
                if motion_jpeg or payload[:2] == b"\xff\xd8":
                    # Each Motion JPEG frame declares its own size, whatever the container said.
                    start = payload.find(b"\xff\xd8")
                    size = jpeg_size(payload[start:]) if start >= 0 else None
                    if size is None:
                        break  # a cut-off or corrupt frame ends the video: nothing after it is decoded
                    self._check_dimensions(*size, f"Frame {frame_count + 1} of the video")
                    width, height = max(width, size[0]), max(height, size[1])
                elif vp8 and (size := vp8_keyframe_size(payload)) is not None:
                    # A VP8 key frame may change the size mid-stream: each one declares it.
                    self._check_dimensions(*size, f"Frame {frame_count + 1} of the video")
                    width, height = max(width, size[0]), max(height, size[1])
                frame_count += 1
                self._check_frame_count(frame_count, "video")
        return frame_count, declared_count, width, height
