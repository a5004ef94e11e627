"""Training runs: :func:`train` (one process, or many under torchrun) and :func:`train_all_splits`.

* :func:`train` runs a :class:`~training.config.TrainConfig` into an output folder: ``config.yaml``,
  ``train.log``, ``metrics.jsonl`` (one JSON line per epoch; TensorBoard too when it is installed),
  ``last.pt`` after every epoch and ``final.pt`` at the end. ``resume`` continues exactly where
  ``last.pt`` stopped: network, classifiers, optimizer, scheduler, gradient scaler, epoch (which seeds the
  sampler and the frame sampling) and the python / numpy / torch random states of every rank.
* Multi-GPU and multi-node: launched by ``torchrun`` (see :mod:`training.distributed`), the network and
  classifiers are wrapped together in DistributedDataParallel (NCCL on CUDA, gloo on CPU), each rank
  draws its own PK batches from one global sequence, and rank 0 alone evaluates and writes files. P and Z
  are per process, so the global batch is world_size x P x Z.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from training.checkpoint import Checkpoint, load_checkpoint
from training.config import TrainConfig, save_config, to_plain
from training.distributed import (
    DistributedContext,
    all_gather_objects,
    barrier,
    init_distributed,
    mean_over_ranks,
    resolve_device,
)
from training.evaluation import RetrievalMetrics, format_metrics
from training.features import evaluate_model
from training.loaders import build_train_loader, load_config_dataset
from training.model import build_model
from training.optimization import TrainingStep, build_criterion, build_optimizer, build_scheduler
from training.randomness import capture_rng_state, restore_rng_state, seed_everything
from training.reports import EpochRecord, MetricsLog, add_file_log

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What one run ended with (metrics None when no evaluation ran)."""

    label: str
    metrics: RetrievalMetrics | None
    cmc: list[float] | None
    epochs: int
    #: Path of final.pt; None when the run stopped early (``stop_after``).
    final_checkpoint: str | None
    wall_time_s: float

    def as_json(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["metrics"] = self.metrics.as_dict() if self.metrics is not None else None
        return values


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
    means = mean_over_ranks(torch.stack([sums[key] for key in keys]) / num_batches, context)
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
        self.criterion = build_criterion(config.loss, self.model, dataset.num_train_pids)
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
        self.last_metrics: RetrievalMetrics | None = None
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
        if not checkpoint.resumable:
            raise ValueError(f"cannot resume from {path}: it holds no optimizer state (resume from last.pt)")
        self.model.load_state_dict(checkpoint.model)
        self.criterion.load_state_dict(checkpoint.criterion)
        self.optimizer.load_state_dict(checkpoint.optimizer)
        self.scheduler.load_state_dict(checkpoint.scheduler)
        self.scaler.load_state_dict(checkpoint.scaler)
        self.start_epoch = checkpoint.epoch
        self.last_metrics, self.last_cmc = checkpoint.metrics, checkpoint.cmc
        if len(checkpoint.rng) == self.context.world_size:
            restore_rng_state(checkpoint.rng[self.context.rank])
        else:
            log.warning(
                "checkpoint written by %d process(es), resuming with %d: random states reseeded, so the run "
                "will not repeat an uninterrupted one exactly",
                len(checkpoint.rng), self.context.world_size,
            )
            seed_everything(self.config.seed + 7919 * self.start_epoch + 1_000_003 * self.context.rank)
        self.metrics_log.truncate_after(self.start_epoch)
        if self.context.is_main:
            log.info("resumed from %s after epoch %d", path, self.start_epoch)

    def checkpoint(self, epoch: int, rng_states: list[dict[str, Any]]) -> Checkpoint:
        """What last.pt holds (final.pt: the same without the resume state)."""
        return Checkpoint(
            epoch=epoch,
            model=self.model.state_dict(),
            model_config=self.model_config.to_dict(),
            config=to_plain(self.config.to_dict()),
            dataset=self.config.data.dataset,
            split_id=self.config.data.split_id,
            num_train_pids=self.dataset.num_train_pids,
            world_size=self.context.world_size,
            metrics=self.last_metrics,
            cmc=self.last_cmc,
            criterion=self.criterion.state_dict(),
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            scaler=self.scaler.state_dict(),
            rng=rng_states,
        )

    def evaluation_due(self, done: int) -> bool:
        config = self.config
        periodic = config.eval_every > 0 and done % config.eval_every == 0
        return periodic or (config.eval_at_end and done == config.optim.epochs)

    def fit(self, stop_after: int | None = None) -> TrainResult:
        """Train the remaining epochs.

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

    def _fit(self, stop_after: int | None) -> TrainResult:
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
            record = EpochRecord(epoch=done, lr=lr, loss=losses)
            if self.evaluation_due(done) and context.is_main:
                result = evaluate_model(self.model, self.dataset, config)
                self.last_metrics, self.last_cmc = result.metrics, result.cmc.tolist()
                record.eval = result.metrics
            record.time_s = time.perf_counter() - epoch_started
            barrier(context)
            rng_states = all_gather_objects(capture_rng_state(), context)
            if context.is_main:
                self.metrics_log.write(record)
                log.info("%s", record.summary(total_epochs))
                self.checkpoint(done, rng_states).save(self.output_dir / "last.pt")
            barrier(context)

        final_path = self.output_dir / "final.pt"
        if last_epoch < total_epochs:
            log.info("stopped after epoch %d of %d; continue with --resume", last_epoch, total_epochs)
            return self.result(last_epoch, None)
        if context.is_main:
            # final.pt is for export and evaluation; the state to resume from stays in last.pt.
            self.checkpoint(total_epochs, []).without_resume_state().save(final_path)
            if self.last_metrics is not None:
                log.info("final %s: %s", self.model_config.label, format_metrics(self.last_metrics))
                log.info("%s", self.dataset.protocol)
        barrier(context)
        return self.result(total_epochs, str(final_path))

    def result(self, epochs: int, final_checkpoint: str | None) -> TrainResult:
        return TrainResult(
            label=self.model_config.label,
            metrics=self.last_metrics,
            cmc=self.last_cmc,
            epochs=epochs,
            final_checkpoint=final_checkpoint,
            wall_time_s=time.perf_counter() - self.started,
        )


def train(config: TrainConfig, output_dir: str | Path, resume: bool | str | Path = False) -> TrainResult:
    """Train ``config`` into ``output_dir``.

    ``resume=True`` continues from ``output_dir/last.pt`` (a path picks another checkpoint). A run
    resumed after epoch k ends with the same weights as one never interrupted, given the same number of
    processes (data-loading workers are seeded from the restored torch random state).
    """
    return Trainer(config, output_dir, resume).fit()


@dataclass
class AllSplitsResult:
    """Every split's run, and the means over those that were evaluated."""

    dataset: str
    #: (split id, its run), in split order.
    splits: list[tuple[int, TrainResult]]
    mean_metrics: RetrievalMetrics | None
    mean_cmc: list[float] | None

    def as_json(self) -> dict[str, Any]:
        """all_splits.json: per-split results, then the mean metrics and CMC (left out when none ran)."""
        values: dict[str, Any] = {
            "dataset": self.dataset,
            "splits": [{"split_id": split_id, **result.as_json()} for split_id, result in self.splits],
        }
        if self.mean_metrics is not None:
            values["mean_metrics"] = self.mean_metrics.as_dict()
            values["mean_cmc"] = self.mean_cmc
        return values


def train_all_splits(
    config: TrainConfig, output_dir: str | Path, resume: bool = False, split_ids: Sequence[int] | None = None
) -> AllSplitsResult:
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
        per_split.append((split_id, result))
        if result.metrics is not None:
            log.info("split %d: %s", split_id, format_metrics(result.metrics))
    evaluated = [result for _, result in per_split if result.metrics is not None]
    summary = AllSplitsResult(config.data.dataset, per_split, None, None)
    if evaluated:
        summary.mean_metrics = RetrievalMetrics.mean([result.metrics for result in evaluated])
        summary.mean_cmc = np.mean([result.cmc for result in evaluated], axis=0).tolist()
        log.info(
            "mean over %d split(s) of %s: %s", len(evaluated), config.data.dataset,
            format_metrics(summary.mean_metrics),
        )
    if DistributedContext.from_environment().is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        with open(output_dir / "all_splits.json", "w", encoding="utf-8") as handle:
            json.dump(summary.as_json(), handle, indent=2)
    return summary
