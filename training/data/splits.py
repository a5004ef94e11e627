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
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy.io import loadmat

from training.data.tracklets import Tracklet, VideoDataset, relabel

log = logging.getLogger(__name__)

#: Customary number of random splits for iLIDS-VID and PRID2011.
DEFAULT_NUM_SPLITS = 10


def read_ls_set(path: Path) -> np.ndarray:
    """The ``ls_set`` matrix (splits x persons, 1-based indices) of a published split .mat."""
    try:
        variables = loadmat(str(path))
    except Exception as error:  # scipy raises several types for files that are not MATLAB v5
        raise ValueError(f"{path}: not a readable MATLAB split file ({error})") from error
    if "ls_set" not in variables:
        names = sorted(key for key in variables if not key.startswith("__"))
        raise ValueError(f"{path}: no ls_set variable (it holds {names}); expected a train-test people split file")
    return np.atleast_2d(np.asarray(variables["ls_set"]).astype(np.int64))


def splits_from_mat(path: Path, persons: list[str]) -> list[dict]:
    """``ls_set`` rows of a split .mat as train/test name lists (first half test, second half train).

    ``persons`` are the dataset's person folders in the order the indices refer to (sorted, filtered);
    a file indexing another number of persons was made for other data and is an error.
    """
    ls_set = read_ls_set(path)
    if ls_set.size == 0:
        raise ValueError(f"{path}: ls_set is empty")
    if ls_set.shape[1] != len(persons) or ls_set.min() < 1 or ls_set.max() > len(persons):
        raise ValueError(
            f"{path}: ls_set is {ls_set.shape[0]}x{ls_set.shape[1]} with indices {ls_set.min()}..{ls_set.max()}, "
            f"but {len(persons)} persons qualify; the file is for other data"
        )
    for number, row in enumerate(ls_set.tolist(), start=1):
        if len(set(row)) != len(row):
            raise ValueError(f"{path}: row {number} of ls_set repeats indices; each row must be a permutation")
    half = ls_set.shape[1] // 2
    return [
        {"test": sorted(persons[i - 1] for i in row[:half]), "train": sorted(persons[i - 1] for i in row[half:])}
        for row in ls_set.tolist()
    ]


def check_names(path: Path, number: int, split: dict) -> None:
    """Each side of a split is a list of person folder names."""
    for side in ("train", "test"):
        names = split[side]
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            raise ValueError(f"{path}: split {number} {side!r} must be a list of person folder names")


def check_split(path: Path, number: int, split: dict) -> None:
    """A split names persons at most once, none on both sides, and has persons to train and to test."""
    for side in ("train", "test"):
        names = split[side]
        if not names:
            raise ValueError(f"{path}: split {number} has no {side} persons")
        if len(set(names)) != len(names):
            raise ValueError(f"{path}: split {number} names a person twice in {side!r}")
    shared = set(split["train"]) & set(split["test"])
    if shared:
        raise ValueError(
            f"{path}: split {number} puts {len(shared)} persons in both train and test (e.g. {sorted(shared)[:3]})"
        )


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
    try:
        with open(path, encoding="utf-8") as handle:
            saved = json.load(handle)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a JSON split file ({error})") from error
    splits = saved.get("splits") if isinstance(saved, dict) else saved
    if not isinstance(splits, list) or not all(isinstance(s, dict) and {"train", "test"} <= set(s) for s in splits):
        raise ValueError(f"{path}: expected a list of {{'train': [...], 'test': [...]}} splits")
    if not splits:
        raise ValueError(f"{path}: the file holds no splits")
    for number, split in enumerate(splits):
        check_names(path, number, split)
    named = {name for split in splits for name in (*split["train"], *split["test"])}
    unknown = named - set(persons)
    if unknown:
        raise ValueError(
            f"{path} names {len(unknown)} persons not in the dataset (e.g. {sorted(unknown)[:3]}); "
            "it belongs to other data (delete a generated one to make new splits)"
        )
    for number, split in enumerate(splits):
        check_split(path, number, split)
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
    found = [(generated_by(candidate), candidate) for candidate in (path, *search_paths) if candidate.is_file()]
    if found:
        # A published split file wins over seeded splits an earlier run saved beside the data.
        generated_seed, candidate = min(found, key=lambda item: item[0] is not None)
        splits = read_split_file(candidate, persons)
        if generated_seed is None:
            log.info("splits: %d read from %s", len(splits), candidate)
        else:
            log.warning(
                "splits: %d SEEDED splits (seed %s, generated by this tool, not a published split file) read "
                "from %s; numbers on them do not compare with published ones", len(splits), generated_seed,
                candidate,
            )  # fmt: skip
        return splits

    splits = generate_splits(persons, num_splits=num_splits, seed=seed)
    payload = {"seed": seed, "num_persons": len(persons), "splits": splits}
    try:
        # A unique temporary name: runs of several splits started side by side all generate the same file,
        # and must not truncate or rename each other's half-written copy. The rename is atomic.
        handle, temporary = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                json.dump(payload, stream, indent=1)
            # mkstemp makes the file private; give it the mode a plain open() would (0o666 less the umask).
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(temporary, 0o666 & ~umask)
            os.replace(temporary, path)
        finally:
            if os.path.exists(temporary):
                os.unlink(temporary)
        saved = f"saved to {path}"
    except OSError as error:  # a read-only dataset mount: the splits are still reproducible from the seed
        saved = f"not saved ({path}: {error.strerror or error}); the same seed regenerates them"
    log.warning(
        "splits: no published split file found; generated %d SEEDED splits (seed %d) of %d persons, %s. "
        "Numbers on them do not compare with published ones: give the dataset's split file to compare",
        num_splits, seed, len(persons), saved,
    )  # fmt: skip
    return splits


def generated_by(path: Path) -> int | None:
    """The seed of a split file this module generated (it records one), None for a published file."""
    if path.suffix.lower() != ".json":
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            saved = json.load(handle)
    except (OSError, ValueError):
        return None
    return saved.get("seed") if isinstance(saved, dict) else None


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
