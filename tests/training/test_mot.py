"""MOT scoring of tracker output against ground truth (py-motmetrics under NumPy 2)."""

from __future__ import annotations

import pytest

from training.mot import mot_scores, parse_mot

GT = """1,1,10,10,20,40,1,1,1
2,1,12,10,20,40,1,1,1
3,1,14,10,20,40,1,1,1
1,2,100,10,20,40,1,1,1
2,2,100,10,20,40,1,1,1
3,2,100,10,20,40,1,1,1
"""


def test_perfect_tracking_scores_one():
    scores = mot_scores(parse_mot(GT), parse_mot(GT.replace(",1,1,1\n", ",0.9,-1,-1,-1\n")))
    assert scores["mota"] == pytest.approx(1.0) and scores["idf1"] == pytest.approx(1.0)
    assert scores["gt_boxes"] == 6 and scores["id_switches"] == 0


def test_a_switch_a_miss_and_a_false_positive():
    hyp = """1,7,10,10,20,40,1,-1,-1,-1
2,7,12,10,20,40,1,-1,-1,-1
3,8,14,10,20,40,1,-1,-1,-1
1,9,100,10,20,40,1,-1,-1,-1
2,9,100,10,20,40,1,-1,-1,-1
3,5,300,300,20,40,1,-1,-1,-1
"""
    scores = mot_scores(parse_mot(GT), parse_mot(hyp))
    assert scores["id_switches"] == 1 and scores["misses"] == 1 and scores["false_positives"] == 1
    assert scores["mota"] == pytest.approx(1 - 3 / 6)
