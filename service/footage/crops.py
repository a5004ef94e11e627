"""Person crops at the model card's size, and how good a crop is for re-identification.

A box is cut from the frame and resized to fit the card's height x width with its aspect ratio kept;
the rest is padded with the ImageNet mean colour, which the model's normalisation maps to zero, so the
padding carries no signal. Boxes are clipped to the frame first.
"""

from __future__ import annotations

import cv2
import numpy as np

#: RGB padding colour: the ImageNet mean (0.485, 0.456, 0.406) * 255.
PAD_RGB = (124, 116, 104)


def crop_resize_pad(frame_bgr: np.ndarray, box: np.ndarray | tuple, height: int, width: int) -> np.ndarray:
    """The box (x1, y1, x2, y2, in pixels) of a BGR frame as an RGB uint8 (height, width, 3) image.

    The crop is scaled by min(height / h, width / w) and centred; uncovered pixels are PAD_RGB.
    """
    frame_h, frame_w = frame_bgr.shape[:2]
    x1 = int(np.clip(np.floor(box[0]), 0, frame_w - 1))
    y1 = int(np.clip(np.floor(box[1]), 0, frame_h - 1))
    x2 = int(np.clip(np.ceil(box[2]), x1 + 1, frame_w))
    y2 = int(np.clip(np.ceil(box[3]), y1 + 1, frame_h))
    patch = frame_bgr[y1:y2, x1:x2]
    h, w = patch.shape[:2]
    scale = min(height / h, width / w)
    new_h = min(height, max(1, int(round(h * scale))))
    new_w = min(width, max(1, int(round(w * scale))))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(patch, (new_w, new_h), interpolation=interpolation)
    out = np.empty((height, width, 3), np.uint8)
    out[:] = PAD_RGB
    top, left = (height - new_h) // 2, (width - new_w) // 2
    out[top : top + new_h, left : left + new_w] = cv2.cvtColor(resized, cv2.COLOR_BGR2RGB)
    return out


def crop_quality(
    box: np.ndarray | tuple,
    confidence: float,
    frame_shape: tuple[int, ...],
    others: np.ndarray,
    card_height: int,
    edge_margin: int = 2,
) -> float:
    """A score in [0, 1] for how useful a crop is to the reID model (higher is better).

    Zero when the box touches the frame edge (the person is cut off). Otherwise the product of: size (box
    height relative to the card height, saturating at 1), how free the box is of other people's boxes
    (1 - the largest share of this box another box covers), the detection confidence, and a shape term
    that penalises boxes far from a standing person's proportions (width/height near 0.4).
    """
    frame_h, frame_w = frame_shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    if x1 <= edge_margin or y1 <= edge_margin or x2 >= frame_w - edge_margin or y2 >= frame_h - edge_margin:
        return 0.0
    w, h = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
    size = min(1.0, h / max(card_height, 1) * 1.5)
    covered = 0.0
    if len(others):
        ix1 = np.maximum(others[:, 0], x1)
        iy1 = np.maximum(others[:, 1], y1)
        ix2 = np.minimum(others[:, 2], x2)
        iy2 = np.minimum(others[:, 3], y2)
        inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
        covered = float(inter.max() / (w * h))
    aspect = w / h
    shape = float(np.exp(-(((np.log(aspect / 0.4)) / 0.6) ** 2)))
    return max(0.0, size * (1.0 - covered) * max(0.05, min(1.0, confidence)) * (0.5 + 0.5 * shape))
