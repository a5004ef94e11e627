"""Seeded half/half train/test splits of person ids, saved as JSON beside a dataset and reused next time."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from training.data.tracklets import Tracklet, VideoDataset, relabel

log = logging.getLogger(__name__)

#: Customary number of random splits for iLIDS-VID and PRID2011.
DEFAULT_NUM_SPLITS = 10


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
            with open(candidate, encoding="utf-8") as handle:
                saved = json.load(handle)
            splits = saved["splits"] if isinstance(saved, dict) else saved
            named = {name for split in splits for name in (*split["train"], *split["test"])}
            unknown = named - set(persons)
            if unknown:
                raise ValueError(
                    f"{candidate} names {len(unknown)} persons not in the dataset "
                    f"(e.g. {sorted(unknown)[:3]}); "
                    "delete it to generate new splits"
                )
            log.info("reusing %d saved splits from %s", len(splits), candidate)
            return splits

    splits = generate_splits(persons, num_splits=num_splits, seed=seed)
    payload = {"seed": seed, "num_persons": len(persons), "splits": splits}
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=1)
    os.replace(temporary, path)  # atomic, so a crash never leaves a half-written split file to be reused
    log.info(
        "generated %d seeded splits (seed %d) of %d persons, saved to %s",
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
