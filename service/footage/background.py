"""A weight-free person detector for fixed cameras: background subtraction and person-shaped blobs.

Every install has it (OpenCV only; OpenCV 5's wheels no longer ship the HOG people detector or the
cascades). Per frame, at a processing resolution reduced by an integer factor to at most ``max_side``:

1. MOG2 (or KNN) background subtraction with shadow detection; shadow pixels (value 127) are dropped.
2. Morphology: an opening removes speckle noise, a closing with a tall kernel joins head, body and legs.
3. Blobs -> person boxes (``service.footage.blobs``): fragments merged, groups split between heads and by
   width, people behind people split by the scene's perspective (learned online), scores from shape.

People standing still: the pixels inside the boxes the tracker says are people who have moved
(``feedback``) are shown to the background model as its own background image, so a person who stops is
not learned into the background, and the foreground there comes from the difference to that background
image (shadows excluded). A protected region whose foreground outline has its edges in the background
image rather than in the frame is a ghost (the model learned someone who has left) and is not protected.
Ghosts fade in about a tenth of the history (the learning rate is 1 / history throughout); ``prime``
avoids most of them by starting the model from the median of the first seconds instead of frame one.

Global lighting changes (a cloud, the sun, auto-exposure) are compensated: each frame's brightness is
scaled to the background model's (median grey levels). A change that still turns much of the frame into
foreground at once (lights switched on in part of the scene) makes the model re-learn quickly for a few
frames, during which the detector reports nothing.
"""

from __future__ import annotations

import cv2
import numpy as np

from service.footage.blobs import SceneGeometry, blobs_to_people
from service.footage.detection import empty_boxes


