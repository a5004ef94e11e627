"""Evaluating a saved run: :func:`evaluate_checkpoint` writes metrics.json, a CMC curve and ranked lists."""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.rerank import RerankParameters
from training.checkpoint import load_checkpoint
from training.config import TrainConfig
from training.distributed import resolve_device
from training.evaluation import JUNK_PID, RetrievalMetrics, format_metrics
from training.features import EvaluationResult, evaluate_model, score_features
from training.loaders import load_config_dataset

log = logging.getLogger(__name__)


@dataclass
class EvaluationReport:
    """What :func:`evaluate_checkpoint` measured; ``as_json()`` is the content of metrics.json."""

    metrics: RetrievalMetrics
    cmc: list[float]
    dataset: str
    split_id: int
    protocol: str
    mode: str
    num_frames: int
    #: The head's label, e.g. "MG-RAFA(N=4)".
    model: str
    checkpoint: str
    epoch: int
    num_query: int
    num_gallery: int
    seconds: float
    output_dir: str
    #: The k-reciprocal re-ranking parameters, None when not re-ranked.
    rerank: dict[str, Any] | None = None
    #: The exported model evaluated (``evaluate --onnx``) and its card's precision; None for a checkpoint.
    onnx: str | None = None
    precision: str | None = None
    #: The (Q, G) distances ranked (not in metrics.json): what comparisons of two models' rankings need.
    distances: np.ndarray | None = field(default=None, repr=False, compare=False)

    def as_json(self) -> dict[str, Any]:
        """The metrics flat at the top ("mAP", "rank1", ...), then every other field but the distances."""
        values = dataclasses.asdict(dataclasses.replace(self, distances=None))
        return {**self.metrics.as_dict(), **{key: value for key, value in values.items()
                                             if key not in ("metrics", "distances")}}


def _written_report(result: EvaluationResult, config: TrainConfig, dataset: Any, state: Any, checkpoint_path: Path,
                    mode: str, label: str, num_frames: int, started: float, output_dir: Path,
                    rerank: RerankParameters | None, **extra: Any) -> EvaluationReport:
    """The report of one evaluation begun at ``started`` (perf_counter), written to ``output_dir`` as
    metrics.json and cmc.png; ``extra``: the report's optional fields."""
    from training.visualize import plot_cmc, write_metrics

    report = EvaluationReport(
        metrics=result.metrics,
        cmc=result.cmc.tolist(),
        dataset=config.data.dataset,
        split_id=config.data.split_id,
        protocol=dataset.protocol,
        mode=mode,
        num_frames=num_frames,
        model=label,
        checkpoint=str(checkpoint_path),
        epoch=state.epoch,
        num_query=len(dataset.query),
        num_gallery=len(dataset.gallery),
        seconds=time.perf_counter() - started,
        output_dir=str(output_dir),
        rerank=dataclasses.asdict(rerank) if rerank is not None else None,
        distances=result.distances,
        **extra,
    )
    write_metrics(report.as_json(), output_dir / "metrics.json")
    plot_cmc({f"{label}, {config.data.dataset} ({mode})": result.cmc}, output_dir / "cmc.png")
    return report


def evaluate_checkpoint(
    checkpoint: str | Path,
    dataset_root: str | Path | None = None,
    output_dir: str | Path | None = None,
    mode: str | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    num_workers: int | None = None,
    num_ranked_queries: int = 6,
    rerank: RerankParameters | None = None,
) -> EvaluationReport:
    """Evaluate a checkpoint on its dataset's query/gallery; write metrics.json, cmc.png and ranked_lists.png.

    ``dataset_root`` defaults to the root the run was trained on, ``output_dir`` to ``eval_<mode>`` beside
    the checkpoint (``eval_<mode>_rerank`` with ``rerank``), ``mode`` to the run's test mode ("test" or
    "dense"). With ``rerank``, the ranking is k-reciprocal re-ranked as the service's ``rerank=true``.
    """
    checkpoint_path = Path(checkpoint)
    state = load_checkpoint(checkpoint_path)
    config = state.train_config()
    if num_workers is not None:
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, num_workers=num_workers))
    mode, output_dir, dataset = _evaluation_setup(config, mode, rerank, output_dir,
                                                  checkpoint_path.parent / "eval", dataset_root)  # fmt: skip
    model = state.build_model(resolve_device(device))
    label = model.config.label
    started = time.perf_counter()
    result = evaluate_model(model, dataset, config, mode, batch_size, rerank=rerank)
    report = _written_report(result, config, dataset, state, checkpoint_path, mode, label, config.data.num_frames,
                             started, output_dir, rerank)
    draw_ranked_lists(dataset, result.distances, config, output_dir / "ranked_lists.png", num_ranked_queries)
    log.info("%s %s on %s (%s): %s", label, checkpoint_path.name, config.data.dataset, mode,
             format_metrics(result.metrics))
    log.info("wrote %s, %s and %s", output_dir / "metrics.json", output_dir / "cmc.png",
             output_dir / "ranked_lists.png")
    return report



