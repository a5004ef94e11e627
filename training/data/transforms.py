"""Frame loading, sequence-level augmentation and tensor conversion.

The paper (4.2) augments at the sequence level: one random crop, one flip decision and one erased rectangle
are drawn per tracklet and applied identically to all of its frames, which keeps the frames consistent.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch

from models import IMAGENET_MEAN, IMAGENET_STD, model_frame_from_bgr

#: The ImageNet mean colour in uint8: erased pixels normalise to about zero.
ERASE_FILL = tuple(round(255 * m) for m in IMAGENET_MEAN)


def load_frame(path: str, height: int, width: int) -> np.ndarray:
    """Read an image as RGB uint8 (height, width, 3), resized with bilinear interpolation.

    The conversion is the contract's (models.model_frame_from_bgr), the one the service applies to uploaded
    frames, so offline and service embeddings agree.
    """
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"cannot read image {path}")
    return model_frame_from_bgr(image, height, width)


def to_tensor(frames: np.ndarray) -> torch.Tensor:
    """(T, H, W, 3) uint8 RGB -> (T, 3, H, W) float32 scaled to [0, 1] and ImageNet mean/std normalised."""
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected (T, H, W, 3) uint8 frames, got {frames.dtype} {frames.shape}")
    tensor = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(1, 3, 1, 1)
    return tensor.sub_(mean).div_(std).contiguous()


class SequenceAugment:
    """The same pad-and-crop, horizontal flip and random erasing applied to every frame of a tracklet.

    Crop: frames are zero-padded by ``padding`` pixels on each side and a (height, width) window is cut at
    one random offset (a random translation of up to ``padding`` pixels). Flip: with probability ``flip_p``.
    Erasing (Zhong et al.): with probability ``erase_p`` one rectangle of ``erase_area`` x image area and
    aspect ratio in ``erase_aspect`` (log-uniform) is filled with the ImageNet mean colour.

    Args:
        height: frame height (frames must already have this size, see :func:`load_frame`).
        width: frame width.
        flip_p: probability of a horizontal flip.
        erase_p: probability of random erasing.
        padding: pad-and-crop margin in pixels (0 disables the crop).
        erase_area: range of the erased fraction of the image area.
        erase_aspect: range of the erased rectangle's height / width.
    """

    def __init__(
        self,
        height: int,
        width: int,
        flip_p: float = 0.5,
        erase_p: float = 0.5,
        padding: int = 10,
        erase_area: tuple[float, float] = (0.02, 0.4),
        erase_aspect: tuple[float, float] = (0.3, 3.33),
    ) -> None:
        self.height = height
        self.width = width
        self.flip_p = flip_p
        self.erase_p = erase_p
        self.padding = padding
        self.erase_area = erase_area
        self.erase_aspect = erase_aspect

    def __repr__(self) -> str:
        return (
            f"SequenceAugment(height={self.height}, width={self.width}, flip_p={self.flip_p}, "
            f"erase_p={self.erase_p}, padding={self.padding})"
        )

    def crop(self, frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Random translation by pad-and-crop, the same offset for every frame."""
        if self.padding <= 0:
            return frames
        p = self.padding
        top, left = (int(v) for v in rng.integers(0, 2 * p + 1, size=2))
        padded = np.pad(frames, ((0, 0), (p, p), (p, p), (0, 0)), mode="constant")
        return padded[:, top : top + self.height, left : left + self.width]

    def erase_box(self, rng: np.random.Generator) -> tuple[int, int, int, int] | None:
        """(top, left, box height, box width) of a random erasing rectangle, or None if none fits."""
        area = self.height * self.width
        log_low, log_high = math.log(self.erase_aspect[0]), math.log(self.erase_aspect[1])
        for _ in range(100):
            target = rng.uniform(*self.erase_area) * area
            aspect = math.exp(rng.uniform(log_low, log_high))
            box_h = round(math.sqrt(target * aspect))
            box_w = round(math.sqrt(target / aspect))
            if 0 < box_h < self.height and 0 < box_w < self.width:
                top = int(rng.integers(0, self.height - box_h + 1))
                left = int(rng.integers(0, self.width - box_w + 1))
                return top, left, box_h, box_w
        return None

    def __call__(self, frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(T, H, W, 3) uint8 -> (T, H, W, 3) uint8, one random draw for the whole tracklet."""
        if frames.ndim != 4 or frames.shape[1:] != (self.height, self.width, 3):
            raise ValueError(f"expected (T, {self.height}, {self.width}, 3) frames, got {frames.shape}")
        out = self.crop(frames, rng)
        if rng.random() < self.flip_p:
            out = out[:, :, ::-1]
        out = np.array(out, dtype=np.uint8, copy=True)
        if rng.random() < self.erase_p:
            box = self.erase_box(rng)
            if box is not None:
                top, left, box_h, box_w = box
                out[:, top : top + box_h, left : left + box_w] = ERASE_FILL
        return out
