"""Embedding tracklets with a trained network, and scoring the embeddings of a dataset's query/gallery.

* :func:`extract_features` embeds tracklets in one test-time mode (``centres``, ``strided``,
  ``consecutive`` or ``all``; see :mod:`training.test_time`, which also embeds in all of them at once).
* :func:`evaluate_model` embeds query and gallery and scores CMC / mAP (:mod:`training.evaluation`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from models.rerank import RerankParameters, rerank_distance_matrix
from training.config import TrainConfig
from training.data.sampling import TEST_MODE_ALIASES, TEST_MODES, canonical_test_mode
from training.evaluation import RANKS, RetrievalMetrics, evaluate, metrics_from_cmc, squared_l2_distances
from training.model import VideoReIDModel
from training.test_time import extract_features_by_mode

#: Test-time frame sampling modes, and the old names still accepted.
MODES = (*TEST_MODES, *TEST_MODE_ALIASES)


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
    """Embed tracklets with the network's v in one test-time mode: (len(tracklets), C) float32.

    ``batch_size`` counts tracklets of T frames per backbone pass (``config.data.test_batch_size``).
    """
    mode = canonical_test_mode(mode)
    batch_size = batch_size or config.data.test_batch_size
    return extract_features_by_mode(
        model, tracklets, config.data.num_frames, [mode], batch_size=batch_size * config.data.num_frames,
        max_clips=config.data.max_test_clips, num_workers=config.data.num_workers, amp=config.amp,
        progress=progress, description=description,
    )[mode]  # fmt: skip


@dataclass
class EvaluationResult:
    """Metrics, the CMC curve and what the plots need."""

    metrics: RetrievalMetrics
    cmc: np.ndarray
    distances: np.ndarray


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
    return score_features(query, gallery, dataset, rerank)


def score_features(
    query: np.ndarray, gallery: np.ndarray, dataset, rerank: RerankParameters | None = None
) -> EvaluationResult:
    """Rank a dataset's gallery features for each query feature by squared l2 distance (or k-reciprocal
    re-ranked) and score CMC / mAP under the dataset's protocol."""
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
    return EvaluationResult(metrics_from_cmc(cmc, mean_ap), np.asarray(cmc), distances)
