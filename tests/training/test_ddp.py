"""Two processes with DistributedDataParallel (gloo, CPU): shared weights, sharded PK batches, rank 0 writes."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from training.checkpoint import load_checkpoint
from training.config import load_config
from training.data.synthetic import generate_synthetic
from training.trainer import Trainer

WORLD_SIZE = 2


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def ddp_worker(rank: int, port: int, config_dict: dict, output: str, results: str) -> None:
    """What torchrun would start: one process per rank with the rendezvous in the environment."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(WORLD_SIZE), RANK=str(rank),
        LOCAL_RANK=str(rank),
    )  # fmt: skip
    torch.set_num_threads(1)
    from training.config import TrainConfig

    trainer = Trainer(TrainConfig.from_dict(config_dict), output)
    assert dist.is_initialized() and dist.get_backend() == "gloo"
    initial = {name: p.detach().clone() for name, p in trainer.step.named_parameters()}
    first_epoch_batches = list(trainer.sampler)
    trainer.fit()
    final = {name: p.detach().clone() for name, p in trainer.step.named_parameters()}
    torch.save({"initial": initial, "final": final, "batches": first_epoch_batches}, f"{results}/rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_end_with_identical_weights(tmp_path):
    root = generate_synthetic(
        tmp_path / "data", num_identities=8, tracklets_per_camera=2, num_cameras=2, frames_per_tracklet=(4, 6),
        height=64, width=32, seed=4, num_junk=1, num_distractors=1,
    )  # fmt: skip
    config = load_config(None, [
        "name=ddp", "device=cpu", "seed=2", "model.backbone=resnet18", "model.head=mg-rafa",
        "model.pretrained=null", "model.height=64", "model.width=32", "data.dataset=synthetic",
        f"data.root={root}", "data.num_frames=2", "data.num_workers=0", "sampler.num_identities=2",
        "sampler.tracklets_per_identity=2", "optim.epochs=2", "optim.warmup_epochs=0", "optim.milestones=[]",
    ])  # fmt: skip
    output, results = tmp_path / "run", tmp_path / "results"
    results.mkdir()
    mp.spawn(
        ddp_worker, args=(free_port(), config.to_dict(), str(output), str(results)), nprocs=WORLD_SIZE, join=True
    )

    rank0 = torch.load(results / "rank0.pt", weights_only=True)
    rank1 = torch.load(results / "rank1.pt", weights_only=True)
    # The ranks trained on different batches of one global sequence...
    assert rank0["batches"] and len(rank0["batches"]) == len(rank1["batches"])
    assert rank0["batches"] != rank1["batches"]
    # ...yet, gradients being all-reduced, every parameter (network and classifiers) is identical,
    for name, value in rank0["final"].items():
        assert torch.equal(value, rank1["final"][name]), name
    # and training did move them.
    changed = [name for name, value in rank0["final"].items() if not torch.equal(value, rank0["initial"][name])]
    assert len(changed) > 0.9 * len(rank0["final"])

    # Rank 0 alone wrote the run; the checkpoint holds its weights and both ranks' random states.
    assert (output / "final.pt").is_file() and (output / "metrics.jsonl").is_file()
    last = load_checkpoint(output / "last.pt")
    assert last.world_size == WORLD_SIZE and len(last.rng) == WORLD_SIZE
    for name, value in last.model.items():
        if f"model.{name}" in rank0["final"]:
            assert torch.equal(value, rank0["final"][f"model.{name}"]), name
    with open(output / "metrics.jsonl", encoding="utf-8") as handle:
        assert len(handle.readlines()) == 2
