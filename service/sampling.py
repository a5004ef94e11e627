"""Test-time frame sampling, identical to training's evaluation sampling.

A tracklet of ``num_frames`` frames is cut into ``num_samples`` equal chunks and the centre frame of
each chunk is taken, so any length maps to exactly the T frames the model was exported for; tracklets
shorter than T repeat frames in order.
"""

from __future__ import annotations

import numpy as np


def sample_frame_indices(num_frames: int, num_samples: int) -> np.ndarray:
    """Indices (int64, length ``num_samples``, non-decreasing) of the centre frame of each uniform chunk.

    edges = linspace(0, n, T + 1); index_k = floor((edges[k] + edges[k + 1]) / 2), clipped to n - 1.
    """
    if num_frames < 1:
        raise ValueError(f"a tracklet needs at least one frame, got {num_frames}")
    if num_samples < 1:
        raise ValueError(f"need at least one sample, got {num_samples}")
    edges = np.linspace(0.0, float(num_frames), num_samples + 1)
    centres = np.floor((edges[:-1] + edges[1:]) / 2.0).astype(np.int64)
    return np.minimum(centres, num_frames - 1)
