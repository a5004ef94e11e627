"""Synthetic fixed-camera footage: videos, MOTChallenge ground truth and the identity map."""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest

from training.cli import main
from training.data.synthetic_footage import PRESETS


@pytest.fixture(scope="module")
def footage(tmp_path_factory):
    out = tmp_path_factory.mktemp("footage")
    assert main(["synthetic-footage", "--out", str(out), "--preset", "small"]) == 0
    return out


def test_two_cameras_with_videos_and_mot_ground_truth(footage):
    spec = PRESETS["small"]
    meta = json.loads((footage / "footage_meta.json").read_text())
    assert sorted(meta["cameras"]) == ["cam_a", "cam_b"]
    frames = int(spec.seconds * spec.fps)
    for camera in meta["cameras"]:
        capture = cv2.VideoCapture(str(footage / meta["cameras"][camera]["video"]))
        count = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            assert frame.shape == (spec.height, spec.width, 3)
            count += 1
        assert count == frames
        gt = np.loadtxt(footage / camera / "gt" / "gt.txt", delimiter=",", ndmin=2)
        assert gt.shape[1] == 9 and len(gt) == meta["cameras"][camera]["boxes"] > 0
        assert gt[:, 0].min() >= 1 and gt[:, 0].max() <= frames  # 1-based frames
        assert (gt[:, 2] >= 0).all() and (gt[:, 2] + gt[:, 4] <= spec.width).all()
        assert ((gt[:, 8] >= 0) & (gt[:, 8] <= 1)).all()
        assert f"seqLength={frames}" in (footage / camera / "seqinfo.ini").read_text()


def test_same_identities_in_both_cameras_people_enter_leave_and_occlude(footage):
    spec = PRESETS["small"]
    with open(footage / "identities.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    by_camera = {}
    for row in rows:
        assert row["track_id"] == row["identity"]
        by_camera.setdefault(row["camera"], set()).add(int(row["identity"]))
    assert by_camera["cam_a"] == by_camera["cam_b"] == set(range(1, spec.num_identities + 1))
    scale = spec.height / 576
    occluded = 0
    for camera in by_camera:
        gt = np.loadtxt(footage / camera / "gt" / "gt.txt", delimiter=",", ndmin=2)
        assert set(gt[:, 1].astype(int)) == by_camera[camera]
        inside = (gt[:, 2] > 0) & (gt[:, 2] + gt[:, 4] < spec.width)
        heights = gt[inside, 5]
        # People 60-200 px tall at 576 rows (scaled here), give or take the pose.
        assert heights.min() >= 0.9 * spec.min_height * scale and heights.max() <= 1.1 * spec.max_height * scale
        for identity in by_camera[camera]:
            track = gt[gt[:, 1] == identity]
            first, last = track[0], track[-1]
            # Enters through a side edge and leaves through one (or is still there when the footage ends).
            assert first[2] == 0 or first[2] + first[4] == spec.width
            assert last[2] == 0 or last[2] + last[4] == spec.width or last[0] == spec.seconds * spec.fps
        occluded += int(np.count_nonzero(inside & (gt[:, 8] < 0.8)))
    assert occluded > 0  # crossings, groups or the pole hide people in some frames
    assert json.loads((footage / "footage_meta.json").read_text())["groups"]  # some walk together
