"""The model card, the onnxruntime embedder and the micro-batching queue."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from service.embedder import (
    CPU_PROVIDER,
    CUDA_PROVIDER,
    ModelCard,
    OnnxEmbedder,
    choose_providers,
)
from service.errors import StartupError


@pytest.fixture(scope="module")
def embedder(tiny_model) -> OnnxEmbedder:
    return OnnxEmbedder(tiny_model, device="cpu", intra_op_threads=1)


# -------------------------------------------------------------------------------------------- model card
def test_card_fields(tiny_card, embedder):
    card = embedder.card
    assert (card.height, card.width, card.num_frames) == (tiny_card["input"]["height"], tiny_card["input"]["width"],
                                                          tiny_card["num_frames"])
    assert card.dim == tiny_card["embedding"]["dim"] and card.model_version == tiny_card["model_version"]
    assert card.raw == tiny_card


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda card: card.pop("embedding"), "missing or has a malformed field"),
        (lambda card: card["input"].update(height="tall"), "malformed"),
        (lambda card: card["input"].update(dtype="float32"), "uint8"),
        (lambda card: card.update(num_frames=0), "non-positive"),
    ],
)
def test_bad_cards_are_startup_errors(tiny_card, mutate, message):
    card = json.loads(json.dumps(tiny_card))
    mutate(card)
    with pytest.raises(StartupError, match=message):
        ModelCard.from_dict(card)


def test_card_file_problems(tmp_path):
    with pytest.raises(StartupError, match="not found"):
        ModelCard.from_file(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(StartupError, match="not valid JSON"):
        ModelCard.from_file(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(StartupError, match="not a JSON object"):
        ModelCard.from_file(tmp_path / "list.json")


# --------------------------------------------------------------------------------------------- providers
def test_provider_choice():
    assert choose_providers("cpu", [CUDA_PROVIDER, CPU_PROVIDER]) == [CPU_PROVIDER]
    assert choose_providers("auto", [CUDA_PROVIDER, CPU_PROVIDER]) == [CUDA_PROVIDER, CPU_PROVIDER]
    assert choose_providers("auto", ["AzureExecutionProvider", CPU_PROVIDER]) == [CPU_PROVIDER]
    assert choose_providers("cuda", [CUDA_PROVIDER, CPU_PROVIDER]) == [CUDA_PROVIDER, CPU_PROVIDER]
    with pytest.raises(StartupError, match="no CUDAExecutionProvider"):
        choose_providers("cuda", [CPU_PROVIDER])


def test_embedder_reports_the_provider_it_really_got(embedder):
    assert embedder.device == "cpu" and embedder.providers[0] == CPU_PROVIDER


# ---------------------------------------------------------------------------------------------- embedding
def test_embed_shapes_determinism_and_batch_independence(embedder):
    rng = np.random.default_rng(0)
    clips = rng.integers(0, 256, (3, *embedder.input_shape), dtype=np.uint8)
    batch = embedder.embed(clips)
    assert batch.shape == (3, embedder.card.dim) and batch.dtype == np.float32
    assert np.all(np.isfinite(batch))
    singles = np.concatenate([embedder.embed(clips[index : index + 1]) for index in range(3)])
    np.testing.assert_allclose(batch, singles, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(embedder.embed(clips[:1]), embedder.embed(clips[:1]))
    # Different tracklets embed apart (the graph is not degenerate).
    assert np.sum((batch[0] - batch[1]) ** 2) > 1e-3


def test_embed_rejects_wrong_inputs(embedder):
    shape = embedder.input_shape
    with pytest.raises(ValueError):
        embedder.embed(np.zeros((1, *shape), np.float32))
    with pytest.raises(ValueError):
        embedder.embed(np.zeros((1, shape[0] + 1, *shape[1:]), np.uint8))


def copy_model(tiny_model: Path, folder: Path) -> Path:
    target = folder / "copy.onnx"
    shutil.copy(tiny_model, target)
    shutil.copy(tiny_model.with_suffix(".json"), target.with_suffix(".json"))
    return target


def test_model_file_problems_are_one_line_startup_errors(tiny_model, tmp_path):
    with pytest.raises(StartupError, match="not found"):
        OnnxEmbedder(tmp_path / "absent.onnx")
    model = copy_model(tiny_model, tmp_path)
    # The card must describe this very file.
    card = json.loads(model.with_suffix(".json").read_text())
    card["model_version"] = "0123456789abcdef"
    model.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(StartupError, match="does not match its card"):
        OnnxEmbedder(model)
    # A corrupt graph whose card matches it: onnxruntime's error is reduced to one line.
    model.write_bytes(b"definitely not an onnx graph")
    card["model_version"] = hashlib.sha256(model.read_bytes()).hexdigest()[:16]
    model.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(StartupError, match="could not be loaded by onnxruntime") as error:
        OnnxEmbedder(model)
    assert "\n" not in str(error.value)


def test_cuda_demanded_on_a_cpu_build_is_refused(tiny_model, monkeypatch):
    monkeypatch.setattr("service.embedder.ort.get_available_providers", lambda: [CPU_PROVIDER])
    with pytest.raises(StartupError, match="REID_DEVICE=cuda"):
        OnnxEmbedder(tiny_model, device="cuda")


# ---------------------------------------------------------------------------------------------- batching
