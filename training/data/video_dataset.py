"""The torch Dataset over tracklets: sample T frames, load, augment, convert to a tensor."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
import torch.utils.data

from training.data.sampling import chunk_frame_indices, dense_clip_indices
from training.data.tracklets import Tracklet
from training.data.transforms import SequenceAugment, load_frame, to_tensor

log = logging.getLogger(__name__)

MODES = ("train", "test", "dense")


class TrackletDataset(torch.utils.data.Dataset):
    """Tracklets as tensors.

    Modes:
        ``train``: one random frame per chunk (T chunks) and the sequence augmentation; the randomness is a
            deterministic function of (seed, epoch, item key), so a resumed run and any DataLoader worker
            layout see the same frames. The key is the index, or ``(index, batch, position)`` from
            :class:`~training.data.sampling.PositionKeyedBatches`, so that a tracklet repeated within a
            batch draws fresh frames and augmentation.
        ``test``: the centre frame of each chunk, no augmentation.
        ``dense``: every frame, in consecutive clips of T (the last padded); ``frames`` is then
            (num_clips, T, 3, H, W) and num_clips varies, so batch with batch_size=1 or a custom collate.

    Items are dicts ``{"frames", "pid", "camid", "index"}``.
    """

    def __init__(
        self,
        tracklets: Sequence[Tracklet],
        num_frames: int = 8,
        height: int = 256,
        width: int = 128,
        mode: str = "train",
        augment: SequenceAugment | None = None,
        seed: int = 0,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if augment is not None and mode != "train":
            raise ValueError("augmentation is only for mode='train'")
        self.tracklets = list(tracklets)
        self.num_frames = num_frames
        self.height = height
        self.width = width
        self.mode = mode
        self.augment = augment
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch that, with the seed and the item index, fixes the training randomness."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.tracklets)

    def load(self, tracklet: Tracklet, indices: np.ndarray) -> np.ndarray:
        """Frames ``indices`` of a tracklet as (len(indices), H, W, 3) uint8; repeated indices are read once."""
        unique = {int(i): load_frame(tracklet.frames[int(i)], self.height, self.width) for i in set(indices.tolist())}
        return np.stack([unique[int(i)] for i in indices])

    def __getitem__(self, key: int | tuple[int, ...]) -> dict:
        index, *draw = (int(k) for k in key) if isinstance(key, (tuple, list)) else (int(key),)
        tracklet = self.tracklets[index]
        num_available = len(tracklet.frames)
        if self.mode == "dense":
            clips = dense_clip_indices(num_available, self.num_frames)
            frames = self.load(tracklet, np.arange(num_available))
            tensor = torch.stack([to_tensor(frames[clip]) for clip in clips])
        elif self.mode == "test":
            tensor = to_tensor(self.load(tracklet, chunk_frame_indices(num_available, self.num_frames)))
        else:
            rng = np.random.default_rng([self.seed, self.epoch, index, *draw])
            frames = self.load(tracklet, chunk_frame_indices(num_available, self.num_frames, rng))
            if self.augment is not None:
                frames = self.augment(frames, rng)
            tensor = to_tensor(frames)
        return {"frames": tensor, "pid": tracklet.pid, "camid": tracklet.camid, "index": index}
