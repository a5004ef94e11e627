"""The synthetic benchmark: MARS layout through the real loader, sizes, protocol paths, determinism."""

from __future__ import annotations

import dataclasses
import json

import cv2
import numpy as np
import pytest
from scipy.io import loadmat

from training.data import load_dataset
from training.data.pedestrian import Appearance, draw_person, near_twin, random_appearance, render_person
from training.data.synthetic import (
    META_FILE,
    PRESETS,
    SyntheticSpec,
    generate_synthetic,
    main,
    plan_benchmark,
    render_tracklet,
)
from training.data.synthetic_scene import random_camera
from training.evaluation import evaluate

TINY = {
    "num_identities": 6,
    "tracklets_per_camera": 2,
    "num_cameras": 3,
    "frames_per_tracklet": (3, 5),
    "height": 32,
    "width": 16,
    "num_junk": 2,
    "num_distractors": 1,
}


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    return generate_synthetic(tmp_path_factory.mktemp("synthetic") / "data", seed=11, **TINY)


def test_loads_through_the_mars_loader_with_the_right_sizes(tiny_root):
    dataset = load_dataset("synthetic", tiny_root)
    meta = json.loads((tiny_root / META_FILE).read_text())
    assert dataset.num_train_pids == 3 and sorted({t.pid for t in dataset.train}) == [0, 1, 2]
    assert len(meta["train_pids"]) == len(meta["test_pids"]) == 3
    assert not set(meta["train_pids"]) & set(meta["test_pids"])
    # One query per test identity; the gallery is all test tracks including 2 junk and 1 distractor.
    assert sorted(t.pid for t in dataset.query) == meta["test_pids"]
    assert len(dataset.gallery) == meta["num_test_tracks"]
    assert len(dataset.train) == meta["num_train_tracks"]
    gallery_pids = [t.pid for t in dataset.gallery]
    assert gallery_pids.count(-1) == 2 and gallery_pids.count(0) == 1
    assert all(t in dataset.gallery for t in dataset.query)
    # Every identity: 2..3 cameras x 2 tracklets, 3..5 frames each, cameras 0..2.
    for subset, pids in ((dataset.train, range(3)), (dataset.gallery, meta["test_pids"])):
        for pid in pids:
            tracks = [t for t in subset if t.pid == pid]
            cameras = {t.camid for t in tracks}
            assert 2 <= len(cameras) <= 3 and cameras <= {0, 1, 2} and len(tracks) == 2 * len(cameras)
    assert all(3 <= len(t) <= 5 for t in dataset.train + dataset.gallery)
    frame = cv2.imread(dataset.train[0].frames[0])
    assert frame.shape == (32, 16, 3)
    assert "00-1" in {t.frames[0].split("/")[-2] for t in dataset.gallery}


def test_mat_files_have_the_mars_variables_and_shapes(tiny_root):
    info = tiny_root / "info"
    train = loadmat(str(info / "tracks_train_info.mat"))["track_train_info"]
    test = loadmat(str(info / "tracks_test_info.mat"))["track_test_info"]
    query = loadmat(str(info / "query_IDX.mat"))["query_IDX"].ravel()
    names = (info / "test_name.txt").read_text().split()
    assert train.shape[1] == test.shape[1] == 4 and query.shape == (3,)
    assert test[-1, 1] == len(names) and test[0, 0] == 1  # 1-based inclusive ranges covering the list
    assert np.all(test[1:, 0] == test[:-1, 1] + 1)
    assert query.min() >= 1 and query.max() <= len(test)
    junk_rows = test[test[:, 2] == -1]
    assert all(names[int(row[0]) - 1].startswith("00-1") for row in junk_rows)


def test_every_query_has_a_true_match_in_another_camera(tiny_root):
    dataset = load_dataset("mars", tiny_root)  # the plain MARS loader reads it too
    q_pids = np.array([t.pid for t in dataset.query])
    g_pids = np.array([t.pid for t in dataset.gallery])
    perfect = (q_pids[:, None] != g_pids[None, :]).astype(np.float64)
    cmc, mean_ap = evaluate(
        perfect, q_pids, g_pids, [t.camid for t in dataset.query], [t.camid for t in dataset.gallery], max_rank=5
    )
    assert cmc[0] == 1.0 and mean_ap == 1.0  # no query skipped, the protocol paths all run


def test_deterministic_for_a_seed(tiny_root, tmp_path):
    again = generate_synthetic(tmp_path / "again", seed=11, **TINY)
    for relative in ("info/train_name.txt", "info/test_name.txt"):
        assert (again / relative).read_text() == (tiny_root / relative).read_text()
    for mat, variable in (("tracks_test_info.mat", "track_test_info"), ("query_IDX.mat", "query_IDX")):
        np.testing.assert_array_equal(
            loadmat(str(again / "info" / mat))[variable], loadmat(str(tiny_root / "info" / mat))[variable]
        )
    images = sorted(p.relative_to(tiny_root) for p in tiny_root.rglob("*.jpg"))
    assert images == sorted(p.relative_to(again) for p in again.rglob("*.jpg"))
    assert all((again / p).read_bytes() == (tiny_root / p).read_bytes() for p in images)
    other = generate_synthetic(tmp_path / "other", seed=12, **TINY)
    other_bytes = {p.read_bytes() for p in other.rglob("*.jpg")}
    assert not other_bytes & {(tiny_root / p).read_bytes() for p in images}  # another seed, other pictures


