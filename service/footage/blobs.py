"""Foreground mask -> person boxes: blobs, fragments merged, groups split, perspective learned.

Hand-written because no maintained library does person-blob analysis on a foreground mask (OpenCV gives
the connected components; the rest is here). Steps, all in mask pixels:

1. Connected components; specks dropped.
2. Fragments of one person joined (``_merge_fragments``).
3. Blobs holding several people side by side split between their heads (top-contour dips), then pieces
   still too wide for one person at the valleys of their column profile (``_split_wide``).
4. Blobs much taller than a person standing at their bottom edge (someone behind someone else) split into
   the front person and the one behind (``_split_tall``), using the scene's perspective.
5. A score in [0, 1]: fill of the box, person-like shape and size against the perspective.

The perspective (``SceneGeometry``) is learned online from clean single-person blobs: a robust line
height = a * bottom_y + b (a fixed camera looking down at a floor), and the median width/height ratio.
Until it has enough samples, steps 3-5 fall back to a fixed ratio.
"""

from __future__ import annotations

import cv2
import numpy as np

#: Width / height of a walking person's silhouette box, before the scene's own ratio is learned.
PERSON_ASPECT = 0.35


class SceneGeometry:
    """Person height in pixels as a function of the feet's row, learned from single-person blobs."""

    def __init__(self, capacity: int = 400, min_samples: int = 20):
        self.capacity, self.min_samples = capacity, min_samples
        self.samples = np.zeros((0, 3), np.float32)  # bottom y, height, width
        self.slope = 0.0
        self.intercept = 0.0
        self.aspect = PERSON_ASPECT
        self.ready = False
        self._added = 0

    def add(self, boxes: np.ndarray) -> None:
        """Offer clean single-person boxes (N, >=4); refits every 20 samples."""
        if not len(boxes):
            return
        rows = np.stack([boxes[:, 3], boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]], axis=1)
        self.samples = np.concatenate([self.samples, rows.astype(np.float32)])[-self.capacity :]
        self._added += len(rows)
        if self._added >= 10 and len(self.samples) >= self.min_samples:
            self._added = 0
            self._fit()

    def _fit(self) -> None:
        y, h, w = self.samples.T.astype(np.float64)
        if np.ptp(y) < 2 * np.median(h) * 0.25:  # all at one depth: a constant height
            keep = np.ones(len(y), bool)
            slope, intercept = 0.0, float(np.median(h))
        else:
            keep = np.ones(len(y), bool)
            slope, intercept = 0.0, float(np.median(h))
            for _ in range(3):  # least squares with residual trimming (merged blobs are tall outliers)
                if keep.sum() < 10:
                    break
                dy = y[keep] - y[keep].mean()
                if float(dy @ dy) < 1.0:  # every kept sample at one depth
                    slope, intercept = 0.0, float(np.median(h[keep]))
                else:
                    slope = float(dy @ (h[keep] - h[keep].mean()) / (dy @ dy))
                    intercept = float(h[keep].mean() - slope * y[keep].mean())
                residual = h - (slope * y + intercept)
                mad = np.median(np.abs(residual[keep])) + 1e-6
                keep = np.abs(residual) < 2.5 * mad
        if slope < -0.2 or not np.isfinite(slope):  # people cannot get smaller towards the camera
            return
        self.slope, self.intercept = float(slope), float(intercept)
        self.aspect = float(np.clip(np.median(w[keep] / h[keep]), 0.25, 0.6))
        self.ready = True

    def height_at(self, bottom: float) -> float:
        return self.slope * bottom + self.intercept if self.ready else 0.0

    def bottom_for_top(self, top: float) -> float:
        """The feet row of a person whose head is at ``top`` (solves bottom - top = height_at(bottom))."""
        if not self.ready or self.slope >= 0.95:
            return top
        return (top + self.intercept) / (1.0 - self.slope)


def _shape_score(width: float, height: float) -> float:
    """1 for a person-like width/height (0.2..0.8), falling off outside."""
    aspect = width / max(height, 1.0)
    if aspect < 0.2:
        return max(0.0, aspect / 0.2) ** 2
    if aspect > 0.8:
        return float(np.exp(-(((aspect - 0.8) / 0.4) ** 2)))
    return 1.0


