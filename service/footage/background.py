"""A weight-free person detector for fixed cameras: background subtraction and person-shaped blobs.

Every install has it (OpenCV only; OpenCV 5's wheels no longer ship the HOG people detector or the
cascades). Per frame, at a reduced processing resolution:

1. MOG2 (or KNN) background subtraction with shadow detection; shadow pixels (value 127) are dropped.
2. Morphology: an opening removes speckle noise, a closing with a tall kernel joins head, body and legs.
3. Connected components become blobs; too small or implausibly shaped ones are dropped; fragments of one
   person stacked vertically (a person cut by a pole or by clothes the colour of the background) are merged.
4. Blobs too wide for one person (a group walking side by side) are split at the valleys of their column
   profile into as many person-wide pieces as their width allows.
5. A score in [0, 1] from how well the blob fills its box and how person-like its shape is, so that the
   tracker's two-stage (high/low score) association can use fragments only to continue existing tracks.

People standing still: the background model is only updated every few frames, and on those updates the
pixels inside the boxes the tracker says are people who have moved (``feedback``) are replaced by the
model's own background image, so a person who stops is not learned into the background. Ghosts (a person
present in the first frame who then leaves) never moved, are not protected and fade at the normal rate.

Sudden lighting changes (a cloud, lights switched on) turn much of the frame into foreground at once: the
model then re-learns quickly for a few frames and the detector reports nothing meanwhile.
"""

from __future__ import annotations

import cv2
import numpy as np

from service.footage.detection import empty_boxes

#: Width / height of a standing or walking person's box, roughly (used to count people in a wide blob).
PERSON_ASPECT = 0.42


class BackgroundSubtractionDetector:
    """MOG2/KNN foreground blobs as person boxes (see the module docstring)."""

    def __init__(
        self,
        method: str = "mog2",
        max_side: int = 640,
        history_s: float = 30.0,
        var_threshold: float = 16.0,
        update_every: int = 2,
        min_height: float = 24.0,
        max_height_fraction: float = 0.9,
        box_padding: float = 0.04,
        relearn_fraction: float = 0.4,
    ):
        if method not in ("mog2", "knn"):
            raise ValueError(f"background method must be mog2 or knn, got {method!r}")
        self.method = method
        self.max_side = max_side
        self.history_s = history_s
        self.var_threshold = var_threshold
        self.update_every = max(1, update_every)
        self.min_height = min_height
        self.max_height_fraction = max_height_fraction
        self.box_padding = box_padding
        self.relearn_fraction = relearn_fraction
        self._protected = np.zeros((0, 4), np.float32)
        self.start(640, 480, 25.0)

    def start(self, width: int, height: int, fps: float) -> None:
        self.width, self.height = width, height
        self.scale = min(1.0, self.max_side / max(width, height))
        self.proc_w = max(1, int(round(width * self.scale)))
        self.proc_h = max(1, int(round(height * self.scale)))
        self.history = max(10, int(round(self.history_s * fps)))
        if self.method == "mog2":
            self.subtractor = cv2.createBackgroundSubtractorMOG2(self.history, self.var_threshold, True)
        else:
            self.subtractor = cv2.createBackgroundSubtractorKNN(self.history, 400.0, True)
        self.frame_index = 0
        self.updates = 0
        self.relearn_left = 0
        self._protected = np.zeros((0, 4), np.float32)
        unit = max(1, int(round(self.proc_h / 160)))
        self._open_kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * unit + 1, 2 * unit + 1))
        self._close_kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * unit + 1, 4 * unit + 3))
        self.last_mask: np.ndarray | None = None

    def feedback(self, boxes: np.ndarray) -> None:
        self._protected = np.asarray(boxes, np.float32).reshape(-1, 4)[:, :4] * self.scale

    # ------------------------------------------------------------------------------------------------
    def _update_model(self, small: np.ndarray, rate: float) -> None:
        frame = small
        if len(self._protected):
            background = self.subtractor.getBackgroundImage()
            if background is not None and background.shape == small.shape:
                frame = small.copy()
                for x1, y1, x2, y2 in self._protected:
                    pad_x, pad_y = 0.1 * (x2 - x1), 0.05 * (y2 - y1)
                    a = max(0, int(x1 - pad_x))
                    b = max(0, int(y1 - pad_y))
                    c = min(self.proc_w, int(np.ceil(x2 + pad_x)))
                    d = min(self.proc_h, int(np.ceil(y2 + pad_y)))
                    frame[b:d, a:c] = background[b:d, a:c]
        self.subtractor.apply(frame, learningRate=rate)
        self.updates += 1

    def foreground(self, frame_bgr: np.ndarray) -> np.ndarray:
        """The cleaned binary foreground mask (uint8 0/255) at the processing resolution."""
        if self.scale < 1.0:
            small = cv2.resize(frame_bgr, (self.proc_w, self.proc_h), interpolation=cv2.INTER_AREA)
        else:
            small = frame_bgr
        self.frame_index += 1
        if self.updates < 2 * self.update_every:
            # Bootstrapping: learn every frame (a model that has seen one frame calls everything foreground).
            raw = self.subtractor.apply(small, learningRate=1.0 / (self.updates + 1))
            self.updates += 1
        else:
            raw = self.subtractor.apply(small, learningRate=0.0)
            if self.relearn_left > 0:
                self._update_model(small, 0.25)
                self.relearn_left -= 1
            elif self.frame_index % self.update_every == 0:
                self._update_model(small, min(1.0, max(self.update_every / self.history, 1.0 / (self.updates + 1))))
        mask = np.where(raw > 200, 255, 0).astype(np.uint8)
        if np.count_nonzero(mask) > self.relearn_fraction * mask.size and self.updates > 2 * self.update_every:
            self.relearn_left = 5
            self.last_mask = np.zeros_like(mask)
            return self.last_mask
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, self._open_kernel)
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, self._close_kernel)
        self.last_mask = mask
        return mask

    def detect(self, frame_bgr: np.ndarray) -> np.ndarray:
        mask = self.foreground(frame_bgr)
        if self.relearn_left > 0 or self.updates <= 2 * self.update_every:
            return empty_boxes()
        boxes = blobs_to_people(
            mask,
            min_height=self.min_height * self.scale,
            max_height=self.max_height_fraction * self.proc_h,
        )
        if not len(boxes):
            return empty_boxes()
        w = boxes[:, 2] - boxes[:, 0]
        h = boxes[:, 3] - boxes[:, 1]
        boxes[:, 0] -= self.box_padding * w
        boxes[:, 2] += self.box_padding * w
        boxes[:, 1] -= 0.5 * self.box_padding * h
        boxes[:, 3] += 0.5 * self.box_padding * h
        boxes[:, :4] /= self.scale
        boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, self.width)
        boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, self.height)
        return boxes.astype(np.float32)


