"""The training engine: train (one process, or many under torchrun), extract features, evaluate.

* :func:`train` runs a :class:`~training.config.TrainConfig` into an output folder: ``config.yaml``,
  ``train.log``, ``metrics.jsonl`` (one JSON line per epoch; TensorBoard too when it is installed),
  ``last.pt`` after every epoch and ``final.pt`` at the end. ``resume`` continues exactly where
  ``last.pt`` stopped: network, classifiers, optimizer, scheduler, gradient scaler, epoch (which seeds the
  sampler and the frame sampling) and the python / numpy / torch random states of every rank.
* Multi-GPU and multi-node: launched by ``torchrun`` (``WORLD_SIZE`` / ``RANK`` / ``LOCAL_RANK`` in the
  environment), the network and classifiers are wrapped together in DistributedDataParallel (NCCL on
  CUDA, gloo on CPU), each rank draws its own PK batches from one global sequence, and rank 0 alone
  evaluates and writes files. P and Z are per process, so the global batch is world_size x P x Z.
* :func:`extract_features` embeds tracklets (``test``: one deterministic frame per chunk; ``dense``:
  every frame in clips of T, clip features averaged), :func:`evaluate_checkpoint` evaluates a saved run
  and writes ``metrics.json``, a CMC curve and ranked lists.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from training.config import TrainConfig, save_config, to_plain
from training.losses import ReIDCriterion
from training.model import ModelConfig, VideoReIDModel, build_model

log = logging.getLogger(__name__)

RANKS = (1, 5, 10, 20)
CHECKPOINT_VERSION = 1


# --------------------------------------------------------------------------------------------------
# Processes, devices, randomness


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands in a (possibly single-process) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_request: str = "auto") -> DistributedContext:
    """Join the process group torchrun describes in the environment (a no-op for one process).

    NCCL when the run is on CUDA, gloo otherwise. The long timeout lets rank 0 evaluate a large
    gallery while the other ranks wait at a barrier.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and not device_request.startswith("cpu")
        if use_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group(
            backend="nccl" if use_cuda else "gloo", timeout=datetime.timedelta(minutes=60)
        )
        log.info("rank %d/%d joined the %s process group", rank, world_size, dist.get_backend())
    return DistributedContext(rank=rank, world_size=world_size, local_rank=local_rank)


def resolve_device(request: str = "auto", context: DistributedContext = DistributedContext()) -> torch.device:
    """"auto" -> the local GPU when CUDA is available, else the CPU; "cpu", "cuda", "cuda:N" as given."""
    if request == "auto":
        request = "cuda" if torch.cuda.is_available() else "cpu"
    if request == "cuda" and context.enabled:
        request = f"cuda:{context.local_rank}"
    device = torch.device(request)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {request!r} asked for, but CUDA is not available; use device=cpu")
    return device


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng_state() -> dict[str, Any]:
    """This process's random states, as plain Python values and tensors (loadable with weights_only)."""
    numpy_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    python_state = state["python"]
    random.setstate((python_state[0], tuple(python_state[1]), python_state[2]))
    name, keys, position, has_gauss, cached_gauss = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached_gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def gather_rng_states(context: DistributedContext) -> list[dict[str, Any]]:
    """The random states of every rank, in rank order (collective: every rank must call it)."""
    own = capture_rng_state()
    if not context.enabled:
        return [own]
    gathered: list[Any] = [None] * context.world_size
    dist.all_gather_object(gathered, own)
    return gathered


def barrier(context: DistributedContext) -> None:
    if context.enabled:
        dist.barrier()


# --------------------------------------------------------------------------------------------------
# Optimisation


def learning_rate_factor(epoch: int, optim) -> float:
    """Multiplier of the base lr in ``epoch`` (0-based): linear warm-up, then step decay at the milestones."""
    factor = optim.gamma ** sum(epoch >= milestone for milestone in optim.milestones)
    if epoch < optim.warmup_epochs:
        progress = epoch / optim.warmup_epochs
        factor *= optim.warmup_factor * (1.0 - progress) + progress
    return factor


