"""The training/service contract: what the service feeds the model must equal what offline evaluation feeds it.

Both sides call the one definition in models/ (sampling, BGR->RGB, resize); these tests check they really
do, end to end: the same PNG files read by training's test-mode dataset and decoded by the service give
identical uint8 frames, frame for frame.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest

import models
import service.decoding.decoder
import service.decoding.images
import service.state
import training.data.sampling
import training.data.transforms
from service.decoding import NamedMedia, TrackletDecoder
from training.data.sampling import chunk_frame_indices
from training.data.tracklets import Tracklet
from training.data.video_dataset import TrackletDataset


def test_both_sides_call_the_one_definition():
    assert service.decoding.decoder.sample_clip_indices is models.sample_clip_indices
    assert training.data.sampling.sample_clip_indices is models.sample_clip_indices
    assert training.data.sampling.sample_frame_indices is models.sample_frame_indices
    # One default test-time mode for offline evaluation, exports (the card) and the service.
    from training.config import DataSection

    assert DataSection().test_mode == models.DEFAULT_TEST_MODE == models.CardTestTime().mode
    # The service builds its decoder from the card (service.state), whose default is that mode.
    assert "test_mode=card.test_time.mode" in Path(service.state.__file__).read_text()
    assert service.decoding.images.model_frame_from_bgr is models.model_frame_from_bgr
    assert training.data.transforms.model_frame_from_bgr is models.model_frame_from_bgr


@pytest.mark.parametrize("num_samples", [1, 4, 8, 12])
def test_training_test_sampling_is_the_contract_rule(num_samples):
    for num_frames in range(1, 200):
        np.testing.assert_array_equal(
            chunk_frame_indices(num_frames, num_samples), models.sample_frame_indices(num_frames, num_samples)
        )


def test_short_tracklets_repeat_frames_in_order():
    indices = models.sample_frame_indices(3, 8)
    assert list(indices) == sorted(indices) and set(indices) == {0, 1, 2}


def frame(index: int, height: int, width: int) -> np.ndarray:
    """A BGR frame with structure in every channel, different for each index (so a wrong pick shows)."""
    y, x = np.mgrid[0:height, 0:width]
    channels = [(3 * x + 5 * y + 40 * index) % 256, (7 * x * y // 5 + 11 * index) % 256, (x * x + 2 * y) % 256]
    return np.stack(channels, axis=-1).astype(np.uint8)


@pytest.mark.parametrize(
    ("num_files", "mode", "max_clips"),
    [(11, "strided", 4), (40, "strided", 4), (9, "consecutive", 4), (40, "consecutive", 4), (5, "all", 4),
     (41, "consecutive", None)],
)
def test_service_clips_equal_offline_clips_in_every_mode(tmp_path, num_files, mode, max_clips):
    """The clips of a test-time mode: the service decodes exactly the frames offline evaluation feeds."""
    from training.data.sampling import test_clips

    height, width, num_frames = 64, 32, 4
    paths = [tmp_path / f"{index:03d}.png" for index in range(num_files)]
    for index, path in enumerate(paths):
        assert cv2.imwrite(str(path), frame(index, 50, 24))
    dataset = TrackletDataset([Tracklet(tuple(map(str, paths)), pid=1, camid=0)], num_frames=num_frames, height=height,
                              width=width, mode="test")
    clips = test_clips(num_files, num_frames, mode, max_clips)
    offline = np.stack([dataset.load(dataset.tracklets[0], clip) for clip in clips])
    decoder = TrackletDecoder(height, width, num_frames, test_mode=mode, max_clips=max_clips)
    served = decoder.decode_images([NamedMedia(path.name, path.read_bytes()) for path in paths])
    np.testing.assert_array_equal(served.clips, offline)
    if num_files == 40 and max_clips is not None:
        assert served.clips.shape[0] == models.MAX_TEST_CLIPS  # long tracklets cost at most 4 clips
        assert len(set(served.frame_indices)) == num_frames * max_clips < num_files
    if max_clips is None:
        assert served.clips.shape[0] == -(-num_files // num_frames) and len(set(served.frame_indices)) == num_files


def test_service_embedding_is_the_offline_embedding_in_the_default_mode(tmp_path):
    """Upload -> decoder -> one batch item per clip -> mean (service.pipeline) equals offline evaluation
    (training.features.extract_features in the default mode) for the same exported network."""
    import asyncio
    import types

    import torch

    from service.batching import MicroBatcher
    from service.embedder import OnnxEmbedder
    from service.pipeline import MediaKind, MediaUpload, StageTimer, embed_upload
    from training.config import TrainConfig
    from training.export import export_model
    from training.features import extract_features
    from training.model import build_model

    torch.manual_seed(0)
    model = build_model(backbone="resnet18", head="mg-rafa", granularities=2, height=64, width=32).eval()
    onnx_path = tmp_path / "m.onnx"
    export_model(model, onnx_path, num_frames=4)
    # 20 frames: longer than T x max_clips = 16, so the thinning to 16 chunk centres is part of the contract.
    paths = [tmp_path / f"{index:03d}.png" for index in range(20)]
    for index, path in enumerate(paths):
        assert cv2.imwrite(str(path), frame(index, 64, 32))
    config = TrainConfig()
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, height=64, width=32),
                                 data=dataclasses.replace(config.data, num_frames=4, num_workers=0))
    offline = extract_features(model, [Tracklet(tuple(map(str, paths)), pid=1, camid=0)], config, config.data.test_mode,
                               progress=False)[0]  # fmt: skip

    embedder = OnnxEmbedder(onnx_path, device="cpu", intra_op_threads=1)
    batcher = MicroBatcher(embedder.embed, max_batch=8)
    batcher.start()
    try:
        card = models.ModelCard.read(models.card_path_for(onnx_path))
        decoder = TrackletDecoder(64, 32, 4, test_mode=card.test_time.mode, max_clips=card.test_time.max_clips)
        state = types.SimpleNamespace(decoder=decoder, batcher=batcher)
        media = MediaUpload(MediaKind.FRAMES, [NamedMedia(p.name, p.read_bytes()) for p in paths])
        served = asyncio.run(embed_upload(state, media, StageTimer()))
    finally:
        batcher.stop()
    assert card.test_time.mode == models.DEFAULT_TEST_MODE == "consecutive"
    assert served.frames_used == 16  # 4 consecutive clips of the 16 chunk centres kept of 20 frames
    np.testing.assert_allclose(served.embedding, offline, rtol=1e-4, atol=1e-4 * np.abs(offline).max())
    # ... and it is not what one clip of chunk centres gives.
    centres = extract_features(model, [Tracklet(tuple(map(str, paths)), pid=1, camid=0)], config, "centres",
                               progress=False)[0]  # fmt: skip
    assert not np.allclose(served.embedding, centres, rtol=1e-3)


@pytest.mark.parametrize(("num_files", "size"), [(11, (100, 45)), (3, (64, 32)), (9, (30, 20))])
def test_service_decoding_equals_training_test_loading(tmp_path, num_files, size):
    """Same files, same T frames, same bytes: sampling, colour order and the resize agree exactly ("centres")."""
    height, width, num_frames = 64, 32, 4
    paths = [tmp_path / f"{index:03d}.png" for index in range(num_files)]
    for index, path in enumerate(paths):
        assert cv2.imwrite(str(path), frame(index, *size))

    dataset = TrackletDataset([Tracklet(tuple(map(str, paths)), pid=1, camid=0)], num_frames=num_frames, height=height,
                              width=width, mode="test")
    indices = chunk_frame_indices(num_files, num_frames)
    offline = dataset.load(dataset.tracklets[0], indices)

    decoder = TrackletDecoder(height, width, num_frames, test_mode="centres")
    served = decoder.decode_images([NamedMedia(path.name, path.read_bytes()) for path in paths])

    assert served.frame_indices == tuple(indices.tolist())
    assert served.frames.dtype == offline.dtype == np.uint8 and served.frames.shape == (num_frames, height, width, 3)
    np.testing.assert_array_equal(served.frames, offline)
    # RGB, not BGR: the first frame's red channel is the PNG's third (OpenCV order) channel, resized.
    expected_red = models.resize_frame(frame(int(indices[0]), *size)[..., ::-1].copy(), height, width)[..., 0]
    np.testing.assert_array_equal(served.frames[0, ..., 0], expected_red)
