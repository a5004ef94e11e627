"""A generated video reID benchmark, written in the MARS layout so it runs through the real MARS loader.

Pedestrians are drawn procedurally with OpenCV: clothing colours and patterns (plain, stripes, checks),
short or long sleeves and trousers or shorts, shoes, hair, bags, body height and build. A share of the
identities are near twins of another one that differ in one small detail (shoe, bag or hair colour), as
in the paper's Figure 1. Each camera has its own background texture, lighting (gain, contrast, colour
cast) and viewpoint (scale, shear, offset). Across a tracklet the person walks (legs and arms swing), the
detection box jitters, some frames are motion blurred and an occluder (a pole, a car, another person)
passes in front during part of the tracklet, so some frames are much more informative than others.

The test set also holds junk tracks (pid -1, names ``00-1...``: background with a fragment of a person,
like bad detections) and distractors (pid 0: people who are not among the identities), so that both
branches of the MARS protocol are exercised. Generation is deterministic for a seed.

Command line::

    python -m training.data.synthetic --root data/synthetic [--identities 80 --cameras 3 ...]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import cv2
import numpy as np
from scipy.io import savemat

log = logging.getLogger(__name__)

#: Written beside the data; its presence marks a folder this module may overwrite.
META_FILE = "synthetic_meta.json"
FORMAT_VERSION = 1

#: Clothing palette (RGB). Nearby entries are deliberately close so colour alone is not always enough.
CLOTHING_COLOURS = (
    (200, 30, 30), (150, 20, 40), (230, 120, 30), (230, 200, 40), (40, 140, 50), (20, 90, 60),
    (40, 80, 200), (20, 40, 110), (110, 170, 230), (120, 60, 160), (230, 230, 225), (150, 150, 150),
    (60, 60, 60), (25, 25, 28), (140, 100, 60), (200, 170, 130),
)  # fmt: skip
SHOE_COLOURS = ((20, 20, 20), (235, 235, 235), (200, 30, 30), (40, 80, 200), (120, 80, 40), (230, 200, 40))
HAIR_COLOURS = ((25, 20, 15), (90, 55, 30), (200, 160, 90), (140, 140, 140), (160, 60, 30))
SKIN_TONES = ((240, 200, 170), (220, 170, 130), (180, 130, 90), (120, 80, 55), (90, 60, 40))
PATTERNS = ("plain", "plain", "hstripes", "vstripes", "checks")
BAGS = ("none", "none", "backpack", "handbag")
OCCLUDERS = ("pole", "car", "person")


@dataclass(frozen=True)
class Appearance:
    """Everything that makes one identity look like itself (RGB colours, sizes relative to body height)."""

    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    long_hair: bool
    shirt: tuple[int, int, int]
    shirt_second: tuple[int, int, int]
    pattern: str
    pattern_period: float
    long_sleeves: bool
    trousers: tuple[int, int, int]
    shorts: bool
    shoes: tuple[int, int, int]
    bag: str
    bag_colour: tuple[int, int, int]
    height_scale: float
    build: float


@dataclass(frozen=True)
class Camera:
    """A camera's look: background, lighting and viewpoint."""

    background: str
    wall: tuple[int, int, int]
    floor: tuple[int, int, int]
    gain: float
    contrast: float
    cast: tuple[float, float, float]
    scale: float
    shear: float
    offset: float


def _jitter_colour(rng: np.random.Generator, colour: tuple[int, int, int], amount: int) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in colour)


def _pick(rng: np.random.Generator, options: tuple) -> object:
    return options[int(rng.integers(len(options)))]


def _far_from(palette: tuple, colour: tuple[int, int, int], threshold: int) -> tuple:
    """The palette entries differing from ``colour`` by more than ``threshold`` in some channel."""
    return tuple(c for c in palette if max(abs(a - b) for a, b in zip(c, colour, strict=True)) > threshold)


