"""evaluate() against hand-worked rankings and a slow loop reference; distances; the plot and JSON writers."""

from __future__ import annotations

import json
import logging

import cv2
import numpy as np
import pytest

from training.evaluation import RetrievalMetrics, evaluate, format_metrics, metrics_from_cmc, squared_l2_distances
from training.visualize import plot_cmc, plot_ranked_lists, write_metrics


def run(distances, q_pids, g_pids, q_cams, g_cams, max_rank=4):
    return evaluate(np.asarray(distances, dtype=np.float64), q_pids, g_pids, q_cams, g_cams, max_rank=max_rank)


def reference_evaluate(distmat, q_pids, g_pids, q_camids, g_camids, max_rank):
    """The textbook per-query loop (as in the MARS / Market evaluation scripts)."""
    cmcs, aps = [], []
    for q in range(distmat.shape[0]):
        order = sorted(range(distmat.shape[1]), key=lambda g: distmat[q, g])  # Python's sort is stable
        ranked = [
            g for g in order if g_pids[g] != -1 and not (g_pids[g] == q_pids[q] and g_camids[g] == q_camids[q])
        ]
        hits = [g_pids[g] == q_pids[q] for g in ranked]
        if not any(hits):
            continue
        first = hits.index(True)
        cmcs.append([1.0 if first <= k else 0.0 for k in range(max_rank)])
        precisions = [sum(hits[: i + 1]) / (i + 1) for i, hit in enumerate(hits) if hit]
        aps.append(sum(precisions) / len(precisions))
    return np.mean(cmcs, axis=0), float(np.mean(aps))


def test_known_ranking_cmc_and_map_by_hand():
    # Query pid 1 cam 0. Ranked gallery: pid 2, pid 1, pid 3, pid 1 (all camera 1) -> hits at ranks 2 and 4.
    cmc, mean_ap = run([[0.1, 0.2, 0.3, 0.4]], [1], [2, 1, 3, 1], [0], [1, 1, 1, 1])
    np.testing.assert_allclose(cmc, [0, 1, 1, 1])
    assert mean_ap == pytest.approx((1 / 2 + 2 / 4) / 2)


def test_gallery_order_does_not_matter_only_distances():
    cmc, mean_ap = run([[0.4, 0.3, 0.2, 0.1]], [1], [1, 3, 1, 2], [0], [1, 1, 1, 1])
    np.testing.assert_allclose(cmc, [0, 1, 1, 1])
    assert mean_ap == pytest.approx(0.5)


def test_ties_keep_gallery_order():
    cmc, mean_ap = run([[0.5, 0.5]], [1], [2, 1], [0], [1, 1], max_rank=2)
    np.testing.assert_allclose(cmc, [0, 1])
    assert mean_ap == pytest.approx(0.5)
    cmc, mean_ap = run([[0.5, 0.5]], [1], [1, 2], [0], [1, 1], max_rank=2)
    np.testing.assert_allclose(cmc, [1, 1])
    assert mean_ap == pytest.approx(1.0)


def test_junk_is_removed_and_distractors_count_as_wrong():
    # junk (-1) nearest: removed, so the true match is rank 1.
    cmc, mean_ap = run([[0.1, 0.2]], [1], [-1, 1], [0], [1, 1], max_rank=2)
    np.testing.assert_allclose(cmc, [1, 1])
    assert mean_ap == 1.0
    # a distractor (pid 0) nearest stays and pushes the true match to rank 2.
    cmc, mean_ap = run([[0.1, 0.2]], [1], [0, 1], [0], [1, 1], max_rank=2)
    np.testing.assert_allclose(cmc, [0, 1])
    assert mean_ap == pytest.approx(0.5)


def test_same_pid_and_same_camera_removed_other_combinations_kept():
    # gallery: (pid1, cam0) removed; (pid5, cam0) kept (other pid, same camera); (pid1, cam1) the match.
    cmc, mean_ap = run([[0.1, 0.2, 0.3]], [1], [1, 5, 1], [0], [0, 0, 1], max_rank=3)
    np.testing.assert_allclose(cmc, [0, 1, 1])
    assert mean_ap == pytest.approx(0.5)


def test_query_without_true_match_is_skipped_and_logged(caplog):
    distances = [[0.1, 0.2, 0.3], [0.3, 0.2, 0.1]]
    # Query 2 (pid 9, cam 0) only has a same-camera copy of itself: skipped.
    with caplog.at_level(logging.INFO, logger="training.evaluation"):
        cmc, mean_ap = run(distances, [1, 9], [2, 1, 9], [0, 0], [1, 1, 0], max_rank=3)
    np.testing.assert_allclose(cmc, [0, 1, 1])
    assert mean_ap == pytest.approx(0.5)
    assert "1 of 2 queries" in caplog.text


def test_all_queries_without_match_raise():
    with pytest.raises(ValueError, match="true match"):
        run([[0.1, 0.2]], [1], [2, 3], [0], [1, 1], max_rank=2)


def test_cmc_reaches_one_and_is_monotone_when_gallery_shorter_than_max_rank():
    cmc, _ = run([[0.3, 0.1, 0.2]], [1], [1, 2, 3], [0], [1, 1, 1], max_rank=5)
    np.testing.assert_allclose(cmc, [0, 0, 1, 1, 1])


