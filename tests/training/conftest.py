"""Tiny on-the-fly copies of the real dataset layouts (MARS, iLIDS-VID, PRID2011, DukeMTMC-VideoReID).

Frames are tiny images whose pixel value encodes the frame number, written in shuffled order so that a
loader relying on directory order would be caught. The builders are plain functions (reused by several
test files); the fixtures call them once per module.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.io import savemat

FRAME_SIZE = (8, 4)  # (height, width) of the generated frames


def write_frame(path: Path, frame_number: int) -> None:
    """A uniform grey frame of value ``frame_number * 10 % 250`` (PNG keeps it exact)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    value = (frame_number * 10) % 250
    cv2.imwrite(str(path), np.full((*FRAME_SIZE, 3), value, np.uint8))


def write_frames_shuffled(paths_and_numbers: Sequence[tuple[Path, int]], seed: int = 0) -> None:
    """Create the files in a shuffled order (directory order then differs from name order)."""
    items = list(paths_and_numbers)
    random.Random(seed).shuffle(items)
    for path, number in items:
        write_frame(path, number)


# --------------------------------------------------------------------------------------------- MARS
#: (pid, camera 1-based, tracklet number, number of frames)
MARS_TRAIN_TRACKS = [(1, 1, 1, 3), (1, 2, 1, 2), (3, 1, 1, 4), (3, 4, 2, 1), (7, 6, 1, 12)]
MARS_TEST_TRACKS = [
    (2, 1, 1, 3),  # query 0
    (2, 2, 1, 2),
    (2, 1, 2, 2),  # same pid and camera as query 0: removed from its gallery
    (5, 3, 1, 4),  # query 1
    (5, 4, 1, 3),
    (0, 1, 1, 2),  # distractor
    (-1, 2, 1, 2),  # junk
]
MARS_QUERY_ROWS = [0, 3]  # 0-based; written 1-based


def mars_folder(pid: int) -> str:
    """MARS person folder / name prefix: ``0002``, ``0000`` for distractors, ``00-1`` for junk."""
    return "00-1" if pid == -1 else f"{pid:04d}"


def make_mars(root: Path, train_tracks=MARS_TRAIN_TRACKS, test_tracks=MARS_TEST_TRACKS, query_rows=MARS_QUERY_ROWS):
    """Write the MARS layout; within a track the name list holds the frames in REVERSE order."""
    info = root / "info"
    info.mkdir(parents=True)
    for subset, tracks, list_file, variable, mat_file in (
        ("bbox_train", train_tracks, "train_name.txt", "track_train_info", "tracks_train_info.mat"),
        ("bbox_test", test_tracks, "test_name.txt", "track_test_info", "tracks_test_info.mat"),
    ):
        names, table, files = [], [], []
        for pid, camera, number, num_frames in tracks:
            folder = mars_folder(pid)
            track_names = [f"{folder}C{camera}T{number:04d}F{frame:03d}.jpg" for frame in range(1, num_frames + 1)]
            start = len(names) + 1
            names.extend(reversed(track_names))
            table.append([start, len(names), pid, camera])
            files.extend((root / subset / folder / name, i) for i, name in enumerate(track_names))
        write_frames_shuffled(files)
        (info / list_file).write_text("\n".join(names) + "\n")
        savemat(str(info / mat_file), {variable: np.asarray(table, dtype=np.float64)})
    savemat(str(info / "query_IDX.mat"), {"query_IDX": np.asarray(query_rows, dtype=np.float64) + 1})
    return root


@pytest.fixture(scope="module")
def mars_root(tmp_path_factory) -> Path:
    return make_mars(tmp_path_factory.mktemp("mars"))


# ---------------------------------------------------------------------------------------- iLIDS-VID
ILIDS_PERSONS = [f"person{n:03d}" for n in (1, 2, 5, 7, 10, 11)]
ILIDS_FRAMES = {"cam1": 3, "cam2": 4}


