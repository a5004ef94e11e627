"""MARS as distributed: ``bbox_train/``, ``bbox_test/`` and ``info/`` (name lists and .mat track tables).

Layout (root)::

    bbox_train/0001/0001C1T0001F001.jpg ...
    bbox_test/00-1/00-1C1T0001F001.jpg ...      (pid -1: junk), bbox_test/0000/... (pid 0: distractors)
    info/train_name.txt, info/test_name.txt     one frame file name per line
    info/tracks_train_info.mat                  track_train_info (8298, 4): [start, end, pid, camera]
    info/tracks_test_info.mat                   track_test_info (12180, 4), same columns
    info/query_IDX.mat                          query_IDX (1980,): 1-based rows of track_test_info

``start``/``end`` are 1-based inclusive indices into the name list. Person and camera ids are read from the
table, never parsed from names (junk names start with ``00-1``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from scipy.io import loadmat

from training.data.tracklets import Tracklet, VideoDataset, relabel, require_path

log = logging.getLogger(__name__)

MARS_LAYOUT = (
    "bbox_train/<pid>/<name>.jpg, bbox_test/<pid>/<name>.jpg and info/ with train_name.txt, test_name.txt, "
    "tracks_train_info.mat, tracks_test_info.mat, query_IDX.mat"
)

MARS_PROTOCOL = (
    "Official MARS protocol: queries are the test tracks at query_IDX and the gallery is ALL test tracks "
    "(queries included); per query, gallery tracks with the same person id and the same camera are removed, "
    "tracks with pid -1 are junk (ignored) and pid 0 distractors stay in the gallery as false matches."
)


def read_name_list(path: Path) -> list[str]:
    """One frame file name per line; blank lines ignored."""
    with open(require_path(path, MARS_LAYOUT), encoding="utf-8") as handle:
        return [line.strip() for line in handle if line.strip()]


def read_mat_variable(path: Path, variable: str) -> np.ndarray:
    """A numeric variable of a MATLAB v5 .mat file as an int64 array."""
    contents = loadmat(str(require_path(path, MARS_LAYOUT)))
    if variable not in contents:
        found = sorted(k for k in contents if not k.startswith("__"))
        raise KeyError(f"{path} has no variable {variable!r} (found {found}); expected layout: {MARS_LAYOUT}")
    return np.asarray(contents[variable]).astype(np.int64)


def read_track_table(path: Path, variable: str) -> np.ndarray:
    """Rows of [start, end, pid, camera] (tolerates a transposed (4, N) table)."""
    table = np.atleast_2d(read_mat_variable(path, variable))
    if table.shape[1] != 4 and table.shape[0] == 4:
        table = table.T
    if table.ndim != 2 or table.shape[1] != 4:
        raise ValueError(f"{path}: {variable} has shape {table.shape}, expected (num_tracks, 4)")
    return table


def build_tracks(root: Path, subdir: str, names: list[str], table: np.ndarray) -> list[Tracklet]:
    """Turn a track table into tracklets whose frame paths are ``root/subdir/<name[:4]>/<name>``."""
    tracklets = []
    for row_index, (start, end, pid, camera) in enumerate(table.tolist()):
        if not 1 <= start <= end <= len(names):
            raise ValueError(f"{subdir} track {row_index}: frame range [{start}, {end}] outside the {len(names)} names")
        frame_names = sorted(names[start - 1 : end])
        folders = {name[:4] for name in frame_names}
        if len(folders) != 1:
            raise ValueError(f"{subdir} track {row_index} mixes person folders {sorted(folders)}")
        frames = tuple(str(root / subdir / name[:4] / name) for name in frame_names)
        tracklets.append(Tracklet(frames=frames, pid=int(pid), camid=int(camera) - 1))
    if tracklets:
        require_path(Path(tracklets[0].frames[0]), MARS_LAYOUT)
    return tracklets


def load_mars(root: str | Path, name: str = "mars") -> VideoDataset:
    """Load MARS (or anything written in its layout, like the synthetic benchmark)."""
    root = require_path(Path(root), MARS_LAYOUT)
    info = require_path(root / "info", MARS_LAYOUT)
    require_path(root / "bbox_train", MARS_LAYOUT)
    require_path(root / "bbox_test", MARS_LAYOUT)

    train_names = read_name_list(info / "train_name.txt")
    test_names = read_name_list(info / "test_name.txt")
    train_table = read_track_table(info / "tracks_train_info.mat", "track_train_info")
    test_table = read_track_table(info / "tracks_test_info.mat", "track_test_info")
    query_rows = read_mat_variable(info / "query_IDX.mat", "query_IDX").ravel() - 1
    if query_rows.size and (query_rows.min() < 0 or query_rows.max() >= len(test_table)):
        raise ValueError(f"query_IDX refers to rows outside 1..{len(test_table)} of track_test_info")

    train, num_train_pids = relabel(build_tracks(root, "bbox_train", train_names, train_table))
    test = build_tracks(root, "bbox_test", test_names, test_table)
    query = [test[i] for i in query_rows.tolist()]
    gallery = list(test)
    dataset = VideoDataset(
        name=name,
        train=train,
        query=query,
        gallery=gallery,
        num_train_pids=num_train_pids,
        protocol=MARS_PROTOCOL,
    )
    log.info("loaded %s from %s\n%s", name, root, dataset.summary())
    return dataset
