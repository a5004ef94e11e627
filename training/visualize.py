"""Pictures and files an evaluation leaves behind: CMC curves, ranked lists, metrics JSON.

matplotlib is imported lazily with the Agg backend, so importing this module costs nothing and works headless.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

MATCH_COLOUR = (0, 170, 0)
MISMATCH_COLOUR = (220, 0, 0)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _json_default(value):
    """JSON encoding for the numpy and Path values metrics dictionaries tend to hold."""
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def write_metrics(metrics: dict, path: str | Path) -> None:
    """Write ``metrics`` as JSON (indent 2, sorted keys), creating the parent folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics, indent=2, sort_keys=True, default=_json_default) + "\n", encoding="utf-8")


def plot_cmc(curves: dict[str, np.ndarray], path: str | Path) -> None:
    """One CMC curve (rank 1..len, in %) per name, saved as PNG."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6, 4), dpi=100)
    for name, cmc in curves.items():
        cmc = np.asarray(cmc, dtype=np.float64)
        ranks = np.arange(1, len(cmc) + 1)
        axis.plot(ranks, 100.0 * cmc, marker="o", markersize=3, label=f"{name} (R1 {100 * cmc[0]:.1f}%)")
    axis.set_xlabel("rank")
    axis.set_ylabel("matching rate (%)")
    axis.set_title("CMC")
    axis.grid(True, alpha=0.3)
    axis.legend(loc="lower right")
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)


def _as_strip(frames: np.ndarray) -> np.ndarray:
    """An (H, W, 3) image, or (T, H, W, 3) frames placed side by side."""
    frames = np.asarray(frames)
    if frames.ndim == 4:
        return np.concatenate(list(frames), axis=1)
    if frames.ndim == 3:
        return frames
    raise ValueError(f"expected an (H, W, 3) frame or (T, H, W, 3) frames, got shape {frames.shape}")


def _framed(image: np.ndarray, colour: tuple[int, int, int], thickness: int) -> np.ndarray:
    """``image`` with a coloured border of ``thickness`` pixels drawn inside it."""
    out = np.array(image, dtype=np.uint8, copy=True)
    out[:thickness], out[-thickness:] = colour, colour
    out[:, :thickness], out[:, -thickness:] = colour, colour
    return out


def plot_ranked_lists(
    query_frames: list[np.ndarray],
    gallery_frames: list[list[np.ndarray]],
    matches: list[list[bool]],
    path: str | Path,
    distances: Sequence[Sequence[float]] | None = None,
) -> None:
    """One row per query: its frame (or strip of frames) beside its top-k gallery tracklets.

    Each gallery tracklet is shown by one representative frame, framed green when it is a true match and
    red otherwise; ``distances`` (same shape as ``matches``) are written under the frames when given.
    """
    if not (len(query_frames) == len(gallery_frames) == len(matches)) or not query_frames:
        raise ValueError("need one gallery list and one match list per query, and at least one query")
    plt = _pyplot()
    num_rows = len(query_frames)
    top_k = max(len(row) for row in gallery_frames)
    query_strips = [_as_strip(frames) for frames in query_frames]
    query_aspect = max(s.shape[1] / s.shape[0] for s in query_strips)
    gallery_aspect = max(np.asarray(f).shape[1] / np.asarray(f).shape[0] for row in gallery_frames for f in row)
    width_ratios = [query_aspect] + [gallery_aspect] * top_k
    figure, axes = plt.subplots(
        num_rows,
        1 + top_k,
        figsize=(1.3 * sum(width_ratios) + 0.5, 2.3 * num_rows),
        gridspec_kw={"width_ratios": width_ratios},
        squeeze=False,
        dpi=100,
    )
    for row in range(num_rows):
        axes[row, 0].imshow(query_strips[row])
        axes[row, 0].set_title("query", fontsize=8)
        for column in range(top_k):
            axis = axes[row, column + 1]
            if column < len(gallery_frames[row]):
                image = np.asarray(gallery_frames[row][column])
                colour = MATCH_COLOUR if matches[row][column] else MISMATCH_COLOUR
                axis.imshow(_framed(image, colour, max(2, image.shape[0] // 32)))
                label = f"#{column + 1}"
                if distances is not None:
                    label += f"\n{float(distances[row][column]):.3g}"
                axis.set_title(label, fontsize=7)
        for axis in axes[row]:
            axis.set_axis_off()
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
