"""Embedding tracklets with a trained network, and scoring the embeddings of a dataset's query/gallery.

* :func:`extract_features` embeds tracklets (``test``: one deterministic frame per chunk; ``dense``:
  every frame in clips of T, clip features averaged).
* :func:`evaluate_model` embeds query and gallery and scores CMC / mAP (:mod:`training.evaluation`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from models.rerank import RerankParameters, rerank_distance_matrix
from training.config import TrainConfig
from training.data.video_dataset import TrackletDataset
from training.evaluation import RANKS, RetrievalMetrics, evaluate, metrics_from_cmc, squared_l2_distances
from training.model import VideoReIDModel

#: Test-time frame sampling modes.
MODES = ("test", "dense")


def collate_as_list(items: list[dict]) -> list[dict]:
    """Keep dense-mode items apart: tracklets have different numbers of clips."""
    return items


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def extract_features(
    model: VideoReIDModel,
    tracklets: Sequence,
    config: TrainConfig,
    mode: str = "test",
    batch_size: int | None = None,
    progress: bool = True,
    description: str = "features",
) -> np.ndarray:
    """Embed tracklets with the network's v: (len(tracklets), C) float32.

    ``test`` draws one deterministic frame per chunk of T; ``dense`` embeds every frame in clips of T and
    averages the clip features of a tracklet. ``batch_size`` counts tracklets (test) or clips (dense).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be 'test' or 'dense', got {mode!r}")
    batch_size = batch_size or config.data.test_batch_size
    device = model_device(model)
    use_amp = config.amp and device.type == "cuda"
    dataset = TrackletDataset(
        tracklets, config.data.num_frames, config.model.height, config.model.width, mode=mode
    )
    was_training = model.training
    model.eval()

    def embed(frames: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
            return model(frames.to(device, non_blocking=True)).embedding.float().cpu()

    features = torch.zeros(len(tracklets), model.embedding_dim)
    # disable=None: bars only on a terminal, so redirected logs stay readable.
    bar = tqdm(total=len(tracklets), desc=description, disable=None if progress else True, leave=False,
               unit="tracklet")
    if mode == "test":
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=config.data.num_workers)
        for batch in loader:
            features[batch["index"]] = embed(batch["frames"])
            bar.update(len(batch["index"]))
    else:
        # A tracklet gives several clips: load a few tracklets at a time, then forward by clip batches.
        loader = DataLoader(
            dataset,
            batch_size=max(1, batch_size // 4),
            shuffle=False,
            num_workers=config.data.num_workers,
            collate_fn=collate_as_list,
        )
        for items in loader:
            clips = torch.cat([item["frames"] for item in items])
            clip_features = torch.cat([embed(chunk) for chunk in clips.split(batch_size)])
            counts = [len(item["frames"]) for item in items]
            for item, per_clip in zip(items, clip_features.split(counts), strict=True):
                features[item["index"]] = per_clip.mean(dim=0)
            bar.update(len(items))
    bar.close()
    model.train(was_training)
    return features.numpy()


@dataclass
class EvaluationResult:
    """Metrics, the CMC curve and what the plots need."""

    metrics: RetrievalMetrics
    cmc: np.ndarray
    distances: np.ndarray
    query_features: np.ndarray
    gallery_features: np.ndarray


def evaluate_model(
    model: VideoReIDModel,
    dataset,
    config: TrainConfig,
    mode: str | None = None,
    batch_size: int | None = None,
    progress: bool = True,
    rerank: RerankParameters | None = None,
) -> EvaluationResult:
    """Embed query and gallery, rank by squared l2 distance on v, and score CMC / mAP.

    With ``rerank``, the ranking is k-reciprocal re-ranked (models.rerank, the service's online code).
    """
    mode = mode or config.data.test_mode
    query = extract_features(model, dataset.query, config, mode, batch_size, progress, "query")
    gallery = extract_features(model, dataset.gallery, config, mode, batch_size, progress, "gallery")
    if rerank is not None:
        distances = rerank_distance_matrix(query, gallery, rerank)
    else:
        distances = squared_l2_distances(query, gallery)
    cmc, mean_ap = evaluate(
        distances,
        np.array([t.pid for t in dataset.query]),
        np.array([t.pid for t in dataset.gallery]),
        np.array([t.camid for t in dataset.query]),
        np.array([t.camid for t in dataset.gallery]),
        max_rank=max(RANKS),
    )
    return EvaluationResult(metrics_from_cmc(cmc, mean_ap), np.asarray(cmc), distances, query, gallery)
