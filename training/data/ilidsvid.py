"""iLIDS-VID as distributed: two cameras, one sequence per person and camera, 10 train/test splits.

Layout (root is the folder containing ``i-LIDS-VID/``, or ``i-LIDS-VID/`` itself)::

    i-LIDS-VID/sequences/cam1/person001/cam1_person001_00317.png ...
    i-LIDS-VID/sequences/cam2/person001/...
    train-test people splits/train_test_splits_ilidsvid.mat   (ls_set, (10, 300), 1-based person indices)

A row of ``ls_set`` is a permutation of indices into the sorted person folders. Following Wang et al.
(ECCV 2014) and the code most published numbers come from, the FIRST half of a row is the test set and the
second half the training set. A split file given explicitly (``split_file``: that .mat or a JSON list of
{"train", "test"} name lists, see ``training.data.splits``) wins; else the .mat is looked for in its
customary places, then ``splits_ilidsvid.json`` and ``splits.json`` (deep-person-reid's name); only
without any, 10 seeded half/half splits are generated and saved to ``splits_ilidsvid.json`` in the root.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from training.data.splits import (
    DEFAULT_NUM_SPLITS,
    load_or_create_splits,
    read_split_file,
    splits_from_mat,
    two_camera_dataset,
)
from training.data.tracklets import Tracklet, VideoDataset, sorted_frames

log = logging.getLogger(__name__)

ILIDSVID_LAYOUT = (
    "<root>/i-LIDS-VID/sequences/cam1|cam2/personXXX/*.png (root may also be i-LIDS-VID/ itself), "
    "optionally '<root>/train-test people splits/train_test_splits_ilidsvid.mat'"
)
SPLIT_MAT = Path("train-test people splits") / "train_test_splits_ilidsvid.mat"
SPLIT_JSON = "splits_ilidsvid.json"
TORCHREID_SPLIT_JSON = "splits.json"
ILIDSVID_PROTOCOL = (
    "iLIDS-VID: half of the 300 persons train, the other half test; query = camera 1 sequences, "
    "gallery = camera 2 sequences of the test persons; report CMC averaged over the 10 splits."
)


def resolve_base(root: Path) -> Path:
    """The ``i-LIDS-VID`` folder (the one holding ``sequences/``), from either accepted root."""
    for base in (root / "i-LIDS-VID", root):
        if (base / "sequences" / "cam1").is_dir() and (base / "sequences" / "cam2").is_dir():
            return base
    raise FileNotFoundError(
        f"no iLIDS-VID sequences under {root}: looked for {root / 'i-LIDS-VID' / 'sequences' / 'cam1'} and "
        f"{root / 'sequences' / 'cam1'}; expected layout: {ILIDSVID_LAYOUT}"
    )


def person_number(folder_name: str) -> int:
    """``person012`` -> 12."""
    match = re.search(r"(\d+)$", folder_name)
    if match is None:
        raise ValueError(f"cannot read a person number from folder name {folder_name!r}")
    return int(match.group(1))


__all__ = ["load_ilidsvid", "person_number", "splits_from_mat"]


def load_ilidsvid(
    root: str | Path, split_id: int = 0, seed: int = 0, split_file: str | Path | None = None
) -> VideoDataset:
    """Load split ``split_id`` of iLIDS-VID (from ``split_file`` when given, see the module docstring)."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"{root} does not exist; expected layout: {ILIDSVID_LAYOUT}")
    base = resolve_base(root)
    cam_dirs = [base / "sequences" / "cam1", base / "sequences" / "cam2"]
    cam_persons = [sorted(p.name for p in cam.iterdir() if p.is_dir()) for cam in cam_dirs]
    persons = cam_persons[0]
    if set(cam_persons[0]) != set(cam_persons[1]):
        raise ValueError(
            f"{cam_dirs[0]} and {cam_dirs[1]} hold different persons "
            f"(only in cam1: {sorted(set(cam_persons[0]) - set(cam_persons[1]))[:5]}, "
            f"only in cam2: {sorted(set(cam_persons[1]) - set(cam_persons[0]))[:5]})"
        )

    mat_candidates = [base / SPLIT_MAT, base.parent / SPLIT_MAT, root / SPLIT_MAT]
    mat_path = Path(split_file) if split_file else next((p for p in mat_candidates if p.is_file()), None)
    if mat_path is not None:
        splits = read_split_file(mat_path, persons)
        log.info("iLIDS-VID splits: %d read from %s", len(splits), mat_path)
    else:
        log.info("no %s found next to %s: looking for JSON splits", SPLIT_MAT, base)
        # splits.json: the name deep-person-reid (torchreid) gives the same splits, converted from the .mat.
        # Published splits come before seeded ones saved by an earlier run.
        published = next((p for p in (root / TORCHREID_SPLIT_JSON, base.parent / TORCHREID_SPLIT_JSON) if p.is_file()),
                         None)  # fmt: skip
        if published is not None:
            splits = read_split_file(published, persons)
            log.info("iLIDS-VID splits: %d read from %s", len(splits), published)
        else:
            splits = load_or_create_splits(root / SPLIT_JSON, persons, DEFAULT_NUM_SPLITS, seed,
                                           search_paths=(base / SPLIT_JSON,))  # fmt: skip
    if not 0 <= split_id < len(splits):
        raise ValueError(f"split_id {split_id} out of range: iLIDS-VID has {len(splits)} splits")
    split = splits[split_id]

    def tracklets_of(names: list[str], cam_index: int) -> list[Tracklet]:
        tracklets = []
        for name in names:
            frames = sorted_frames(cam_dirs[cam_index] / name)
            if not frames:
                log.warning("skipping empty sequence %s", cam_dirs[cam_index] / name)
                continue
            tracklets.append(Tracklet(frames=frames, pid=person_number(name), camid=cam_index))
        return tracklets

    dataset = two_camera_dataset("ilidsvid", split, tracklets_of, ILIDSVID_PROTOCOL + f" This is split {split_id}.")
    log.info("loaded iLIDS-VID split %d from %s\n%s", split_id, base, dataset.summary())
    return dataset
