"""The dataset a config names and the training loader over it (PK batches, sequence augmentation)."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from torch.utils.data import DataLoader

from training.config import TrainConfig
from training.data.sampling import PKSampler, PositionKeyedBatches
from training.data.transforms import SequenceAugment
from training.data.video_dataset import TrackletDataset
from training.distributed import DistributedContext


def load_config_dataset(config: TrainConfig, root: str | Path | None = None):
    """The dataset a config names (``root`` overrides ``config.data.root``)."""
    from training.data import load_dataset

    return load_dataset(
        config.data.dataset, root or config.data.root, split_id=config.data.split_id, split_file=config.data.split_file
    )


class TrainLoader(NamedTuple):
    """The training loader and the two things to ``set_epoch`` on before each epoch."""

    loader: DataLoader
    sampler: PKSampler
    dataset: TrackletDataset


def build_train_loader(
    dataset, config: TrainConfig, context: DistributedContext, pin_memory: bool = False
) -> TrainLoader:
    """PK batches of this rank over the training tracklets, each augmented as one sequence."""
    augment = SequenceAugment(
        config.model.height,
        config.model.width,
        flip_p=config.augment.flip_p,
        erase_p=config.augment.erase_p,
        padding=config.augment.crop_padding,
        erase_area=tuple(config.augment.erase_area),
        erase_aspect=tuple(config.augment.erase_aspect),
    )
    train_set = TrackletDataset(
        dataset.train,
        config.data.num_frames,
        config.model.height,
        config.model.width,
        mode="train",
        augment=augment,
        seed=config.seed,
    )
    sampler = PKSampler(
        [tracklet.pid for tracklet in dataset.train],
        num_identities=config.sampler.num_identities,
        tracklets_per_identity=config.sampler.tracklets_per_identity,
        seed=config.seed,
        rank=context.rank,
        world_size=context.world_size,
    )
    loader = DataLoader(
        train_set,
        # Items keyed by batch position too: repeated tracklets draw fresh frames and augmentation.
        batch_sampler=PositionKeyedBatches(sampler),
        num_workers=config.data.num_workers,
        pin_memory=pin_memory,
    )
    return TrainLoader(loader, sampler, train_set)
