"""What every dataset loader produces: tracklets (frame paths, person id, camera id) in three lists."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

#: Image suffixes the loaders accept as frames.
FRAME_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


@dataclass(frozen=True)
class Tracklet:
    """One video of one person seen by one camera.

    Attributes:
        frames: frame image paths in temporal order (sorted by file name, never directory order).
        pid: person id. Training tracklets carry ids relabelled to 0..num_train_pids-1; query and gallery
            tracklets keep the dataset's own id (MARS: -1 junk, 0 distractor).
        camid: camera id, 0-based.
    """

    frames: tuple[str, ...]
    pid: int
    camid: int

    def __len__(self) -> int:
        return len(self.frames)


@dataclass
class VideoDataset:
    """A dataset split into train / query / gallery tracklets, with a sentence on how it is evaluated."""

    name: str
    train: list[Tracklet]
    query: list[Tracklet]
    gallery: list[Tracklet]
    num_train_pids: int
    protocol: str

    def summary(self) -> str:
        """A small table of ids / tracklets / frames per subset, for logs."""
        lines = [f"dataset {self.name}", "  subset   | # ids | # tracklets | # frames"]
        for subset_name, subset in (("train", self.train), ("query", self.query), ("gallery", self.gallery)):
            num_ids = len({t.pid for t in subset})
            num_frames = sum(len(t) for t in subset)
            lines.append(f"  {subset_name:<8} | {num_ids:5d} | {len(subset):11d} | {num_frames:8d}")
        return "\n".join(lines)


def sorted_frames(directory: Path) -> tuple[str, ...]:
    """The image files of a tracklet directory sorted by file name (directory order is arbitrary).

    Hidden files are skipped: archives made on macOS carry ``._0001.png`` metadata twins of every frame.
    """
    names = sorted(
        p.name
        for p in directory.iterdir()
        if p.suffix.lower() in FRAME_SUFFIXES and not p.name.startswith(".") and p.is_file()
    )
    return tuple(str(directory / name) for name in names)


def relabel(tracklets: Iterable[Tracklet]) -> tuple[list[Tracklet], int]:
    """Map the person ids of training tracklets to 0..N-1 (in increasing order of the original id)."""
    tracklets = list(tracklets)
    label_of = {pid: label for label, pid in enumerate(sorted({t.pid for t in tracklets}))}
    relabelled = [Tracklet(frames=t.frames, pid=label_of[t.pid], camid=t.camid) for t in tracklets]
    return relabelled, len(label_of)


def require_path(path: Path, expected_layout: str) -> Path:
    """Return ``path`` if it exists, else raise FileNotFoundError naming the path and the layout expected."""
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; expected layout: {expected_layout}")
    return path
