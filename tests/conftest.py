"""Fixtures shared by every test folder: one tiny randomly initialised model, exported once per session."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# Small enough to embed a tracklet in a few tens of milliseconds on 2 CPU cores.
TINY_HEIGHT, TINY_WIDTH, TINY_FRAMES = 64, 32, 4


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of a randomly initialised ResNet-18 MG-RAFA exported by training.export (card beside it)."""
    out = tmp_path_factory.mktemp("model") / "tiny.onnx"
    command = [
        sys.executable, "-m", "training.export", "--random-init", "--backbone", "resnet18",
        "--height", str(TINY_HEIGHT), "--width", str(TINY_WIDTH), "--num-frames", str(TINY_FRAMES),
        "--out", str(out),
    ]  # fmt: skip
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(command, cwd=REPO_ROOT, env=environment, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert out.is_file() and out.with_suffix(".json").is_file()
    return out


@pytest.fixture(scope="session")
def tiny_card(tiny_model: Path) -> dict:
    return json.loads(tiny_model.with_suffix(".json").read_text())
