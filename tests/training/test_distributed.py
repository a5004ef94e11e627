"""DistributedContext: the one reader of torchrun's environment."""

from __future__ import annotations

import pytest

from training.distributed import DistributedContext, init_distributed


@pytest.fixture
def torchrun_environment(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_a_plain_process_is_rank_0_of_1(torchrun_environment):
    context = DistributedContext.from_environment()
    assert context == DistributedContext(rank=0, world_size=1, local_rank=0)
    assert context.is_main and not context.enabled
    assert init_distributed("cpu") == context  # no process group for one process


def test_torchrun_variables_are_read(torchrun_environment):
    torchrun_environment.setenv("WORLD_SIZE", "8")
    torchrun_environment.setenv("RANK", "5")
    torchrun_environment.setenv("LOCAL_RANK", "1")
    context = DistributedContext.from_environment()
    assert (context.rank, context.world_size, context.local_rank) == (5, 8, 1)
    assert context.enabled and not context.is_main
    torchrun_environment.delenv("LOCAL_RANK")
    assert DistributedContext.from_environment().local_rank == 5  # single-node default: the global rank
    torchrun_environment.setenv("WORLD_SIZE", "1")
    assert DistributedContext.from_environment() == DistributedContext()
