"""Which frames of a tracklet to use, and which tracklets form a batch.

Test-time frame sampling is the contract's (models.sample_frame_indices), the function the service calls.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import numpy as np
import torch.utils.data

from models import MAX_TEST_CLIPS, TEST_MODES, sample_clip_indices, sample_frame_indices

log = logging.getLogger(__name__)


def chunk_frame_indices(num_frames: int, num_chunks: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """One frame index per chunk after splitting ``[0, num_frames)`` uniformly into ``num_chunks`` chunks.

    Chunk ``k`` spans ``[edges[k], edges[k+1])`` with ``edges = linspace(0, num_frames, num_chunks + 1)``.
    Without ``rng`` (test) each chunk gives its centre frame ``floor((edges[k] + edges[k+1]) / 2)``, by the
    contract's :func:`models.sample_frame_indices`, the service's rule; with
    ``rng`` (training) a uniformly random frame in ``[floor(edges[k]), max(floor(edges[k]) + 1,
    ceil(edges[k+1])))``. Indices are clipped to ``num_frames - 1``, so tracklets shorter than
    ``num_chunks`` repeat frames, in temporal order. Always returns ``num_chunks`` int64 indices.
    """
    if rng is None:
        return sample_frame_indices(num_frames, num_chunks)
    if num_frames < 1:
        raise ValueError(f"a tracklet needs at least one frame, got {num_frames}")
    if num_chunks < 1:
        raise ValueError(f"num_chunks must be positive, got {num_chunks}")
    edges = np.linspace(0.0, float(num_frames), num_chunks + 1)
    low = np.floor(edges[:-1]).astype(np.int64)
    high = np.maximum(low + 1, np.ceil(edges[1:]).astype(np.int64))
    return np.minimum(rng.integers(low, high), num_frames - 1).astype(np.int64)


def dense_clip_indices(num_frames: int, clip_len: int) -> list[np.ndarray]:
    """Every frame, in consecutive clips of ``clip_len``; the last clip is padded by repeating its last frame."""
    if num_frames < 1 or clip_len < 1:
        raise ValueError(f"need num_frames >= 1 and clip_len >= 1, got {num_frames}, {clip_len}")
    clips = []
    for start in range(0, num_frames, clip_len):
        clip = np.arange(start, min(start + clip_len, num_frames), dtype=np.int64)
        if len(clip) < clip_len:
            clip = np.concatenate([clip, np.full(clip_len - len(clip), clip[-1], dtype=np.int64)])
        clips.append(clip)
    return clips


#: Test-time modes (see ``training.test_time``); the old names ``test`` and ``dense`` still work.
TEST_MODE_ALIASES = {"test": "centres", "dense": "consecutive"}


def canonical_test_mode(mode: str) -> str:
    """The mode's name in :data:`TEST_MODES` (``test`` -> ``centres``, ``dense`` -> ``consecutive``)."""
    mode = TEST_MODE_ALIASES.get(mode, mode)
    if mode not in TEST_MODES:
        names = ", ".join((*TEST_MODES, *TEST_MODE_ALIASES))
        raise ValueError(f"test-time mode must be one of {names}, got {mode!r}")
    return mode


def test_clips(num_frames: int, clip_len: int, mode: str, max_clips: int | None = MAX_TEST_CLIPS) -> list[np.ndarray]:
    """The clips (frame index arrays) a test-time mode feeds the head, features averaged: the contract's
    :func:`models.sample_clip_indices`, the very rule the service samples uploads by."""
    return list(sample_clip_indices(num_frames, clip_len, canonical_test_mode(mode), max_clips))


