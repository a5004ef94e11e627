"""Train/test splits of person ids for iLIDS-VID and PRID2011: the published split files, or seeded ones.

Published numbers (the paper's Table 6 among them) come from two kinds of split file:

* the .mat files of iLIDS-VID's ``train-test people splits`` folder (``train_test_splits_ilidsvid.mat``,
  ``ls_set`` 10 x 300, and ``train_test_splits_prid.mat``, ``ls_set`` 10 x 178): each row is a permutation
  of 1-based indices into the dataset's sorted (and, for PRID2011, filtered) person folders; the FIRST
  half of a row is the test set (Wang et al., ECCV 2014, and the code most numbers come from);
* the JSON format most public code reads: a list with one ``{"train": [names], "test": [names]}`` per
  split, names being the person folders (``person001``, ``person_0001``).

:func:`read_split_file` reads either; seeded splits (:func:`load_or_create_splits`) are generated only when
no split file is found, and the loaders log which source they used.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy.io import loadmat

from training.data.tracklets import Tracklet, VideoDataset, relabel

log = logging.getLogger(__name__)

#: Customary number of random splits for iLIDS-VID and PRID2011.
DEFAULT_NUM_SPLITS = 10


def splits_from_mat(path: Path, persons: list[str]) -> list[dict]:
    """``ls_set`` rows of a split .mat as train/test name lists (first half test, second half train).

    ``persons`` are the dataset's person folders in the order the indices refer to (sorted, filtered);
    a file indexing another number of persons was made for other data and is an error.
    """
    ls_set = np.atleast_2d(np.asarray(loadmat(str(path))["ls_set"]).astype(np.int64))
    if ls_set.shape[1] != len(persons) or ls_set.min() < 1 or ls_set.max() > len(persons):
        raise ValueError(
            f"{path}: ls_set is {ls_set.shape[0]}x{ls_set.shape[1]} with indices {ls_set.min()}..{ls_set.max()}, "
            f"but {len(persons)} persons qualify; the file is for other data"
        )
    half = ls_set.shape[1] // 2
    return [
        {"test": sorted(persons[i - 1] for i in row[:half]), "train": sorted(persons[i - 1] for i in row[half:])}
        for row in ls_set.tolist()
    ]


def read_split_file(path: Path, persons: list[str]) -> list[dict]:
    """Splits from a published .mat (``ls_set``) or a JSON list of {"train", "test"} name lists.

    A JSON file may also be a dict with a ``splits`` list (what :func:`load_or_create_splits` saves). Names
    absent from ``persons`` are an error: the file belongs to other data (or another filtering).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split file {path} does not exist")
    if path.suffix.lower() == ".mat":
        return splits_from_mat(path, persons)
    with open(path, encoding="utf-8") as handle:
        saved = json.load(handle)
    splits = saved["splits"] if isinstance(saved, dict) else saved
    if not isinstance(splits, list) or not all(isinstance(s, dict) and {"train", "test"} <= set(s) for s in splits):
        raise ValueError(f"{path}: expected a list of {{'train': [...], 'test': [...]}} splits")
    named = {name for split in splits for name in (*split["train"], *split["test"])}
    unknown = named - set(persons)
    if unknown:
        raise ValueError(
            f"{path} names {len(unknown)} persons not in the dataset (e.g. {sorted(unknown)[:3]}); "
            "it belongs to other data (delete a generated one to make new splits)"
        )
    return [{"train": sorted(s["train"]), "test": sorted(s["test"])} for s in splits]


def generate_splits(persons: list[str], num_splits: int = DEFAULT_NUM_SPLITS, seed: int = 0) -> list[dict]:
    """``num_splits`` random half/half splits of ``persons``; the same persons and seed give the same splits.

    Each split is ``{"train": [...], "test": [...]}`` with names sorted;
    odd counts give train the smaller half.
    """
    ordered = sorted(persons)
    rng = np.random.default_rng(seed)
    num_train = len(ordered) // 2
    splits = []
    for _ in range(num_splits):
        permutation = rng.permutation(len(ordered))
        train = sorted(ordered[i] for i in permutation[:num_train])
        test = sorted(ordered[i] for i in permutation[num_train:])
        splits.append({"train": train, "test": test})
    return splits


def load_or_create_splits(
    path: Path,
    persons: list[str],
    num_splits: int = DEFAULT_NUM_SPLITS,
    seed: int = 0,
    search_paths: tuple[Path, ...] = (),
) -> list[dict]:
    """Read saved splits from ``path`` (or ``search_paths``), else generate them and save them to ``path``.

    A saved file that names persons absent from ``persons`` was made for different data: that is an error
    rather than a silent regeneration, since it would change every published number of the run.
    """
    for candidate in (path, *search_paths):
        if candidate.is_file():
            splits = read_split_file(candidate, persons)
            log.info("splits: %d read from %s", len(splits), candidate)
            return splits

    splits = generate_splits(persons, num_splits=num_splits, seed=seed)
    payload = {"seed": seed, "num_persons": len(persons), "splits": splits}
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=1)
    os.replace(temporary, path)  # atomic, so a crash never leaves a half-written split file to be reused
    log.info(
        "splits: no split file found; generated %d seeded splits (seed %d) of %d persons, saved to %s",
        num_splits,
        seed,
        len(persons),
        path,
    )
    return splits


def two_camera_dataset(
    name: str, split: dict, tracklets_of: Callable[[list[str], int], list[Tracklet]], protocol: str
) -> VideoDataset:
    """The iLIDS-VID / PRID2011 protocol for one split: the train persons' sequences of both cameras are
    the training set (relabelled); the test persons' camera-1 sequences are the queries and their camera-2
    sequences the gallery. ``tracklets_of(person_names, camera_index)`` builds the tracklets."""
    train, num_train_pids = relabel(tracklets_of(split["train"], 0) + tracklets_of(split["train"], 1))
    return VideoDataset(
        name=name,
        train=train,
        query=tracklets_of(split["test"], 0),
        gallery=tracklets_of(split["test"], 1),
        num_train_pids=num_train_pids,
        protocol=protocol,
    )
