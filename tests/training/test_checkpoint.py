"""The one checkpoint format: it round-trips, loads with weights_only, and export reads it through the same loader."""

from __future__ import annotations

import json

import pytest
import torch

from models import CardTestTime
from training.checkpoint import Checkpoint, load_checkpoint
from training.config import TrainConfig, to_plain
from training.evaluation import RetrievalMetrics
from training.export import export_model, load_checkpoint_model
from training.model import build_model
from training.randomness import capture_rng_state

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class NotAllowed:
    """Any class outside torch's weights-only allow-list: unpickling it would run this module's code."""


def tiny_checkpoint(with_resume_state: bool, max_test_clips: int | None = 3) -> Checkpoint:
    torch.manual_seed(0)
    config = TrainConfig.from_dict({"model": {"backbone": "resnet18", "head": "mg-rafa", "granularities": 2,
                                              "height": 64, "width": 32},
                                  "data": {"num_frames": 3, "test_mode": "strided", "max_test_clips": max_test_clips}})
    model = build_model(config.model.to_model_config())
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    checkpoint = Checkpoint(
        epoch=2, model=model.state_dict(), model_config=config.model.to_model_config().to_dict(),
        config=to_plain(config.to_dict()), dataset="synthetic", split_id=0, num_train_pids=4,
        metrics=RetrievalMetrics(0.5, 0.6, 0.7, 0.8, 0.9), cmc=[0.6] * 20, criterion={"w": torch.ones(2)},
        optimizer=optimizer.state_dict(), scheduler={"last_epoch": 2}, scaler={}, rng=[capture_rng_state()],
    )  # fmt: skip
    return checkpoint if with_resume_state else checkpoint.without_resume_state()


def test_a_checkpoint_round_trips_through_a_file(tmp_path):
    saved = tiny_checkpoint(with_resume_state=True)
    saved.save(tmp_path / "last.pt")
    assert not list(tmp_path.glob(".*.tmp"))  # written beside, then renamed
    loaded = load_checkpoint(tmp_path / "last.pt")
    assert loaded.resumable and loaded.epoch == 2 and loaded.metrics == saved.metrics and loaded.cmc == saved.cmc
    assert loaded.train_config() == saved.train_config() and loaded.num_frames == 3
    assert loaded.rng[0]["python"] == saved.rng[0]["python"]
    assert torch.equal(loaded.rng[0]["torch"], saved.rng[0]["torch"])
    assert loaded.optimizer["param_groups"] == saved.optimizer["param_groups"]
    for key, value in saved.model.items():
        assert torch.equal(loaded.model[key], value), key
    model = loaded.build_model()
    assert not model.training and model.config.label == "MG-RAFA(N=2)"


def test_export_reads_checkpoints_through_the_same_loader(tmp_path):
    saved = tiny_checkpoint(with_resume_state=False)
    saved.save(tmp_path / "final.pt")
    model, info, num_frames = load_checkpoint_model(tmp_path / "final.pt")
    assert num_frames == 3 and info["epoch"] == 2 and info["dataset"] == "synthetic"
    assert info["metrics"] == {"mAP": 0.5, "rank1": 0.6, "rank5": 0.7, "rank10": 0.8, "rank20": 0.9}
    # The run's own test-time mode goes to the card, whatever the contract's default is now.
    assert info["test_time"] == {"mode": "strided", "max_clips": 3}
    card = export_model(model, tmp_path / "m.onnx", num_frames=num_frames, training_info=info, with_attention=False)
    assert (card.test_time.mode, card.test_time.max_clips) == ("strided", 3) and card.training.epoch == 2
    for key, value in model.state_dict().items():
        assert torch.equal(value, saved.model[key]), key

    # A file holding an arbitrary object is refused by both (weights_only), never unpickled.
    unsafe = {**saved.to_state(), "dataset": NotAllowed()}
    torch.save(unsafe, tmp_path / "unsafe.pt")
    for read in (load_checkpoint, load_checkpoint_model):
        with pytest.raises(Exception, match="[Ww]eights only load failed"):
            read(tmp_path / "unsafe.pt")


def test_files_that_are_not_checkpoints_are_refused_clearly(tmp_path):
    torch.save({"model": {}, "epoch": 1}, tmp_path / "partial.pt")
    with pytest.raises(ValueError, match="not a complete training checkpoint"):
        load_checkpoint(tmp_path / "partial.pt")
    state = tiny_checkpoint(with_resume_state=False).to_state()
    torch.save({**state, "surprise": 1}, tmp_path / "unknown.pt")
    with pytest.raises(ValueError, match="unknown checkpoint entries surprise"):
        load_checkpoint(tmp_path / "unknown.pt")
    torch.save({**state, "version": 99}, tmp_path / "future.pt")
    with pytest.raises(ValueError, match="version 99"):
        load_checkpoint(tmp_path / "future.pt")


def test_a_run_evaluated_without_a_cap_exports_a_card_that_says_so_unless_given_one(tmp_path, caplog):
    from training.export import card_test_time
    from training.export import main as export_main

    tiny_checkpoint(with_resume_state=False, max_test_clips=None).save(tmp_path / "final.pt")
    _, info, _ = load_checkpoint_model(tmp_path / "final.pt")
    assert info["test_time"] == {"mode": "strided", "max_clips": None}
    # Without --max-clips the card says null, and the export warns that the service refuses it.
    assert CardTestTime(**card_test_time(info["test_time"], None)).max_clips is None
    assert "service refuses such a card" in caplog.text
    # --max-clips writes a cap the service can serve, through the real command.
    common = ["--checkpoint", str(tmp_path / "final.pt"), "--no-attention"]
    assert export_main([*common, "--out", str(tmp_path / "capped.onnx"), "--max-clips", "4"]) == 0
    capped = json.loads((tmp_path / "capped.json").read_text())["test_time"]
    assert capped == {"mode": "strided", "max_clips": 4}
    assert export_main(["--random-init", "--out", str(tmp_path / "r.onnx"), "--max-clips", "4"]) == 2
