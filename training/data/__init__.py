"""Datasets, frame sampling, sequence augmentation and the torch Dataset for video reID training.

``load_dataset(name, root, split_id)`` turns a dataset folder, in its real public layout, into a
:class:`VideoDataset` of :class:`Tracklet` lists.
"""

from __future__ import annotations

import logging
from pathlib import Path

from training.data.tracklets import Tracklet, VideoDataset

DATASETS = ("mars", "ilidsvid", "prid2011", "dukev", "synthetic")

__all__ = ["DATASETS", "Tracklet", "VideoDataset", "load_dataset", "num_splits"]

log = logging.getLogger(__name__)


def num_splits(name: str) -> int:
    """How many train/test splits a dataset is evaluated over (results are averaged over them)."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {DATASETS}")
    return 10 if name in ("ilidsvid", "prid2011") else 1


def load_dataset(
    name: str, root: str | Path, split_id: int = 0, split_file: str | Path | None = None
) -> VideoDataset:
    """Load dataset ``name`` from ``root`` (its real layout); ``split_id`` picks one of several splits.

    ``split_file`` (iLIDS-VID and PRID2011 only) names a published split file, .mat or JSON.
    """
    total = num_splits(name)
    if total == 1 and split_id != 0:
        log.warning("%s has a single fixed split: split_id %d ignored", name, split_id)
        split_id = 0
    if not 0 <= split_id < total:
        raise ValueError(f"split_id {split_id} out of range: {name} has {total} splits")
    # Imported here so that importing the package stays cheap (scipy is only needed for the .mat files).
    if split_file and name not in ("ilidsvid", "prid2011"):
        log.warning("%s has a fixed split: split_file %s ignored", name, split_file)
    if name in ("mars", "synthetic"):
        from training.data.mars import load_mars

        return load_mars(root, name=name)
    if name == "ilidsvid":
        from training.data.ilidsvid import load_ilidsvid

        return load_ilidsvid(root, split_id=split_id, split_file=split_file)
    if name == "prid2011":
        from training.data.prid2011 import load_prid2011

        return load_prid2011(root, split_id=split_id, split_file=split_file)
    from training.data.dukev import load_dukev

    return load_dukev(root)
