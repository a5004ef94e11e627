"""Multi-person tracking by detection: a Kalman motion model and ByteTrack-style two-stage association.

Libraries considered (PyPI, 2026): ``boxmot`` (needs torch), ``bytetracker`` 0.3.2 (a 2023 packaging of
the ByteTrack repository, unmaintained), ``motpy`` 0.0.10 (2021, unmaintained), ``ocsort`` (research code,
not maintained as a package), ``norfair`` 2.3 (maintained, but distance-function matching without
ByteTrack's high/low score stages, and its video extra pulls the GUI ``opencv-python`` wheel beside our
headless one), ``supervision`` (requires ``opencv-python``). None fits without torch, a second OpenCV
wheel or an unmaintained dependency, so this is a compact implementation on scipy's
``linear_sum_assignment``.

Per frame:

1. Every track's Kalman filter (state cx, cy, aspect w/h, h and their velocities, noise proportional to
   the box height as in SORT/ByteTrack) predicts its box.
2. High-score detections are matched to tracked and lost tracks by IoU.
3. Low-score detections (fragments, partly occluded people) are matched to the confirmed tracks still
   unmatched, by IoU of at least 0.5; they continue tracks (also lost ones: a person coming out from behind
   another shows as a fragment first) but never start one.
4. Leftover high-score detections are matched to leftover tracks by buffered IoU (boxes grown by 30% of
   their size, a lower bar ``buffer_iou``), which catches small or fast people whose boxes no longer
   overlap from frame to frame.
5. Tentative tracks take the remaining high-score detections (IoU, then buffered IoU).
6. Remaining high-score detections start tentative tracks, confirmed after ``min_hits`` consecutive hits
   (their earlier boxes are reported then); tracks unmatched for ``max_lost_s`` seconds end.

Tracks are numbered 1, 2, ... in the order they are confirmed. Re-joining a person after a long occlusion
by reID embedding is not done here: see bench/footage.md for why.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from service.footage.detection import expand_boxes, iou_matrix

_POS_STD = 1.0 / 20
_VEL_STD = 1.0 / 160


def _to_xyah(box: np.ndarray) -> np.ndarray:
    w, h = box[2] - box[0], box[3] - box[1]
    return np.array([box[0] + w / 2, box[1] + h / 2, w / max(h, 1e-6), h], np.float64)


def _to_xyxy(state: np.ndarray) -> np.ndarray:
    cx, cy, a, h = state[:4]
    w = a * h
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], np.float64)


class KalmanBox:
    """Constant-velocity Kalman filter over (cx, cy, w/h, h), noise scaled by the box height."""

    _F = np.eye(8)
    _F[:4, 4:] = np.eye(4)
    _H = np.eye(4, 8)

    def __init__(self, box: np.ndarray):
        xyah = _to_xyah(box)
        self.mean = np.r_[xyah, np.zeros(4)]
        h = xyah[3]
        std = np.array([2 * _POS_STD * h, 2 * _POS_STD * h, 1e-2, 2 * _POS_STD * h,
                        10 * _VEL_STD * h, 10 * _VEL_STD * h, 1e-5, 10 * _VEL_STD * h])  # fmt: skip
        self.cov = np.diag(std**2)

    def predict(self) -> None:
        h = max(self.mean[3], 1.0)
        q = np.r_[_POS_STD * h, _POS_STD * h, 1e-2, _POS_STD * h, _VEL_STD * h, _VEL_STD * h, 1e-5, _VEL_STD * h]
        self.mean = self._F @ self.mean
        self.cov = self._F @ self.cov @ self._F.T + np.diag(q**2)
        self.mean[3] = max(self.mean[3], 1.0)

    def update(self, box: np.ndarray) -> None:
        h = max(self.mean[3], 1.0)
        r = np.diag(np.r_[_POS_STD * h, _POS_STD * h, 1e-1, _POS_STD * h] ** 2)
        s = self._H @ self.cov @ self._H.T + r
        gain = np.linalg.solve(s, self._H @ self.cov).T
        self.mean = self.mean + gain @ (_to_xyah(box) - self._H @ self.mean)
        self.cov = self.cov - gain @ self._H @ self.cov

    @property
    def box(self) -> np.ndarray:
        return _to_xyxy(self.mean)


@dataclass
class Track:
    """One followed person."""

    kalman: KalmanBox
    score: float
    first_frame: int
    last_frame: int
    hits: int = 1
    track_id: int = 0
    """0 while tentative; the public id once confirmed."""
    pending: list[tuple[int, np.ndarray, float]] = field(default_factory=list)
    """Boxes seen while tentative, reported when the track is confirmed."""
    start_centre: np.ndarray | None = None
    moved: bool = False
    """True once the track has moved more than half its height from where it started (not a ghost)."""


@dataclass(frozen=True)
class TrackBox:
    """One confirmed track's box in one frame."""

    track_id: int
    frame: int
    box: np.ndarray
    """x1, y1, x2, y2 (the Kalman-filtered box)."""
    detection: np.ndarray
    """x1, y1, x2, y2 of the detection itself."""
    score: float
    current: bool
    """False for boxes of the frames before the track was confirmed (reported late)."""


def _match(cost: np.ndarray, max_cost: float) -> list[tuple[int, int]]:
    if cost.size == 0:
        return []
    rows, cols = linear_sum_assignment(cost)
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if cost[r, c] <= max_cost]


