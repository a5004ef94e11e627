"""PRID2011 (multi-shot) as distributed, with the customary protocol: persons 1-200, seen by both cameras.

Layout (root is the folder containing ``prid_2011/``, or ``prid_2011/`` or ``prid_2011/multi_shot/`` itself)::

    prid_2011/multi_shot/cam_a/person_0001/0001.png ...
    prid_2011/multi_shot/cam_b/person_0001/...

Only person_0001 to person_0200 are the same people in both cameras (the dataset's readme: cam_a's
person_0201..0385 and cam_b's person_0201..0749 are different people who only complete each camera's
gallery), so folder names above 200 never pair up. Of those 200, persons whose sequences have MORE THAN
21 frames in both cameras are kept (Wang et al.'s words). The customary 178 persons are the ones the
published split file indexes; public code records that at least 27 frames leaves exactly those 178 (and
at least 21, 183), so when that .mat is read and ">21" does not give its width, ">26" is used and logged.

Splits: an explicit ``split_file`` (``train_test_splits_prid.mat``, ``ls_set`` 10 x 178 indexing the kept
persons in sorted order, first half test; or a JSON list of {"train", "test"} name lists such as the
``splits_prid2011.json`` public code reads); else ``train_test_splits_prid.mat`` in its customary places
(iLIDS-VID's ``train-test people splits`` folder, or the root), then ``splits_prid2011.json`` (in the root, or
in the folder holding ``prid_2011/`` when the root is ``prid_2011/`` itself, as public code keeps it); only without
any, 10 seeded half/half splits are generated and saved to ``splits_prid2011.json`` in the root.
"""

from __future__ import annotations

import logging
from pathlib import Path

from training.data.ilidsvid import person_number
from training.data.splits import (
    DEFAULT_NUM_SPLITS,
    load_or_create_splits,
    read_ls_set,
    read_split_file,
    two_camera_dataset,
)
from training.data.tracklets import Tracklet, VideoDataset, sorted_frames

log = logging.getLogger(__name__)

PRID_LAYOUT = "<root>/prid_2011/multi_shot/cam_a|cam_b/person_XXXX/*.png"
SPLIT_JSON = "splits_prid2011.json"
SPLIT_MAT = Path("train-test people splits") / "train_test_splits_prid.mat"
#: Persons 1..200 are the same people in both cameras; higher numbers are not.
NUM_SHARED_PERSONS = 200
#: A sequence must have MORE than this many frames: Wang et al. (ECCV 2014), whose protocol and split
#: files (train_test_splits_prid.mat) published PRID2011 numbers use, keep "sequences of more than 21
#: frames". Some code reads it as ">= 21", which a public loader records to leave 183 of the 200 persons;
#: the strict reading keeps at most that many (how many on the real data was not measured here: no copy).
#: When a split .mat is read, its width is checked against the persons kept (see below).
MIN_FRAMES_EXCLUSIVE = 21
#: The persons the published ``train_test_splits_prid.mat`` indexes: public code that reads it on the real
#: data keeps sequences of AT LEAST 27 frames and checks that this leaves exactly the 178 persons of the
#: file (and records 183 for at least 21). So when that file is read and the paper's "more than 21" does
#: not give its width, the loader keeps "more than 26" instead, and says so.
SPLIT_MAT_MIN_FRAMES_EXCLUSIVE = 26
PRID_PROTOCOL = (
    "PRID2011: persons 1-200 (the only ones shared by both cameras) with more than {min_frames} frames in each "
    "camera ({count} here), half train and half test; query = cam_a sequences, gallery = cam_b sequences of the "
    "test persons; report CMC averaged over 10 splits."
)


def resolve_multi_shot(root: Path) -> Path:
    """The ``multi_shot`` folder (the one holding ``cam_a/`` and ``cam_b/``), from any accepted root."""
    for base in (root / "prid_2011" / "multi_shot", root / "multi_shot", root):
        if (base / "cam_a").is_dir() and (base / "cam_b").is_dir():
            return base
    raise FileNotFoundError(
        f"no PRID2011 multi-shot sequences under {root}: looked for "
        f"{root / 'prid_2011' / 'multi_shot' / 'cam_a'}; expected layout: {PRID_LAYOUT}"
    )


