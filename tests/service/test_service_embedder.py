"""The model card, the onnxruntime embedder and the micro-batching queue."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from service.embedder import (
    CPU_PROVIDER,
    CUDA_PROVIDER,
    OnnxEmbedder,
    choose_providers,
    load_card,
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
    assert card.precision == "fp32" and card.schema_version == 2
    assert card.to_json_dict() == tiny_card


def write_card(folder: Path, card: dict) -> Path:
    path = folder / "card.json"
    path.write_text(json.dumps(card))
    return path


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda card: card.pop("embedding"), "missing key 'embedding'"),
        (lambda card: card["input"].update(height="tall"), "'input.height' is malformed: Input should be a valid int"),
        (lambda card: card["input"].update(dtype="float32"), "'input.dtype' is malformed: Input should be 'uint8'"),
        (lambda card: card.update(num_frames=0), "'num_frames' is malformed: Input should be greater than 0"),
        (lambda card: card["embedding"].update(dim=512.0), "'embedding.dim' is malformed"),  # strict types
        (lambda card: card.update(precision="fp8"), "'precision' is malformed"),
        (lambda card: card.update(colour="RGB"), "unknown key 'colour'"),
        (lambda card: card["embedding"].update(norm=True), "unknown key 'embedding.norm'"),
        (lambda card: card.update(schema_version=3), "schema_version 3 is newer than this code reads"),
    ],
)
def test_bad_cards_are_startup_errors_naming_the_field(tiny_card, tmp_path, mutate, message):
    card = json.loads(json.dumps(tiny_card))
    mutate(card)
    with pytest.raises(StartupError, match=re.escape(message)) as error:
        load_card(write_card(tmp_path, card))
    assert "\n" not in str(error.value) and "card.json" in str(error.value)


def test_a_version_1_card_is_read_as_version_1(tiny_card, tmp_path):
    """Cards exported before the contract say `format_version: 1` and have no `precision`."""
    card = json.loads(json.dumps(tiny_card))
    del card["schema_version"], card["precision"]
    card = {"format_version": 1, **card}
    loaded = load_card(write_card(tmp_path, card))
    assert loaded.schema_version == 1 and loaded.precision == "fp32" and loaded.dim == tiny_card["embedding"]["dim"]


def test_card_file_problems(tmp_path):
    with pytest.raises(StartupError, match="not found"):
        load_card(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(StartupError, match="not valid JSON"):
        load_card(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(StartupError, match="not a JSON object"):
        load_card(tmp_path / "list.json")


# --------------------------------------------------------------------------------------------- providers
def test_provider_choice():
    assert choose_providers("cpu", [CUDA_PROVIDER, CPU_PROVIDER]) == [CPU_PROVIDER]
    assert choose_providers("auto", [CUDA_PROVIDER, CPU_PROVIDER]) == [CUDA_PROVIDER, CPU_PROVIDER]
    assert choose_providers("auto", ["AzureExecutionProvider", CPU_PROVIDER]) == [CPU_PROVIDER]
    assert choose_providers("cuda", [CUDA_PROVIDER, CPU_PROVIDER]) == [CUDA_PROVIDER, CPU_PROVIDER]
    with pytest.raises(StartupError, match="no CUDAExecutionProvider"):
        choose_providers("cuda", [CPU_PROVIDER])


def test_cpu_requested_is_cpu(embedder):
    assert embedder.device == "cpu" and embedder.providers[0] == CPU_PROVIDER
    assert embedder.device_reason == "REID_DEVICE=cpu"


def pretend_cuda_is_available(monkeypatch) -> list[list[str]]:
    """onnxruntime claims a CUDA provider; returns the provider lists the embedder then asks sessions for."""
    monkeypatch.setattr("service.embedder.ort.get_available_providers", lambda: [CUDA_PROVIDER, CPU_PROVIDER])
    asked: list[list[str]] = []
    real_session = ort.InferenceSession

    def recording_session(path, sess_options=None, providers=None, **kwargs):
        asked.append(list(providers))
        return real_session(path, sess_options=sess_options, providers=providers, **kwargs)

    monkeypatch.setattr("service.embedder.ort.InferenceSession", recording_session)
    return asked


@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider' is not in available provider")
def test_cuda_asked_for_but_not_created_reports_cpu_and_says_why(tiny_model, monkeypatch, caplog):
    """CUDA is listed, so the embedder asks for it; the session this CPU build really creates is CPU only,
    and the embedder reports that session's provider, not the one it asked for."""
    asked = pretend_cuda_is_available(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="service.embedder"):
        embedder = OnnxEmbedder(tiny_model, device="auto", intra_op_threads=1)
    assert asked == [[CUDA_PROVIDER, CPU_PROVIDER]]
    assert embedder.device == "cpu" and embedder.providers == [CPU_PROVIDER]
    assert "could not create a CUDA session" in embedder.device_reason
    assert any("running on the CPU" in r.message and "could not create a CUDA session" in r.message
               for r in caplog.records)
    clip = np.zeros((1, *embedder.input_shape), np.uint8)
    assert embedder.embed(clip).shape == (1, embedder.card.dim)


@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider' is not in available provider")
def test_cuda_demanded_but_not_created_is_refused(tiny_model, monkeypatch):
    pretend_cuda_is_available(monkeypatch)
    with pytest.raises(StartupError, match="could not create a CUDA session"):
        OnnxEmbedder(tiny_model, device="cuda", intra_op_threads=1)


def test_a_session_that_runs_on_cuda_is_reported_as_cuda(tiny_model, monkeypatch):
    """The device comes from the session's providers (here a session that says it got CUDA first)."""
    monkeypatch.setattr("service.embedder.ort.get_available_providers", lambda: [CUDA_PROVIDER, CPU_PROVIDER])

    class CudaSession(ort.InferenceSession):
        def __init__(self, path, sess_options=None, providers=None, **kwargs):
            super().__init__(path, sess_options=sess_options, providers=[CPU_PROVIDER], **kwargs)

        def get_providers(self):
            return [CUDA_PROVIDER, CPU_PROVIDER]

    monkeypatch.setattr("service.embedder.ort.InferenceSession", CudaSession)
    embedder = OnnxEmbedder(tiny_model, device="cuda", intra_op_threads=1)
    assert embedder.device == "cuda" and "created a CUDA session" in embedder.device_reason


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
    embedder = OnnxEmbedder(tiny_model, device="auto", intra_op_threads=1)
    assert embedder.device == "cpu" and "has no CUDAExecutionProvider" in embedder.device_reason


# ---------------------------------------------------------------------------------------------- batching