def _merge_fragments(stats: list[list[float]]) -> list[list[float]]:
    """Join blobs that are parts of one person. Each row is [x1, y1, x2, y2, area].

    Two cases: stacked (head and body above legs: overlapping in x, a small vertical gap, not overlapping
    much vertically, which two people one behind the other would), and side by side with the same vertical
    extent and a narrow gap (a person cut by a pole). Merges greedily while the union still looks like one
    standing person.
    """
    merged = True
    while merged and len(stats) > 1:
        merged = False
        for i in range(len(stats)):
            for j in range(i + 1, len(stats)):
                a, b = stats[i], stats[j]
                overlap_x = min(a[2], b[2]) - max(a[0], b[0])
                overlap_y = min(a[3], b[3]) - max(a[1], b[1])
                narrow = min(a[2] - a[0], b[2] - b[0])
                short = min(a[3] - a[1], b[3] - b[1])
                union = [min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]), a[4] + b[4]]
                union_w, union_h = union[2] - union[0], max(union[3] - union[1], 1.0)
                stacked = overlap_x > 0.5 * narrow and -0.1 * union_h < -overlap_y < 0.15 * union_h
                beside = overlap_y > 0.7 * short and -overlap_x < 0.1 * union_h
                if (stacked and union_w / union_h < 0.75) or (beside and union_w / union_h < 0.55):
                    stats[i] = union
                    del stats[j]
                    merged = True
                    break
            if merged:
                break
    return stats