def qualifying_persons(frames_of: list[dict[str, list[str]]], min_frames_exclusive: int) -> list[str]:
    """Person folders numbered 1..200, present in both cameras with more than ``min_frames_exclusive`` frames."""
    shared = set(frames_of[0]) & set(frames_of[1])
    return sorted(
        name
        for name in shared
        if 1 <= person_number(name) <= NUM_SHARED_PERSONS
        and all(len(frames[name]) > min_frames_exclusive for frames in frames_of)
    )


def load_prid2011(
    root: str | Path,
    split_id: int = 0,
    seed: int = 0,
    min_frames_exclusive: int = MIN_FRAMES_EXCLUSIVE,
    split_file: str | Path | None = None,
) -> VideoDataset:
    """Load split ``split_id`` of PRID2011 (from ``split_file`` when given, see the module docstring)."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"{root} does not exist; expected layout: {PRID_LAYOUT}")
    base = resolve_multi_shot(root)
    cam_dirs = [base / "cam_a", base / "cam_b"]
    frames_of = [{p.name: sorted_frames(p) for p in cam.iterdir() if p.is_dir()} for cam in cam_dirs]
    persons = qualifying_persons(frames_of, min_frames_exclusive)
    log.info(
        "PRID2011: %d persons in cam_a, %d in cam_b; of persons 1-%d, %d have more than %d frames in both",
        len(frames_of[0]), len(frames_of[1]), NUM_SHARED_PERSONS, len(persons), min_frames_exclusive,
    )  # fmt: skip
    if len(persons) < 2:
        raise ValueError(f"PRID2011 under {base}: only {len(persons)} persons qualify, cannot split")

    candidates = [root / SPLIT_MAT, root.parent / SPLIT_MAT, root / SPLIT_MAT.name, base.parent / SPLIT_MAT.name]
    for inner in ("i-LIDS-VID", "iLIDS-VID", "ilids-vid"):
        candidates.append(root.parent / inner / SPLIT_MAT)
    path = Path(split_file) if split_file else next((p for p in candidates if p.is_file()), None)
    if path is not None:
        if path.suffix.lower() == ".mat" and path.is_file():
            width = read_ls_set(path).shape[1]  # how many persons the file indexes
            if width != len(persons) and min_frames_exclusive == MIN_FRAMES_EXCLUSIVE:
                matching = qualifying_persons(frames_of, SPLIT_MAT_MIN_FRAMES_EXCLUSIVE)
                if len(matching) == width:
                    log.warning(
                        "PRID2011: %s indexes %d persons; more than %d frames keeps %d, more than %d keeps "
                        "%d: using the latter, the persons the split file was made for",
                        path, width, min_frames_exclusive, len(persons), SPLIT_MAT_MIN_FRAMES_EXCLUSIVE, width,
                    )  # fmt: skip
                    persons, min_frames_exclusive = matching, SPLIT_MAT_MIN_FRAMES_EXCLUSIVE
            if width != len(persons):
                raise ValueError(
                    f"{path} indexes {width} persons but {len(persons)} of persons 1-{NUM_SHARED_PERSONS} have "
                    f"more than {min_frames_exclusive} frames in both cameras under {base}: "
                    "not the data the file was made for"
                )
        splits = read_split_file(path, persons)
        log.info("PRID2011 splits: %d read from %s", len(splits), path)
    else:
        # Public code keeps splits_prid2011.json in the folder holding prid_2011/: found from any root of the
        # customary layout (that folder, prid_2011/ or multi_shot/), never above it.
        layout = (base.parent, base.parent.parent) if base.name == "multi_shot" else ()
        above = tuple(dict.fromkeys(p / SPLIT_JSON for p in layout if p / SPLIT_JSON != root / SPLIT_JSON))
        splits = load_or_create_splits(root / SPLIT_JSON, persons, DEFAULT_NUM_SPLITS, seed, search_paths=above)
    if not 0 <= split_id < len(splits):
        raise ValueError(f"split_id {split_id} out of range: PRID2011 has {len(splits)} splits")
    split = splits[split_id]

    def tracklets_of(names: list[str], cam_index: int) -> list[Tracklet]:
        return [Tracklet(frames=frames_of[cam_index][n], pid=person_number(n), camid=cam_index) for n in names]

    protocol = PRID_PROTOCOL.format(min_frames=min_frames_exclusive, count=len(persons))
    dataset = two_camera_dataset("prid2011", split, tracklets_of, protocol + f" This is split {split_id}.")
    log.info("loaded PRID2011 split %d from %s\n%s", split_id, base, dataset.summary())
    return dataset
