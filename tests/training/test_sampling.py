"""Chunk frame sampling, dense clips, the PK batch sampler and the TrackletDataset built on them."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from models import IMAGENET_MEAN, IMAGENET_STD
from training.data import load_dataset
from training.data.sampling import PKSampler, chunk_frame_indices, dense_clip_indices
from training.data.transforms import SequenceAugment
from training.data.video_dataset import TrackletDataset

CONFIGS = Path(__file__).resolve().parents[2] / "training" / "configs"


def chunk_bounds(num_frames: int, num_chunks: int) -> list[tuple[int, int]]:
    """[low, high) of the frames each chunk may give in training (the documented rule)."""
    edges = np.linspace(0, num_frames, num_chunks + 1)
    bounds = []
    for k in range(num_chunks):
        low = math.floor(edges[k])
        high = max(low + 1, math.ceil(edges[k + 1]))
        bounds.append((min(low, num_frames - 1), min(high, num_frames)))
    return bounds


# ------------------------------------------------------------------------------------ chunk sampling
def test_chunk_centres_worked_examples():
    assert chunk_frame_indices(16, 8).tolist() == [1, 3, 5, 7, 9, 11, 13, 15]
    assert chunk_frame_indices(10, 4).tolist() == [1, 3, 6, 8]  # edges 0, 2.5, 5, 7.5, 10
    assert chunk_frame_indices(3, 8).tolist() == [0, 0, 0, 1, 1, 2, 2, 2]  # shorter than T: repeats in order
    assert chunk_frame_indices(1, 4).tolist() == [0, 0, 0, 0]
    assert chunk_frame_indices(7, 1).tolist() == [3]


@pytest.mark.parametrize("num_chunks", [1, 4, 8])
def test_chunk_centres_lie_in_their_chunks_and_cover_the_tracklet(num_chunks):
    for num_frames in range(1, 60):
        indices = chunk_frame_indices(num_frames, num_chunks)
        assert indices.dtype == np.int64 and len(indices) == num_chunks
        assert np.all(np.diff(indices) >= 0) and indices.min() >= 0 and indices.max() < num_frames
        for index, (low, high) in zip(indices, chunk_bounds(num_frames, num_chunks), strict=True):
            assert low <= index < high
        if num_frames >= num_chunks:
            assert len(set(indices.tolist())) == num_chunks  # one distinct frame per chunk
        else:
            assert set(indices.tolist()) == set(range(num_frames))  # every frame used


def test_random_chunk_sampling_stays_in_chunks_and_reaches_every_frame():
    rng = np.random.default_rng(0)
    for num_frames, num_chunks in ((16, 4), (10, 4), (3, 8), (25, 8)):
        bounds = chunk_bounds(num_frames, num_chunks)
        seen = [Counter() for _ in range(num_chunks)]
        for _ in range(400):
            indices = chunk_frame_indices(num_frames, num_chunks, rng)
            assert len(indices) == num_chunks and np.all(np.diff(indices) >= 0)
            for k, index in enumerate(indices.tolist()):
                assert bounds[k][0] <= index < bounds[k][1]
                seen[k][index] += 1
        for k, (low, high) in enumerate(bounds):
            assert set(seen[k]) == set(range(low, high))  # uniform over the chunk: every frame drawn


def test_random_chunk_sampling_is_uniform_within_a_chunk():
    rng = np.random.default_rng(5)
    draws = np.stack([chunk_frame_indices(16, 4, rng) for _ in range(4000)])
    counts = np.bincount(draws[:, 2], minlength=16)[8:12]  # chunk 2 = frames 8..11
    assert counts.sum() == 4000 and counts.min() > 850 and counts.max() < 1150


def test_chunk_sampling_rejects_empty_tracklets():
    with pytest.raises(ValueError):
        chunk_frame_indices(0, 8)


def test_dense_clips():
    clips = dense_clip_indices(10, 4)
    assert [c.tolist() for c in clips] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 9, 9]]
    assert [c.tolist() for c in dense_clip_indices(8, 4)] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert [c.tolist() for c in dense_clip_indices(2, 4)] == [[0, 1, 1, 1]]


# --------------------------------------------------------------------------------------------- PK sampler
#: 10 identities with 1..7 tracklets each (some fewer than Z=4), indices interleaved.
PIDS = [pid for round_ in range(7) for pid in range(10) if round_ < 1 + pid % 7]


def check_batch(batch: list[int], p: int, z: int) -> None:
    assert len(batch) == p * z
    groups = [batch[i : i + z] for i in range(0, len(batch), z)]
    group_pids = [{PIDS[i] for i in group} for group in groups]
    assert all(len(g) == 1 for g in group_pids), "each group of Z must be one identity"
    assert len({next(iter(g)) for g in group_pids}) == p, "P distinct identities per batch"


def test_pk_batches_have_p_identities_times_z_tracklets():
    sampler = PKSampler(PIDS, num_identities=3, tracklets_per_identity=4, seed=1)
    total_groups = sum(max(n, 4) // 4 for n in Counter(PIDS).values())
    assert len(sampler) == total_groups // 3
    batches = list(sampler)
    assert len(batches) == len(sampler)
    for batch in batches:
        check_batch(batch, 3, 4)
        # An identity with >= Z tracklets gives Z distinct ones; fewer are sampled with replacement.
        for start in range(0, 12, 4):
            group = batch[start : start + 4]
            available = Counter(PIDS)[PIDS[group[0]]]
            assert len(set(group)) == min(4, available)


def test_pk_epoch_determinism_and_variation():
    a = PKSampler(PIDS, 2, 4, seed=7)
    b = PKSampler(PIDS, 2, 4, seed=7)
    a.set_epoch(3)
    b.set_epoch(3)
    assert list(a) == list(b)
    b.set_epoch(4)
    assert list(a) != list(b)
    assert list(PKSampler(PIDS, 2, 4, seed=8)) != list(PKSampler(PIDS, 2, 4, seed=7))


def test_pk_covers_most_tracklets_per_epoch():
    sampler = PKSampler(PIDS, 2, 2, seed=0)
    used = {i for batch in sampler for i in batch}
    assert len(used) >= 0.8 * len(PIDS)


@pytest.mark.parametrize("world_size", [2, 3])
def test_pk_ranks_take_disjoint_batches_of_equal_count(world_size):
    reference = PKSampler(PIDS, 2, 4, seed=5)
    reference.set_epoch(2)
    unsharded = reference.epoch_batches(2)
    per_rank = []
    for rank in range(world_size):
        sampler = PKSampler(PIDS, 2, 4, seed=5, rank=rank, world_size=world_size)
        sampler.set_epoch(2)
        per_rank.append(list(sampler))
        assert len(per_rank[-1]) == len(sampler) == len(unsharded) // world_size
    for rank, batches in enumerate(per_rank):
        assert batches == unsharded[rank : world_size * len(batches) : world_size]
    positions = [[unsharded.index(b) for b in batches] for batches in per_rank]
    assert not set(positions[0]) & set(positions[1])


def test_pk_sampler_in_a_dataloader():
    data = torch.utils.data.TensorDataset(torch.arange(len(PIDS)), torch.tensor(PIDS))
    sampler = PKSampler(PIDS, 2, 4, seed=0)
    loader = torch.utils.data.DataLoader(data, batch_sampler=sampler)
    for indices, pids in loader:
        assert pids.tolist() == [PIDS[i] for i in indices.tolist()]
        check_batch(indices.tolist(), 2, 4)


def test_pk_needs_p_identities():
    with pytest.raises(ValueError, match="identities"):
        PKSampler([0, 0, 1], num_identities=3, tracklets_per_identity=2)


# ------------------------------------------------------------------------------------------ TrackletDataset
def decoded_frame_values(frames: torch.Tensor) -> list[int]:
    """Undo the normalisation of (T, 3, H, W) frames and return each frame's (uniform) pixel value."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    pixels = (frames * std + mean) * 255.0
    return [int(round(v)) for v in pixels.mean(dim=(1, 2, 3)).tolist()]