def _head_cuts(patch: np.ndarray) -> list[int]:
    """Columns where a blob should be cut between several people's heads, from its top contour.

    The top contour (first foreground row of each column) has a local minimum at each head; two heads are
    two people when the contour dips between them by at least 12% of the blob height and they are at least
    15% of the height apart. The cut goes through the deepest point of the dip.
    """
    height, width = patch.shape
    has = patch.any(axis=0)
    top = np.where(has, patch.argmax(axis=0), height).astype(np.float32)
    window = max(3, int(0.06 * height)) | 1
    top = np.convolve(np.pad(top, window // 2, mode="edge"), np.ones(window, np.float32) / window, mode="valid")
    dip, separation = 0.08 * height, max(2, int(0.15 * height))
    # Head candidates: local minima of the smoothed contour, highest first.
    candidates = [c for c in range(width) if top[c] <= top[max(0, c - separation // 2) : c + separation // 2 + 1].min()]
    heads: list[int] = []
    for c in sorted(candidates, key=lambda c: top[c]):
        if top[c] > 0.3 * height:
            break
        ok = True
        for h in heads:
            lo, hi = min(c, h), max(c, h)
            if hi - lo < separation or top[lo : hi + 1].max() - max(top[c], top[h]) < dip:
                ok = False
                break
        if ok:
            heads.append(c)
    heads.sort()
    return [a + int(np.argmax(top[a : b + 1])) for a, b in zip(heads[:-1], heads[1:], strict=True)]


def _tight(patch: np.ndarray, x0: int, y0: int, a: int, b: int, split: float) -> list[float] | None:
    """[x1, y1, x2, y2, area, split] of the foreground in columns a..b of ``patch`` (at x0, y0)."""
    part = patch[:, a:b]
    rows = np.flatnonzero(part.any(axis=1))
    if len(rows) == 0:
        return None
    cols = np.flatnonzero(part.any(axis=0))
    return [x0 + a + cols[0], y0 + rows[0], x0 + a + cols[-1] + 1, y0 + rows[-1] + 1, float(part.sum()), split]


def _split_wide(mask: np.ndarray, box: list[float], geometry: SceneGeometry) -> list[list[float]]:
    """Split a blob holding several people side by side: between heads (``_head_cuts``), then pieces still
    wider than one person at the valleys of their column profile. Returns [x1, y1, x2, y2, area, split]."""
    x1, y1, x2, y2 = (int(v) for v in box[:4])
    width, height = x2 - x1, y2 - y1
    if width < 0.3 * height or width < 4:
        return [[*box[:5], 0.0]]
    patch = mask[y1:y2, x1:x2] > 0
    expected = geometry.height_at(y2) if geometry.ready else height
    person_width = geometry.aspect * min(max(expected, 0.5 * height), height)
    cuts = [0, *_head_cuts(patch), width]
    refined = [0]
    for a, b in zip(cuts[:-1], cuts[1:], strict=True):
        count = int(round((b - a) / max(person_width, 1.0)))
        if (b - a) >= 1.5 * person_width and count >= 2:
            profile = patch[:, a:b].sum(axis=0).astype(np.float32)
            smooth = max(1, (b - a) // (4 * count)) | 1
            profile = np.convolve(profile, np.ones(smooth, np.float32) / smooth, mode="same")
            step = (b - a) / count
            for k in range(1, count):
                centre = int(round(k * step))
                lo = max(refined[-1] - a + 1, int(centre - 0.35 * step))
                hi = min(b - a - 1, int(centre + 0.35 * step))
                if hi > lo:
                    refined.append(a + lo + int(np.argmin(profile[lo:hi])))
        refined.append(b)
    if len(refined) == 2:
        return [[*box[:5], 0.0]]
    pieces = [_tight(patch, x1, y1, a, b, 1.0) for a, b in zip(refined[:-1], refined[1:], strict=True)]
    return [p for p in pieces if p is not None]


def _split_tall(mask: np.ndarray, piece: list[float], geometry: SceneGeometry) -> list[list[float]]:
    """A blob much taller than a person standing at its bottom edge: the front person (bottom, the
    expected height) and the person behind (top, with the full height the perspective gives them)."""
    x1, y1, x2, y2 = (int(v) for v in piece[:4])
    expected = geometry.height_at(y2)
    if not geometry.ready or expected < 4 or (y2 - y1) < 1.35 * expected:
        return [piece]
    split_row = int(round(y2 - expected))
    patch = mask[y1:y2, x1:x2] > 0
    front_band = patch[split_row - y1 + int(0.1 * expected) :]
    back_height = geometry.bottom_for_top(y1) - y1
    back_band = patch[: max(1, int(0.6 * back_height))]
    out = []
    for band, top, bottom in ((front_band, split_row, y2), (back_band, y1, y1 + back_height)):
        cols = np.flatnonzero(band.any(axis=0))
        if len(cols) == 0 or bottom - top < 4:
            continue
        area = float(band.sum()) * (bottom - top) / max(len(band), 1)
        out.append([x1 + cols[0], top, x1 + cols[-1] + 1, min(bottom, mask.shape[0]), area, 1.0])
    return out or [piece]


def blobs_to_people(
    mask: np.ndarray, min_height: float, max_height: float, geometry: SceneGeometry | None = None
) -> np.ndarray:
    """Person boxes (N, 5: x1, y1, x2, y2, score) from a binary foreground mask, in mask pixels.

    With a ``geometry``, clean single-person blobs are fed to it (it learns the scene's perspective) and
    its estimate guides the splitting and the scores.
    """
    geometry = geometry or SceneGeometry()
    count, _labels, stats, _centroids = cv2.connectedComponentsWithStats(mask, connectivity=8)
    min_area = max(4.0, 0.08 * min_height * min_height)
    blobs = []
    for label in range(1, count):
        x, y, w, h, area = (float(v) for v in stats[label])
        if area < min_area or h < 0.35 * min_height:
            continue
        blobs.append([x, y, x + w, y + h, area])
    blobs = _merge_fragments(blobs)
    out, singles = [], []
    for blob in blobs:
        for wide_piece in _split_wide(mask, blob, geometry):
            for x1, y1, x2, y2, area, split in _split_tall(mask, wide_piece, geometry):
                w, h = x2 - x1, y2 - y1
                if h < min_height or h > max_height or w < 0.1 * min_height:
                    continue
                fill = area / max(w * h, 1.0)
                score = min(1.0, fill / 0.45) * _shape_score(w, h) * (0.85 if split else 1.0)
                if geometry.ready:
                    ratio = h / max(geometry.height_at(y2), 1.0)
                    if ratio < 0.6:  # much shorter than a person there: a fragment (a bag, a leg, noise)
                        score *= max(0.2, ratio / 0.6) ** 2
                if not split and 0.2 < w / h < 0.6 and fill > 0.4 and score > 0.8:
                    singles.append([x1, y1, x2, y2])
                out.append([x1, y1, x2, y2, score])
    geometry.add(np.asarray(singles, np.float32).reshape(-1, 4))
    return np.asarray(out, np.float32).reshape(-1, 5)
