"""Test-time protocols: how a whole tracklet becomes one feature, in every mode at once.

The paper trains on T frames, one random frame per uniform chunk, and does not say how a test
tracklet is embedded. Four modes (``training.data.sampling.test_clips`` gives their frame indices):

* ``centres``: the centre frame of each of the T chunks, one clip (formerly ``test``).
* ``strided``: clip k takes the k-th frame of every chunk, so every clip spans the whole tracklet like a
  training clip, and together the clips use every frame; clip features are averaged.
* ``consecutive``: every frame, in consecutive clips of T (formerly ``dense``); clip features averaged.
* ``all``: every frame in one pass of the head (the head accepts any T); the backbone runs over the
  frames in batches of ``batch_size`` frames. With the cap, memory is bounded by the batch; with no cap,
  tracklets are taken one at a time, so it is bounded by the longest tracklet's feature maps.

Tracklets longer than T x ``max_clips`` frames are first thinned to that many chunk centres, in every mode
but ``centres`` (the contract's rule, which the service follows too); ``max_clips=None`` (config
``data.max_test_clips: null``) keeps every frame.

The backbone is per frame, so :func:`extract_features_by_mode` runs it once over the union of the
frames the requested modes need and applies the head per mode: comparing the four modes costs one
backbone pass over the test set.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np
import torch
import torch.utils.data
from tqdm import tqdm

from models import MAX_TEST_CLIPS
from training.data.sampling import TEST_MODES, canonical_test_mode, test_clips
from training.data.transforms import load_frame, to_tensor
from training.evaluation import RetrievalMetrics


class _FrameSubsets(torch.utils.data.Dataset):
    """The frames (sorted unique indices) each tracklet needs, as (n, 3, H, W) float tensors."""

    def __init__(self, tracklets: Sequence, needed: list[np.ndarray], height: int, width: int):
        self.tracklets, self.needed, self.height, self.width = tracklets, needed, height, width

    def __len__(self) -> int:
        return len(self.tracklets)

    def __getitem__(self, index: int) -> dict:
        frames = self.tracklets[index].frames
        images = np.stack([load_frame(frames[int(i)], self.height, self.width) for i in self.needed[index]])
        return {"frames": to_tensor(images), "index": index}


def _as_list(items: list[dict]) -> list[dict]:
    return items


@torch.no_grad()
def extract_features_by_mode(
    model,
    tracklets: Sequence,
    num_frames: int,
    modes: Iterable[str] = TEST_MODES,
    batch_size: int = 64,
    max_clips: int | None = MAX_TEST_CLIPS,
    num_workers: int = 0,
    amp: bool = False,
    progress: bool = True,
    description: str = "features",
) -> dict[str, np.ndarray]:
    """Embed ``tracklets`` in each test-time mode: {mode: (len(tracklets), C) float32}.

    Args:
        model: a :class:`training.model.VideoReIDModel` (``forward_features`` / ``forward_head``).
        tracklets: objects with ``frames`` (paths).
        num_frames: T of the clip modes.
        modes: any of ``centres``, ``strided``, ``consecutive``, ``all`` (``test`` / ``dense`` are
            accepted as the old names of the first and third).
        batch_size: frames per backbone forward pass.
        max_clips: longer tracklets are first thinned to T x max_clips chunk centres (models.MAX_TEST_CLIPS);
            None keeps every frame.
        num_workers: DataLoader workers decoding frames.
        amp: float16 autocast on CUDA.
    """
    modes = list(dict.fromkeys(canonical_test_mode(mode) for mode in modes))
    plans = [
        {mode: test_clips(len(t.frames), num_frames, mode, max_clips) for mode in modes} for t in tracklets
    ]
    needed = [np.unique(np.concatenate([np.concatenate(clips) for clips in plan.values()])) for plan in plans]
    parameters = next(model.parameters())
    device = parameters.device
    use_amp = amp and device.type == "cuda"
    was_training = model.training
    model.eval()
    height, width = model.config.height, model.config.width
    loader = torch.utils.data.DataLoader(
        _FrameSubsets(tracklets, needed, height, width),
        # Capped, at most T x max_clips frames per tracklet, so batch_size // T tracklets bound the frames held;
        # uncapped, a tracklet may have hundreds: one tracklet per step.
        batch_size=1 if max_clips is None else max(1, batch_size // max(1, num_frames)),
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_as_list,
    )
    features = {mode: torch.zeros(len(tracklets), model.embedding_dim) for mode in modes}
    bar = tqdm(total=len(tracklets), desc=description, disable=None if progress else True, leave=False,
               unit="tracklet")  # fmt: skip
    for items in loader:
        frames = torch.cat([item["frames"] for item in items])
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
            maps = torch.cat([model.backbone(chunk.to(device)) for chunk in frames.split(batch_size)]).float()
        counts = [len(item["frames"]) for item in items]
        for item, tracklet_maps in zip(items, maps.split(counts), strict=True):
            index = item["index"]
            position = {int(frame): row for row, frame in enumerate(needed[index])}
            for mode, clips in plans[index].items():
                rows = torch.as_tensor([[position[int(f)] for f in clip] for clip in clips], device=maps.device)
                clip_maps = tracklet_maps[rows]  # (clips, T', C, h, w)
                with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
                    embedding = model.forward_head(clip_maps).embedding.float()
                features[mode][index] = embedding.mean(dim=0).cpu()
        bar.update(len(items))
    bar.close()
    model.train(was_training)
    return {mode: value.numpy() for mode, value in features.items()}


class ModeEvaluation(NamedTuple):
    """The metrics and CMC curve of one test-time mode."""

    metrics: RetrievalMetrics
    cmc: list[float]


def evaluate_modes(
    model, dataset, config, modes: Iterable[str] = TEST_MODES, progress: bool = True
) -> dict[str, ModeEvaluation]:
    """Score query against gallery in each mode: {mode: ModeEvaluation}.

    Tracklets in both the query and the gallery (MARS keeps queries in the gallery) are embedded once.
    """
    from training.evaluation import RANKS, evaluate, metrics_from_cmc, squared_l2_distances

    unique: dict[tuple, int] = {}
    tracklets = []
    for tracklet in (*dataset.query, *dataset.gallery):
        key = tuple(tracklet.frames)
        if key not in unique:
            unique[key] = len(tracklets)
            tracklets.append(tracklet)
    features = extract_features_by_mode(
        model, tracklets, config.data.num_frames, modes, batch_size=config.data.test_batch_size * 2,
        max_clips=config.data.max_test_clips, num_workers=config.data.num_workers,
        amp=config.amp, progress=progress, description="test set",
    )  # fmt: skip
    query_rows = [unique[tuple(t.frames)] for t in dataset.query]
    gallery_rows = [unique[tuple(t.frames)] for t in dataset.gallery]
    results = {}
    for mode, embedded in features.items():
        cmc, mean_ap = evaluate(
            squared_l2_distances(embedded[query_rows], embedded[gallery_rows]),
            np.array([t.pid for t in dataset.query]),
            np.array([t.pid for t in dataset.gallery]),
            np.array([t.camid for t in dataset.query]),
            np.array([t.camid for t in dataset.gallery]),
            max_rank=max(RANKS),
        )
        results[mode] = ModeEvaluation(metrics_from_cmc(np.asarray(cmc), mean_ap), np.asarray(cmc).tolist())
    return results
