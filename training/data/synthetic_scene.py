"""The world around the generated pedestrians: cameras (background, lighting, viewpoint), occluders
passing in front, motion blur. Used by :mod:`training.data.synthetic`."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from training.data.pedestrian import SMOOTH, Appearance, Colour, draw_person, pick, random_appearance

BACKGROUNDS = ("tiles", "panels", "gradient", "bricks")
OCCLUDERS = ("pole", "car", "person")


@dataclass(frozen=True)
class Camera:
    """A camera's look: background, lighting and viewpoint."""

    background: str
    wall: Colour
    floor: Colour
    #: Lighting: brightness gain, contrast around mid-grey, per-channel colour cast.
    gain: float
    contrast: float
    cast: tuple[float, float, float]
    #: Viewpoint: person size relative to the box, horizontal shear, horizontal offset of the person.
    scale: float
    shear: float
    offset: float


def random_camera(rng: np.random.Generator) -> Camera:
    """A random camera."""
    cast = rng.uniform(0.9, 1.1, size=3)
    return Camera(
        background=str(pick(rng, BACKGROUNDS)),
        wall=tuple(int(v) for v in rng.integers(60, 210, size=3)),
        floor=tuple(int(v) for v in rng.integers(50, 180, size=3)),
        gain=float(rng.uniform(0.8, 1.15)),
        contrast=float(rng.uniform(0.85, 1.1)),
        cast=(float(cast[0]), float(cast[1]), float(cast[2])),
        scale=float(rng.uniform(0.86, 1.0)),
        shear=float(rng.uniform(-0.12, 0.12)),
        offset=float(rng.uniform(-0.06, 0.06)),
    )


def render_background(camera: Camera, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """The camera's scene behind the person (RGB uint8), with a per-call random shift of the texture."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    horizon = int(height * rng.uniform(0.55, 0.7))
    image = np.empty((height, width, 3), np.float32)
    image[:] = camera.wall
    image[horizon:] = camera.floor
    shift = float(rng.uniform(0, width))
    if camera.background == "tiles":
        lines = ((x + shift) % (width / 3) < 2) | ((y % (height / 8)) < 2)
        image[horizon:][lines[horizon:]] *= 0.75
    elif camera.background == "panels":
        panel = ((x + shift) // (width / 4)) % 2 == 0
        image[:horizon][panel[:horizon]] *= 0.82
    elif camera.background == "bricks":
        row = (y // (height / 20)).astype(np.int32)
        mortar = ((y % (height / 20)) < 1.5) | (((x + shift + (row % 2) * width / 8) % (width / 4)) < 1.5)
        image[:horizon][mortar[:horizon]] = 0.6 * image[:horizon][mortar[:horizon]] + 0.4 * 200
    else:
        image *= (0.75 + 0.35 * (y / height))[..., None]
    image += rng.normal(0, 6, size=(height, width, 1)).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def apply_camera(image: np.ndarray, camera: Camera, brightness: float) -> np.ndarray:
    """Lighting (gain, contrast around mid-grey, colour cast) and viewpoint (shear) of a camera."""
    height, width = image.shape[:2]
    shear = np.array([[1.0, camera.shear, -camera.shear * height / 2.0], [0.0, 1.0, 0.0]], dtype=np.float32)
    image = cv2.warpAffine(image, shear, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    out = image.astype(np.float32)
    out = (out - 128.0) * camera.contrast + 128.0
    out = out * camera.gain * brightness * np.asarray(camera.cast, np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)


def motion_blur(image: np.ndarray, length: int, angle: float) -> np.ndarray:
    """Linear motion blur of ``length`` pixels at ``angle`` degrees."""
    kernel = np.zeros((length, length), np.float32)
    kernel[length // 2, :] = 1.0
    rotation = cv2.getRotationMatrix2D(((length - 1) / 2.0, (length - 1) / 2.0), angle, 1.0)
    kernel = cv2.warpAffine(kernel, rotation, (length, length))
    return cv2.filter2D(image, -1, kernel / max(kernel.sum(), 1e-6))


@dataclass(frozen=True)
class Occlusion:
    """An occluder passing in front of the person over frames [start, stop) of a tracklet."""

    kind: str
    start: int
    stop: int
    colour: Colour
    #: +1: passes left to right, -1: right to left.
    direction: int
    #: The passer-by's looks when ``kind`` is "person".
    person: Appearance | None

    def covers(self, frame_index: int) -> bool:
        return self.start <= frame_index < self.stop

    def progress(self, frame_index: int) -> float:
        """How far along its pass the occluder is in frame ``frame_index`` (0..1, frame centres)."""
        return (frame_index - self.start + 0.5) / (self.stop - self.start)


def random_occlusion(rng: np.random.Generator, num_frames: int) -> Occlusion:
    """An occluder that covers the person during a contiguous 30-70% of the tracklet."""
    length = max(1, int(round(num_frames * rng.uniform(0.3, 0.7))))
    start = int(rng.integers(0, num_frames - length + 1))
    kind = str(pick(rng, OCCLUDERS))
    return Occlusion(
        kind=kind,
        start=start,
        stop=start + length,
        colour=tuple(int(v) for v in rng.integers(30, 220, size=3)),
        direction=1 if rng.random() < 0.5 else -1,
        person=random_appearance(rng) if kind == "person" else None,
    )


def draw_occluder(canvas: np.ndarray, occlusion: Occlusion, progress: float, body_height: float) -> None:
    """Draw the occluder at ``progress`` in [0, 1] of its pass across the box."""
    height, width = canvas.shape[:2]
    # Centre travels from one side of the person to the other; the middle of the pass covers them.
    centre = width * (0.5 + occlusion.direction * (0.6 * progress - 0.3))
    if occlusion.kind == "pole":
        half = 0.09 * width
        cv2.rectangle(canvas, (int(centre - half), 0), (int(centre + half), height), occlusion.colour, -1, SMOOTH)
        highlight_x = int(centre - half * 0.4)
        cv2.line(canvas, (highlight_x, 0), (highlight_x, height), (235, 235, 235), 1, SMOOTH)
    elif occlusion.kind == "car":
        car_top = int(height * 0.6)
        x0, x1 = int(centre - 0.55 * width), int(centre + 0.55 * width)
        cv2.rectangle(canvas, (x0, car_top), (x1, height), occlusion.colour, -1, SMOOTH)
        window = ((x0 + width // 10, car_top + 4), (x1 - width // 10, car_top + height // 12))
        cv2.rectangle(canvas, *window, (40, 50, 60), -1)
        for wheel_x in (x0 + width // 5, x1 - width // 5):
            cv2.circle(canvas, (wheel_x, height - 2), width // 9, (15, 15, 15), -1, SMOOTH)
    else:
        assert occlusion.person is not None
        # A passer-by slightly closer to the camera than the person, so a bit taller.
        passer_height = body_height * 1.12
        draw_person(canvas, occlusion.person, centre, height * 1.03, passer_height, 6.0 * progress, occlusion.direction)