class BackgroundSubtractionDetector:
    """MOG2/KNN foreground blobs as person boxes (see the module docstring)."""

    def __init__(
        self,
        method: str = "mog2",
        max_side: int = 640,
        history_s: float = 30.0,
        var_threshold: float = 16.0,
        diff_threshold: float = 30.0,
        warm_up: int = 3,
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
        self.diff_threshold = diff_threshold
        self.warm_up = warm_up
        self.min_height = min_height
        self.max_height_fraction = max_height_fraction
        self.box_padding = box_padding
        self.relearn_fraction = relearn_fraction
        self._protected = np.zeros((0, 4), np.float32)
        self.start(640, 480, 25.0)

    def start(self, width: int, height: int, fps: float) -> None:
        self.width, self.height = width, height
        # An integer reduction (768x576 -> 384x288 with the default 640): INTER_AREA averages whole pixel
        # blocks, which also averages the sensor noise away, and is fast for integer factors.
        factor = max(1, int(np.ceil(max(width, height) / self.max_side)))
        self.scale = 1.0 / factor
        self.proc_w, self.proc_h = max(1, width // factor), max(1, height // factor)
        self.history = max(10, int(round(self.history_s * fps)))
        if self.method == "mog2":
            self.subtractor = cv2.createBackgroundSubtractorMOG2(self.history, self.var_threshold, True)
        else:
            self.subtractor = cv2.createBackgroundSubtractorKNN(self.history, 400.0, True)
        self.frame_index = 0
        self._background: np.ndarray | None = None
        self._level: float | None = None
        self.relearn_left = 0
        self._protected = np.zeros((0, 4), np.float32)
        unit = max(1, int(round(self.proc_h / 160)))
        self._open_kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * unit + 1, 2 * unit + 1))
        self._close_kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * unit + 1, 4 * unit + 3))
        self.last_mask: np.ndarray | None = None
        self.geometry = SceneGeometry()

    def prime(self, frames: list[np.ndarray]) -> None:
        """Start the background model from the per-pixel median of the stream's first frames (people who
        walk leave the median), instead of from the first frame, whose people would leave ghosts."""
        if len(frames) < 5:
            return
        step = max(1, len(frames) // 25)
        small = [self._reduce(frame) for frame in frames[::step]]
        median = np.median(np.stack(small), axis=0).astype(np.uint8)
        for rate in (1.0, 0.5, 0.25, 0.1):
            self.subtractor.apply(median, learningRate=rate)
        self.frame_index = max(self.frame_index, self.warm_up)

    def _reduce(self, frame_bgr: np.ndarray) -> np.ndarray:
        if self.scale < 1.0:
            return cv2.resize(frame_bgr, (self.proc_w, self.proc_h), interpolation=cv2.INTER_AREA)
        return frame_bgr

    def _compensate_gain(self, small: np.ndarray) -> np.ndarray:
        """Scale the frame's brightness to the background model's (a cloud, the sun coming out, the camera's
        auto-exposure): the median grey level of the scene is compared, so people hardly move it."""
        if self._level is None or self._level < 8:
            return small
        level = float(np.median(cv2.cvtColor(small[::4, ::4], cv2.COLOR_BGR2GRAY)))
        gain = float(np.clip(self._level / max(level, 1.0), 0.6, 1.6))
        if abs(gain - 1.0) < 0.03:
            return small
        return cv2.convertScaleAbs(small, alpha=gain)

    def feedback(self, boxes: np.ndarray) -> None:
        self._protected = np.asarray(boxes, np.float32).reshape(-1, 4)[:, :4] * self.scale

    # ------------------------------------------------------------------------------------------------
    def _regions(self) -> list[tuple[int, int, int, int]]:
        """The protected boxes at the processing resolution, grown a little, as (x1, y1, x2, y2) ints."""
        regions = []
        for x1, y1, x2, y2 in self._protected:
            pad_x, pad_y = 0.15 * (x2 - x1), 0.05 * (y2 - y1)
            a, b = max(0, int(x1 - pad_x)), max(0, int(y1 - pad_y))
            c, d = min(self.proc_w, int(np.ceil(x2 + pad_x))), min(self.proc_h, int(np.ceil(y2 + pad_y)))
            if c > a and d > b:
                regions.append((a, b, c, d))
        return regions

    def foreground(self, frame_bgr: np.ndarray) -> np.ndarray:
        """The cleaned binary foreground mask (uint8 0/255) at the processing resolution.

        MOG2's ``apply`` always learns (even with learning rate 0 it adds new modes), so protected regions
        are handled by showing the model its own background image there, and finding the foreground
        inside them by the difference to that background image instead (shadows excluded: darker by a
        bounded ratio with the same chromaticity).
        """
        small = self._reduce(frame_bgr)
        self.frame_index += 1
        if self.frame_index > 1 and (self._background is None or self.frame_index % 5 == 0):
            self._background = self.subtractor.getBackgroundImage()
            if self._background is not None and self._background.shape == small.shape:
                self._level = float(np.median(cv2.cvtColor(self._background[::4, ::4], cv2.COLOR_BGR2GRAY)))
        small = self._compensate_gain(small)
        regions = self._regions() if self.relearn_left == 0 else []
        model_input = small
        if regions:
            if self._background is not None and self._background.shape == small.shape:
                masks = {}
                for a, b, c, d in regions:
                    found = _difference_mask(small[b:d, a:c], self._background[b:d, a:c], self.diff_threshold)
                    if not _is_ghost(small[b:d, a:c], self._background[b:d, a:c], found):
                        masks[(a, b, c, d)] = found
                regions = list(masks)
                model_input = small.copy() if regions else small
                for a, b, c, d in regions:
                    model_input[b:d, a:c] = self._background[b:d, a:c]
            else:
                regions = []
        if self.relearn_left > 0:
            rate = 0.25
            self.relearn_left -= 1
            self._background = None
            self._level = None
        else:
            # 1/history from the second frame on: MOG2's own schedule, 1/min(n, history), learns a thing that
            # stops within about 0.1 * n frames (background ratio 0.9), too fast while n is small. A person
            # present in the first frame leaves a ghost that fades in about 0.1 * history frames.
            rate = 1.0 if self.frame_index == 1 else 1.0 / self.history
        raw = self.subtractor.apply(model_input, learningRate=rate)
        mask = np.where(raw > 200, 255, 0).astype(np.uint8)
        for region in regions:
            a, b, c, d = region
            mask[b:d, a:c] = masks[region]
        if self.frame_index > 2 and np.count_nonzero(mask) > self.relearn_fraction * mask.size:
            self.relearn_left = 5
            self.last_mask = np.zeros_like(mask)
            return self.last_mask
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, self._open_kernel)
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, self._close_kernel)
        self.last_mask = mask
        return mask

    def detect(self, frame_bgr: np.ndarray) -> np.ndarray:
        mask = self.foreground(frame_bgr)
        if self.relearn_left > 0 or self.frame_index <= self.warm_up:
            return empty_boxes()
        boxes = blobs_to_people(
            mask,
            min_height=self.min_height * self.scale,
            max_height=self.max_height_fraction * self.proc_h,
            geometry=self.geometry,
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


def _difference_mask(patch: np.ndarray, background: np.ndarray, threshold: float) -> np.ndarray:
    """Foreground (0/255) where ``patch`` differs from ``background`` by more than ``threshold`` in some
    channel, except shadows: uniformly darker (ratio 0.45..0.95) with the same chromaticity."""
    frame = patch.astype(np.float32)
    model = background.astype(np.float32)
    changed = np.abs(frame - model).max(axis=2) > threshold
    brightness = frame.sum(axis=2) + 1.0
    model_brightness = model.sum(axis=2) + 1.0
    ratio = brightness / model_brightness
    chroma = np.abs(frame / brightness[..., None] - model / model_brightness[..., None]).max(axis=2)
    shadow = (ratio > 0.45) & (ratio < 0.95) & (chroma < 0.04)
    return np.where(changed & ~shadow, 255, 0).astype(np.uint8)


def _is_ghost(patch: np.ndarray, background: np.ndarray, found: np.ndarray) -> bool:
    """True when the foreground ``found`` in a region is a ghost: something the background model learned
    that is no longer there (a person who stood in the first frames, then left). Along the outline of the
    foreground, a real object makes edges in the current frame; a ghost's outline has its edges in the
    background model's image instead, and the current frame is smooth there."""
    if not found.any():
        return False
    outline = cv2.morphologyEx(found, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
    if outline.sum() < 8:
        return False

    def edges(image: np.ndarray) -> float:
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float32)
        gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3)
        return float(np.abs(gx)[outline].mean() + np.abs(gy)[outline].mean())

    return edges(background) > 1.2 * edges(patch)
