"""What one optimisation step needs: the criterion of Eq. 7, Adam, the warm-up + step schedule, and the
network and its classifiers wrapped as one module (so one DistributedDataParallel syncs them all)."""

from __future__ import annotations

import torch
from torch import nn

from training.config import LossSection, OptimSection
from training.losses import ReIDCriterion
from training.model import VideoReIDModel


def learning_rate_factor(epoch: int, optim: OptimSection) -> float:
    """Multiplier of the base lr in ``epoch`` (0-based): linear warm-up, then step decay at the milestones."""
    factor = optim.gamma ** sum(epoch >= milestone for milestone in optim.milestones)
    if epoch < optim.warmup_epochs:
        progress = epoch / optim.warmup_epochs
        factor *= optim.warmup_factor * (1.0 - progress) + progress
    return factor


def build_optimizer(parameters, optim: OptimSection) -> torch.optim.Optimizer:
    return torch.optim.Adam(
        [parameter for parameter in parameters if parameter.requires_grad],
        lr=optim.lr,
        betas=tuple(optim.betas),
        weight_decay=optim.weight_decay,
    )


def build_scheduler(optimizer: torch.optim.Optimizer, optim: OptimSection) -> torch.optim.lr_scheduler.LambdaLR:
    """Stepped once per epoch."""

    def factor(epoch: int) -> float:
        return learning_rate_factor(epoch, optim)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def part_dimensions(model: VideoReIDModel) -> list[int]:
    """Dimensions of the per-group features v_g the head returns (none for the baseline)."""
    groups = getattr(model.head, "groups", ())
    return [group.channels for group in groups]


def build_criterion(loss: LossSection, model: VideoReIDModel, num_classes: int) -> ReIDCriterion:
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