def test_test_mode_loads_the_chunk_centres(ilidsvid_root):
    # iLIDS-VID frames are PNGs whose value is 10 x frame number (see conftest).
    tracklet = load_dataset("ilidsvid", ilidsvid_root).gallery[0]  # 4 frames
    dataset = TrackletDataset([tracklet], num_frames=8, height=8, width=4, mode="test")
    item = dataset[0]
    assert item["frames"].shape == (8, 3, 8, 4) and item["frames"].dtype == torch.float32
    expected = [10 * i for i in chunk_frame_indices(len(tracklet), 8).tolist()]
    assert decoded_frame_values(item["frames"]) == expected == [0, 0, 10, 10, 20, 20, 30, 30]
    assert (item["pid"], item["camid"], item["index"]) == (tracklet.pid, 1, 0)


def test_dense_mode_returns_all_frames_in_clips(ilidsvid_root):
    tracklet = load_dataset("ilidsvid", ilidsvid_root).gallery[1]  # 4 frames
    frames = TrackletDataset([tracklet], num_frames=3, height=8, width=4, mode="dense")[0]["frames"]
    assert frames.shape == (2, 3, 3, 8, 4)
    assert [decoded_frame_values(clip) for clip in frames] == [[0, 10, 20], [30, 30, 30]]


