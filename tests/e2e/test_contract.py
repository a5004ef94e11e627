"""The training/service contract: what the service feeds the model must equal what offline evaluation feeds it.

Both sides call the one definition in models/ (sampling, BGR->RGB, resize); these tests check they really
do, end to end: the same PNG files read by training's test-mode dataset and decoded by the service give
identical uint8 frames, frame for frame.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

import models
import service.decoding.decoder
import service.decoding.images
import training.data.sampling
import training.data.transforms
from service.decoding import NamedMedia, TrackletDecoder
from training.data.sampling import chunk_frame_indices
from training.data.tracklets import Tracklet
from training.data.video_dataset import TrackletDataset


def test_both_sides_call_the_one_definition():
    assert service.decoding.decoder.sample_frame_indices is models.sample_frame_indices
    assert training.data.sampling.sample_frame_indices is models.sample_frame_indices
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


@pytest.mark.parametrize(("num_files", "size"), [(11, (100, 45)), (3, (64, 32)), (9, (30, 20))])
def test_service_decoding_equals_training_test_loading(tmp_path, num_files, size):
    """Same files, same T frames, same bytes: sampling, colour order and the resize agree exactly."""
    height, width, num_frames = 64, 32, 4
    paths = [tmp_path / f"{index:03d}.png" for index in range(num_files)]
    for index, path in enumerate(paths):
        assert cv2.imwrite(str(path), frame(index, *size))

    dataset = TrackletDataset([Tracklet(tuple(map(str, paths)), pid=1, camid=0)], num_frames=num_frames, height=height,
                              width=width, mode="test")
    indices = chunk_frame_indices(num_files, num_frames)
    offline = dataset.load(dataset.tracklets[0], indices)

    decoder = TrackletDecoder(height, width, num_frames)
    served = decoder.decode_images([NamedMedia(path.name, path.read_bytes()) for path in paths])

    assert served.frame_indices == tuple(indices.tolist())
    assert served.frames.dtype == offline.dtype == np.uint8 and served.frames.shape == (num_frames, height, width, 3)
    np.testing.assert_array_equal(served.frames, offline)
    # RGB, not BGR: the first frame's red channel is the PNG's third (OpenCV order) channel, resized.
    expected_red = models.resize_frame(frame(int(indices[0]), *size)[..., ::-1].copy(), height, width)[..., 0]
    np.testing.assert_array_equal(served.frames[0, ..., 0], expected_red)
