"""``make smoke`` (python -m training.smoke): export, one rendered tracklet through onnxruntime."""

from __future__ import annotations

import hashlib
import json

import pytest

from training.smoke import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_smoke_exports_and_embeds_one_tracklet(tmp_path, capsys):
    assert main(["--work-dir", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    card = json.loads((tmp_path / "smoke.json").read_text())
    digest = hashlib.sha256((tmp_path / "smoke.onnx").read_bytes()).hexdigest()
    assert card["model_version"] == digest[:16] and card["num_frames"] == 4
    assert printed.startswith("smoke OK") and f"model_version {digest[:16]}" in printed
    assert "embedding of dim 512" in printed
    error = float(printed.rsplit("relative error ", 1)[1])
    assert 0.0 <= error <= 1e-4
