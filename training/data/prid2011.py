"""PRID2011 (multi-shot) as distributed, with the customary protocol of persons seen by both cameras.

Layout (root is the folder containing ``prid_2011/``, or ``prid_2011/`` or ``prid_2011/multi_shot/`` itself)::

    prid_2011/multi_shot/cam_a/person_0001/0001.png ...
    prid_2011/multi_shot/cam_b/person_0001/...

Persons present in both cameras with at least 21 frames in each are kept (178 in the real set). The dataset
ships no splits, so 10 seeded half/half splits are generated once and saved to ``splits_prid2011.json`` in
the root.
"""

from __future__ import annotations

import logging
from pathlib import Path

from training.data.ilidsvid import person_number
from training.data.splits import DEFAULT_NUM_SPLITS, load_or_create_splits, two_camera_dataset
from training.data.tracklets import Tracklet, VideoDataset, sorted_frames

log = logging.getLogger(__name__)

PRID_LAYOUT = "<root>/prid_2011/multi_shot/cam_a|cam_b/person_XXXX/*.png"
SPLIT_JSON = "splits_prid2011.json"
MIN_FRAMES = 21
PRID_PROTOCOL = (
    "PRID2011: persons seen by both cameras with at least 21 frames in each, half train and half test; "
    "query = cam_a sequences, gallery = cam_b sequences of the test persons; "
    "report CMC averaged over 10 splits."
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


def load_prid2011(root: str | Path, split_id: int = 0, seed: int = 0, min_frames: int = MIN_FRAMES) -> VideoDataset:
    """Load split ``split_id`` of PRID2011."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"{root} does not exist; expected layout: {PRID_LAYOUT}")
    base = resolve_multi_shot(root)
    cam_dirs = [base / "cam_a", base / "cam_b"]
    frames_of = [{p.name: sorted_frames(p) for p in cam.iterdir() if p.is_dir()} for cam in cam_dirs]
    persons = sorted(
        name
        for name in set(frames_of[0]) & set(frames_of[1])
        if len(frames_of[0][name]) >= min_frames and len(frames_of[1][name]) >= min_frames
    )
    log.info(
        "PRID2011: %d persons in cam_a, %d in cam_b, %d in both with >= %d frames each",
        len(frames_of[0]),
        len(frames_of[1]),
        len(persons),
        min_frames,
    )
    if len(persons) < 2:
        raise ValueError(f"PRID2011 under {base}: only {len(persons)} persons qualify, cannot split")

    splits = load_or_create_splits(root / SPLIT_JSON, persons, DEFAULT_NUM_SPLITS, seed)
    if not 0 <= split_id < len(splits):
        raise ValueError(f"split_id {split_id} out of range: PRID2011 has {len(splits)} splits")
    split = splits[split_id]

    def tracklets_of(names: list[str], cam_index: int) -> list[Tracklet]:
        return [Tracklet(frames=frames_of[cam_index][n], pid=person_number(n), camid=cam_index) for n in names]

    dataset = two_camera_dataset("prid2011", split, tracklets_of, PRID_PROTOCOL + f" This is split {split_id}.")
    log.info("loaded PRID2011 split %d from %s\n%s", split_id, base, dataset.summary())
    return dataset
