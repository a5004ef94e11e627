"""The detector interface every person detector implements, and box helpers shared by the stages.

Boxes everywhere in service/footage are float arrays of rows (x1, y1, x2, y2, score) in frame pixels.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Detector(Protocol):
    """Finds people in frames of one stream at a time."""

    def start(self, width: int, height: int, fps: float) -> None:
        """A new stream begins (a stateful detector forgets the previous one)."""

    def detect(self, frame_bgr: np.ndarray) -> np.ndarray:
        """(N, 5) float32 rows (x1, y1, x2, y2, score in [0, 1]) of the people in one BGR uint8 frame."""

    # Optional: ``prime(frames)``, called once with the stream's first frames (list of BGR uint8) before
    # they are detected one by one; a background-subtraction detector estimates the empty scene from them.

    def feedback(self, boxes: np.ndarray) -> None:
        """The tracker's boxes (N, 4) of people it is following that have moved at some point; a
        background-subtraction detector stops learning them into the background (people standing still)."""


def empty_boxes() -> np.ndarray:
    return np.zeros((0, 5), np.float32)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every box of ``a`` (N, >=4) with every box of ``b`` (M, >=4)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), np.float32)
    a = np.asarray(a, np.float32)[:, None, :4]
    b = np.asarray(b, np.float32)[None, :, :4]
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return inter / np.maximum(area_a + area_b - inter, 1e-6)


def expand_boxes(boxes: np.ndarray, factor: float) -> np.ndarray:
    """Boxes grown by ``factor`` of their width/height on each side (the buffered IoU of C-BIoU)."""
    boxes = np.asarray(boxes, np.float32).copy()
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    boxes[:, 0] -= factor * w
    boxes[:, 2] += factor * w
    boxes[:, 1] -= factor * h
    boxes[:, 3] += factor * h
    return boxes


def nms(boxes: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices of the boxes (N, 5: x1, y1, x2, y2, score) kept by greedy non-maximum suppression.

    Plain numpy (a few dozen boxes per frame); cv2.dnn.NMSBoxes would do the same but wants Python lists.
    """
    order = np.argsort(-boxes[:, 4], kind="stable")
    keep: list[int] = []
    while len(order):
        best = int(order[0])
        keep.append(best)
        if len(order) == 1:
            break
        overlaps = iou_matrix(boxes[best : best + 1], boxes[order[1:]])[0]
        order = order[1:][overlaps <= iou_threshold]
    return np.asarray(keep, np.int64)