def test_reuse_and_refusal_to_overwrite_foreign_folders(tiny_root, tmp_path):
    stamp = (tiny_root / "info" / "train_name.txt").stat().st_mtime_ns
    assert generate_synthetic(tiny_root, seed=11, **TINY) == tiny_root
    assert (tiny_root / "info" / "train_name.txt").stat().st_mtime_ns == stamp  # reused, not rewritten
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("user data")
    with pytest.raises(FileExistsError):
        generate_synthetic(foreign, **TINY)
    assert (foreign / "keep.txt").read_text() == "user data"


def test_regenerates_when_parameters_change(tmp_path):
    root = generate_synthetic(tmp_path / "s", seed=1, **TINY)
    bigger = {**TINY, "num_identities": 8}
    generate_synthetic(root, seed=1, **bigger)
    assert load_dataset("synthetic", root).num_train_pids == 4


def test_near_twins_differ_in_exactly_one_detail():
    rng = np.random.default_rng(0)
    for _ in range(50):
        original = random_appearance(rng)
        twin = near_twin(rng, original)
        changed = [f.name for f in dataclasses.fields(Appearance) if getattr(twin, f.name) != getattr(original, f.name)]
        assert len(changed) == 1 and changed[0] in {"shoes", "bag_colour", "hair"}


def test_rendered_tracklet_moves_and_is_not_blank():
    rng = np.random.default_rng(3)
    frames = render_tracklet(random_appearance(rng), random_camera(rng), 6, 64, 32, rng)
    assert len(frames) == 6 and frames[0].shape == (64, 32, 3) and frames[0].dtype == np.uint8
    assert frames[0].std() > 10  # a person on a textured background, not a flat image
    assert np.abs(frames[0].astype(int) - frames[3].astype(int)).mean() > 1  # walking changes the frames


def test_render_person_gives_the_person_alone_with_a_true_alpha_mask():
    rng = np.random.default_rng(1)
    for _ in range(4):
        look = random_appearance(rng)
        person = render_person(look, 100.0, phase=0.7, facing=-1)
        height, width = person.alpha.shape
        assert person.rgb.shape == (height, width, 3) and person.rgb.dtype == np.uint8
        rows, columns = np.nonzero(person.mask)
        # The whole person fits in the box (nothing touches its sides or top), feet near the bottom.
        assert rows.min() > 0 and columns.min() > 0 and columns.max() < width - 1 and rows.max() >= height - 4
        assert 0.15 < person.mask.mean() < 0.5 and person.alpha.max() == 1.0 and not person.rgb[~person.mask].any()
        # Pasted on any background it gives what drawing the person on that background gives.
        for grey in (30, 128, 220):
            drawn = np.full((height, width, 3), grey, np.uint8)
            draw_person(drawn, look, width / 2.0, height - 1 - 0.02 * 100.0, 100.0, 0.7, -1)
            pasted = person.alpha[..., None] * person.rgb + (1.0 - person.alpha[..., None]) * grey
            error = np.abs(pasted - drawn)
            assert error.max() <= 6 and (error > 2).mean() < 0.005  # uint8 rounding at anti-aliased edges


def test_spec_validates_and_keyword_fields_override_it(tmp_path):
    with pytest.raises(ValueError, match="2 cameras"):
        SyntheticSpec(num_cameras=1)
    with pytest.raises(ValueError, match="min <= max"):
        generate_synthetic(tmp_path / "bad", frames_per_tracklet=(5, 3))
    assert not (tmp_path / "bad").exists()
    spec = SyntheticSpec(frames_per_tracklet=[3, 5])
    assert spec.frames_per_tracklet == (3, 5) and spec.as_json()["frames_per_tracklet"] == [3, 5]


def test_command_line(tmp_path, capsys):
    root = tmp_path / "cli"
    main(["--root", str(root), "--identities", "4", "--cameras", "2", "--min-frames", "2", "--max-frames", "3",
          "--height", "32", "--width", "16", "--tracklets-per-camera", "1", "--distractors", "3"])  # fmt: skip
    assert "ready" in capsys.readouterr().out
    dataset = load_dataset("synthetic", root)
    assert dataset.num_train_pids == 2 and len(dataset.query) == 2
    meta = json.loads((root / META_FILE).read_text())["spec"]
    # Options override the default preset; what is not given comes from it.
    assert meta["num_distractors"] == 3 and meta["num_junk"] == PRESETS["default"].num_junk
    assert meta["frames_per_tracklet"] == [2, 3]


def test_default_preset_tells_heads_apart_and_small_preset_stays_small():
    # Planning is cheap (nothing rendered): the default test side has >= 200 queries, >= 1,000 gallery tracks.
    plan = plan_benchmark(PRESETS["default"])
    assert len(plan.query_rows) >= 200 and len(plan.test_tracks) >= 1000
    assert len(plan.train_pids) == 200 and len(plan.train_tracks) >= 1000
    small = plan_benchmark(PRESETS["small"])
    assert len(small.query_rows) == 40 and len(small.test_tracks) < 250
    assert PRESETS["small"] == SyntheticSpec()  # the demo's generate_synthetic(root) default
