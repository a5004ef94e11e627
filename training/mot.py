"""Multi-object tracking scores (MOTA, IDF1, ...) of MOTChallenge text against ground truth, with
py-motmetrics (the reference implementation of the CLEAR MOT and identity metrics).

motmetrics 1.4.0 calls ``np.asfarray``, which NumPy 2 removed; ``_numpy2_shim`` puts it back (as
``np.asarray(x, dtype=float)``, what it was) before motmetrics is imported. Matching is at IoU >= 0.5, as
in MOTChallenge; every ground-truth row counts (no visibility filter).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _numpy2_shim() -> None:
    if not hasattr(np, "asfarray"):
        np.asfarray = lambda a, dtype=np.float64: np.asarray(a, dtype=dtype)  # type: ignore[attr-defined]


def parse_mot(text: str) -> np.ndarray:
    """(N, 6) float rows frame, id, left, top, width, height of MOTChallenge text (extra columns ignored)."""
    rows = [[float(v) for v in line.split(",")[:6]] for line in text.splitlines() if line.strip()]
    return np.asarray(rows, np.float64).reshape(-1, 6)


def read_mot(path: str | Path) -> np.ndarray:
    """``parse_mot`` of a file (gt.txt, or a tracker's output)."""
    return parse_mot(Path(path).read_text(encoding="utf-8"))


def mot_scores(ground_truth: np.ndarray, hypothesis: np.ndarray, num_frames: int | None = None) -> dict[str, float]:
    """MOTA, MOTP (1 - mean IoU of matches), IDF1, ID switches, false positives, misses, precision, recall,
    and the number of ground-truth boxes, for MOT rows (frame, id, left, top, width, height)."""
    _numpy2_shim()
    import motmetrics as mm

    accumulator = mm.MOTAccumulator(auto_id=False)
    last = int(max(ground_truth[:, 0].max(initial=0), hypothesis[:, 0].max(initial=0)))
    for frame in range(1, (num_frames or last) + 1):
        gt = ground_truth[ground_truth[:, 0] == frame]
        hyp = hypothesis[hypothesis[:, 0] == frame]
        distances = mm.distances.iou_matrix(gt[:, 2:6], hyp[:, 2:6], max_iou=0.5)
        accumulator.update(gt[:, 1].astype(int).tolist(), hyp[:, 1].astype(int).tolist(), distances, frameid=frame)
    names = {
        "mota": "mota", "motp": "motp", "idf1": "idf1", "num_switches": "id_switches",
        "num_false_positives": "false_positives", "num_misses": "misses", "precision": "precision",
        "recall": "recall", "num_objects": "gt_boxes",
    }  # fmt: skip
    summary = mm.metrics.create().compute(accumulator, metrics=list(names), name="sequence")
    return {names[key]: float(value) for key, value in summary.iloc[0].items()}
