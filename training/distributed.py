"""Where this process stands in a run: one process, or one rank of many under ``torchrun``.

:class:`DistributedContext` is the one place the training side reads ``RANK`` / ``WORLD_SIZE`` /
``LOCAL_RANK`` from the environment; everything else asks it (``is_main`` decides who logs and writes).
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistributedContext:
    """Rank, number of processes and local GPU index of this process (0, 1, 0 for a plain run)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_environment(cls) -> DistributedContext:
        """What torchrun put in the environment (a single process when it put nothing)."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size <= 1:
            return cls()
        rank = int(os.environ["RANK"])
        return cls(rank=rank, world_size=world_size, local_rank=int(os.environ.get("LOCAL_RANK", rank)))

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
    context = DistributedContext.from_environment()
    if context.enabled and not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and not device_request.startswith("cpu")
        if use_cuda:
            torch.cuda.set_device(context.local_rank)
        dist.init_process_group(
            backend="nccl" if use_cuda else "gloo", timeout=datetime.timedelta(minutes=60)
        )
        log.info("rank %d/%d joined the %s process group", context.rank, context.world_size, dist.get_backend())
    return context


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


def barrier(context: DistributedContext) -> None:
    if context.enabled:
        dist.barrier()


def all_gather_objects(value: Any, context: DistributedContext) -> list[Any]:
    """``value`` of every rank, in rank order (collective: every rank must call it)."""
    if not context.enabled:
        return [value]
    gathered: list[Any] = [None] * context.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def mean_over_ranks(values: torch.Tensor, context: DistributedContext) -> torch.Tensor:
    """The element-wise mean of ``values`` over all ranks (collective)."""
    if context.enabled:
        dist.all_reduce(values)
        values = values / context.world_size
    return values
