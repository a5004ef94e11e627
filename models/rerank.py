"""k-reciprocal re-ranking (Zhong et al., CVPR 2017), torch-free, on a shortlist instead of the whole gallery.

The paper re-ranks with the Jaccard distance between k-reciprocal neighbour sets (Eq. 7-11), expanded
with the half-size sets of their members (Eq. 6), weighted by a Gaussian kernel of the distance (Eq. 7),
smoothed over the k2 nearest neighbours (local query expansion, Eq. 11), and mixed with the original
distance: ``d* = (1 - lambda) d_J + lambda d`` (Eq. 12). The common implementations build that over an
(N + Q) x (N + Q) distance matrix, which does not fit in memory for a real gallery.

Here one query is re-ranked at a time against a *shortlist*: its ``shortlist_size`` nearest gallery
tracklets plus each of their ``k1`` nearest gallery neighbours (``build_shortlist``); the paper's steps
then run, vectorised, on the distance matrix of that shortlist and the query only
(``rerank_distances``). When the shortlist holds the whole gallery this is exactly the paper's algorithm
with one query (queries are re-ranked independently, so a service answering one query at a time and
the offline evaluation agree); the tests check that against a loop-by-loop transcription of the paper.
Gallery tracklets outside the shortlist keep their original order, after the shortlist.

Both the service (online, with neighbour lists cached as tracklets come and go) and
``python -m training evaluate --rerank`` (offline) call these functions, so they rank identically.
Distances are squared l2; as in the reference code each row is divided by its maximum (Eq. 12 mixes a
Jaccard distance in [0, 1] with that normalised distance).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import numpy as np

#: The paper's defaults (Section 4.3).
K1 = 20
K2 = 6
LAMBDA = 0.3
#: Query neighbours the shortlist starts from (their own k1 neighbours are added).
SHORTLIST_SIZE = 30


@dataclass(frozen=True)
class RerankParameters:
    """k1: k-reciprocal neighbourhood; k2: local query expansion; lambda_value: weight of the original distance."""

    k1: int = K1
    k2: int = K2
    lambda_value: float = LAMBDA
    shortlist_size: int = SHORTLIST_SIZE

    def __post_init__(self) -> None:
        if self.k1 < 1 or self.k2 < 1 or self.shortlist_size < 1 or not 0.0 <= self.lambda_value <= 1.0:
            raise ValueError(f"invalid re-ranking parameters {self}")


def pairwise_squared_distances(vectors: np.ndarray) -> np.ndarray:
    """(n, d) -> (n, n) squared l2 distances in float64 (float32 products), exactly symmetric, zero diagonal."""
    vectors = np.asarray(vectors, dtype=np.float32)
    gram = (vectors @ vectors.T).astype(np.float64)
    norms = np.diag(gram).copy()
    distances = np.maximum(norms[:, None] + norms[None, :] - 2.0 * gram, 0.0)
    distances = (distances + distances.T) / 2.0
    np.fill_diagonal(distances, 0.0)
    return distances


def squared_distances_to(vector: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """(d,), (n, d) -> (n,) squared l2 distances in float64, row by row (the same value whatever n is)."""
    difference = np.asarray(vectors, dtype=np.float64) - np.asarray(vector, dtype=np.float64)[None, :]
    return np.einsum("ij,ij->i", difference, difference)


def ranked_by_distance(distances: np.ndarray, identifiers: np.ndarray) -> np.ndarray:
    """Positions sorting ``distances`` ascending, ties broken by identifier (a total, reproducible order)."""
    return np.lexsort((identifiers, distances))


def _nearest(distances: np.ndarray, count: int) -> np.ndarray:
    """(n, n) -> (n, count) column indices of each row's ``count`` smallest, ascending, ties by column.

    (Which of several columns tied exactly at the count-th place is kept is up to argpartition:
    deterministic for a given matrix.)
    """
    count = min(count, distances.shape[1])
    if count < distances.shape[1]:
        kept = np.argpartition(distances, count - 1, axis=1)[:, :count]
    else:
        kept = np.broadcast_to(np.arange(distances.shape[1]), distances.shape)
    order = np.lexsort((kept, np.take_along_axis(distances, kept, axis=1)), axis=1)
    return np.take_along_axis(kept, order, axis=1)


def _reciprocal_flags(nearest: np.ndarray) -> np.ndarray:
    """(n, k+1) nearest (self first) -> (n, k+1) bool: is nearest[i, a] in R(i, k), i.e. is i in its list (Eq. 4)."""
    back = nearest[nearest]  # (n, k+1, k+1): the neighbour lists of i's neighbours
    return (back == np.arange(len(nearest))[:, None, None]).any(axis=2)


def rerank_distances(query: np.ndarray, gallery: np.ndarray, parameters: RerankParameters = RerankParameters()
                     ) -> np.ndarray:
    """Re-ranked distances d* (Eq. 12) from one query (d,) to each of ``gallery`` (n, d).

    ``gallery`` is the shortlist (or a whole small gallery); cost O(n^2 d) for the distances, O(n k1^2) for
    the neighbour sets (gathered from the k1 lists, never an n x n x n product), O(n^2 k2) for Eq. 10-11.
    """
    points = np.concatenate([np.asarray(query, np.float32)[None, :], np.asarray(gallery, np.float32)])
    count = len(points)
    k1, k2 = parameters.k1, parameters.k2
    half = int(np.around(k1 / 2.0))
    raw = pairwise_squared_distances(points)
    # Each row divided by its maximum, as in the reference code (rows of one point are all zero otherwise).
    row_max = raw.max(axis=1, keepdims=True)
    distances = raw / np.where(row_max > 0, row_max, 1.0)

    nearest = _nearest(distances, k1 + 1)
    rows = np.arange(count)[:, None]
    reciprocal_flags = _reciprocal_flags(nearest)
    reciprocal = np.zeros((count, count), dtype=bool)
    reciprocal[np.broadcast_to(rows, nearest.shape)[reciprocal_flags], nearest[reciprocal_flags]] = True
    half_nearest = nearest[:, : half + 1]
    half_flags = _reciprocal_flags(half_nearest)
    # Eq. 6: add R(c, k1/2) for each c in R(i, k1) when more than 2/3 of it already lies in R(i, k1).
    members = half_nearest[nearest]  # (n, k1+1, half+1): R(c, k1/2) candidates of each c in N(i, k1)
    member_flags = half_flags[nearest]
    inside = reciprocal[rows[:, :, None], members] & member_flags
    adds = reciprocal_flags & (inside.sum(axis=2) > (2.0 / 3.0) * member_flags.sum(axis=2))
    added = adds[:, :, None] & member_flags
    expanded = reciprocal.copy()
    expanded[np.broadcast_to(rows[:, :, None], members.shape)[added], members[added]] = True

    # Eq. 7: Gaussian-kernel weights on the expanded set, each row summing to one.
    weights = np.where(expanded, np.exp(-distances), 0.0)
    weights /= weights.sum(axis=1, keepdims=True)
    # Eq. 11: local query expansion over the k2 nearest (self included).
    if k2 > 1:
        weights = weights[nearest[:, : min(k2, count)]].mean(axis=1)
    # Eq. 10: Jaccard distance through the sum of element-wise minima.
    shared = np.minimum(weights[0][None, :], weights[1:]).sum(axis=1)
    jaccard = 1.0 - shared / (2.0 - shared)
    return (1.0 - parameters.lambda_value) * jaccard + parameters.lambda_value * distances[0, 1:]


def build_shortlist(query_nearest: Sequence[Hashable], neighbours_of: Callable[[Hashable], Sequence[Hashable]]
                    ) -> list:
    """The query's nearest ids, in rank order, then each one's gallery neighbours in theirs, without repeats."""
    shortlist = list(dict.fromkeys(query_nearest))
    seen = set(shortlist)
    for identifier in list(shortlist):
        for neighbour in neighbours_of(identifier):
            if neighbour not in seen:
                seen.add(neighbour)
                shortlist.append(neighbour)
    return shortlist


def gallery_neighbour_lists(gallery: np.ndarray, count: int, chunk_size: int = 1024) -> np.ndarray:
    """(n, d) -> (n, count) each gallery row's nearest other rows by squared l2, ties by row (offline path).

    Candidates come from float32 products, then the exact order from ``squared_distances_to`` (what the
    service's neighbour cache uses), so both sides hold the same lists.
    """
    gallery = np.asarray(gallery, dtype=np.float32)
    total = len(gallery)
    count = min(count, total - 1)
    norms = np.einsum("ij,ij->i", gallery, gallery)
    margin = min(total, count + 1 + 16)
    lists = np.empty((total, max(count, 0)), dtype=np.int64)
    rows = np.arange(total)
    for start in range(0, total, chunk_size):
        stop = min(total, start + chunk_size)
        approximate = norms[start:stop, None] + norms[None, :] - 2.0 * (gallery[start:stop] @ gallery.T)
        candidates = np.argpartition(approximate, margin - 1, axis=1)[:, :margin]
        for row in range(start, stop):
            chosen = candidates[row - start]
            chosen = chosen[chosen != row]
            exact = squared_distances_to(gallery[row], gallery[chosen])
            lists[row] = chosen[ranked_by_distance(exact, rows[chosen])][:count]
    return lists


def rerank_query(
    query: np.ndarray,
    gallery: np.ndarray,
    neighbour_lists: np.ndarray,
    parameters: RerankParameters = RerankParameters(),
) -> tuple[np.ndarray, np.ndarray]:
    """Offline: one query against an in-memory gallery -> (shortlist rows, their re-ranked distances).

    The same steps as the service: the query's ``shortlist_size`` nearest (exact, ties by row), their
    cached neighbour lists, ``rerank_distances`` on that shortlist.
    """
    gallery = np.asarray(gallery, dtype=np.float32)
    distances = squared_distances_to(query, gallery)
    nearest = ranked_by_distance(distances, np.arange(len(gallery)))[: parameters.shortlist_size]
    shortlist = build_shortlist(nearest.tolist(), lambda row: neighbour_lists[row][: parameters.k1].tolist())
    shortlist = np.asarray(shortlist, dtype=np.int64)
    return shortlist, rerank_distances(query, gallery[shortlist], parameters)


def rerank_distance_matrix(query: np.ndarray, gallery: np.ndarray, parameters: RerankParameters = RerankParameters()
                           ) -> np.ndarray:
    """(Q, d), (G, d) -> (Q, G) distances whose row order is the re-ranked order (for CMC/mAP).

    Shortlisted tracklets get their d* (in [0, 1 + lambda]); the others ``2 + original distance``, so they
    follow the shortlist in their original order.
    """
    gallery = np.asarray(gallery, dtype=np.float32)
    lists = gallery_neighbour_lists(gallery, parameters.k1)
    result = np.empty((len(query), len(gallery)), dtype=np.float64)
    for row, vector in enumerate(np.asarray(query, dtype=np.float32)):
        original = squared_distances_to(vector, gallery)
        scale = original.max() if original.max() > 0 else 1.0
        result[row] = 2.0 + original / scale
        shortlist, reranked = rerank_query(vector, gallery, lists, parameters)
        result[row, shortlist] = reranked
    return result
