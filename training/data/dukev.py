"""DukeMTMC-VideoReID as distributed: ``train|query|gallery/<pid>/<tracklet>/<frames>.jpg``.

Frame names look like ``0001_C6_F0001_X30823.jpg``; the camera is read from ``C<n>`` (1-based on disk).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from training.data.tracklets import Tracklet, VideoDataset, relabel, require_path, sorted_frames

log = logging.getLogger(__name__)

DUKEV_LAYOUT = "<root>/train|query|gallery/<pid 4 digits>/<tracklet 4 digits>/<pid>_C<cam>_F<frame>_X<n>.jpg"
DUKEV_PROTOCOL = (
    "DukeMTMC-VideoReID: query tracklets are matched against the gallery tracklets; per query, gallery "
    "tracklets with the same person id and the same camera are removed."
)
CAMERA_PATTERN = re.compile(r"_C(\d+)_")


def read_subset(subset_dir: Path) -> list[Tracklet]:
    """All tracklets of one subset folder, ids as on disk."""
    tracklets = []
    for pid_dir in sorted(p for p in require_path(subset_dir, DUKEV_LAYOUT).iterdir() if p.is_dir()):
        for tracklet_dir in sorted(p for p in pid_dir.iterdir() if p.is_dir()):
            frames = sorted_frames(tracklet_dir)
            if not frames:
                log.warning("skipping empty tracklet %s", tracklet_dir)
                continue
            match = CAMERA_PATTERN.search(Path(frames[0]).name)
            if match is None:
                raise ValueError(f"cannot read the camera from {frames[0]}; expected names like {DUKEV_LAYOUT}")
            tracklets.append(Tracklet(frames=frames, pid=int(pid_dir.name), camid=int(match.group(1)) - 1))
    return tracklets


def load_dukev(root: str | Path) -> VideoDataset:
    """Load DukeMTMC-VideoReID."""
    root = require_path(Path(root), DUKEV_LAYOUT)
    train, num_train_pids = relabel(read_subset(root / "train"))
    dataset = VideoDataset(
        name="dukev",
        train=train,
        query=read_subset(root / "query"),
        gallery=read_subset(root / "gallery"),
        num_train_pids=num_train_pids,
        protocol=DUKEV_PROTOCOL,
    )
    log.info("loaded DukeMTMC-VideoReID from %s\n%s", root, dataset.summary())
    return dataset
