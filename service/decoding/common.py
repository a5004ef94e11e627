"""What every decoding module shares: the limits, an uploaded file, a decoded tracklet."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.config import Settings


def _setting_default(name: str) -> int:
    return Settings.model_fields[name].default


@dataclass(frozen=True)
class DecodeLimits:
    """Upper bounds on what one upload may make the service decode. Each is the setting of the same name;
    the defaults (and their documentation) are declared once, in `service.config.Settings`."""

    max_frames: int = _setting_default("max_frames")
    max_frame_dimension: int = _setting_default("max_frame_dimension")
    max_archive_entries: int = _setting_default("max_archive_entries")
    max_archive_bytes: int = _setting_default("max_archive_bytes")
    max_decoded_pixels: int = _setting_default("max_decoded_pixels")
    """Most pixels decoded for one upload, all frames together (width x height, at the decoded size)."""


@dataclass(frozen=True)
class NamedMedia:
    """One uploaded file: its name (for error messages and archive order) and its bytes."""

    name: str
    data: bytes


@dataclass(frozen=True)
class DecodedTracklet:
    """The model input for one tracklet and how it was obtained."""

    frames: np.ndarray
    """(K x L, H, W, 3) uint8 RGB: the K clips of the model card's test-time mode, one after the other
    (models.sample_clip_indices; K=1 and L=T for "centres"), each in temporal order."""
    frames_decoded: int
    """Frames the upload held (all of them decoded or counted)."""
    frame_indices: tuple[int, ...]
    """Which decoded frame each model frame is."""
    clip_length: int = 0
    """L, the frames of one clip (0: all of ``frames`` are one clip)."""

    @property
    def middle_frame(self) -> np.ndarray:
        """The frame in the middle of those used (by decoded index): the tracklet's thumbnail."""
        used = sorted(set(self.frame_indices))
        middle = used[len(used) // 2]
        return self.frames[self.frame_indices.index(middle)]

    @property
    def clips(self) -> np.ndarray:
        """(K, L, H, W, 3): the clips the service embeds one by one and averages, as offline evaluation does."""
        length = self.clip_length or len(self.frames)
        return self.frames.reshape(-1, length, *self.frames.shape[1:])

    @property
    def frames_used(self) -> int:
        """Distinct decoded frames among the T model frames (fewer than T when the tracklet is short)."""
        return len(set(self.frame_indices))


def shorten(name: str, limit: int = 80) -> str:
    """A client-supplied name, cut for error messages."""
    return name if len(name) <= limit else name[: limit - 3] + "..."
