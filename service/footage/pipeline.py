"""Footage in, tracklets out: read -> detect -> track -> cut -> crop, one frame at a time.

``run_footage`` is what a footage job calls. It streams the video (never all of it in memory), hands each
finished tracklet to ``on_tracklet`` as soon as its track ends (or every ``max_tracklet_s`` seconds of a
long track), reports progress, stops when ``should_stop()`` says so, and returns a FootageSummary with every
confirmed track's per-frame boxes (for the MOTChallenge export). Sampling T frames from a tracklet's crops
and embedding them is the caller's part (the same sampling as uploads, through the shared batcher).
"""

from __future__ import annotations

import array
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from service.footage.cutter import FootageTracklet, TrackletCutter
from service.footage.detection import Detector
from service.footage.reader import FrameReader
from service.footage.tracker import ByteTracker

__all__ = [
    "FootageSettings",
    "FootageSummary",
    "FootageTracklet",
    "FootageProgress",
    "FootageResult",
    "format_mot",
    "make_detector",
    "run_footage",
]

#: A per-frame box of a track: (0-based frame, x, y, w, h, score).
Box = tuple[int, float, float, float, float, float]


@dataclass(frozen=True)
class FootageSettings:
    """Everything run_footage can be told; ``from_settings`` reads the service's REID_ settings."""

    detector: str = "background"
    """``background`` (MOG2), ``background-knn``, or the path of an ONNX person detector (``*.onnx``)."""
    detector_threshold: float = 0.25
    """ONNX detectors: lowest person score kept (boxes below ByteTrack's low score are useless anyway)."""
    detector_person_class: int = 0
    """ONNX detectors: the class index of "person" (0 in COCO-trained YOLO models)."""
    max_tracklet_s: float = 10.0
    min_track_frames: int = 8
    min_box_height: float = 40.0
    max_crops: int = 32
    max_frame_dimension: int = 4096
    max_frames: int | None = None
    """Stop after this many frames (None: the whole video)."""
    max_lost_s: float = 1.5
    """How long a track may go unseen (occlusion) before it ends."""
    interpolate_gap_s: float = 1.5
    """Gaps in a track's boxes up to this long are filled by linear interpolation in the summary."""
    progress_every_s: float = 0.5
    prime_s: float = 4.0
    """Seconds at the start from which a background detector estimates the empty scene (0: off)."""

    @classmethod
    def from_settings(cls, settings: Any, **overrides: Any) -> FootageSettings:
        """From the service Settings (fields it lacks keep their defaults)."""
        values = {}
        for name, setting in (
            ("detector", "detector"),
            ("detector_threshold", "detector_threshold"),
            ("detector_person_class", "detector_person_class"),
            ("max_tracklet_s", "footage_max_tracklet_s"),
            ("min_track_frames", "footage_min_track_frames"),
            ("min_box_height", "footage_min_box_height"),
            ("max_frame_dimension", "max_frame_dimension"),
        ):
            if hasattr(settings, setting):
                values[name] = getattr(settings, setting)
        values.update(overrides)
        return cls(**values)


@dataclass(frozen=True)
class FootageProgress:
    frames_processed: int
    frames_total: int | None
    """Frames the container announced (None if it does not say)."""
    tracks: int
    """Confirmed tracks so far."""
    tracklets: int
    """Tracklets handed to on_tracklet so far."""
    fps: float
    """Frames processed per second of wall time so far."""


@dataclass
class FootageSummary:
    frames_processed: int
    frames_total: int | None
    """Frames the container announced (None if it does not say)."""
    fps: float
    """The footage's frame rate."""
    width: int
    height: int
    truncated: bool
    """The stream ended before the frame count its container announced (what decoded was processed)."""
    stopped: bool
    """should_stop() said so: the remaining frames were not read, open tracks were not cut."""
    tracks: dict[int, np.ndarray]
    """Every confirmed track's boxes by track id: (N, 6) float64 rows (frame 0-based, x, y, w, h, score),
    gaps up to interpolate_gap_s filled; ``format_mot(tracks)`` is the MOTChallenge text."""
    tracklets: int
    dropped_tracklets: int
    seconds: dict[str, float] = field(default_factory=dict)
    """Wall time per stage: read, detect, track, cut (crop), total; and ``cpu``: CPU seconds the process used
    meanwhile (all its threads), which a busy machine does not inflate."""