def random_appearance(rng: np.random.Generator) -> Appearance:
    """A random person."""
    shirt = _jitter_colour(rng, _pick(rng, CLOTHING_COLOURS), 18)
    return Appearance(
        skin=_jitter_colour(rng, _pick(rng, SKIN_TONES), 10),
        hair=_jitter_colour(rng, _pick(rng, HAIR_COLOURS), 10),
        long_hair=bool(rng.random() < 0.35),
        shirt=shirt,
        shirt_second=_jitter_colour(rng, _pick(rng, CLOTHING_COLOURS), 18),
        pattern=str(_pick(rng, PATTERNS)),
        pattern_period=float(rng.uniform(0.035, 0.06)),
        long_sleeves=bool(rng.random() < 0.6),
        trousers=_jitter_colour(rng, _pick(rng, CLOTHING_COLOURS), 18),
        shorts=bool(rng.random() < 0.2),
        shoes=_jitter_colour(rng, _pick(rng, SHOE_COLOURS), 10),
        bag=str(_pick(rng, BAGS)),
        bag_colour=_jitter_colour(rng, _pick(rng, CLOTHING_COLOURS), 18),
        height_scale=float(rng.uniform(0.84, 1.0)),
        build=float(rng.uniform(0.95, 1.35)),
    )


def near_twin(rng: np.random.Generator, original: Appearance) -> Appearance:
    """A copy of ``original`` that differs in one small detail (shoe, bag or hair colour)."""
    detail = str(_pick(rng, ("shoes", "shoes", "bag", "hair")))
    if detail == "bag" and original.bag == "none":
        detail = "shoes"
    if detail == "shoes":
        return replace(original, shoes=_pick(rng, _far_from(SHOE_COLOURS, original.shoes, 60)))
    if detail == "bag":
        return replace(original, bag_colour=_pick(rng, _far_from(CLOTHING_COLOURS, original.bag_colour, 80)))
    return replace(original, hair=_pick(rng, _far_from(HAIR_COLOURS, original.hair, 50)))


