"""Attention overlays like the paper's Figure 3, torch-free (numpy + OpenCV).

MG-RAFA weighs every spatio-temporal node of every granularity; Figure 3 shows those weights over the
frames, each granularity's map rescaled to the frame size. Both training's ``python -m training attention``
(from the torch model) and the service (from the ONNX model's ``attention_1..N`` outputs, which are the
attention averaged over each group's channels, (B, T, Hm, Wm)) render with these functions.

Colours: a granularity's map is divided by its maximum over ALL its frames, so frames compare (where the
attention moves over time is the point of Figure 3(a)); the normalised value picks a colour of OpenCV's
``COLORMAP_HOT`` (black, red, yellow, white: every channel non-decreasing), blended over the frame. Each
map cell becomes a block of pixels (nearest-neighbour rescaling), so a pixel's colour is exactly its
node's weight and never a blend of neighbours.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

#: Default opacity of the heat colours over the frame.
DEFAULT_ALPHA = 0.6


def granularity_name(index: int) -> str:
    """0 -> 'G-1st', 1 -> 'G-2nd', 2 -> 'G-3rd', 3 -> 'G-4th' (the paper's labels)."""
    number = index + 1
    suffix = {1: "st", 2: "nd", 3: "rd"}.get(number if number < 20 else number % 10, "th")
    return f"G-{number}{suffix}"


def attention_per_frame(attention: np.ndarray) -> np.ndarray:
    """One granularity's channel-averaged attention as (T, Hm, Wm) float64 weights.

    Accepts the ONNX output of one tracklet, (1, T, Hm, Wm), or (T, Hm, Wm). The torch head's attention,
    (B, T, C/N, Hm, Wm), becomes this by averaging over its channel axis, as the ONNX export does.
    """
    values = np.asarray(attention, dtype=np.float64)
    if values.ndim == 4:
        if values.shape[0] != 1:
            raise ValueError(f"one tracklet at a time: got a batch of {values.shape[0]}")
        values = values[0]
    if values.ndim != 3:
        raise ValueError(f"expected attention of shape (T, Hm, Wm) or (1, T, Hm, Wm), got {values.shape}")
    if not np.all(np.isfinite(values)) or values.min() < 0:
        raise ValueError("attention weights must be finite and non-negative")
    return values


def heat(attention: np.ndarray) -> np.ndarray:
    """(T, Hm, Wm) weights -> values in [0, 1], divided by the maximum over all frames (0 stays 0)."""
    values = attention_per_frame(attention)
    peak = values.max()
    return values / peak if peak > 0 else np.zeros_like(values)


def overlay_frames(frames: np.ndarray, attention: np.ndarray, alpha: float = DEFAULT_ALPHA) -> np.ndarray:
    """Blend one granularity's attention over the frames: (T, H, W, 3) uint8 RGB -> same shape and type.

    Frame t gets map t, its (Hm, Wm) cells rescaled to the frame by nearest neighbour (H, W need not be
    multiples of Hm, Wm), coloured by ``COLORMAP_HOT`` and blended with opacity ``alpha``.
    """
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected (T, H, W, 3) uint8 RGB frames, got {frames.dtype} {frames.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    levels = heat(attention)
    if len(levels) != len(frames):
        raise ValueError(f"{len(frames)} frames but attention for {len(levels)}")
    height, width = frames.shape[1:3]
    out = np.empty_like(frames)
    for index, (frame, level) in enumerate(zip(frames, levels, strict=True)):
        grey = np.round(level * 255.0).astype(np.uint8)
        cells = cv2.resize(grey, (width, height), interpolation=cv2.INTER_NEAREST)
        colour = cv2.cvtColor(cv2.applyColorMap(cells, cv2.COLORMAP_HOT), cv2.COLOR_BGR2RGB)
        blended = (1.0 - alpha) * frame.astype(np.float32) + alpha * colour.astype(np.float32)
        out[index] = np.clip(np.round(blended), 0, 255).astype(np.uint8)
    return out


def attention_figure(
    frames: np.ndarray,
    attentions: Sequence[np.ndarray],
    alpha: float = DEFAULT_ALPHA,
    labels: Sequence[str] | None = None,
    gap: int = 2,
) -> np.ndarray:
    """Figure 3 as one RGB image: the frames on top, then one row of overlays per granularity.

    Columns are the frames in time order; each row starts with a label strip (``G-1st`` ...).
    """
    frames = np.asarray(frames)
    rows = [frames] + [overlay_frames(frames, attention, alpha) for attention in attentions]
    names = ["frames", *(labels or [granularity_name(i) for i in range(len(attentions))])]
    if len(names) != len(rows):
        raise ValueError(f"{len(attentions)} granularities but {len(names) - 1} labels")
    num_frames, height, width = frames.shape[:3]
    label_width = 56
    canvas = np.full(
        (len(rows) * (height + gap) + gap, label_width + num_frames * (width + gap) + gap, 3), 255, np.uint8
    )
    for row_index, (row, name) in enumerate(zip(rows, names, strict=True)):
        top = gap + row_index * (height + gap)
        cv2.putText(canvas, name, (4, top + height // 2 + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1,
                    cv2.LINE_AA)  # fmt: skip
        for column, image in enumerate(row):
            left = label_width + gap + column * (width + gap)
            canvas[top : top + height, left : left + width] = image
    return canvas


def write_png(image: np.ndarray, path) -> None:
    """Write an RGB uint8 image as PNG (OpenCV wants BGR)."""
    if not cv2.imwrite(str(path), cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2BGR)):
        raise OSError(f"cannot write {path}")