def build_optimizer(parameters, optim) -> torch.optim.Optimizer:
    return torch.optim.Adam(
        [p for p in parameters if p.requires_grad],
        lr=optim.lr,
        betas=tuple(optim.betas),
        weight_decay=optim.weight_decay,
    )


def build_scheduler(optimizer: torch.optim.Optimizer, optim) -> torch.optim.lr_scheduler.LambdaLR:
    """Stepped once per epoch."""

    def factor(epoch: int) -> float:
        return learning_rate_factor(epoch, optim)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def part_dimensions(model: VideoReIDModel) -> list[int]:
    """Dimensions of the per-group features v_g the head returns (none for the baseline)."""
    groups = getattr(model.head, "groups", ())
    return [group.channels for group in groups]


def build_criterion(config: TrainConfig, model: VideoReIDModel, num_classes: int) -> ReIDCriterion:
    loss = config.loss
    return ReIDCriterion(
        model.embedding_dim,
        part_dimensions(model),
        num_classes,
        label_smoothing=loss.label_smoothing,
        triplet_margin=loss.triplet_margin,
        id_weight=loss.id_weight,
        triplet_weight=loss.triplet_weight,
        part_losses=loss.part_losses,
    )


class TrainingStep(nn.Module):
    """The network and its classifiers as one module, so one DistributedDataParallel syncs them all.

    The network runs under float16 autocast when AMP is on; the losses always run in float32.
    """

    def __init__(self, model: VideoReIDModel, criterion: ReIDCriterion, amp: bool = False):
        super().__init__()
        self.model = model
        self.criterion = criterion
        self.amp = amp

    def forward(self, frames: torch.Tensor, labels: torch.Tensor):
        with torch.autocast(device_type=frames.device.type, dtype=torch.float16, enabled=self.amp):
            output = self.model(frames)
        output = type(output)(
            output.embedding.float(), tuple(part.float() for part in output.parts), output.attention
        )
        return self.criterion(output, labels)


# --------------------------------------------------------------------------------------------------
# Data


def load_config_dataset(config: TrainConfig, root: str | Path | None = None):
    """The dataset a config names (``root`` overrides ``config.data.root``)."""
    from training.data import load_dataset

    return load_dataset(config.data.dataset, root or config.data.root, split_id=config.data.split_id)


def build_train_loader(dataset, config: TrainConfig, context: DistributedContext, pin_memory: bool = False):
    """(loader, sampler, torch dataset) of the training tracklets; call ``set_epoch`` on the last two."""
    from training.data.sampling import PKSampler
    from training.data.transforms import SequenceAugment
    from training.data.video_dataset import TrackletDataset

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
        batch_sampler=sampler,
        num_workers=config.data.num_workers,
        pin_memory=pin_memory,
    )
    return loader, sampler, train_set


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
    from training.data.video_dataset import TrackletDataset

    if mode not in ("test", "dense"):
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
    """Metrics (fractions), the CMC curve and what the plots need."""

    metrics: dict[str, float]
    cmc: np.ndarray
    distances: np.ndarray
    query_features: np.ndarray
    gallery_features: np.ndarray


def metrics_from_cmc(cmc: np.ndarray, mean_ap: float) -> dict[str, float]:
    """{"mAP", "rank1", "rank5", "rank10", "rank20"} as fractions (a short gallery repeats its last rank)."""
    metrics = {"mAP": float(mean_ap)}
    for rank in RANKS:
        metrics[f"rank{rank}"] = float(cmc[min(rank, len(cmc)) - 1])
    return metrics


def evaluate_model(
    model: VideoReIDModel,
    dataset,
    config: TrainConfig,
    mode: str | None = None,
    batch_size: int | None = None,
    progress: bool = True,
) -> EvaluationResult:
    """Embed query and gallery, rank by squared l2 distance on v, and score CMC / mAP."""
    from training.evaluation import evaluate, squared_l2_distances

    mode = mode or config.data.test_mode
    query = extract_features(model, dataset.query, config, mode, batch_size, progress, "query")
    gallery = extract_features(model, dataset.gallery, config, mode, batch_size, progress, "gallery")
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