def evaluate_onnx(
    onnx_path: str | Path,
    checkpoint: str | Path | None = None,
    dataset_root: str | Path | None = None,
    output_dir: str | Path | None = None,
    mode: str | None = None,
    batch_size: int | None = None,
    threads: int = 0,
    rerank: RerankParameters | None = None,
    progress: bool = True,
) -> EvaluationReport:
    """Evaluate an exported ONNX model (fp32, fp16 or int8) exactly as :func:`evaluate_checkpoint` evaluates
    a checkpoint: same dataset, protocol, test-time mode, clip averaging and metrics, the embedding computed
    by onnxruntime (CPU) from the graph (training.onnx_features). Writes metrics.json and cmc.png.

    The dataset and test-time settings are the run's: ``checkpoint``, else the checkpoint named in the
    model's card (its `training` section). ``output_dir`` defaults to ``<model stem>_eval_<mode>`` beside
    the model. ValueError when neither names a readable checkpoint or the frame size differs from the run's.
    """
    from training.onnx_features import OnnxModel, extract_onnx_features

    onnx_path = Path(onnx_path)
    model = OnnxModel.load(onnx_path, threads=threads)
    card = model.card
    if checkpoint is None and card.training is not None:
        checkpoint = card.training.checkpoint
    if checkpoint is None:
        raise ValueError(f"{onnx_path.name} is a randomly initialised export (its card names no checkpoint): "
                         "pass --checkpoint, the run whose dataset and test-time settings to evaluate with")
    checkpoint_path = Path(checkpoint)
    if not checkpoint_path.is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint_path} (the run's dataset and settings) not found: "
                                "pass --checkpoint")
    state = load_checkpoint(checkpoint_path)
    config = state.train_config()
    if (config.model.height, config.model.width) != (card.height, card.width):
        raise ValueError(f"{onnx_path.name} takes {card.height}x{card.width} frames, the run "
                         f"{config.model.height}x{config.model.width}")
    default_prefix = onnx_path.parent / f"{onnx_path.stem}_eval"
    mode, output_dir, dataset = _evaluation_setup(config, mode, rerank, output_dir, default_prefix, dataset_root)
    batch_size = batch_size or config.data.test_batch_size
    started = time.perf_counter()
    features = {
        part: extract_onnx_features(model, getattr(dataset, part), mode, batch_size, config.data.max_test_clips,
                                    progress, part)
        for part in ("query", "gallery")
    }
    result = score_features(features["query"], features["gallery"], dataset, rerank)
    label = f"{card.model.label} ({card.precision} ONNX)"
    report = _written_report(result, config, dataset, state, checkpoint_path, mode, label, card.num_frames, started,
                             output_dir, rerank, onnx=str(onnx_path), precision=card.precision)
    log.info("%s on %s (%s): %s", label, config.data.dataset, mode, format_metrics(result.metrics))
    return report


def _evaluation_setup(config, mode: str | None, rerank: RerankParameters | None, output_dir: str | Path | None,
                      default_prefix: Path, dataset_root: str | Path | None):
    """The test-time mode (the run's by default), the output folder (``<default_prefix>_<mode>[_rerank]``
    unless given; created) and the run's dataset, for both evaluation paths."""
    mode = mode or config.data.test_mode
    suffix = "_rerank" if rerank is not None else ""
    output_dir = Path(output_dir) if output_dir else default_prefix.with_name(f"{default_prefix.name}_{mode}{suffix}")
    output_dir.mkdir(parents=True, exist_ok=True)
    dataset = load_config_dataset(config, dataset_root)
    log.info("%s", dataset.protocol)
    return mode, output_dir, dataset


def top_k_overlap(reference: np.ndarray, other: np.ndarray, k: int = 10) -> np.ndarray:
    """Per query, the share of ``reference``'s k nearest gallery entries that are also among ``other``'s
    k nearest: two (Q, G) distance matrices -> (Q,) fractions in [0, 1] (ties keep the gallery order)."""
    if reference.shape != other.shape:
        raise ValueError(f"distance matrices differ in shape: {reference.shape} vs {other.shape}")
    k = min(k, reference.shape[1])
    ours = np.argsort(reference, axis=1, kind="stable")[:, :k]
    theirs = np.argsort(other, axis=1, kind="stable")[:, :k]
    return np.array([len(set(a) & set(b)) / k for a, b in zip(ours.tolist(), theirs.tolist(), strict=True)])


def draw_ranked_lists(
    dataset, distances: np.ndarray, config: TrainConfig, path: Path, num_queries: int = 6, top_k: int = 8
) -> None:
    """Picture a few queries (their T test frames) beside their top-k gallery tracklets, true matches marked.

    The gallery is filtered per query exactly as the metric does (same person and camera removed, junk
    removed); queries are spread evenly over those that have a true match.
    """
    from training.data.sampling import chunk_frame_indices
    from training.data.transforms import load_frame
    from training.visualize import plot_ranked_lists

    height, width = config.model.height, config.model.width
    gallery_pids = np.array([t.pid for t in dataset.gallery])
    gallery_camids = np.array([t.camid for t in dataset.gallery])

    def middle_frame(tracklet) -> np.ndarray:
        return load_frame(tracklet.frames[len(tracklet.frames) // 2], height, width)

    candidates = []
    for index, query in enumerate(dataset.query):
        valid = (gallery_pids != JUNK_PID) & ~((gallery_pids == query.pid) & (gallery_camids == query.camid))
        if (valid & (gallery_pids == query.pid)).any():
            candidates.append((index, valid))
    if not candidates:
        log.warning("no query has a true match: no ranked-list picture")
        return
    picks = np.linspace(0, len(candidates) - 1, min(num_queries, len(candidates))).round().astype(int)
    query_frames, gallery_frames, matches, shown_distances = [], [], [], []
    for pick in picks:
        index, valid = candidates[pick]
        query = dataset.query[index]
        frame_indices = chunk_frame_indices(len(query.frames), min(config.data.num_frames, 4))
        query_frames.append(np.stack([load_frame(query.frames[i], height, width) for i in frame_indices]))
        order = np.argsort(distances[index], kind="stable")
        order = order[valid[order]][:top_k]
        gallery_frames.append([middle_frame(dataset.gallery[g]) for g in order])
        matches.append([bool(gallery_pids[g] == query.pid) for g in order])
        shown_distances.append([float(distances[index, g]) for g in order])
    plot_ranked_lists(query_frames, gallery_frames, matches, path, distances=shown_distances)