def _shape_score(width: float, height: float) -> float:
    """1 for a person-like width/height (0.2..0.8), falling off outside."""
    aspect = width / max(height, 1.0)
    if aspect < 0.2:
        return max(0.0, aspect / 0.2) ** 2
    if aspect > 0.8:
        return float(np.exp(-(((aspect - 0.8) / 0.4) ** 2)))
    return 1.0


def _merge_fragments(stats: list[list[float]]) -> list[list[float]]:
    """Join blobs that are parts of one person: one above the other, overlapping in x, small vertical gap.

    Each row is [x1, y1, x2, y2, area]. Merges greedily while the union still looks like one person.
    """
    merged = True
    while merged and len(stats) > 1:
        merged = False
        for i in range(len(stats)):
            for j in range(i + 1, len(stats)):
                a, b = stats[i], stats[j]
                overlap_x = min(a[2], b[2]) - max(a[0], b[0])
                narrow = min(a[2] - a[0], b[2] - b[0])
                gap_y = max(a[1], b[1]) - min(a[3], b[3])
                tall = max(a[3] - a[1], b[3] - b[1])
                union = [min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]), a[4] + b[4]]
                union_aspect = (union[2] - union[0]) / max(union[3] - union[1], 1.0)
                if overlap_x > 0.5 * narrow and gap_y < 0.3 * tall and union_aspect < 0.75:
                    stats[i] = union
                    del stats[j]
                    merged = True
                    break
            if merged:
                break
    return stats


def _split_wide(mask: np.ndarray, box: list[float]) -> list[list[float]]:
    """Split a blob wider than one person at the valleys of its column profile.

    Returns [x1, y1, x2, y2, area, split] rows, each piece's box tightened to its own foreground.
    """
    x1, y1, x2, y2 = (int(v) for v in box[:4])
    width, height = x2 - x1, y2 - y1
    count = int(round(width / (PERSON_ASPECT * height)))
    if width / max(height, 1) < 0.8 or count < 2:
        return [[*box[:5], 0.0]]
    patch = mask[y1:y2, x1:x2] > 0
    profile = patch.sum(axis=0).astype(np.float32)
    smooth = max(1, width // (4 * count)) | 1
    profile = np.convolve(profile, np.ones(smooth, np.float32) / smooth, mode="same")
    cuts = [0]
    step = width / count
    for k in range(1, count):
        centre = int(round(k * step))
        lo, hi = max(cuts[-1] + 1, int(centre - 0.35 * step)), min(width - 1, int(centre + 0.35 * step))
        if hi <= lo:
            continue
        cuts.append(lo + int(np.argmin(profile[lo:hi])))
    cuts.append(width)
    pieces = []
    for a, b in zip(cuts[:-1], cuts[1:], strict=True):
        part = patch[:, a:b]
        rows = np.flatnonzero(part.any(axis=1))
        cols = np.flatnonzero(part.any(axis=0))
        if len(rows) == 0:
            continue
        pieces.append(
            [x1 + a + cols[0], y1 + rows[0], x1 + a + cols[-1] + 1, y1 + rows[-1] + 1, float(part.sum()), 1.0]
        )
    return pieces


def blobs_to_people(mask: np.ndarray, min_height: float, max_height: float) -> np.ndarray:
    """Person boxes (N, 5: x1, y1, x2, y2, score) from a binary foreground mask, in mask pixels."""
    count, _labels, stats, _centroids = cv2.connectedComponentsWithStats(mask, connectivity=8)
    min_area = max(4.0, 0.08 * min_height * min_height)
    blobs = []
    for label in range(1, count):
        x, y, w, h, area = (float(v) for v in stats[label])
        if area < min_area or h < 0.35 * min_height:
            continue
        blobs.append([x, y, x + w, y + h, area])
    blobs = _merge_fragments(blobs)
    out = []
    for blob in blobs:
        for x1, y1, x2, y2, area, split in _split_wide(mask, blob):
            w, h = x2 - x1, y2 - y1
            if h < min_height or h > max_height or w < 0.1 * min_height:
                continue
            fill = area / max(w * h, 1.0)
            score = min(1.0, fill / 0.45) * _shape_score(w, h) * (0.85 if split else 1.0)
            out.append([x1, y1, x2, y2, score])
    return np.asarray(out, np.float32).reshape(-1, 5)