def make_ilidsvid(root: Path, with_mat: bool = True, num_splits: int = 10, seed: int = 0) -> Path:
    """Write ``root/i-LIDS-VID/sequences/cam1|cam2/personXXX/camN_personXXX_NNNNN.png`` and the split .mat."""
    files = []
    for cam, num_frames in ILIDS_FRAMES.items():
        for person in ILIDS_PERSONS:
            folder = root / "i-LIDS-VID" / "sequences" / cam / person
            # Frame numbers do not start at 1 in the real set; they are zero-padded to 5 digits.
            files.extend((folder / f"{cam}_{person}_{317 + 9 * i:05d}.png", i) for i in range(num_frames))
    write_frames_shuffled(files)
    if with_mat:
        rng = np.random.default_rng(seed)
        ls_set = np.stack([rng.permutation(len(ILIDS_PERSONS)) + 1 for _ in range(num_splits)]).astype(np.float64)
        split_dir = root / "train-test people splits"
        split_dir.mkdir(parents=True)
        savemat(str(split_dir / "train_test_splits_ilidsvid.mat"), {"ls_set": ls_set})
    return root


@pytest.fixture(scope="module")
def ilidsvid_root(tmp_path_factory) -> Path:
    return make_ilidsvid(tmp_path_factory.mktemp("ilidsvid"))


# ----------------------------------------------------------------------------------------- PRID2011
#: person number -> (frames in cam_a, frames in cam_b); None = not seen by that camera. As in the real set,
#: folders above 200 exist in both cameras under the same names but are different people.
PRID_PERSONS = {
    1: (22, 25),
    2: (30, 20),  # too few frames in cam_b: excluded
    3: (22, 21),  # exactly 21 frames in cam_b: excluded (the protocol keeps MORE than 21)
    4: (25, 23),
    5: (22, None),  # cam_a only: excluded
    6: (24, 22),
    7: (None, 30),  # cam_b only: excluded
    8: (26, 27),
    9: (23, 22),
    10: (22, 22),
    201: (30, 40),  # same name in both cameras, different people: never an identity
    202: (25, 26),
    260: (None, 24),
}
PRID_KEPT = [1, 4, 6, 8, 9, 10]


def make_prid2011(root: Path) -> Path:
    """Write ``root/prid_2011/multi_shot/cam_a|cam_b/person_XXXX/NNNN.png``."""
    files = []
    for person, counts in PRID_PERSONS.items():
        for cam, num_frames in zip(("cam_a", "cam_b"), counts, strict=True):
            if num_frames is None:
                continue
            folder = root / "prid_2011" / "multi_shot" / cam / f"person_{person:04d}"
            files.extend((folder / f"{i + 1:04d}.png", i) for i in range(num_frames))
    write_frames_shuffled(files)
    return root


@pytest.fixture(scope="module")
def prid_root(tmp_path_factory) -> Path:
    return make_prid2011(tmp_path_factory.mktemp("prid"))


# ------------------------------------------------------------------------------------ DukeMTMC-VideoReID
#: subset -> list of (pid, tracklet, camera 1-based, frames)
DUKE_TRACKS = {
    "train": [(1, 1, 1, 3), (1, 2, 6, 2), (4, 7, 2, 4), (9, 3, 8, 2)],
    "query": [(11, 20, 3, 2), (12, 21, 5, 3)],
    "gallery": [(11, 22, 4, 3), (12, 23, 5, 2), (12, 24, 1, 2), (13, 25, 2, 2)],
}


def make_dukev(root: Path) -> Path:
    """Write ``root/train|query|gallery/<pid>/<tracklet>/<pid>_C<cam>_F<frame>_X<n>.jpg``."""
    files = []
    for subset, tracks in DUKE_TRACKS.items():
        for pid, tracklet, camera, num_frames in tracks:
            folder = root / subset / f"{pid:04d}" / f"{tracklet:04d}"
            files.extend(
                (folder / f"{pid:04d}_C{camera}_F{i + 1:04d}_X{30000 + i}.jpg", i) for i in range(num_frames)
            )
    write_frames_shuffled(files)
    return root


@pytest.fixture(scope="module")
def dukev_root(tmp_path_factory) -> Path:
    return make_dukev(tmp_path_factory.mktemp("dukev"))


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for a module: tiny tensors gain nothing from more, and the machine is shared."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
