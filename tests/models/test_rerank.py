"""k-reciprocal re-ranking: the vectorised shortlist code against a loop-by-loop transcription of the paper."""

from __future__ import annotations

import numpy as np
import pytest

from models.rerank import (
    RerankParameters,
    build_shortlist,
    gallery_neighbour_lists,
    rerank_distance_matrix,
    rerank_distances,
    rerank_query,
    squared_distances_to,
)


def reference_rerank(query: np.ndarray, gallery: np.ndarray, k1: int, k2: int, lambda_value: float) -> np.ndarray:
    """Zhong et al.'s algorithm for one query over the full (1 + G) x (1 + G) matrix, step by step with loops."""
    points = np.concatenate([query[None, :], gallery]).astype(np.float64)
    count = len(points)
    raw = ((points[:, None, :] - points[None, :, :]) ** 2).sum(-1)
    original = raw / raw.max(axis=1, keepdims=True)
    initial_rank = np.argsort(original, axis=1, kind="stable")
    half = int(np.around(k1 / 2.0))
    weights = np.zeros_like(original)
    for i in range(count):
        forward = initial_rank[i, : k1 + 1]
        backward = initial_rank[forward, : k1 + 1]
        reciprocal = forward[np.where(backward == i)[0]]
        expansion = reciprocal
        for candidate in reciprocal:
            candidate_forward = initial_rank[candidate, : half + 1]
            candidate_backward = initial_rank[candidate_forward, : half + 1]
            candidate_reciprocal = candidate_forward[np.where(candidate_backward == candidate)[0]]
            if len(np.intersect1d(candidate_reciprocal, reciprocal)) > 2.0 / 3 * len(candidate_reciprocal):
                expansion = np.append(expansion, candidate_reciprocal)
        expansion = np.unique(expansion)
        kernel = np.exp(-original[i, expansion])
        weights[i, expansion] = kernel / kernel.sum()
    if k2 != 1:
        weights = np.stack([weights[initial_rank[i, :k2], :].mean(axis=0) for i in range(count)])
    jaccard = np.zeros(count)
    for j in range(count):
        shared = sum(min(weights[0, e], weights[j, e]) for e in range(count) if weights[0, e] and weights[j, e])
        jaccard[j] = 1 - shared / (2.0 - shared)
    final = jaccard * (1 - lambda_value) + original[0] * lambda_value
    return final[1:]


def clustered(count: int, dim: int, people: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((people, dim)).astype(np.float32)
    return (centres[rng.integers(0, people, count)] + 0.6 * rng.standard_normal((count, dim))).astype(np.float32)


@pytest.mark.parametrize(("k1", "k2", "lambda_value"), [(20, 6, 0.3), (6, 3, 0.5), (4, 1, 0.0)])
def test_full_gallery_matches_the_paper_transcription(k1: int, k2: int, lambda_value: float) -> None:
    gallery = clustered(60, 16, people=8, seed=k1)
    query = clustered(1, 16, people=8, seed=99)[0]
    parameters = RerankParameters(k1=k1, k2=k2, lambda_value=lambda_value)
    expected = reference_rerank(query, gallery, k1, k2, lambda_value)
    np.testing.assert_allclose(rerank_distances(query, gallery, parameters), expected, rtol=1e-6, atol=1e-9)
    # Re-ranking changes the order (else this test could not tell it from plain distances).
    assert not np.array_equal(np.argsort(expected, kind="stable"),
                              np.argsort(squared_distances_to(query, gallery), kind="stable"))


def test_shortlist_covering_the_gallery_equals_the_full_matrix() -> None:
    gallery = clustered(45, 12, people=6, seed=3)
    queries = clustered(5, 12, people=6, seed=4)
    parameters = RerankParameters(k1=8, k2=3, lambda_value=0.3, shortlist_size=len(gallery))
    lists = gallery_neighbour_lists(gallery, parameters.k1)
    for query in queries:
        shortlist, reranked = rerank_query(query, gallery, lists, parameters)
        assert sorted(shortlist.tolist()) == list(range(len(gallery)))
        full = np.empty(len(gallery))
        full[shortlist] = reranked
        np.testing.assert_allclose(full, reference_rerank(query, gallery, 8, 3, 0.3), rtol=1e-6, atol=1e-9)


def test_small_shortlist_is_the_query_top_and_their_neighbours() -> None:
    gallery = clustered(300, 8, people=20, seed=5)
    query = gallery[17] + 0.01
    parameters = RerankParameters(k1=5, k2=2, shortlist_size=4)
    lists = gallery_neighbour_lists(gallery, parameters.k1)
    nearest = np.argsort(squared_distances_to(query, gallery), kind="stable")[:4]
    shortlist, reranked = rerank_query(query, gallery, lists, parameters)
    assert shortlist[:4].tolist() == nearest.tolist()
    assert set(shortlist.tolist()) == set(nearest.tolist()) | set(lists[nearest].ravel().tolist())
    assert len(shortlist) < len(gallery) and reranked.shape == shortlist.shape
    np.testing.assert_allclose(reranked, rerank_distances(query, gallery[shortlist], parameters))


def test_neighbour_lists_exclude_self_and_are_exact() -> None:
    gallery = clustered(200, 10, people=10, seed=6)
    lists = gallery_neighbour_lists(gallery, 7, chunk_size=64)
    for row in (0, 57, 199):
        distances = squared_distances_to(gallery[row], gallery)
        distances[row] = np.inf
        assert lists[row].tolist() == np.argsort(distances, kind="stable")[:7].tolist()


def test_distance_matrix_puts_the_shortlist_first_and_keeps_the_rest_in_order() -> None:
    gallery = clustered(120, 8, people=10, seed=7)
    queries = clustered(3, 8, people=10, seed=8)
    parameters = RerankParameters(k1=4, k2=2, shortlist_size=3)
    matrix = rerank_distance_matrix(queries, gallery, parameters)
    lists = gallery_neighbour_lists(gallery, 4)
    for row, query in enumerate(queries):
        shortlist, _ = rerank_query(query, gallery, lists, parameters)
        order = np.argsort(matrix[row], kind="stable")
        assert set(order[: len(shortlist)].tolist()) == set(shortlist.tolist())
        rest = order[len(shortlist):]
        original = squared_distances_to(query, gallery)
        assert np.all(np.diff(original[rest]) >= 0)


def test_build_shortlist_deduplicates_in_order() -> None:
    assert build_shortlist([3, 1], {3: [1, 5, 6], 1: [6, 7]}.__getitem__) == [3, 1, 5, 6, 7]


def test_invalid_parameters() -> None:
    with pytest.raises(ValueError):
        RerankParameters(lambda_value=1.5)