@pytest.mark.parametrize("seed", range(5))
def test_randomised_against_loop_reference(seed):
    rng = np.random.default_rng(seed)
    num_query, num_gallery = 40, 150
    g_pids = rng.integers(-1, 12, num_gallery)
    g_cams = rng.integers(0, 3, num_gallery)
    q_pids = rng.integers(1, 12, num_query)
    q_cams = rng.integers(0, 3, num_query)
    distances = rng.integers(0, 20, size=(num_query, num_gallery)).astype(np.float64)  # many ties
    cmc, mean_ap = evaluate(distances, q_pids, g_pids, q_cams, g_cams, max_rank=10, chunk_size=7)
    ref_cmc, ref_map = reference_evaluate(distances, q_pids, g_pids, q_cams, g_cams, max_rank=10)
    np.testing.assert_allclose(cmc, ref_cmc, atol=1e-12)
    assert mean_ap == pytest.approx(ref_map, abs=1e-12)
    assert cmc.dtype == np.float64 and np.all(np.diff(cmc) >= 0) and 0 <= mean_ap <= 1


def test_squared_l2_distances_matches_brute_force():
    rng = np.random.default_rng(0)
    query = rng.normal(size=(5, 16)).astype(np.float32)
    gallery = rng.normal(size=(7, 16)).astype(np.float32)
    expected = ((query[:, None, :].astype(np.float64) - gallery[None, :, :]) ** 2).sum(-1)
    distances = squared_l2_distances(query, gallery)
    assert distances.shape == (5, 7) and distances.dtype == np.float64
    np.testing.assert_allclose(distances, expected, rtol=1e-10, atol=1e-10)
    assert squared_l2_distances(query, query).diagonal().max() < 1e-10
    assert squared_l2_distances(query, query).min() >= 0.0


def test_metrics_from_cmc_picks_ranks_1_5_10_20_and_formats_them():
    cmc = np.linspace(0.5, 1.0, 20)  # rank r -> 0.5 + (r - 1) / 38
    metrics = metrics_from_cmc(cmc, 0.25)
    expected = RetrievalMetrics(mAP=0.25, rank1=0.5, rank5=0.5 + 4 / 38, rank10=0.5 + 9 / 38, rank20=1.0)
    assert metrics.as_dict() == pytest.approx(expected.as_dict(), abs=1e-15)
    assert format_metrics(metrics) == "mAP 25.0%  R1 50.0%  R5 60.5%  R10 73.7%  R20 100.0%"
    # A curve shorter than 20 ranks repeats its last value.
    short = metrics_from_cmc(np.array([0.2, 0.4, 0.6]), 0.1)
    assert (short.rank1, short.rank5, short.rank10, short.rank20) == (0.2, 0.6, 0.6, 0.6)
    assert RetrievalMetrics.from_dict(metrics.as_dict()) == metrics
    assert RetrievalMetrics.mean([metrics, short]).rank1 == pytest.approx(0.35)


# ---------------------------------------------------------------------------------------------- writers
def test_write_metrics_sorted_indented_numpy_safe(tmp_path):
    path = tmp_path / "out" / "metrics.json"
    write_metrics({"rank1": np.float32(0.5), "mAP": 0.25, "cmc": np.array([0.5, 1.0]), "epoch": np.int64(3)}, path)
    text = path.read_text()
    assert json.loads(text) == {"cmc": [0.5, 1.0], "epoch": 3, "mAP": 0.25, "rank1": 0.5}
    assert text.startswith('{\n  "cmc"') and text.index('"mAP"') < text.index('"rank1"')


def test_plot_cmc_draws_each_curve_where_its_values_are(tmp_path):
    path = tmp_path / "cmc.png"
    plot_cmc({"rising": np.linspace(0.1, 0.9, 20), "flat": np.full(20, 0.5)}, path)
    image = cv2.imread(str(path))[:, :, ::-1].astype(int)
    assert image.shape == (400, 600, 3)  # 6 x 4 inches at 100 dpi

    def rows_by_column(colour):
        """Per image column, the mean row of the curve's pixels (the legend's sample line left out)."""
        hit = (np.abs(image - np.asarray(colour)) <= 30).all(axis=2)
        hit[int(0.6 * image.shape[0]):, int(0.55 * image.shape[1]):] = False  # legend: lower right
        return {column: rows.mean() for column in range(image.shape[1]) if len(rows := np.nonzero(hit[:, column])[0])}

    rising = rows_by_column((31, 119, 180))  # matplotlib's first and second default colours
    flat = rows_by_column((255, 127, 14))
    assert len(rising) > 200 and len(flat) > 200
    columns = sorted(set(rising) & set(flat))
    left, middle, right = columns[5], columns[len(columns) // 2], columns[-5]
    # Image rows grow downwards: the rising curve starts below the flat one (10% < 50%), ends above it
    # (90% > 50%), and crosses it half way, where both are at 50%.
    assert rising[left] > flat[left] + 50 and rising[right] < flat[right] - 50
    assert abs(rising[middle] - flat[middle]) < 15
    # The flat curve is level.
    assert max(flat[c] for c in columns) - min(flat[c] for c in columns) < 4


def test_plot_ranked_lists_frames_matches_green_and_mismatches_red(tmp_path):
    rng = np.random.default_rng(0)
    grey = np.full((64, 32, 3), 128, np.uint8)
    queries = [np.stack([grey] * 3), rng.integers(0, 256, (64, 32, 3), dtype=np.uint8)]
    gallery = [[grey, grey, grey], [grey, grey]]
    path = tmp_path / "ranked.png"
    plot_ranked_lists(queries, gallery, [[True, False, False], [False, True]], path, distances=[[1, 2, 3], [1, 2]])
    image = cv2.imread(str(path))[:, :, ::-1].astype(int)
    greenish = (image[..., 1] > 140) & (image[..., 0] < 60) & (image[..., 2] < 60)
    reddish = (image[..., 0] > 180) & (image[..., 1] < 60) & (image[..., 2] < 60)
    assert greenish.sum() > 50 and reddish.sum() > greenish.sum()
    with pytest.raises(ValueError):
        plot_ranked_lists(queries, gallery[:1], [[True]], tmp_path / "bad.png")