def random_camera(rng: np.random.Generator) -> Camera:
    """A random camera."""
    cast = rng.uniform(0.9, 1.1, size=3)
    return Camera(
        background=str(_pick(rng, ("tiles", "panels", "gradient", "bricks"))),
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


def _fill_pattern(canvas: np.ndarray, mask: np.ndarray, look: Appearance, unit: float, top: float) -> None:
    """Paint the shirt colour and pattern where ``mask`` is set."""
    canvas[mask] = look.shirt
    if look.pattern == "plain":
        return
    period = max(2.0, look.pattern_period * unit)
    y, x = np.nonzero(mask)
    horizontal = ((y - top) // period) % 2 == 1
    vertical = (x // period) % 2 == 1
    second = {"hstripes": horizontal, "vstripes": vertical, "checks": horizontal ^ vertical}[look.pattern]
    canvas[y[second], x[second]] = look.shirt_second


def draw_person(
    canvas: np.ndarray, look: Appearance, centre_x: float, feet_y: float, body_height: float, phase: float, facing: int
) -> None:
    """Draw a walking pedestrian on ``canvas`` (RGB uint8, modified in place), seen from a three-quarter side.

    ``phase`` is the gait phase in radians; ``facing`` is +1 (walking right) or -1 (walking left).
    """
    p = body_height * look.height_scale
    top = feet_y - p
    b = look.build
    aa = cv2.LINE_AA

    def pt(dx: float, y: float) -> tuple[int, int]:
        return int(round(centre_x + facing * dx)), int(round(y))

    def thickness(t: float) -> int:
        return max(1, int(round(t)))

    swing = np.sin(phase)
    hip_y, shoulder_y, knee_len = top + 0.52 * p, top + 0.17 * p, 0.24 * p
    leg_w = 0.085 * p * b
    lower_colour = look.skin if look.shorts else look.trousers

    # Back leg and back arm first, so the front ones cover them.
    for side, sign in ((-1, -1.0), (1, 1.0)):
        foot_dx = sign * 0.11 * p * swing
        hip = pt(side * 0.035 * p * b, hip_y)
        knee = pt(0.55 * foot_dx + 0.01 * p, hip_y + knee_len)
        foot = pt(foot_dx, feet_y - 0.03 * p)
        cv2.line(canvas, hip, knee, look.trousers, thickness(leg_w), aa)
        cv2.line(canvas, knee, foot, lower_colour, thickness(leg_w * 0.9), aa)
        shoe_centre = pt(foot_dx + 0.03 * p, feet_y - 0.018 * p)
        cv2.ellipse(canvas, shoe_centre, (thickness(0.055 * p), thickness(0.026 * p)), 0, 0, 360, look.shoes, -1, aa)
        if side == -1:
            hand = pt(-0.09 * p * swing, top + 0.5 * p)
            cv2.line(canvas, pt(0, shoulder_y + 0.02 * p), hand, look.shirt, thickness(0.06 * p * b), aa)

    if look.bag == "backpack":
        x0, y0 = pt(-0.2 * p * b, shoulder_y + 0.01 * p)
        x1, y1 = pt(-0.07 * p * b, top + 0.43 * p)
        cv2.rectangle(canvas, (min(x0, x1), y0), (max(x0, x1), y1), look.bag_colour, -1, aa)

    # Torso: a tapered polygon filled with the shirt pattern.
    torso = np.array(
        [
            pt(-0.13 * p * b, shoulder_y),
            pt(0.13 * p * b, shoulder_y),
            pt(0.11 * p * b, hip_y),
            pt(-0.11 * p * b, hip_y),
        ],
        dtype=np.int32,
    )
    mask = np.zeros(canvas.shape[:2], np.uint8)
    cv2.fillConvexPoly(mask, torso, 1, aa)
    _fill_pattern(canvas, mask.astype(bool), look, p, shoulder_y)

    # Head, hair, front arm (sleeve, then forearm in skin unless long sleeves), bag straps.
    head_r = 0.062 * p
    head_centre = pt(0.01 * p, top + 0.08 * p)
    if look.long_hair:
        hx0, hy0 = pt(-0.07 * p, top + 0.06 * p)
        hx1, hy1 = pt(0.0, top + 0.25 * p)
        cv2.rectangle(canvas, (min(hx0, hx1), hy0), (max(hx0, hx1), hy1), look.hair, -1, aa)
    cv2.line(canvas, pt(0.01 * p, top + 0.13 * p), pt(0.01 * p, shoulder_y + 0.02 * p), look.skin, thickness(0.05 * p))
    cv2.circle(canvas, head_centre, thickness(head_r), look.skin, -1, aa)
    cv2.ellipse(
        canvas, pt(-0.004 * p, top + 0.065 * p), (thickness(head_r * 1.05), thickness(head_r * 0.75)),
        0, 180, 360, look.hair, -1, aa,
    )  # fmt: skip
    shoulder = pt(0.02 * p, shoulder_y + 0.02 * p)
    elbow = pt(0.02 * p + 0.06 * p * swing, top + 0.35 * p)
    hand = pt(0.02 * p + 0.10 * p * swing, top + 0.5 * p)
    cv2.line(canvas, shoulder, elbow, look.shirt, thickness(0.065 * p * b), aa)
    cv2.line(canvas, elbow, hand, look.shirt if look.long_sleeves else look.skin, thickness(0.055 * p * b), aa)
    cv2.circle(canvas, hand, thickness(0.028 * p), look.skin, -1, aa)
    if look.bag == "backpack":
        cv2.line(canvas, pt(-0.06 * p * b, shoulder_y), pt(-0.04 * p * b, top + 0.36 * p), look.bag_colour, 2, aa)
    elif look.bag == "handbag":
        bag_top = top + 0.44 * p
        bx, by = hand
        cv2.line(canvas, pt(0.05 * p, shoulder_y), (bx, int(bag_top)), look.bag_colour, thickness(0.015 * p), aa)
        cv2.rectangle(
            canvas, (bx - int(0.06 * p), int(bag_top)), (bx + int(0.06 * p), int(bag_top + 0.11 * p)),
            look.bag_colour, -1, aa,
        )  # fmt: skip


@dataclass(frozen=True)
class Occlusion:
    """An occluder passing in front of the person over frames [start, stop) of a tracklet."""

    kind: str
    start: int
    stop: int
    colour: tuple[int, int, int]
    direction: int
    person: Appearance | None


def random_occlusion(rng: np.random.Generator, num_frames: int) -> Occlusion:
    """An occluder that covers the person during a contiguous 30-70% of the tracklet."""
    length = max(1, int(round(num_frames * rng.uniform(0.3, 0.7))))
    start = int(rng.integers(0, num_frames - length + 1))
    kind = str(_pick(rng, OCCLUDERS))
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
    aa = cv2.LINE_AA
    if occlusion.kind == "pole":
        half = 0.09 * width
        cv2.rectangle(canvas, (int(centre - half), 0), (int(centre + half), height), occlusion.colour, -1, aa)
        cv2.line(canvas, (int(centre - half * 0.4), 0), (int(centre - half * 0.4), height), (235, 235, 235), 1, aa)
    elif occlusion.kind == "car":
        car_top = int(height * 0.6)
        x0, x1 = int(centre - 0.55 * width), int(centre + 0.55 * width)
        cv2.rectangle(canvas, (x0, car_top), (x1, height), occlusion.colour, -1, aa)
        window = ((x0 + width // 10, car_top + 4), (x1 - width // 10, car_top + height // 12))
        cv2.rectangle(canvas, *window, (40, 50, 60), -1)
        for wheel_x in (x0 + width // 5, x1 - width // 5):
            cv2.circle(canvas, (wheel_x, height - 2), width // 9, (15, 15, 15), -1, aa)
    else:
        assert occlusion.person is not None
        # A passer-by slightly closer to the camera than the person, so a bit taller.
        passer_height = body_height * 1.12
        draw_person(canvas, occlusion.person, centre, height * 1.03, passer_height, 6.0 * progress, occlusion.direction)


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


def render_tracklet(
    look: Appearance | None,
    camera: Camera,
    num_frames: int,
    height: int,
    width: int,
    rng: np.random.Generator,
    junk: bool = False,
) -> list[np.ndarray]:
    """The frames (RGB uint8, height x width) of one tracklet; ``junk`` renders a bad detection instead."""
    supersample = 2
    canvas_h, canvas_w = height * supersample, width * supersample
    background = render_background(camera, canvas_h, canvas_w, rng)
    facing = 1 if rng.random() < 0.5 else -1
    gait_speed = rng.uniform(0.5, 0.9)
    phase0 = rng.uniform(0, 2 * np.pi)
    brightness = rng.uniform(0.9, 1.1)
    occlusion = random_occlusion(rng, num_frames) if rng.random() < 0.45 else None
    blurry = rng.random() < 0.35
    body_height = canvas_h * 0.92 * camera.scale
    centre = canvas_w * (0.5 + camera.offset)
    if junk:  # a detector firing on the background or on a fragment of someone
        look = random_appearance(rng) if rng.random() < 0.6 else None
        centre += canvas_w * rng.choice([-0.5, 0.5])
        body_height *= rng.uniform(1.2, 1.8)
    frames = []
    for index in range(num_frames):
        canvas = background.copy()
        jitter_x, jitter_y = rng.normal(0, 0.02 * canvas_w), rng.normal(0, 0.012 * canvas_h)
        jitter_scale = 1.0 + rng.normal(0, 0.02)
        if look is not None:
            draw_person(
                canvas, look, centre + jitter_x, canvas_h * 0.975 + jitter_y, body_height * jitter_scale,
                phase0 + gait_speed * index, facing,
            )  # fmt: skip
        if occlusion is not None and occlusion.start <= index < occlusion.stop:
            progress = (index - occlusion.start + 0.5) / (occlusion.stop - occlusion.start)
            draw_occluder(canvas, occlusion, progress, body_height)
        image = apply_camera(canvas, camera, brightness)
        if blurry and rng.random() < 0.5:
            image = motion_blur(image, int(rng.integers(5, 13)), float(rng.uniform(-20, 20)))
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        noise = rng.normal(0, 3.0, size=image.shape)
        frames.append(np.clip(image + noise, 0, 255).astype(np.uint8))
    return frames


@dataclass(frozen=True)
class SyntheticSpec:
    """The parameters of a generated benchmark (stored in ``synthetic_meta.json``)."""

    num_identities: int = 80
    tracklets_per_camera: int = 2
    num_cameras: int = 3
    frames_per_tracklet: tuple[int, int] = (8, 24)
    height: int = 128
    width: int = 64
    seed: int = 0
    twin_fraction: float = 0.2
    num_junk: int = 4
    num_distractors: int = 6
    format_version: int = FORMAT_VERSION


def _mars_name(folder: str, camera: int, tracklet: int, frame: int) -> str:
    return f"{folder}C{camera + 1}T{tracklet:04d}F{frame:03d}.jpg"


def generate_synthetic(
    root: str | Path,
    num_identities: int = 80,
    tracklets_per_camera: int = 2,
    num_cameras: int = 3,
    frames_per_tracklet: tuple[int, int] = (8, 24),
    height: int = 128,
    width: int = 64,
    seed: int = 0,
    twin_fraction: float = 0.2,
    num_junk: int = 4,
    num_distractors: int = 6,
    overwrite: bool = False,
) -> Path:
    """Render the benchmark into ``root`` in the MARS layout and return ``root``.

    Identities are split in halves: train and test. Every identity is seen by 2..num_cameras cameras with
    ``tracklets_per_camera`` tracklets each; one query per test identity (one of its tracklets, random
    camera); the gallery is all test tracks, as in MARS. If ``root`` already holds a benchmark with the same
    parameters it is reused; a different one is replaced only with ``overwrite`` (or if it was generated
    here, i.e. has ``synthetic_meta.json``); a non-empty folder of anything else is never touched.

    Args:
        root: output folder.
        num_identities: identities in all (train + test), at least 4.
        tracklets_per_camera: tracklets per identity and camera.
        num_cameras: cameras, at least 2.
        frames_per_tracklet: inclusive (min, max) tracklet length (max at most 999).
        height: frame height in pixels.
        width: frame width in pixels.
        seed: everything random follows from it.
        twin_fraction: share of identities that copy another identity except one small detail.
        num_junk: junk tracks (pid -1) in the test set.
        num_distractors: distractor tracks (pid 0) in the test set.
        overwrite: replace a folder holding a benchmark with other parameters.
    """
    root = Path(root)
    low, high = frames_per_tracklet
    if num_identities < 4 or num_cameras < 2 or tracklets_per_camera < 1 or not 1 <= low <= high <= 999:
        raise ValueError("need >= 4 identities, >= 2 cameras, >= 1 tracklet per camera, 1 <= min <= max <= 999 frames")
    spec = SyntheticSpec(
        num_identities, tracklets_per_camera, num_cameras, (int(low), int(high)), height, width, seed,
        twin_fraction, num_junk, num_distractors,
    )  # fmt: skip
    spec_dict = json.loads(json.dumps(asdict(spec)))
    meta_path = root / META_FILE
    if meta_path.is_file():
        if json.loads(meta_path.read_text())["spec"] == spec_dict:
            log.info("synthetic benchmark with these parameters already in %s: reusing it", root)
            return root
        log.info("replacing the synthetic benchmark in %s (different parameters)", root)
        for sub in ("bbox_train", "bbox_test", "info", META_FILE):
            target = root / sub
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    elif root.exists() and any(root.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{root} is not empty and holds no {META_FILE}; choose an empty folder")
        for sub in ("bbox_train", "bbox_test", "info"):
            shutil.rmtree(root / sub, ignore_errors=True)

    rng = np.random.default_rng(seed)
    cameras = [random_camera(rng) for _ in range(num_cameras)]
    looks: list[Appearance] = []
    twin_of: dict[int, int] = {}
    for identity in range(num_identities):
        if identity > 0 and rng.random() < twin_fraction:
            original = int(rng.integers(identity))
            looks.append(near_twin(rng, looks[original]))
            twin_of[identity + 1] = original + 1
        else:
            looks.append(random_appearance(rng))
    order = rng.permutation(num_identities)
    train_pids = sorted(int(i) + 1 for i in order[: num_identities // 2])
    test_pids = sorted(int(i) + 1 for i in order[num_identities // 2 :])

    # (folder, pid, camera, tracklet number, appearance, junk) for every track, in name-list order.
    def tracks_of(pids: list[int]) -> list[tuple]:
        tracks = []
        for pid in pids:
            num_seen = int(rng.integers(2, num_cameras + 1))
            seen_by = sorted(rng.choice(num_cameras, size=num_seen, replace=False).tolist())
            for camera in seen_by:
                for number in range(1, tracklets_per_camera + 1):
                    tracks.append((f"{pid:04d}", pid, camera, number, looks[pid - 1], False))
        return tracks

    train_tracks = tracks_of(train_pids)
    test_tracks = tracks_of(test_pids)
    # Queries: one tracklet of each test identity, in a random camera it was seen by.
    query_rows = []
    for pid in test_pids:
        rows = [i for i, track in enumerate(test_tracks) if track[1] == pid]
        query_rows.append(int(rng.choice(rows)))
    for number in range(1, num_distractors + 1):
        test_tracks.append(("0000", 0, int(rng.integers(num_cameras)), number, random_appearance(rng), False))
    for number in range(1, num_junk + 1):
        test_tracks.append(("00-1", -1, int(rng.integers(num_cameras)), number, None, True))

    info = root / "info"
    info.mkdir(parents=True, exist_ok=True)
    for subset, tracks, list_name, variable, mat_name in (
        ("bbox_train", train_tracks, "train_name.txt", "track_train_info", "tracks_train_info.mat"),
        ("bbox_test", test_tracks, "test_name.txt", "track_test_info", "tracks_test_info.mat"),
    ):
        names: list[str] = []
        table = []
        for folder, pid, camera, number, look, junk in tracks:
            track_seed = [seed, 1 + (subset == "bbox_test"), pid + 2, camera, number]
            track_rng = np.random.default_rng(track_seed)
            num_frames = int(track_rng.integers(low, high + 1))
            frames = render_tracklet(look, cameras[camera], num_frames, height, width, track_rng, junk=junk)
            out_dir = root / subset / folder
            out_dir.mkdir(parents=True, exist_ok=True)
            start = len(names) + 1
            for frame_index, frame in enumerate(frames, start=1):
                name = _mars_name(folder, camera, number, frame_index)
                cv2.imwrite(str(out_dir / name), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
                names.append(name)
            table.append([start, len(names), pid, camera + 1])
        (info / list_name).write_text("\n".join(names) + "\n", encoding="utf-8")
        savemat(str(info / mat_name), {variable: np.asarray(table, dtype=np.float64)})
    savemat(str(info / "query_IDX.mat"), {"query_IDX": np.asarray(query_rows, dtype=np.float64) + 1})

    meta = {
        "spec": spec_dict,
        "train_pids": train_pids,
        "test_pids": test_pids,
        "near_twins": {str(k): v for k, v in twin_of.items()},
        "cameras": [asdict(c) for c in cameras],
        "num_train_tracks": len(train_tracks),
        "num_test_tracks": len(test_tracks),
        "num_queries": len(query_rows),
    }
    meta_path.write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    log.info(
        "synthetic benchmark written to %s: %d train / %d test identities, %d train / %d test tracks, %d queries",
        root, len(train_pids), len(test_pids), len(train_tracks), len(test_tracks), len(query_rows),
    )  # fmt: skip
    return root


def main(argv: list[str] | None = None) -> None:
    """Command line: generate the synthetic benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="data/synthetic", help="output folder (MARS layout)")
    parser.add_argument("--identities", type=int, default=80, help="identities, half train and half test")
    parser.add_argument("--cameras", type=int, default=3)
    parser.add_argument("--tracklets-per-camera", type=int, default=2)
    parser.add_argument("--min-frames", type=int, default=8)
    parser.add_argument("--max-frames", type=int, default=24)
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    root = generate_synthetic(
        args.root, num_identities=args.identities, tracklets_per_camera=args.tracklets_per_camera,
        num_cameras=args.cameras, frames_per_tracklet=(args.min_frames, args.max_frames), height=args.height,
        width=args.width, seed=args.seed, overwrite=args.overwrite,
    )  # fmt: skip
    print(f"synthetic benchmark ready in {root}")


if __name__ == "__main__":
    main()
