"""python -m training attention: Figure 3 overlays of a checkpoint's attention, checked against the values."""

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from models.overlay import overlay_frames
from training.checkpoint import Checkpoint
from training.cli import main
from training.config import TrainConfig
from training.model import build_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def save_checkpoint(path: Path, head: str = "mg-rafa") -> Path:
    torch.manual_seed(0)
    model = build_model(backbone="resnet18", head=head, granularities=3, height=64, width=32).eval()
    config = TrainConfig()
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, num_frames=3))
    Checkpoint(
        epoch=1, model=model.state_dict(), model_config=model.config.to_dict(), config=config.to_dict(),
        dataset="synthetic", split_id=0, num_train_pids=2,
    ).save(path)  # fmt: skip
    return path


def write_tracklet(folder: Path, num_frames: int = 7) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for index in range(num_frames):
        image = rng.integers(0, 255, size=(64, 32, 3), dtype=np.uint8)
        cv2.imwrite(str(folder / f"{index:04d}.png"), image)
    return folder


def test_attention_command_renders_each_granularity_from_the_attention_values(tmp_path, capsys):
    checkpoint = save_checkpoint(tmp_path / "final.pt")
    tracklet = write_tracklet(tmp_path / "tracklet")
    out = tmp_path / "out"
    assert main(["attention", "--checkpoint", str(checkpoint), "--tracklet", str(tracklet), "--out", str(out)]) == 0
    assert "MG-RAFA(N=3)" in capsys.readouterr().out
    saved = np.load(out / "attention.npz")
    assert saved["frame_indices"].tolist() == [1, 3, 5]  # chunk centres of 7 frames, T=3
    # 64x32 input, 4x2 map: granularities 4x2, 2x1, 1x1; each map a softmax over T*Hm*Wm per channel.
    shapes = [saved[f"attention_{i}"].shape for i in (1, 2, 3)]
    assert shapes == [(3, 4, 2), (3, 2, 1), (3, 1, 1)]
    for i in (1, 2, 3):
        assert saved[f"attention_{i}"].sum() == pytest.approx(1.0, abs=1e-4)
    summary = json.loads((out / "attention.json").read_text())
    assert [g["label"] for g in summary["groups"]] == ["G-1st", "G-2nd", "G-3rd"]

    # Each granularity's PNG is the overlay of exactly those values on the frames the network saw.
    frames = saved["frames"]
    for i, label in enumerate(["G-1st", "G-2nd", "G-3rd"], start=1):
        png = cv2.cvtColor(cv2.imread(str(out / f"{label}.png")), cv2.COLOR_BGR2RGB)
        expected = np.concatenate(list(overlay_frames(frames, saved[f"attention_{i}"])), axis=1)
        assert np.array_equal(png, expected)
    # The hottest cell of the finest granularity is where the attention is largest: compare the
    # colour that blending added over the frame (overlay minus the frame's share).
    fine = saved["attention_1"]
    frame, row, col = np.unravel_index(np.argmax(fine), fine.shape)
    png = cv2.cvtColor(cv2.imread(str(out / "G-1st.png")), cv2.COLOR_BGR2RGB).astype(np.float64)
    added = png - 0.4 * np.concatenate(list(frames), axis=1)
    cells = added.sum(axis=-1).reshape(4, 16, 3, 2, 16).mean(axis=(1, 4))  # (rows, frames, cols)
    assert np.unravel_index(np.argmax(cells), cells.shape) == (row, frame, col)
    figure = cv2.imread(str(out / "attention.png"))
    assert figure is not None and figure.shape[0] > 4 * 64


def test_attention_command_errors(tmp_path, capsys):
    checkpoint = save_checkpoint(tmp_path / "baseline.pt", head="baseline")
    tracklet = write_tracklet(tmp_path / "tracklet", 3)
    assert main(["attention", "--checkpoint", str(checkpoint), "--tracklet", str(tracklet), "--out",
                 str(tmp_path / "o")]) == 2  # fmt: skip
    assert "no attention" in capsys.readouterr().err
    assert main(["attention", "--checkpoint", str(checkpoint), "--tracklet", str(tmp_path / "none"), "--out",
                 str(tmp_path / "o")]) == 2  # fmt: skip
    assert "does not exist" in capsys.readouterr().err
    broken = tmp_path / "broken.pt"
    broken.write_bytes(save_checkpoint(tmp_path / "whole.pt").read_bytes()[:1000])  # a copy cut short
    assert main(["attention", "--checkpoint", str(broken), "--tracklet", str(tracklet), "--out",
                 str(tmp_path / "o")]) == 2  # fmt: skip
    assert "not a readable training checkpoint" in capsys.readouterr().err
    for content in (b"", b"plain text, not a checkpoint"):
        broken.write_bytes(content)
        assert main(["attention", "--checkpoint", str(broken), "--tracklet", str(tracklet), "--out",
                     str(tmp_path / "o")]) == 2  # fmt: skip
        assert "not a readable training checkpoint" in capsys.readouterr().err


def test_attention_command_skips_hidden_files_and_folders_named_like_images(tmp_path):
    from training.attention import tracklet_frame_paths

    tracklet = write_tracklet(tmp_path / "tracklet", 3)
    (tracklet / "._0000.png").write_bytes(b"\x00\x05\x16\x07 macOS metadata")  # not an image
    (tracklet / "more.png").mkdir()
    assert [p.name for p in tracklet_frame_paths(tracklet)] == ["0000.png", "0001.png", "0002.png"]
