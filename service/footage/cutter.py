"""Cutting tracks into tracklets and choosing their crops.

A track becomes a tracklet when it ends, and a long track is cut every ``max_tracklet_s`` seconds (each
part is its own tracklet with the same track id). A tracklet with fewer than ``min_frames`` observed
frames, or whose median box is shorter than ``min_box_height`` pixels, is dropped.

Memory stays bounded however long a track is: a tracklet keeps at most ``max_crops`` crops, one per time
bucket, the best of its bucket by crop quality (``crops.crop_quality``: not cut off at the frame edge,
large, unoccluded, confident). When the buckets fill up, neighbouring buckets are merged (the better crop
stays) and buckets get twice as long, so the crops stay spread evenly over the tracklet. A crop is only
cut and resized when it beats its bucket's current best. At the end, crops far below the tracklet's best
quality are left out (all are kept when none is good, e.g. a person who never leaves the frame edge).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from models import sample_clip_indices, sample_frame_indices
from service.footage.crops import crop_quality, crop_resize_pad


@dataclass
class FootageTracklet:
    """One cut piece of one track, ready to be sampled, embedded and enrolled or queried."""

    track_id: int
    part: int
    """0 for a track's first tracklet, then 1, 2, ... for the pieces of a long track."""
    frame_start: int
    """0-based index of its first frame in the footage."""
    frame_end: int
    """0-based index of its last frame (inclusive)."""
    start_s: float
    """Seconds from the start of the footage to frame_start."""
    end_s: float
    crops: list[np.ndarray]
    """RGB uint8 (card_height, card_width, 3) crops in temporal order, chosen for quality."""
    crop_frames: list[int]
    """The frame index of each crop."""
    best_crop: np.ndarray
    """The best crop (for the thumbnail)."""
    boxes: list[tuple[int, float, float, float, float, float]]
    """(frame, x, y, w, h, score) of every observed frame of this tracklet (0-based frames)."""
    camera_id: str | None = None

    @property
    def num_frames(self) -> int:
        """Frames in which the track was observed."""
        return len(self.boxes)

    @property
    def thumbnail(self) -> np.ndarray:
        return self.best_crop

    def clip(self, num_frames: int) -> np.ndarray:
        """(num_frames, H, W, 3) uint8 RGB: one clip of the chunk centres (sample_frame_indices)."""
        indices = sample_frame_indices(len(self.crops), num_frames)
        return np.stack([self.crops[i] for i in indices])

    def clips(self, num_frames: int, mode: str, max_clips: int | None) -> np.ndarray:
        """(K, L, H, W, 3) uint8 RGB: the crops sampled exactly as uploads are (models.sample_clip_indices, the
        model card's test-time mode); their embeddings are averaged, as for uploads."""
        indices = sample_clip_indices(len(self.crops), num_frames, mode, max_clips)
        return np.stack([[self.crops[i] for i in clip] for clip in indices])


@dataclass
class _Bucket:
    frame: int
    quality: float
    crop: np.ndarray


@dataclass
class _Open:
    part: int
    frame_start: int
    frame_end: int
    boxes: list[tuple[int, float, float, float, float, float]] = field(default_factory=list)
    buckets: list[_Bucket] = field(default_factory=list)
    stride: int = 1
    in_bucket: int = 0


class TrackletCutter:
    """Collects crops per track and emits FootageTracklets (see the module docstring)."""

    def __init__(
        self,
        on_tracklet: Callable[[FootageTracklet], None],
        card_height: int,
        card_width: int,
        fps: float,
        max_tracklet_s: float = 10.0,
        min_frames: int = 8,
        min_box_height: float = 40.0,
        max_crops: int = 32,
        keep_quality: float = 0.5,
        camera_id: str | None = None,
    ):
        self.on_tracklet = on_tracklet
        self.card_height, self.card_width = card_height, card_width
        self.fps = fps
        self.max_frames = max(1, int(round(max_tracklet_s * fps)))
        self.min_frames = min_frames
        self.min_box_height = min_box_height
        self.max_crops = max(2, max_crops)
        self.keep_quality = keep_quality
        self.camera_id = camera_id
        self.open: dict[int, _Open] = {}
        self.parts: dict[int, int] = {}
        self.emitted = 0
        self.dropped = 0

    def observe(
        self,
        track_id: int,
        frame_index: int,
        frame_bgr: np.ndarray | None,
        box: np.ndarray,
        score: float,
        others: np.ndarray,
    ) -> None:
        """One observed box of a track. ``frame_bgr`` None: a late box (no picture to crop any more).
        ``others``: the other people's boxes in this frame (N, >=4), for the occlusion term of quality."""
        state = self.open.get(track_id)
        if state is not None and frame_index - state.frame_start >= self.max_frames:
            self._emit(track_id)
            state = None
        if state is None:
            part = self.parts.get(track_id, 0)
            self.parts[track_id] = part + 1
            state = self.open[track_id] = _Open(part, frame_index, frame_index)
        x1, y1, x2, y2 = (float(v) for v in box[:4])
        state.boxes.append((frame_index, x1, y1, x2 - x1, y2 - y1, float(score)))
        state.frame_start = min(state.frame_start, frame_index)
        state.frame_end = max(state.frame_end, frame_index)
        if frame_bgr is None:
            return
        quality = crop_quality(box, score, frame_bgr.shape, others, self.card_height)

        def crop() -> np.ndarray:
            return crop_resize_pad(frame_bgr, box, self.card_height, self.card_width)

        if state.in_bucket == 0:
            state.buckets.append(_Bucket(frame_index, quality, crop()))
        elif quality > state.buckets[-1].quality:
            state.buckets[-1] = _Bucket(frame_index, quality, crop())
        state.in_bucket = (state.in_bucket + 1) % state.stride
        if len(state.buckets) > self.max_crops:
            pairs = [state.buckets[i : i + 2] for i in range(0, len(state.buckets), 2)]
            state.buckets = [max(pair, key=lambda b: b.quality) for pair in pairs]
            state.stride *= 2
            state.in_bucket = 0

    def end_track(self, track_id: int) -> None:
        if track_id in self.open:
            self._emit(track_id)

    def finish(self) -> None:
        for track_id in list(self.open):
            self._emit(track_id)

    def _emit(self, track_id: int) -> None:
        state = self.open.pop(track_id)
        heights = [b[4] for b in state.boxes]
        if len(state.boxes) < self.min_frames or not state.buckets or float(np.median(heights)) < self.min_box_height:
            self.dropped += 1
            return
        best = max(state.buckets, key=lambda b: b.quality)
        if best.quality > 0:
            chosen = [b for b in state.buckets if b.quality >= self.keep_quality * best.quality]
        else:
            chosen = list(state.buckets)
        self.emitted += 1
        self.on_tracklet(
            FootageTracklet(
                track_id=track_id,
                part=state.part,
                frame_start=state.frame_start,
                frame_end=state.frame_end,
                start_s=state.frame_start / self.fps,
                end_s=state.frame_end / self.fps,
                crops=[b.crop for b in chosen],
                crop_frames=[b.frame for b in chosen],
                best_crop=best.crop,
                boxes=sorted(state.boxes),
                camera_id=self.camera_id,
            )
        )