def format_metrics(metrics: dict[str, float]) -> str:
    return "mAP {:.1%}  R1 {:.1%}  R5 {:.1%}  R10 {:.1%}  R20 {:.1%}".format(
        metrics["mAP"], *(metrics[f"rank{rank}"] for rank in RANKS)
    )


# --------------------------------------------------------------------------------------------------
# Checkpoints and logs


def atomic_save(state: dict, path: Path) -> None:
    """torch.save to a temporary file beside ``path``, then rename: a crash never leaves half a file."""
    temporary = path.with_name(f".{path.name}.tmp")
    torch.save(state, temporary)
    os.replace(temporary, path)


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint written by :func:`train` (plain values and tensors only)."""
    return torch.load(path, map_location="cpu", weights_only=True)


class MetricsLog:
    """metrics.jsonl, plus TensorBoard scalars when ``torch.utils.tensorboard`` imports."""

    def __init__(self, output_dir: Path, enabled: bool):
        self.path = output_dir / "metrics.jsonl"
        self.enabled = enabled
        self.writer = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                log.debug("tensorboard not installed; metrics go to %s only", self.path)
            else:
                self.writer = SummaryWriter(str(output_dir / "tensorboard"))

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in flatten_numbers(record).items():
                if key != "epoch":
                    self.writer.add_scalar(key, value, record["epoch"])
            self.writer.flush()

    def truncate_after(self, epoch: int) -> None:
        """Drop lines of epochs after ``epoch`` (written by a run that died before its checkpoint)."""
        if not self.enabled or not self.path.is_file():
            return
        with open(self.path, encoding="utf-8") as handle:
            kept = [line for line in handle if line.strip() and json.loads(line)["epoch"] <= epoch]
        with open(self.path, "w", encoding="utf-8") as handle:
            handle.writelines(kept)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def flatten_numbers(record: dict[str, Any], prefix: str = "") -> dict[str, float]:
    flat = {}
    for key, value in record.items():
        if isinstance(value, dict):
            flat.update(flatten_numbers(value, f"{prefix}{key}/"))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            flat[f"{prefix}{key}"] = float(value)
    return flat


def add_file_log(output_dir: Path) -> logging.Handler:
    handler = logging.FileHandler(output_dir / "train.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    if logging.getLogger().level > logging.INFO:
        logging.getLogger().setLevel(logging.INFO)
    return handler


def epoch_summary(record: dict[str, Any], total_epochs: int) -> str:
    """One readable line per epoch."""
    loss = record["loss"]
    terms = f"id {loss['id']:.3f} tri {loss['triplet']:.3f}"
    if "part_id" in loss:
        terms += f" part-id {loss['part_id']:.3f} part-tri {loss['part_triplet']:.3f}"
    line = (
        f"epoch {record['epoch']:3d}/{total_epochs} | loss {loss['total']:.3f} ({terms}) | "
        f"id-acc {loss['accuracy']:.1%} | lr {record['lr']:.2e} | {record['time_s']:.1f} s"
    )
    if record.get("eval"):
        line += " | " + format_metrics(record["eval"])
    return line


# --------------------------------------------------------------------------------------------------
# Training


def run_epoch(
    step: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    device: torch.device,
    context: DistributedContext,
    description: str,
) -> dict[str, float]:
    """One pass over the PK batches; returns the mean of every loss term (over all ranks)."""
    step.train()
    sums: dict[str, torch.Tensor] = {}
    num_batches = 0
    bar = tqdm(loader, desc=description, disable=None if context.is_main else True, leave=False, unit="batch")
    for batch in bar:
        frames = batch["frames"].to(device, non_blocking=True)
        labels = batch["pid"].to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        total, terms = step(frames, labels)
        scaler.scale(total).backward()
        scaler.step(optimizer)
        scaler.update()
        for key, value in terms.items():
            sums[key] = sums.get(key, 0.0) + value.float()
        num_batches += 1
        bar.set_postfix(loss=f"{terms['total'].item():.3f}", acc=f"{terms['accuracy'].item():.2f}")
    bar.close()
    if num_batches == 0:
        raise RuntimeError("the sampler gave no batch: too few identities with enough tracklets for P x Z")
    keys = sorted(sums)
    means = torch.stack([sums[key] for key in keys]) / num_batches
    if context.enabled:
        dist.all_reduce(means)
        means /= context.world_size
    return {key: float(value) for key, value in zip(keys, means.cpu(), strict=True)}


def resolve_resume_path(resume: bool | str | Path, output_dir: Path) -> Path | None:
    if resume is False or resume is None:
        return None
    path = output_dir / "last.pt" if resume is True else Path(resume)
    if not path.is_file():
        raise FileNotFoundError(f"cannot resume: no checkpoint at {path}")
    return path


class Trainer:
    """One training run, set up in the constructor and driven by :meth:`fit`.

    Kept as an object (rather than one function) so that callers such as the multi-process test can
    look at ``model`` and ``criterion`` after training; :func:`train` is the one-call interface.

    Args:
        config: the run's configuration.
        output_dir: where config.yaml, train.log, metrics.jsonl, last.pt and final.pt go (rank 0 only).
        resume: False, True (continue from ``output_dir/last.pt``) or a checkpoint path.
    """

    def __init__(self, config: TrainConfig, output_dir: str | Path, resume: bool | str | Path = False):
        self.config = config
        self.output_dir = Path(output_dir)
        self.started = time.perf_counter()
        self.context = context = init_distributed(config.device)
        self.device = device = resolve_device(config.device, context)
        self.use_amp = config.amp and device.type == "cuda"
        if config.amp and not self.use_amp:
            log.warning("amp asked for, but the run is on %s: training in float32", device)
        self.file_handler = None
        if context.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            self.file_handler = add_file_log(self.output_dir)
            save_config(config, self.output_dir / "config.yaml")

        seed_everything(config.seed)
        self.dataset = dataset = load_config_dataset(config)  # the loader logs its summary
        self.model_config = config.model.to_model_config()
        # Same seed on every rank: identical initial weights (DDP also broadcasts rank 0's).
        self.model = build_model(self.model_config, pretrained=config.model.pretrained)
        self.criterion = build_criterion(config, self.model, dataset.num_train_pids)
        self.step = TrainingStep(self.model, self.criterion, amp=self.use_amp)
        if config.model.sync_bn and context.enabled and device.type != "cuda":
            log.warning("sync_bn needs CUDA; keeping per-process BatchNorm on %s", device)
        elif config.model.sync_bn and context.enabled:
            self.step = nn.SyncBatchNorm.convert_sync_batchnorm(self.step)
            self.model, self.criterion = self.step.model, self.step.criterion
        self.step.to(device)
        self.optimizer = build_optimizer(self.step.parameters(), config.optim)
        self.scheduler = build_scheduler(self.optimizer, config.optim)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        # Each rank draws its own augmentation and frame choices.
        seed_everything(config.seed + 1_000_003 * context.rank)

        self.start_epoch = 0
        self.last_metrics: dict[str, float] | None = None
        self.last_cmc: list[float] | None = None
        self.metrics_log = MetricsLog(self.output_dir, enabled=context.is_main)
        resume_path = resolve_resume_path(resume, self.output_dir)
        if resume_path is not None:
            self.load_resume_state(resume_path)

        if context.enabled:
            self.wrapped = nn.parallel.DistributedDataParallel(
                self.step, device_ids=[device.index] if device.type == "cuda" else None
            )
        else:
            self.wrapped = self.step
        self.loader, self.sampler, self.train_set = build_train_loader(
            dataset, config, context, pin_memory=device.type == "cuda"
        )

    def load_resume_state(self, path: Path) -> None:
        """Restore everything a checkpoint holds, so training continues as if never stopped."""
        checkpoint = load_checkpoint(path)
        self.model.load_state_dict(checkpoint["model"])
        self.criterion.load_state_dict(checkpoint["criterion"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.scaler.load_state_dict(checkpoint["scaler"])
        self.start_epoch = checkpoint["epoch"]
        self.last_metrics, self.last_cmc = checkpoint.get("metrics"), checkpoint.get("cmc")
        rng_states = checkpoint["rng"]
        if len(rng_states) == self.context.world_size:
            restore_rng_state(rng_states[self.context.rank])
        else:
            log.warning(
                "checkpoint written by %d process(es), resuming with %d: random states reseeded, so the run "
                "will not repeat an uninterrupted one exactly",
                len(rng_states), self.context.world_size,
            )
            seed_everything(self.config.seed + 7919 * self.start_epoch + 1_000_003 * self.context.rank)
        self.metrics_log.truncate_after(self.start_epoch)
        if self.context.is_main:
            log.info("resumed from %s after epoch %d", path, self.start_epoch)

    def checkpoint_state(self, epoch: int, rng_states: list[dict[str, Any]]) -> dict[str, Any]:
        """What last.pt holds (export reads model, model_config, epoch, dataset, metrics, config)."""
        return {
            "version": CHECKPOINT_VERSION,
            "model": self.model.state_dict(),
            "criterion": self.criterion.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": epoch,
            "model_config": self.model_config.to_dict(),
            "dataset": self.config.data.dataset,
            "split_id": self.config.data.split_id,
            "num_train_pids": self.dataset.num_train_pids,
            "metrics": self.last_metrics,
            "cmc": self.last_cmc,
            "config": to_plain(self.config.to_dict()),
            "world_size": self.context.world_size,
            "rng": rng_states,
        }

    def evaluation_due(self, done: int) -> bool:
        config = self.config
        periodic = config.eval_every > 0 and done % config.eval_every == 0
        return periodic or (config.eval_at_end and done == config.optim.epochs)

    def fit(self, stop_after: int | None = None) -> dict[str, Any]:
        """Train the remaining epochs; returns {"label", "metrics", "cmc", "epochs", "final_checkpoint", ...}.

        ``stop_after`` ends the run once that many epochs are done, as an interruption would (last.pt
        written, no final.pt): for time-boxed jobs on preemptible machines, continued with ``resume``.
        """
        try:
            return self._fit(stop_after)
        finally:
            self.metrics_log.close()
            if self.file_handler is not None:
                logging.getLogger().removeHandler(self.file_handler)
                self.file_handler.close()
                self.file_handler = None

    def _fit(self, stop_after: int | None) -> dict[str, Any]:
        config, context = self.config, self.context
        total_epochs = config.optim.epochs
        last_epoch = total_epochs if stop_after is None else min(stop_after, total_epochs)
        if context.is_main:
            log.info(
                "training %s on %s (%s): %d epochs x %d batches of %d ids x %d tracklets x %d frames, "
                "%d process(es)",
                self.model_config.label, config.data.dataset, self.device, total_epochs, len(self.sampler),
                config.sampler.num_identities, config.sampler.tracklets_per_identity, config.data.num_frames,
                context.world_size,
            )
        for epoch in range(self.start_epoch, last_epoch):
            epoch_started = time.perf_counter()
            self.sampler.set_epoch(epoch)
            self.train_set.set_epoch(epoch)
            lr = self.optimizer.param_groups[0]["lr"]
            losses = run_epoch(
                self.wrapped, self.loader, self.optimizer, self.scaler, self.device, context,
                f"epoch {epoch + 1}/{total_epochs}",
            )
            self.scheduler.step()
            done = epoch + 1
            record: dict[str, Any] = {"epoch": done, "lr": lr, "loss": losses}
            if self.evaluation_due(done) and context.is_main:
                result = evaluate_model(self.model, self.dataset, config)
                self.last_metrics, self.last_cmc = result.metrics, result.cmc.tolist()
                record["eval"] = result.metrics
            record["time_s"] = time.perf_counter() - epoch_started
            barrier(context)
            rng_states = gather_rng_states(context)
            if context.is_main:
                self.metrics_log.write(record)
                log.info("%s", epoch_summary(record, total_epochs))
                atomic_save(self.checkpoint_state(done, rng_states), self.output_dir / "last.pt")
            barrier(context)

        final_path = self.output_dir / "final.pt"
        if last_epoch < total_epochs:
            log.info("stopped after epoch %d of %d; continue with --resume", last_epoch, total_epochs)
            return {
                "label": self.model_config.label,
                "metrics": self.last_metrics,
                "cmc": self.last_cmc,
                "epochs": last_epoch,
                "final_checkpoint": None,
                "wall_time_s": time.perf_counter() - self.started,
            }
        if context.is_main:
            final = self.checkpoint_state(total_epochs, [])
            # final.pt is for export and evaluation; the state to resume from stays in last.pt.
            for key in ("optimizer", "scheduler", "scaler", "rng"):
                final.pop(key)
            atomic_save(final, final_path)
            if self.last_metrics is not None:
                log.info("final %s: %s", self.model_config.label, format_metrics(self.last_metrics))
                log.info("%s", self.dataset.protocol)
        barrier(context)
        return {
            "label": self.model_config.label,
            "metrics": self.last_metrics,
            "cmc": self.last_cmc,
            "epochs": total_epochs,
            "final_checkpoint": str(final_path),
            "wall_time_s": time.perf_counter() - self.started,
        }


def train(config: TrainConfig, output_dir: str | Path, resume: bool | str | Path = False) -> dict[str, Any]:
    """Train ``config`` into ``output_dir``; returns {"label", "metrics", "cmc", "epochs", "final_checkpoint",
    "wall_time_s"} (metrics as fractions, None when no evaluation ran).

    ``resume=True`` continues from ``output_dir/last.pt`` (a path picks another checkpoint). A run
    resumed after epoch k ends with the same weights as one never interrupted, given the same number of
    processes (data-loading workers are seeded from the restored torch random state).
    """
    return Trainer(config, output_dir, resume).fit()


def train_all_splits(
    config: TrainConfig, output_dir: str | Path, resume: bool = False, split_ids: Sequence[int] | None = None
) -> dict[str, Any]:
    """Train and evaluate every split of iLIDS-VID / PRID2011 into ``output_dir/splitNN``; report the means.

    Writes ``all_splits.json`` with the per-split metrics and the mean CMC (and mAP) over splits, the
    way these datasets are customarily reported.
    """
    from training.data import num_splits

    output_dir = Path(output_dir)
    split_ids = list(split_ids) if split_ids is not None else list(range(num_splits(config.data.dataset)))
    per_split = []
    for split_id in split_ids:
        split_config = dataclasses.replace(
            config, data=dataclasses.replace(config.data, split_id=split_id), eval_at_end=True
        )
        split_dir = output_dir / f"split{split_id:02d}"
        split_resume = resume and (split_dir / "last.pt").is_file()
        result = train(split_config, split_dir, resume=split_resume)
        per_split.append({"split_id": split_id, **result})
        if result["metrics"] is not None:
            log.info("split %d: %s", split_id, format_metrics(result["metrics"]))
    summary = {"dataset": config.data.dataset, "splits": per_split}
    evaluated = [entry for entry in per_split if entry["metrics"] is not None]
    if evaluated:
        summary["mean_metrics"] = {
            key: float(np.mean([entry["metrics"][key] for entry in evaluated])) for key in evaluated[0]["metrics"]
        }
        summary["mean_cmc"] = np.mean([entry["cmc"] for entry in evaluated], axis=0).tolist()
        log.info(
            "mean over %d split(s) of %s: %s", len(evaluated), config.data.dataset,
            format_metrics(summary["mean_metrics"]),
        )
    if int(os.environ.get("RANK", "0")) == 0:
        output_dir.mkdir(parents=True, exist_ok=True)
        with open(output_dir / "all_splits.json", "w", encoding="utf-8") as handle:
            json.dump(summary, handle, indent=2)
    return summary


# --------------------------------------------------------------------------------------------------
# Evaluating a saved run


def config_from_checkpoint(checkpoint: dict) -> TrainConfig:
    return TrainConfig.from_dict(checkpoint["config"])


def model_from_checkpoint(checkpoint: dict, device: torch.device) -> VideoReIDModel:
    model = build_model(ModelConfig(**checkpoint["model_config"]))
    model.load_state_dict(checkpoint["model"])
    return model.to(device).eval()


def evaluate_checkpoint(
    checkpoint: str | Path,
    dataset_root: str | Path | None = None,
    output_dir: str | Path | None = None,
    mode: str | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    num_workers: int | None = None,
    num_ranked_queries: int = 6,
) -> dict[str, Any]:
    """Evaluate a checkpoint on its dataset's query/gallery; write metrics.json, cmc.png and ranked_lists.png.

    ``dataset_root`` defaults to the root the run was trained on, ``output_dir`` to ``eval_<mode>`` beside
    the checkpoint, ``mode`` to the run's test mode ("test" or "dense").
    """
    from training.visualize import plot_cmc, write_metrics

    checkpoint_path = Path(checkpoint)
    state = load_checkpoint(checkpoint_path)
    config = config_from_checkpoint(state)
    if num_workers is not None:
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, num_workers=num_workers))
    mode = mode or config.data.test_mode
    output_dir = Path(output_dir) if output_dir else checkpoint_path.parent / f"eval_{mode}"
    output_dir.mkdir(parents=True, exist_ok=True)
    torch_device = resolve_device(device)
    dataset = load_config_dataset(config, dataset_root)
    log.info("%s", dataset.protocol)
    model = model_from_checkpoint(state, torch_device)
    label = model.config.label
    started = time.perf_counter()
    result = evaluate_model(model, dataset, config, mode, batch_size)
    elapsed = time.perf_counter() - started
    report = {
        **result.metrics,
        "cmc": result.cmc.tolist(),
        "dataset": config.data.dataset,
        "split_id": config.data.split_id,
        "protocol": dataset.protocol,
        "mode": mode,
        "num_frames": config.data.num_frames,
        "model": label,
        "checkpoint": str(checkpoint_path),
        "epoch": state.get("epoch"),
        "num_query": len(dataset.query),
        "num_gallery": len(dataset.gallery),
        "seconds": elapsed,
        "output_dir": str(output_dir),
    }
    write_metrics(report, output_dir / "metrics.json")
    plot_cmc({f"{label}, {config.data.dataset} ({mode})": result.cmc}, output_dir / "cmc.png")
    draw_ranked_lists(dataset, result.distances, config, output_dir / "ranked_lists.png", num_ranked_queries)
    log.info("%s %s on %s (%s): %s", label, checkpoint_path.name, config.data.dataset, mode,
             format_metrics(result.metrics))
    log.info("wrote %s, %s and %s", output_dir / "metrics.json", output_dir / "cmc.png",
             output_dir / "ranked_lists.png")
    return report


def draw_ranked_lists(
    dataset, distances: np.ndarray, config: TrainConfig, path: Path, num_queries: int = 6, top_k: int = 8
) -> None:
    """Picture a few queries (their T test frames) beside their top-k gallery tracklets, true matches marked.

    The gallery is filtered per query exactly as the metric does (same person and camera removed, junk
    removed); queries are spread evenly over those that have a true match.
    """
    from training.data.sampling import chunk_frame_indices
    from training.data.transforms import load_frame
    from training.evaluation import JUNK_PID
    from training.visualize import plot_ranked_lists

    height, width = config.model.height, config.model.width
    g_pids = np.array([t.pid for t in dataset.gallery])
    g_camids = np.array([t.camid for t in dataset.gallery])

    def middle_frame(tracklet) -> np.ndarray:
        return load_frame(tracklet.frames[len(tracklet.frames) // 2], height, width)

    candidates = []
    for index, query in enumerate(dataset.query):
        valid = (g_pids != JUNK_PID) & ~((g_pids == query.pid) & (g_camids == query.camid))
        if (valid & (g_pids == query.pid)).any():
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
        matches.append([bool(g_pids[g] == query.pid) for g in order])
        shown_distances.append([float(distances[index, g]) for g in order])
    plot_ranked_lists(query_frames, gallery_frames, matches, path, distances=shown_distances)
