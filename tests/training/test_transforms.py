"""Frame loading, tensor conversion and the sequence-level augmentation (one draw for all frames)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from training.data.transforms import ERASE_FILL, SequenceAugment, load_frame, to_tensor

H, W = 16, 8


def distinct_frames(num_frames: int = 5, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(num_frames, H, W, 3), dtype=np.uint8)


def test_load_frame_is_rgb_and_bilinear_resized(tmp_path):
    image_bgr = np.zeros((20, 10, 3), np.uint8)
    image_bgr[:10] = (255, 0, 0)  # blue top half in OpenCV's BGR order
    image_bgr[10:, :, 2] = np.arange(10, dtype=np.uint8)[None, :] * 20  # red ramp at the bottom
    path = tmp_path / "frame.png"
    cv2.imwrite(str(path), image_bgr)
    frame = load_frame(str(path), 8, 4)
    assert frame.shape == (8, 4, 3) and frame.dtype == np.uint8
    expected = cv2.resize(image_bgr[:, :, ::-1].copy(), (4, 8), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(frame, expected)
    assert frame[0, 0].tolist() == [0, 0, 255]  # blue, in RGB order
    with pytest.raises(FileNotFoundError):
        load_frame(str(tmp_path / "missing.png"), 8, 4)


def test_to_tensor_layout_and_normalisation():
    frames = np.zeros((2, 3, 4, 3), np.uint8)
    frames[1, 2, 3] = (255, 128, 0)
    tensor = to_tensor(frames)
    assert tensor.shape == (2, 3, 3, 4) and tensor.dtype == torch.float32
    expected = [(1.0 - 0.485) / 0.229, (128 / 255 - 0.456) / 0.224, (0.0 - 0.406) / 0.225]
    np.testing.assert_allclose(tensor[1, :, 2, 3].numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(tensor[0, :, 0, 0].numpy(), [-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225], rtol=1e-6)
    with pytest.raises(ValueError):
        to_tensor(frames.astype(np.float32))


@pytest.mark.parametrize("seed", range(20))
def test_identical_frames_stay_identical(seed):
    frame = distinct_frames(1, seed)[0]
    out = SequenceAugment(H, W, padding=3)(np.stack([frame] * 6), np.random.default_rng(seed))
    assert out.shape == (6, H, W, 3) and out.dtype == np.uint8
    for t in range(1, 6):
        np.testing.assert_array_equal(out[t], out[0])


@pytest.mark.parametrize("seed", range(20))
def test_every_frame_gets_the_same_transform(seed):
    """Augmenting a sequence equals augmenting each frame alone with the same random draw."""
    frames = distinct_frames(4, seed)
    augment = SequenceAugment(H, W, padding=3)
    together = augment(frames, np.random.default_rng(seed))
    for t in range(4):
        alone = augment(frames[t : t + 1], np.random.default_rng(seed))[0]
        np.testing.assert_array_equal(together[t], alone)


def test_flip_alone():
    frames = distinct_frames()
    out = SequenceAugment(H, W, flip_p=1.0, erase_p=0.0, padding=0)(frames, np.random.default_rng(0))
    np.testing.assert_array_equal(out, frames[:, :, ::-1])
    same = SequenceAugment(H, W, flip_p=0.0, erase_p=0.0, padding=0)(frames, np.random.default_rng(0))
    np.testing.assert_array_equal(same, frames)


def test_crop_is_one_translation_for_all_frames():
    frames = distinct_frames()
    padding = 3
    augment = SequenceAugment(H, W, flip_p=0.0, erase_p=0.0, padding=padding)
    offsets = set()
    for seed in range(30):
        out = augment(frames, np.random.default_rng(seed))
        padded = np.pad(frames, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
        matches = [
            (dy, dx)
            for dy in range(2 * padding + 1)
            for dx in range(2 * padding + 1)
            if np.array_equal(out, padded[:, dy : dy + H, dx : dx + W])
        ]
        assert len(matches) == 1
        offsets.add(matches[0])
    assert len(offsets) > 5  # the offset really is random


def test_erasing_is_one_rectangle_in_every_frame():
    frames = np.full((3, 32, 16, 3), 7, np.uint8)
    augment = SequenceAugment(32, 16, flip_p=0.0, erase_p=1.0, padding=0)
    for seed in range(20):
        out = augment(frames, np.random.default_rng(seed))
        erased = np.all(out == np.asarray(ERASE_FILL, np.uint8), axis=-1)
        assert erased.any()
        np.testing.assert_array_equal(erased, np.broadcast_to(erased[0], erased.shape))
        rows, cols = np.nonzero(erased[0])
        box = erased[0, rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        assert box.all()  # a filled rectangle
        assert 0.02 * 32 * 16 * 0.5 <= box.size <= 0.4 * 32 * 16 * 1.5
        assert np.all(out[:, ~erased[0]] == 7)  # nothing else changed


def test_probabilities_are_about_one_half():
    frames = np.zeros((2, H, W, 3), np.uint8)
    frames[:, :, : W // 2] = 200  # left half bright: a flip moves it to the right
    flipped = erased = 0
    augment = SequenceAugment(H, W, padding=0)
    for seed in range(400):
        out = augment(frames, np.random.default_rng(seed))
        flipped += int(out[0, 0, -1, 0] == 200 or out[0, -1, -1, 0] == 200)
        erased += int(np.any(np.all(out[0] == np.asarray(ERASE_FILL, np.uint8), axis=-1)))
    assert 160 < flipped < 240 and 160 < erased < 240


def test_wrong_frame_size_is_rejected():
    with pytest.raises(ValueError, match="expected"):
        SequenceAugment(H, W)(np.zeros((2, H + 1, W, 3), np.uint8), np.random.default_rng(0))
