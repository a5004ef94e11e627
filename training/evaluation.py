"""Retrieval metrics for video reID: CMC and mAP under the standard (MARS / Market) protocol.

Per query, gallery entries with the same person id AND the same camera are removed (they are the same
camera's view, trivially easy), gallery entries with pid -1 (junk) are removed, and a query left with no
true match is skipped. Ties keep the gallery order (stable sort).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

#: Gallery pid that never counts (MARS junk tracks).
JUNK_PID = -1

#: The CMC ranks every report gives.
RANKS = (1, 5, 10, 20)


def squared_l2_distances(query: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """(Q, D), (G, D) -> (Q, G) squared Euclidean distances, computed in float64 and clipped at zero."""
    query = np.asarray(query, dtype=np.float64)
    gallery = np.asarray(gallery, dtype=np.float64)
    if query.ndim != 2 or gallery.ndim != 2 or query.shape[1] != gallery.shape[1]:
        raise ValueError(f"expected (Q, D) and (G, D) features, got {query.shape} and {gallery.shape}")
    distances = (query * query).sum(1)[:, None] + (gallery * gallery).sum(1)[None, :] - 2.0 * query @ gallery.T
    return np.maximum(distances, 0.0)


def evaluate(
    distmat: np.ndarray,
    q_pids: Sequence[int] | np.ndarray,
    g_pids: Sequence[int] | np.ndarray,
    q_camids: Sequence[int] | np.ndarray,
    g_camids: Sequence[int] | np.ndarray,
    max_rank: int = 20,
    chunk_size: int = 256,
) -> tuple[np.ndarray, float]:
    """CMC (length ``max_rank``, fractions in [0, 1]) and mAP in [0, 1] of a (Q, G) distance matrix.

    Queries are processed ``chunk_size`` at a time so memory stays bounded for large galleries.
    Raises ValueError if no query has a true match in the gallery.
    """
    distmat = np.asarray(distmat)
    q_pids, g_pids = np.asarray(q_pids, dtype=np.int64), np.asarray(g_pids, dtype=np.int64)
    q_camids, g_camids = np.asarray(q_camids, dtype=np.int64), np.asarray(g_camids, dtype=np.int64)
    num_query, num_gallery = distmat.shape
    if (len(q_pids), len(g_pids), len(q_camids), len(g_camids)) != (num_query, num_gallery, num_query, num_gallery):
        raise ValueError("pid/camid arrays do not match the distance matrix shape")

    hits_at_rank = np.zeros(max_rank, dtype=np.int64)
    ap_sum = 0.0
    num_valid = 0
    for start in range(0, num_query, chunk_size):
        stop = min(start + chunk_size, num_query)
        order = np.argsort(distmat[start:stop], axis=1, kind="stable")
        ranked_pids = g_pids[order]
        ranked_camids = g_camids[order]
        chunk_pids = q_pids[start:stop, None]
        same_pid = ranked_pids == chunk_pids
        removed = (same_pid & (ranked_camids == q_camids[start:stop, None])) | (ranked_pids == JUNK_PID)
        kept = ~removed
        matches = same_pid & kept
        has_match = matches.any(axis=1)
        if not has_match.any():
            continue
        kept, matches = kept[has_match], matches[has_match]
        # Rank of each gallery position once removed entries are dropped (0-based; meaningless where removed).
        kept_rank = np.cumsum(kept, axis=1) - 1
        first_match = np.argmax(matches, axis=1)
        first_rank = kept_rank[np.arange(len(first_match)), first_match]
        hits_at_rank += np.bincount(np.minimum(first_rank, max_rank), minlength=max_rank + 1)[:max_rank]
        # Average precision: mean over true matches of (matches so far) / (kept entries so far).
        matches_so_far = np.cumsum(matches, axis=1)
        precision_at_matches = np.where(matches, matches_so_far / (np.maximum(kept_rank, 0) + 1.0), 0.0)
        ap_sum += float((precision_at_matches.sum(axis=1) / matches.sum(axis=1)).sum())
        num_valid += int(has_match.sum())

    num_skipped = num_query - num_valid
    if num_valid == 0:
        raise ValueError(f"none of the {num_query} queries has a true match in the gallery")
    if num_skipped:
        log.info("%d of %d queries have no true match in the gallery and were skipped", num_skipped, num_query)
    cmc = np.cumsum(hits_at_rank).astype(np.float64) / num_valid
    return cmc, ap_sum / num_valid


@dataclass(frozen=True)
class RetrievalMetrics:
    """mAP and the CMC at ranks 1, 5, 10, 20, as fractions in [0, 1]."""

    mAP: float
    rank1: float
    rank5: float
    rank10: float
    rank20: float

    def as_dict(self) -> dict[str, float]:
        """``{"mAP", "rank1", ...}``: how checkpoints, metrics.jsonl and the JSON reports store them."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, float]) -> RetrievalMetrics:
        return cls(**{name: float(values[name]) for name in ("mAP", *(f"rank{rank}" for rank in RANKS))})

    @classmethod
    def mean(cls, metrics: Sequence[RetrievalMetrics]) -> RetrievalMetrics:
        """Field by field mean (how iLIDS-VID / PRID2011 results over their splits are reported)."""
        return cls(**{f.name: float(np.mean([getattr(m, f.name) for m in metrics])) for f in dataclasses.fields(cls)})


def metrics_from_cmc(cmc: np.ndarray, mean_ap: float) -> RetrievalMetrics:
    """The reported metrics of a CMC curve and an mAP (a curve shorter than 20 repeats its last rank)."""
    return RetrievalMetrics(float(mean_ap), *(float(cmc[min(rank, len(cmc)) - 1]) for rank in RANKS))


def format_metrics(metrics: RetrievalMetrics) -> str:
    """One readable line: ``mAP 50.0%  R1 60.0%  R5 ...``."""
    return (
        f"mAP {metrics.mAP:.1%}  R1 {metrics.rank1:.1%}  R5 {metrics.rank5:.1%}  "
        f"R10 {metrics.rank10:.1%}  R20 {metrics.rank20:.1%}"
    )