class PKSampler(torch.utils.data.Sampler[list[int]]):
    """Batch sampler of P identities x Z tracklets each, for the batch-hard triplet loss; shards over ranks.

    An epoch has ``num_batches = max(world_size, total_groups // P)`` batches, where an identity with n
    tracklets contributes ``max(n, Z) // Z`` groups of Z; so an epoch shows every tracklet about once. Each
    batch picks P distinct identities with probability proportional to the groups they have left, and takes
    the next group of each; when fewer than P identities have groups left, the exhausted ones are reshuffled
    into new groups. Identities with fewer than
    Z tracklets are filled up by sampling with replacement. The batch list is a deterministic function of
    ``(seed, epoch)``, so every rank computes the same list; rank r takes batches r, r + world_size, ...,
    and all ranks get the same number of batches (the remainder is dropped).

    Args:
        pids: person id of each dataset index.
        num_identities: P, identities per batch.
        tracklets_per_identity: Z, tracklets per identity.
        seed: base seed of the batch order.
        rank: this process's rank.
        world_size: number of processes sharing the epoch.
    """

    def __init__(
        self,
        pids: Sequence[int],
        num_identities: int,
        tracklets_per_identity: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if num_identities < 1 or tracklets_per_identity < 1:
            raise ValueError("num_identities and tracklets_per_identity must be positive")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world_size {world_size}")
        indices_of: dict[int, list[int]] = {}
        for index, pid in enumerate(pids):
            indices_of.setdefault(int(pid), []).append(index)
        if len(indices_of) < num_identities:
            raise ValueError(f"{len(indices_of)} identities cannot fill batches of P={num_identities} identities")
        self.identities = sorted(indices_of)
        self.indices_of = {pid: np.asarray(indices_of[pid], dtype=np.int64) for pid in self.identities}
        self.num_identities = num_identities
        self.tracklets_per_identity = tracklets_per_identity
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        total_groups = sum(
            max(len(idx), tracklets_per_identity) // tracklets_per_identity for idx in self.indices_of.values()
        )
        self.num_batches = max(world_size, total_groups // num_identities)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batch list ``__iter__`` yields."""
        self.epoch = epoch

    def _groups(self, pid: int, rng: np.random.Generator) -> list[np.ndarray]:
        """The tracklets of one identity shuffled and cut into groups of Z (with replacement if fewer than Z)."""
        indices = self.indices_of[pid]
        z = self.tracklets_per_identity
        if len(indices) < z:
            # Every tracklet once, the rest of the group drawn again at random.
            extra = rng.choice(indices, size=z - len(indices), replace=True)
            return [rng.permutation(np.concatenate([indices, extra]))]
        shuffled = rng.permutation(indices)
        return [shuffled[start : start + z] for start in range(0, len(shuffled) - z + 1, z)]

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """All batches of ``epoch`` before sharding (the same on every rank)."""
        rng = np.random.default_rng([self.seed, epoch])
        remaining = {pid: self._groups(pid, rng) for pid in self.identities}
        batches = []
        for _ in range(self.num_batches):
            weights = np.array([len(remaining[pid]) for pid in self.identities], dtype=np.float64)
            if np.count_nonzero(weights) < self.num_identities:
                # Too few identities left for a batch: start a new pass over the exhausted ones.
                for position in np.flatnonzero(weights == 0).tolist():
                    remaining[self.identities[position]] = self._groups(self.identities[position], rng)
                weights = np.array([len(remaining[pid]) for pid in self.identities], dtype=np.float64)
            probabilities = weights / weights.sum()
            chosen = rng.choice(len(self.identities), size=self.num_identities, replace=False, p=probabilities)
            batch: list[int] = []
            for position in chosen.tolist():
                pid = self.identities[position]
                batch.extend(int(i) for i in remaining[pid].pop())
            batches.append(batch)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.epoch_batches(self.epoch)
        per_rank = len(self)
        yield from batches[self.rank : self.rank + per_rank * self.world_size : self.world_size]

    def __len__(self) -> int:
        return self.num_batches // self.world_size



class PositionKeyedBatches(torch.utils.data.Sampler[list[tuple[int, int, int]]]):
    """Wraps a batch sampler so that every item is ``(index, batch number, position in the batch)``.

    :class:`PKSampler` repeats tracklets of identities with fewer than Z of them; keyed by the dataset
    index alone, a repeat would draw the very same frames and augmentation (on iLIDS-VID and PRID2011,
    2 tracklets and Z=4, every group would be A, B, A, B with pixel-identical pairs). With the batch
    number and position in the key, :class:`~training.data.video_dataset.TrackletDataset` seeds each item
    by ``(seed, epoch, index, batch, position)``: repeats get fresh frames and augmentation, and a batch
    stays a deterministic function of the seed and the epoch. Batch numbers are global (before sharding
    over ranks), so two ranks never share a key.
    """

    def __init__(self, batch_sampler: PKSampler):
        self.batch_sampler = batch_sampler

    def set_epoch(self, epoch: int) -> None:
        self.batch_sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        sampler = self.batch_sampler
        for local, batch in enumerate(sampler):
            number = sampler.rank + local * sampler.world_size
            yield [(int(index), number, position) for position, index in enumerate(batch)]

    def __len__(self) -> int:
        return len(self.batch_sampler)
