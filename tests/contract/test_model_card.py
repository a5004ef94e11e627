"""The contract package on its own: torch-free, the card round-trips, and every problem is named at once."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from models import SCHEMA_VERSION, CardError, ModelCard, file_sha256, model_version_of

REPO_ROOT = Path(__file__).resolve().parents[2]

CARD = {
    "schema_version": 2,
    "name": "tiny",
    "model_version": "0123456789abcdef",
    "onnx_file": "tiny.onnx",
    "input": {"name": "frames", "dtype": "uint8", "layout": "BTHWC", "color": "RGB", "height": 64, "width": 32},
    "num_frames": 4,
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
    "precision": "int8",
    "embedding": {"name": "embedding", "dim": 512, "normalized": True, "metric": "l2"},
    "attention_outputs": ["attention_1", "attention_2"],
    "model": {"backbone": "resnet18", "head": "mg-rafa", "label": "MG-RAFA(N=2)", "granularities": 2,
              "splits": 1, "reduction": 6, "reference": "all", "reference_frames": 4, "height": 64, "width": 32},
    "test_time": {"mode": "consecutive", "max_clips": 3},
    "training": {"dataset": "synthetic", "checkpoint": "runs/x/final.pt", "epoch": 3,
                 "metrics": {"mAP": 0.5, "rank1": 0.75}},
    "export": {"opset": 18, "torch": "2.14.1", "parity_max_rel_error": 3e-7, "created_at": "2026-12-01T06:00:00+00:00"},
}  # fmt: skip


def test_importing_the_contract_needs_neither_torch_nor_opencv_nor_either_side():
    script = (
        "import sys, models; "
        "print(sorted(m for m in ('torch', 'cv2', 'onnxruntime', 'service', 'training') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=60, check=True)  # fmt: skip
    assert result.stdout.strip() == "[]"


def test_a_card_round_trips_through_its_file(tmp_path):
    card = ModelCard.parse(CARD)
    assert (card.height, card.width, card.dim, card.num_frames) == (64, 32, 512, 4)
    assert card.precision == "int8" and card.normalized and card.attention_outputs == ["attention_1", "attention_2"]
    assert card.training is not None and card.training.metrics == {"mAP": 0.5, "rank1": 0.75}
    assert card.to_json_dict() == CARD
    assert ModelCard.read(card.write(tmp_path / "tiny.json")) == card


def test_defaults_are_what_a_minimal_card_means():
    minimal = {key: value for key, value in CARD.items()
               if key not in ("precision", "attention_outputs", "mean", "std", "training", "test_time")}  # fmt: skip
    card = ModelCard.parse(minimal)
    assert card.schema_version == SCHEMA_VERSION and card.precision == "fp32" and card.attention_outputs == []
    # A card without the test-time section predates it: the service then embedded one clip of chunk centres,
    # and reading it so keeps a deployed model's new embeddings comparable with its enrolled gallery.
    assert (card.test_time.mode, card.test_time.max_clips) == ("centres", 4)
    # A partial section takes the contract's defaults for what it leaves out; null max_clips is "no cap".
    partial = ModelCard.parse({**minimal, "test_time": {"max_clips": None}})
    assert (partial.test_time.mode, partial.test_time.max_clips) == ("consecutive", None)
    assert partial.to_json_dict()["test_time"] == {"mode": "consecutive", "max_clips": None}
    assert card.mean == [0.485, 0.456, 0.406] and card.std == [0.229, 0.224, 0.225] and card.training is None


def test_every_problem_is_named_in_one_message():
    bad = {**CARD, "num_frames": "8", "mean": [0.5, 0.5], "extra": 1, "model_version": "XYZ"}
    bad["input"] = {**CARD["input"], "layout": "BCTHW"}
    del bad["export"]
    with pytest.raises(CardError) as error:
        ModelCard.parse(bad, source="model card x.json")
    message = str(error.value)
    assert message.startswith("model card x.json: ") and "\n" not in message
    for fragment in (
        "'num_frames' is malformed",
        "'mean' is malformed",
        "unknown key 'extra'",
        "'model_version' is malformed",
        "'input.layout' is malformed",
        "missing key 'export'",
    ):
        assert fragment in message, fragment


def test_model_version_is_the_file_hash(tmp_path):
    path = tmp_path / "blob.onnx"
    path.write_bytes(b"\x00graph" * 300_000)  # more than one 1 MiB read block
    assert file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert model_version_of(path) == file_sha256(path)[:16]
