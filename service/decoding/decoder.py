"""`TrackletDecoder`: an upload of any media kind -> the model's T frames."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence

import cv2
import numpy as np

from service.decoding.archives import read_archive
from service.decoding.common import DecodedTracklet, DecodeLimits, NamedMedia, shorten
from service.decoding.images import image_header_size, to_model_frame
from service.decoding.video import open_capture, quiet_opencv_logging
from service.errors import InvalidMediaError, LimitExceededError
from service.sampling import sample_frame_indices


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
            label = f"Frame {position + 1} ('{shorten(image.name)}')"
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
            with open_capture(data, spill) as capture:
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
            with open_capture(data, spill) as capture:
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
