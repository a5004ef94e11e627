"""The model card, the onnxruntime embedder and the micro-batching queue."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from service.embedder import (
    CPU_PROVIDER,
    CUDA_PROVIDER,
    MicroBatcher,
    ModelCard,
    OnnxEmbedder,
    choose_providers,
)
from service.errors import ServiceBusyError, StartupError


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
class RecordingModel:
    """Stands in for the session: row i of the output is 10 * clip value, and each call's size is kept."""

    def __init__(self, delay_s: float = 0.0):
        self.batch_sizes: list[int] = []
        self.delay_s = delay_s
        self.release = threading.Event()
        self.release.set()

    def __call__(self, clips: np.ndarray) -> np.ndarray:
        self.release.wait(5)
        time.sleep(self.delay_s)
        self.batch_sizes.append(len(clips))
        return clips.reshape(len(clips), -1)[:, :2].astype(np.float32) * 10


def clip_of(value: int) -> np.ndarray:
    return np.full((2, 2, 2, 3), value, np.uint8)


def test_concurrent_clips_share_one_call_and_get_their_own_rows():
    model = RecordingModel()
    model.release.clear()  # hold the worker so all clips queue up behind the first
    observed = []
    batcher = MicroBatcher(model, max_batch=4, max_wait_s=0.05, queue_size=16,
                           on_batch=lambda size, seconds: observed.append(size))
    batcher.start()
    futures = [batcher.submit(clip_of(value)) for value in range(6)]
    model.release.set()
    results = [future.result(timeout=5) for future in futures]
    batcher.stop()
    assert [result.tolist() for result in results] == [[10.0 * value] * 2 for value in range(6)]
    assert sum(model.batch_sizes) == 6 and max(model.batch_sizes) == 4 and len(model.batch_sizes) <= 3
    assert observed == model.batch_sizes


def test_a_lone_clip_waits_at_most_max_wait():
    model = RecordingModel()
    batcher = MicroBatcher(model, max_batch=8, max_wait_s=0.02, queue_size=4)
    batcher.start()
    started = time.perf_counter()
    batcher.submit(clip_of(1)).result(timeout=5)
    assert time.perf_counter() - started < 1.0
    assert model.batch_sizes == [1]
    batcher.stop()


def test_full_queue_is_service_busy():
    model = RecordingModel()
    model.release.clear()
    batcher = MicroBatcher(model, max_batch=1, max_wait_s=0.0, queue_size=2)
    batcher.start()
    first = batcher.submit(clip_of(0))
    time.sleep(0.1)  # the worker took the first clip and is blocked on it
    queued = [batcher.submit(clip_of(1)), batcher.submit(clip_of(2))]
    with pytest.raises(ServiceBusyError) as error:
        batcher.submit(clip_of(3))
    assert error.value.status_code == 503 and error.value.headers["Retry-After"] == "1"
    model.release.set()
    assert [future.result(timeout=5)[0] for future in [first, *queued]] == [0.0, 10.0, 20.0]
    batcher.stop()


def test_a_failing_batch_fails_every_waiting_request_and_the_worker_survives():
    calls = []

    def flaky(clips):
        calls.append(len(clips))
        if len(calls) == 1:
            raise RuntimeError("boom")
        return np.zeros((len(clips), 2), np.float32)

    batcher = MicroBatcher(flaky, max_batch=4, max_wait_s=0.0, queue_size=4)
    batcher.start()
    with pytest.raises(RuntimeError, match="boom"):
        batcher.submit(clip_of(0)).result(timeout=5)
    assert batcher.submit(clip_of(0)).result(timeout=5).tolist() == [0.0, 0.0]
    batcher.stop()


def test_stopped_batcher_refuses_work():
    batcher = MicroBatcher(RecordingModel(), queue_size=2)
    with pytest.raises(ServiceBusyError):
        batcher.submit(clip_of(0))  # not started
    batcher.start()
    batcher.stop()
    with pytest.raises(ServiceBusyError):
        batcher.submit(clip_of(0))


def test_async_embed_does_not_block_the_event_loop():
    model = RecordingModel(delay_s=0.2)
    batcher = MicroBatcher(model, max_batch=2, max_wait_s=0.0, queue_size=4)
    batcher.start()

    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        result = await batcher.embed(clip_of(3))
        task.cancel()
        return result, ticks

    result, ticks = asyncio.run(main())
    batcher.stop()
    assert result.tolist() == [30.0, 30.0]
    assert ticks >= 5  # the loop kept running while the model worked for 0.2 s