#: The name footage-jobs' first proposal used.
FootageResult = FootageSummary


def make_detector(settings: FootageSettings, providers: list[str] | None = None) -> Detector:
    """The detector REID_DETECTOR names; ONNX detectors run with ``providers`` (the embedder's device)."""
    name = settings.detector.strip()
    if name in ("background", "mog2", "background-mog2"):
        from service.footage.background import BackgroundSubtractionDetector

        return BackgroundSubtractionDetector(method="mog2")
    if name in ("knn", "background-knn"):
        from service.footage.background import BackgroundSubtractionDetector

        return BackgroundSubtractionDetector(method="knn")
    if name.endswith(".onnx") or name.partition(":")[0] in ("yolov5", "yolov8", "end2end"):
        from service.footage.onnx_detector import OnnxDetector

        return OnnxDetector(
            Path(name), providers=providers, score_threshold=settings.detector_threshold,
            person_class=settings.detector_person_class,
        )  # fmt: skip
    raise ValueError(f"REID_DETECTOR must be 'background', 'background-knn' or a path to an .onnx file, got {name!r}")


def interpolate_gaps(boxes: np.ndarray | list[Box], max_gap: int) -> np.ndarray:
    """(N, 6) rows (frame, x, y, w, h, score) sorted by frame, gaps of at most ``max_gap`` missing frames
    filled linearly (score: the smaller of the gap's ends); longer gaps stay gaps."""
    rows = np.asarray(boxes, np.float64).reshape(-1, 6)
    rows = rows[np.argsort(rows[:, 0], kind="stable")]
    if len(rows) < 2:
        return rows
    pieces = [rows[:1]]
    for previous, current in zip(rows[:-1], rows[1:], strict=True):
        span = int(current[0] - previous[0])
        if span < 1:
            continue  # the same frame twice: keep the first
        if 1 < span <= max_gap + 1:
            t = (np.arange(1, span) / span)[:, None]
            filled = previous[None, :] + t * (current - previous)[None, :]
            filled[:, 0] = previous[0] + np.arange(1, span)
            filled[:, 5] = min(previous[5], current[5])
            pieces.append(filled)
        pieces.append(current[None])
    return np.concatenate(pieces)


def format_mot(tracks: dict[int, np.ndarray | list[Box]]) -> str:
    """MOTChallenge text: ``frame,id,left,top,width,height,conf,-1,-1,-1`` with 1-based frames, by frame."""
    parts = [np.c_[np.asarray(b, np.float64).reshape(-1, 6)[:, :1], np.full((len(b), 1), tid),
                   np.asarray(b, np.float64).reshape(-1, 6)[:, 1:]]
             for tid, b in tracks.items() if len(b)]  # fmt: skip
    if not parts:
        return ""
    rows = np.concatenate(parts)
    rows = rows[np.lexsort((rows[:, 1], rows[:, 0]))]
    return "".join(
        f"{int(r[0]) + 1},{int(r[1])},{r[2]:.2f},{r[3]:.2f},{r[4]:.2f},{r[5]:.2f},{r[6]:.3f},-1,-1,-1\n" for r in rows
    )