def test_train_mode_is_a_function_of_seed_epoch_and_index(prid_root):
    tracklets = load_dataset("prid2011", prid_root).train
    augment = SequenceAugment(8, 4, padding=1)
    dataset = TrackletDataset(tracklets, num_frames=4, height=8, width=4, mode="train", augment=augment, seed=3)
    twin = TrackletDataset(tracklets, num_frames=4, height=8, width=4, mode="train", augment=augment, seed=3)
    dataset.set_epoch(2)
    twin.set_epoch(2)
    assert torch.equal(dataset[1]["frames"], twin[1]["frames"])
    # Chunk draws (without augmentation) differ across epochs and land in the right chunks.
    plain = TrackletDataset(tracklets, num_frames=4, height=8, width=4, mode="train", seed=3)
    bounds = chunk_bounds(len(tracklets[0]), 4)
    draws = set()
    for epoch in range(6):
        plain.set_epoch(epoch)
        values = decoded_frame_values(plain[0]["frames"])
        for value, (low, high) in zip(values, bounds, strict=True):
            assert value in {(10 * i) % 250 for i in range(low, high)}  # conftest's frame value encoding
        draws.add(tuple(values))
    assert len(draws) > 1


def test_dataset_rejects_bad_modes():
    with pytest.raises(ValueError, match="mode"):
        TrackletDataset([], mode="val")
    with pytest.raises(ValueError, match="augmentation"):
        TrackletDataset([], mode="test", augment=SequenceAugment(8, 4))


def test_repeated_tracklets_in_a_pk_batch_draw_fresh_frames_deterministically(prid_root):
    # PRID2011: 2 tracklets per person, Z=4, so every group repeats each tracklet once.
    from training.config import load_config
    from training.distributed import DistributedContext
    from training.loaders import build_train_loader

    config = load_config(CONFIGS / "synthetic.yaml", [
        "model.height=8", "model.width=4", "data.num_frames=4", "data.num_workers=0", "augment.crop_padding=1",
        "sampler.num_identities=2", "sampler.tracklets_per_identity=4", "seed=3",
    ])  # fmt: skip
    dataset = load_dataset("prid2011", prid_root)

    def epoch_batches(epoch: int) -> list[dict]:
        loader, sampler, train_set = build_train_loader(dataset, config, DistributedContext())
        sampler.set_epoch(epoch)
        train_set.set_epoch(epoch)
        return list(loader)

    batches = epoch_batches(1)
    repeats = 0
    for batch in batches:
        indices = batch["index"].tolist()
        assert len(indices) == 8 and len(set(indices)) == 4
        for first in range(len(indices)):
            for second in range(first + 1, len(indices)):
                if indices[first] == indices[second]:
                    repeats += 1
                    assert not torch.equal(batch["frames"][first], batch["frames"][second])
    assert repeats >= 2 * len(batches)  # each identity: both tracklets, then two more draws
    again = epoch_batches(1)
    assert all(torch.equal(a["frames"], b["frames"]) for a, b in zip(batches, again, strict=True))
    assert not torch.equal(batches[0]["frames"], epoch_batches(2)[0]["frames"])