class ByteTracker:
    """ByteTrack-style tracker (see the module docstring); one instance per stream."""

    def __init__(
        self,
        fps: float = 25.0,
        high_score: float = 0.5,
        low_score: float = 0.1,
        new_track_score: float = 0.6,
        match_iou: float = 0.3,
        low_match_iou: float = 0.5,
        buffer: float = 0.3,
        buffer_iou: float = 0.2,
        min_hits: int = 3,
        max_lost_s: float = 1.5,
    ):
        self.high_score, self.low_score, self.new_track_score = high_score, low_score, new_track_score
        self.match_iou, self.low_match_iou, self.buffer = match_iou, low_match_iou, buffer
        self.buffer_iou = buffer_iou
        self.min_hits = min_hits
        self.max_lost = max(1, int(round(max_lost_s * fps)))
        self.tracks: list[Track] = []
        self.next_id = 1
        self.frame = -1

    @property
    def confirmed(self) -> list[Track]:
        return [t for t in self.tracks if t.track_id]

    def moving_boxes(self) -> np.ndarray:
        """Boxes (N, 4) of confirmed tracks seen in the last frame that have moved at some point."""
        boxes = [t.kalman.box for t in self.tracks if t.track_id and t.moved and t.last_frame == self.frame]
        return np.asarray(boxes, np.float32).reshape(-1, 4)

    def update(self, detections: np.ndarray) -> tuple[list[TrackBox], list[int]]:
        """Advance one frame with its detections (N, 5). Returns (boxes of confirmed tracks matched in this
        frame, plus late boxes of tracks confirmed now; ids of tracks that ended)."""
        self.frame += 1
        frame = self.frame
        detections = np.asarray(detections, np.float32).reshape(-1, 5)
        for track in self.tracks:
            track.kalman.predict()
        scores = detections[:, 4]
        high = np.flatnonzero(scores >= self.high_score)
        low = np.flatnonzero((scores >= self.low_score) & (scores < self.high_score))
        matched: dict[int, int] = {}  # track index -> detection index

        def associate(track_ids: list[int], det_ids: np.ndarray, min_iou: float, grow: float = 0.0) -> None:
            if not track_ids or not len(det_ids):
                return
            predicted = np.asarray([self.tracks[i].kalman.box for i in track_ids], np.float32)
            dets = detections[det_ids, :4]
            if grow:
                predicted, dets = expand_boxes(predicted, grow), expand_boxes(dets, grow)
            cost = 1.0 - iou_matrix(predicted, dets)
            for r, c in _match(cost, 1.0 - min_iou):
                matched[track_ids[r]] = int(det_ids[c])

        def free_dets(ids: np.ndarray) -> np.ndarray:
            used = set(matched.values())
            return np.asarray([d for d in ids if d not in used], np.int64)

        confirmed = [i for i, t in enumerate(self.tracks) if t.track_id]
        associate(confirmed, high, self.match_iou)
        associate([i for i in confirmed if i not in matched], low, self.low_match_iou)
        leftover = [i for i in confirmed if i not in matched]
        associate(leftover, free_dets(high), self.buffer_iou, grow=self.buffer)
        tentative = [i for i, t in enumerate(self.tracks) if not t.track_id]
        associate(tentative, free_dets(high), self.match_iou)
        associate([i for i in tentative if i not in matched], free_dets(high), self.buffer_iou, grow=self.buffer)

        out: list[TrackBox] = []
        for index, det in matched.items():
            track = self.tracks[index]
            box = detections[det, :4]
            track.kalman.update(box)
            consecutive = track.last_frame == frame - 1
            track.last_frame = frame
            track.score = float(detections[det, 4])
            track.hits = track.hits + 1 if consecutive or track.track_id else 1
            centre = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
            if track.start_centre is None:
                track.start_centre = centre
            elif not track.moved and np.linalg.norm(centre - track.start_centre) > 0.5 * (box[3] - box[1]):
                track.moved = True
            if not track.track_id:
                track.pending.append((frame, box.copy(), track.score))
                if track.hits >= self.min_hits:
                    track.track_id = self.next_id
                    self.next_id += 1
                    for f, b, s in track.pending[:-1]:
                        out.append(TrackBox(track.track_id, f, b, b, s, current=False))
                    track.pending.clear()
                else:
                    continue
            out.append(TrackBox(track.track_id, frame, track.kalman.box.astype(np.float32), box, track.score, True))

        for det in free_dets(high):
            if detections[det, 4] >= self.new_track_score or frame == 0:
                box = detections[det, :4]
                track = Track(KalmanBox(box), float(detections[det, 4]), frame, frame)
                track.pending.append((frame, box.copy(), track.score))
                track.start_centre = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
                if self.min_hits <= 1:
                    track.track_id = self.next_id
                    self.next_id += 1
                    track.pending.clear()
                    out.append(TrackBox(track.track_id, frame, box.copy(), box.copy(), track.score, True))
                self.tracks.append(track)

        ended: list[int] = []
        alive: list[Track] = []
        for track in self.tracks:
            if track.last_frame == frame:
                alive.append(track)
            elif track.track_id and frame - track.last_frame <= self.max_lost:
                alive.append(track)
            elif track.track_id:
                ended.append(track.track_id)
        self.tracks = alive
        return out, ended

    def finish(self) -> list[int]:
        """End every confirmed track (the stream is over); returns their ids."""
        ended = [t.track_id for t in self.tracks if t.track_id]
        self.tracks = []
        return ended