def run_footage(
    source: str | Path,
    *,
    on_tracklet: Callable[[FootageTracklet], None],
    settings: FootageSettings | Any = None,
    card: Any = None,
    card_height: int | None = None,
    card_width: int | None = None,
    camera_id: str | None = None,
    detector: Detector | None = None,
    providers: list[str] | None = None,
    on_progress: Callable[[FootageProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> FootageSummary:
    """Detect, track and cut the people of a video file (see the module docstring).

    ``settings``: a FootageSettings, or the service's Settings (read with FootageSettings.from_settings).
    Crop size: ``card`` (anything with ``height`` and ``width``, e.g. the ModelCard) or ``card_height`` and
    ``card_width``. Raises InvalidMediaError (not a video) or LimitExceededError (frame size over the limit)
    before any frame is decoded. ``detector`` defaults to ``make_detector(settings, providers)``; a detector
    is restarted for this stream, so one instance must not serve two streams at once (the ONNX detector is
    stateless and may). ``on_tracklet`` and ``on_progress`` run on the calling thread.
    """
    if settings is None:
        settings = FootageSettings()
    elif not isinstance(settings, FootageSettings):
        settings = FootageSettings.from_settings(settings)
    if card is not None:
        card_height, card_width = int(card.height), int(card.width)
    if not card_height or not card_width:
        raise ValueError("run_footage needs the crop size: card=... or card_height and card_width")
    reader = FrameReader(source, settings.max_frame_dimension, settings.max_frames)
    info = reader.info
    detector = detector or make_detector(settings, providers)
    detector.start(info.width, info.height, info.fps)
    tracker = ByteTracker(fps=info.fps, max_lost_s=settings.max_lost_s)
    cutter = TrackletCutter(
        on_tracklet, card_height, card_width, info.fps, max_tracklet_s=settings.max_tracklet_s,
        min_frames=settings.min_track_frames, min_box_height=settings.min_box_height,
        max_crops=settings.max_crops, camera_id=camera_id,
    )  # fmt: skip
    # Compact per-track storage (24 bytes a box) so hours of footage keep every box for the MOT export.
    tracks: dict[int, array.array] = {}
    seconds = {"read": 0.0, "detect": 0.0, "track": 0.0, "cut": 0.0}
    started = last_progress = time.perf_counter()
    cpu_started = time.process_time()
    was_cancelled = False
    processed = 0
    frames = iter(reader)
    prime = getattr(detector, "prime", None)
    if prime is not None and settings.prime_s > 0:
        # A background model needs the empty scene; footage often starts with people in it. The first
        # seconds are decoded once ahead (kept at most prime_s long) to estimate it, then processed as usual.
        t0 = time.perf_counter()
        ahead = list(itertools.islice(frames, max(1, int(round(settings.prime_s * info.fps)))))
        seconds["read"] += time.perf_counter() - t0
        t1 = time.perf_counter()
        prime([frame for _, frame in ahead])
        seconds["detect"] += time.perf_counter() - t1
        frames = itertools.chain(ahead, frames)

    def report(frames_done: int) -> None:
        if on_progress is not None:
            elapsed = max(time.perf_counter() - started, 1e-6)
            on_progress(
                FootageProgress(
                    frames_done, info.frame_count or None, tracker.next_id - 1, cutter.emitted, frames_done / elapsed
                )
            )

    while True:
        t0 = time.perf_counter()
        item = next(frames, None)
        t1 = time.perf_counter()
        seconds["read"] += t1 - t0
        if item is None:
            break
        if should_stop is not None and should_stop():
            was_cancelled = True
            reader.close()
            break
        index, frame = item
        processed += 1
        detections = detector.detect(frame)
        t2 = time.perf_counter()
        boxes, ended = tracker.update(detections)
        detector.feedback(tracker.moving_boxes())
        t3 = time.perf_counter()
        current = np.asarray([b.detection for b in boxes if b.current], np.float32).reshape(-1, 4)
        for b in boxes:
            x1, y1, x2, y2 = (float(v) for v in b.box)
            tracks.setdefault(b.track_id, array.array("f")).extend((b.frame, x1, y1, x2 - x1, y2 - y1, b.score))
            others = current[~np.all(current == b.detection, axis=1)] if b.current else current
            cutter.observe(b.track_id, b.frame, frame if b.current else None, b.detection, b.score, others)
        for track_id in ended:
            cutter.end_track(track_id)
        t4 = time.perf_counter()
        seconds["detect"] += t2 - t1
        seconds["track"] += t3 - t2
        seconds["cut"] += t4 - t3
        if t4 - last_progress >= settings.progress_every_s:
            last_progress = t4
            report(processed)
    if not was_cancelled:
        tracker.finish()
        cutter.finish()
    seconds["total"] = time.perf_counter() - started
    seconds["cpu"] = time.process_time() - cpu_started
    report(processed)
    max_gap = int(round(settings.interpolate_gap_s * info.fps))
    return FootageSummary(
        frames_processed=processed,
        frames_total=info.frame_count or None,
        fps=info.fps,
        width=info.width,
        height=info.height,
        truncated=reader.truncated,
        stopped=was_cancelled,
        tracks={
            tid: interpolate_gaps(np.frombuffer(b, np.float32).reshape(-1, 6), max_gap) for tid, b in tracks.items()
        },
        tracklets=cutter.emitted,
        dropped_tracklets=cutter.dropped,
        seconds=seconds,
    )
