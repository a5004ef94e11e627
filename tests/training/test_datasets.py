"""The real-layout loaders on tiny generated copies: counts, ids, cameras, frame order, splits, errors."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy.io import loadmat, savemat

from tests.training.conftest import (
    DUKE_TRACKS,
    ILIDS_FRAMES,
    ILIDS_PERSONS,
    MARS_TEST_TRACKS,
    PRID_KEPT,
    PRID_PERSONS,
    make_ilidsvid,
    make_mars,
    make_prid2011,
)
from training.data import DATASETS, load_dataset, num_splits
from training.data.splits import generate_splits


def frame_names(tracklet) -> list[str]:
    return [Path(f).name for f in tracklet.frames]


def assert_name_sorted_and_exist(tracklets) -> None:
    for tracklet in tracklets:
        assert frame_names(tracklet) == sorted(frame_names(tracklet))
        assert all(Path(f).is_file() for f in tracklet.frames)


def test_num_splits():
    assert {name: num_splits(name) for name in DATASETS} == {
        "mars": 1, "ilidsvid": 10, "prid2011": 10, "dukev": 1, "synthetic": 1,
    }  # fmt: skip
    with pytest.raises(ValueError, match="unknown dataset"):
        num_splits("market1501")


# ------------------------------------------------------------------------------------------------- MARS
def test_mars_counts_ids_and_cameras(mars_root):
    dataset = load_dataset("mars", mars_root)
    assert dataset.name == "mars"
    # train pids 1, 3, 7 relabelled to 0, 1, 2 in order; cameras 1-based on disk, 0-based here.
    assert [(t.pid, t.camid, len(t)) for t in dataset.train] == [(0, 0, 3), (0, 1, 2), (1, 0, 4), (1, 3, 1), (2, 5, 12)]
    assert dataset.num_train_pids == 3
    # Queries are the rows of query_IDX; the gallery is ALL test tracks, queries included.
    assert [(t.pid, t.camid) for t in dataset.query] == [(2, 0), (5, 2)]
    assert [(t.pid, t.camid, len(t)) for t in dataset.gallery] == [(p, c - 1, n) for p, c, _, n in MARS_TEST_TRACKS]
    assert dataset.query[0] is dataset.gallery[0] and dataset.query[1] is dataset.gallery[3]
    assert "query_IDX" in dataset.protocol and "ALL test tracks" in dataset.protocol


def test_mars_frames_sorted_despite_reversed_name_list(mars_root):
    dataset = load_dataset("mars", mars_root)
    assert_name_sorted_and_exist(dataset.train + dataset.gallery)
    longest = dataset.train[-1]
    assert frame_names(longest) == [f"0007C6T0001F{i:03d}.jpg" for i in range(1, 13)]
    assert Path(longest.frames[0]).parent == mars_root / "bbox_train" / "0007"


def test_mars_junk_and_distractor_paths(mars_root):
    gallery = load_dataset("mars", mars_root).gallery
    junk = [t for t in gallery if t.pid == -1]
    distractors = [t for t in gallery if t.pid == 0]
    assert len(junk) == 1 and len(distractors) == 1
    assert junk[0].frames[0] == str(mars_root / "bbox_test" / "00-1" / "00-1C2T0001F001.jpg")
    assert distractors[0].frames[1] == str(mars_root / "bbox_test" / "0000" / "0000C1T0001F002.jpg")


def test_synthetic_name_uses_the_mars_loader(mars_root):
    dataset = load_dataset("synthetic", mars_root, split_id=3)  # single split: split_id ignored
    assert dataset.name == "synthetic" and len(dataset.gallery) == len(MARS_TEST_TRACKS)


def test_mars_missing_files_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="expected layout"):
        load_dataset("mars", tmp_path / "nowhere")
    root = make_mars(tmp_path / "mars")
    (root / "info" / "query_IDX.mat").unlink()
    with pytest.raises(FileNotFoundError, match="query_IDX.mat"):
        load_dataset("mars", root)


def test_mars_rejects_a_track_range_outside_the_name_list(tmp_path):
    root = make_mars(tmp_path / "mars")
    table = loadmat(str(root / "info" / "tracks_test_info.mat"))["track_test_info"]
    table[-1, 1] = 10_000
    from scipy.io import savemat

    savemat(str(root / "info" / "tracks_test_info.mat"), {"track_test_info": table})
    with pytest.raises(ValueError, match="outside"):
        load_dataset("mars", root)


# -------------------------------------------------------------------------------------------- iLIDS-VID
def test_ilidsvid_split_from_mat_first_half_is_test(ilidsvid_root):
    ls_set = loadmat(str(ilidsvid_root / "train-test people splits" / "train_test_splits_ilidsvid.mat"))["ls_set"]
    for split_id in (0, 7):
        dataset = load_dataset("ilidsvid", ilidsvid_root, split_id=split_id)
        row = ls_set[split_id].astype(int)
        test_numbers = sorted(int(ILIDS_PERSONS[i - 1][6:]) for i in row[:3])
        train_numbers = sorted(int(ILIDS_PERSONS[i - 1][6:]) for i in row[3:])
        assert [t.pid for t in dataset.query] == test_numbers
        assert [t.pid for t in dataset.gallery] == test_numbers
        assert {t.camid for t in dataset.query} == {0} and {t.camid for t in dataset.gallery} == {1}
        assert dataset.num_train_pids == 3 and len(dataset.train) == 6
        assert sorted(t.pid for t in dataset.train) == [0, 0, 1, 1, 2, 2]
        # Relabelling keeps the order of the original person numbers.
        first_train = [t for t in dataset.train if t.pid == 0][0]
        assert Path(first_train.frames[0]).parent.name == f"person{train_numbers[0]:03d}"
        assert {len(t) for t in dataset.query} == {ILIDS_FRAMES["cam1"]}
        assert {len(t) for t in dataset.gallery} == {ILIDS_FRAMES["cam2"]}
        assert_name_sorted_and_exist(dataset.train + dataset.query + dataset.gallery)
    assert not (ilidsvid_root / "splits_ilidsvid.json").exists()


def test_ilidsvid_accepts_the_inner_folder_as_root(ilidsvid_root):
    outer = load_dataset("ilidsvid", ilidsvid_root, split_id=2)
    inner = load_dataset("ilidsvid", ilidsvid_root / "i-LIDS-VID", split_id=2)
    assert inner.query == outer.query and inner.gallery == outer.gallery and inner.train == outer.train


def test_ilidsvid_without_mat_generates_saves_and_reuses_json(tmp_path):
    root = make_ilidsvid(tmp_path / "a", with_mat=False)
    first = load_dataset("ilidsvid", root, split_id=1)
    saved_path = root / "splits_ilidsvid.json"
    saved = json.loads(saved_path.read_text())
    assert len(saved["splits"]) == 10
    split = saved["splits"][1]
    assert sorted(split["train"] + split["test"]) == ILIDS_PERSONS and len(split["test"]) == 3
    assert [t.pid for t in first.query] == [int(name[6:]) for name in split["test"]]

    # Reuse: an edited file is honoured rather than regenerated.
    saved["splits"][1] = {"train": ILIDS_PERSONS[:3], "test": ILIDS_PERSONS[3:]}
    saved_path.write_text(json.dumps(saved))
    again = load_dataset("ilidsvid", root, split_id=1)
    assert [t.pid for t in again.query] == [7, 10, 11]

    # Determinism: a fresh copy of the data generates the same splits as the first one did.
    other = make_ilidsvid(tmp_path / "b", with_mat=False)
    assert [t.pid for t in load_dataset("ilidsvid", other, split_id=1).query] == [t.pid for t in first.query]


def test_ilidsvid_errors(tmp_path, ilidsvid_root):
    with pytest.raises(FileNotFoundError, match="i-LIDS-VID"):
        load_dataset("ilidsvid", tmp_path)
    with pytest.raises(ValueError, match="out of range"):
        load_dataset("ilidsvid", ilidsvid_root, split_id=10)


# --------------------------------------------------------------------------------------------- PRID2011
def test_prid2011_keeps_persons_1_to_200_with_more_than_21_frames_in_both_cameras(prid_root):
    dataset = load_dataset("prid2011", prid_root, split_id=0)
    saved = json.loads((prid_root / "splits_prid2011.json").read_text())
    split = saved["splits"][0]
    assert sorted(split["train"] + split["test"]) == [f"person_{n:04d}" for n in PRID_KEPT]
    assert len(split["train"]) == len(split["test"]) == 3
    assert [t.pid for t in dataset.query] == [int(name[7:]) for name in split["test"]]
    assert [t.pid for t in dataset.gallery] == [t.pid for t in dataset.query]
    assert {t.camid for t in dataset.query} == {0} and {t.camid for t in dataset.gallery} == {1}
    assert [len(t) for t in dataset.query] == [PRID_PERSONS[t.pid][0] for t in dataset.query]
    assert [len(t) for t in dataset.gallery] == [PRID_PERSONS[t.pid][1] for t in dataset.gallery]
    assert dataset.num_train_pids == 3 and sorted(t.pid for t in dataset.train) == [0, 0, 1, 1, 2, 2]
    assert_name_sorted_and_exist(dataset.train + dataset.query + dataset.gallery)


def test_prid2011_splits_deterministic_distinct_and_reused(prid_root, tmp_path):
    path = prid_root / "splits_prid2011.json"
    load_dataset("prid2011", prid_root)
    before = path.read_text()
    queries = [tuple(t.pid for t in load_dataset("prid2011", prid_root, split_id=s).query) for s in range(10)]
    assert path.read_text() == before  # reused, not rewritten
    assert len(set(queries)) > 1  # the 10 splits are not all the same
    copy = make_prid2011(tmp_path / "copy")
    assert tuple(t.pid for t in load_dataset("prid2011", copy, split_id=4).query) == queries[4]
    # A root pointing at prid_2011/ itself works too (its own split file is then written there).
    inner = load_dataset("prid2011", copy / "prid_2011", split_id=4)
    assert tuple(t.pid for t in inner.query) == queries[4]


def test_prid2011_reads_the_published_mat_first_half_test(tmp_path, caplog):
    root = make_prid2011(tmp_path / "data" / "prid2011")
    # The customary place: iLIDS-VID's "train-test people splits" folder, which ships the PRID2011 file too.
    split_dir = tmp_path / "data" / "prid2011" / "train-test people splits"
    split_dir.mkdir(parents=True)
    rng = np.random.default_rng(5)
    ls_set = np.stack([rng.permutation(len(PRID_KEPT)) + 1 for _ in range(10)]).astype(np.float64)
    savemat(str(split_dir / "train_test_splits_prid.mat"), {"ls_set": ls_set})
    with caplog.at_level("INFO", logger="training.data.prid2011"):
        dataset = load_dataset("prid2011", root, split_id=3)
    assert "train_test_splits_prid.mat" in caplog.text
    row = ls_set[3].astype(int)
    assert [t.pid for t in dataset.query] == sorted(PRID_KEPT[i - 1] for i in row[:3])
    assert sorted(PRID_KEPT[i - 1] for i in row[3:]) == sorted(
        {int(Path(t.frames[0]).parent.name[7:]) for t in dataset.train}
    )
    assert not (root / "splits_prid2011.json").exists()  # no seeded splits when a split file exists
    # A file indexing another number of persons (e.g. >= 21 frames kept instead of > 21) is refused.
    savemat(str(split_dir / "train_test_splits_prid.mat"), {"ls_set": np.stack([np.arange(1, 8)] * 10).astype(float)})
    with pytest.raises(ValueError, match="indexes 7 persons but 6"):
        load_dataset("prid2011", root)


def test_prid2011_follows_the_published_mat_when_more_than_21_frames_does_not_give_its_persons(tmp_path, caplog):
    # Public code that reads train_test_splits_prid.mat on the real data keeps at least 27 frames (178
    # persons); "more than 21" keeps more. Here persons 1 and 4 get 27 frames in both cameras.
    root = make_prid2011(tmp_path / "p")
    for person in (1, 4):
        for cam in ("cam_a", "cam_b"):
            folder = root / "prid_2011" / "multi_shot" / cam / f"person_{person:04d}"
            first = sorted(folder.iterdir())[0]
            for number in range(len(list(folder.iterdir())) + 1, 28):
                shutil.copy(first, folder / f"{number:04d}.png")
    split_dir = root / "train-test people splits"
    split_dir.mkdir()
    savemat(str(split_dir / "train_test_splits_prid.mat"), {"ls_set": np.array([[2.0, 1.0]] * 10)})
    with caplog.at_level("WARNING", logger="training.data.prid2011"):
        dataset = load_dataset("prid2011", root, split_id=0)
    assert [t.pid for t in dataset.query] == [4] and [len(t) for t in dataset.query] == [27]
    assert {int(Path(t.frames[0]).parent.name[7:]) for t in dataset.train} == {1}
    assert "more than 26" in caplog.text and "indexes 2 persons" in caplog.text
    assert "more than 26 frames in each camera (2 here)" in dataset.protocol
    # Without the file, the paper's "more than 21" holds (the six persons of PRID_KEPT).
    (split_dir / "train_test_splits_prid.mat").unlink()
    saved = load_dataset("prid2011", root, split_id=0)
    assert len(saved.query) + saved.num_train_pids == len(PRID_KEPT)


def test_split_files_that_repeat_or_share_persons_are_refused(tmp_path, ilidsvid_root):
    persons = ILIDS_PERSONS
    mat = tmp_path / "repeats.mat"
    savemat(str(mat), {"ls_set": np.array([[1, 1, 2, 3, 4, 5]] * 10, dtype=float)})
    with pytest.raises(ValueError, match="repeats indices"):
        load_dataset("ilidsvid", ilidsvid_root, split_file=mat)
    savemat(str(mat), {"other": np.ones((2, 2))})
    with pytest.raises(ValueError, match="no ls_set"):
        load_dataset("ilidsvid", ilidsvid_root, split_file=mat)
    cases = {
        "both train and test": [{"train": persons[:4], "test": persons[3:]}],
        "no test persons": [{"train": persons, "test": []}],
        "a person twice": [{"train": persons[:3] + persons[:1], "test": persons[3:]}],
        "holds no splits": [],
    }
    for message, splits in cases.items():
        path = tmp_path / "bad.json"
        path.write_text(json.dumps(splits))
        with pytest.raises(ValueError, match=message):
            load_dataset("ilidsvid", ilidsvid_root, split_file=path)
    (tmp_path / "garbage.json").write_bytes(b"\xff\xfe not json")
    with pytest.raises(ValueError, match="not a JSON split file"):
        load_dataset("ilidsvid", ilidsvid_root, split_file=tmp_path / "garbage.json")


def test_ilidsvid_reads_deep_person_reid_splits_json_and_flags_seeded_splits(tmp_path, caplog):
    root = make_ilidsvid(tmp_path / "a", with_mat=False)
    (root / "splits.json").write_text(json.dumps([{"train": ILIDS_PERSONS[3:], "test": ILIDS_PERSONS[:3]}]))
    dataset = load_dataset("ilidsvid", root, split_id=0)
    assert [t.pid for t in dataset.query] == [1, 2, 5] and not (root / "splits_ilidsvid.json").exists()
    (root / "splits.json").unlink()
    with caplog.at_level("WARNING", logger="training.data.splits"):
        load_dataset("ilidsvid", root, split_id=0)
        assert "generated 10 SEEDED splits" in caplog.text
        caplog.clear()
        load_dataset("ilidsvid", root, split_id=0)  # the saved seeded splits, read back, are still flagged
        assert "SEEDED splits (seed 0" in caplog.text
    assert not list(root.glob("*.tmp"))  # the temporary file of the atomic write is gone
    # Published splits win over seeded ones an earlier run saved.
    (root / "splits.json").write_text(json.dumps([{"train": ILIDS_PERSONS[:3], "test": ILIDS_PERSONS[3:]}]))
    assert [t.pid for t in load_dataset("ilidsvid", root, split_id=0).query] == [7, 10, 11]


def test_seeded_splits_are_written_under_a_temporary_name_of_their_own(tmp_path):
    # Runs of several splits started side by side each write the file; one run's temporary file must not be
    # another's. A fixed name (here occupied by a folder, as if another run held it) would fail.
    root = make_ilidsvid(tmp_path / "a", with_mat=False)
    (root / "splits_ilidsvid.json.tmp").mkdir()
    load_dataset("ilidsvid", root, split_id=0)
    assert len(json.loads((root / "splits_ilidsvid.json").read_text())["splits"]) == 10


def test_seeded_splits_on_a_read_only_root_are_kept_in_memory(tmp_path, monkeypatch):
    import training.data.splits as splits_module

    root = make_ilidsvid(tmp_path / "a", with_mat=False)

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(splits_module.tempfile, "mkstemp", refuse)  # what a read-only mount answers
    first = load_dataset("ilidsvid", root, split_id=2)
    assert not (root / "splits_ilidsvid.json").exists()
    monkeypatch.undo()
    assert [t.pid for t in load_dataset("ilidsvid", root, split_id=2).query] == [t.pid for t in first.query]


def test_explicit_json_split_file_in_the_public_format(tmp_path, ilidsvid_root):
    root = make_prid2011(tmp_path / "p")
    names = [f"person_{n:04d}" for n in PRID_KEPT]
    public = [{"train": names[:3], "test": names[3:]}, {"train": names[3:], "test": names[:3]}]
    split_file = tmp_path / "splits_prid2011_public.json"
    split_file.write_text(json.dumps(public))
    dataset = load_dataset("prid2011", root, split_id=1, split_file=split_file)
    assert [t.pid for t in dataset.query] == PRID_KEPT[:3]
    with pytest.raises(ValueError, match="out of range"):
        load_dataset("prid2011", root, split_id=2, split_file=split_file)
    # iLIDS-VID: the explicit file wins over the .mat found in the customary folder.
    ilids_file = tmp_path / "splits_ilidsvid.json"
    ilids_file.write_text(json.dumps([{"train": ILIDS_PERSONS[3:], "test": ILIDS_PERSONS[:3]}]))
    ilids = load_dataset("ilidsvid", ilidsvid_root, split_id=0, split_file=ilids_file)
    assert [t.pid for t in ilids.query] == sorted(int(name[6:]) for name in ILIDS_PERSONS[:3])
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"train": ["person999"], "test": []}]))
    with pytest.raises(ValueError, match="not in the dataset"):
        load_dataset("ilidsvid", ilidsvid_root, split_file=bad)


def test_prid2011_finds_the_json_split_file_beside_prid_2011_when_the_root_is_prid_2011(tmp_path, caplog):
    """Public code keeps splits_prid2011.json in the folder holding prid_2011/; a root at prid_2011/ finds it."""
    holder = make_prid2011(tmp_path / "prid2011")
    kept = [f"person_{n:04d}" for n in PRID_KEPT]
    published = [{"train": kept[:3], "test": kept[3:]}, {"train": kept[3:], "test": kept[:3]}]
    (holder / "splits_prid2011.json").write_text(json.dumps(published))
    with caplog.at_level(logging.INFO):
        dataset = load_dataset("prid2011", holder / "prid_2011", split_id=1)
    assert [t.pid for t in dataset.query] == [int(name[7:]) for name in kept[:3]]
    assert not (holder / "prid_2011" / "splits_prid2011.json").exists()  # read, not generated beside it
    assert "SEEDED" not in caplog.text and "splits: 2 read from" in caplog.text
    # From multi_shot/ too; and seeded splits an earlier run left beside the data do not hide the published file.
    seeded = {"seed": 0, "num_persons": 6, "splits": [{"train": kept[::2], "test": kept[1::2]}] * 2}
    (holder / "prid_2011" / "splits_prid2011.json").write_text(json.dumps(seeded))
    for root in (holder / "prid_2011", holder / "prid_2011" / "multi_shot"):
        caplog.clear()
        with caplog.at_level(logging.INFO):
            dataset = load_dataset("prid2011", root, split_id=1)
        assert [t.pid for t in dataset.query] == [int(name[7:]) for name in kept[:3]], root
        assert "SEEDED" not in caplog.text


def test_prid2011_saved_split_with_unknown_person_is_an_error(tmp_path):
    root = make_prid2011(tmp_path / "p")
    (root / "splits_prid2011.json").write_text(json.dumps({"splits": [{"train": ["person_0099"], "test": []}]}))
    with pytest.raises(ValueError, match="not in the dataset"):
        load_dataset("prid2011", root)


def test_generate_splits_is_seeded_half_half():
    persons = [f"p{i}" for i in range(11)]
    splits = generate_splits(persons, num_splits=10, seed=3)
    assert splits == generate_splits(list(reversed(persons)), num_splits=10, seed=3)
    assert splits != generate_splits(persons, num_splits=10, seed=4)
    for split in splits:
        assert len(split["train"]) == 5 and len(split["test"]) == 6
        assert sorted(split["train"] + split["test"]) == sorted(persons)


# ------------------------------------------------------------------------------------ DukeMTMC-VideoReID
def test_dukev_counts_cameras_and_relabelling(dukev_root):
    dataset = load_dataset("dukev", dukev_root)
    assert [(t.pid, t.camid, len(t)) for t in dataset.train] == [(0, 0, 3), (0, 5, 2), (1, 1, 4), (2, 7, 2)]
    assert dataset.num_train_pids == 3
    expected = {s: [(pid, cam - 1, n) for pid, _, cam, n in DUKE_TRACKS[s]] for s in ("query", "gallery")}
    assert [(t.pid, t.camid, len(t)) for t in dataset.query] == expected["query"]
    assert [(t.pid, t.camid, len(t)) for t in dataset.gallery] == expected["gallery"]
    assert_name_sorted_and_exist(dataset.train + dataset.query + dataset.gallery)
    assert frame_names(dataset.train[2]) == [f"0004_C2_F{i:04d}_X{30000 + i - 1}.jpg" for i in range(1, 5)]


def test_dukev_missing_subset(tmp_path, dukev_root):
    root = tmp_path / "duke"
    shutil.copytree(dukev_root, root)
    shutil.rmtree(root / "gallery")
    with pytest.raises(FileNotFoundError, match="gallery"):
        load_dataset("dukev", root)


def test_loaded_frames_are_in_temporal_order(mars_root):
    """The pixel value of each generated frame encodes its number: reading in path order gives 0, 10, 20..."""
    import cv2

    tracklet = load_dataset("mars", mars_root).train[-1]
    values = [int(np.round(cv2.imread(f).mean())) for f in tracklet.frames]
    assert all(b > a for a, b in zip(values, values[1:], strict=False))
