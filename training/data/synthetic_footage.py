"""Synthetic fixed-camera footage with ground truth, for the footage pipeline (detect, track, cut, search).

Full frames (768x576 by default) from two or more fixed cameras that differ in background, lighting (gain,
contrast, colour cast, and a slow brightness drift over time) and viewpoint (horizon height, perspective:
how people's height in pixels grows towards the bottom of the frame). The same identities walk through
every camera, at different times. People are 60 to 200 px tall (at 576 rows; proportionally smaller for
smaller frames), enter and leave through the frame edges, cross and occlude one another, some walk in
groups side by side, some stop for a few seconds, each casts a soft shadow on the floor, and one camera has a
pole in front of the scene (occluding people as in PETS09's lamp post). Pedestrians are the ones of the
synthetic reID benchmark (:mod:`training.data.pedestrian`).

Layout written under ``OUT``::

    OUT/footage_meta.json               the spec and, per camera, what was rendered
    OUT/identities.csv                  camera,track_id,identity (the identity map across cameras)
    OUT/<camera>/video.mp4              mp4v (or MJPG .avi with --codec MJPG)
    OUT/<camera>/seqinfo.ini            MOTChallenge sequence info
    OUT/<camera>/gt/gt.txt              MOTChallenge ground truth: frame,id,x,y,w,h,1,1,visibility

Ground-truth boxes are the full extent of each person (also where occluded), clipped to the frame;
``visibility`` is the share of the person's pixels that are visible (not behind someone in front, the
pole or the frame edge). Track ids are the identity numbers, so the same id in two cameras is the same
person. Command line: ``python -m training synthetic-footage --out DIR [--preset small]``.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from training.data.pedestrian import Appearance, random_appearance, render_person
from training.data.synthetic_scene import random_camera, render_background

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FootageSpec:
    """What to render (stored in footage_meta.json)."""

    width: int = 768
    height: int = 576
    fps: float = 10.0
    seconds: float = 40.0
    num_cameras: int = 2
    num_identities: int = 14
    group_fraction: float = 0.3
    """Share of identities walking in a group of 2-3."""
    stop_fraction: float = 0.2
    """Share of walks with a pause of a few seconds in the middle."""
    min_height: float = 60.0
    max_height: float = 200.0
    """Person heights in pixels at 576 rows (scaled with the frame height)."""
    seed: int = 0
    codec: str = "mp4v"


PRESETS = {
    "default": FootageSpec(),
    "small": FootageSpec(width=384, height=288, seconds=8.0, num_identities=5, group_fraction=0.4, stop_fraction=0.0),
}


@dataclass(frozen=True)
class Walk:
    """One appearance of one identity in one camera: a path from outside the frame to outside the frame."""

    identity: int
    start: float
    """Seconds from the start of the footage."""
    x0: float
    x1: float
    """Start and end x of the feet (pixels; outside the frame)."""
    feet0: float
    feet1: float
    """Start and end y of the feet."""
    speed: float
    """Body heights per second."""
    stop_at: float
    """Fraction of the path where the person pauses (negative: never)."""
    stop_s: float
    lateral: float
    """Offset from the group's path in body heights (0 for people walking alone)."""


@dataclass(frozen=True)
class Scene:
    """One camera: background, lighting and perspective."""

    name: str
    background: np.ndarray
    horizon: int
    near_height: float
    far_height: float
    gain: float
    contrast: float
    cast: tuple[float, float, float]
    drift: float
    """Amplitude of the slow brightness drift (fraction)."""
    pole_x: float | None


def person_height(scene: Scene, feet_y: float, frame_height: int) -> float:
    """Body height in pixels of a person whose feet are at ``feet_y`` (linear perspective)."""
    t = np.clip((feet_y - scene.horizon) / max(frame_height - scene.horizon, 1), 0.0, 1.0)
    return float(scene.far_height + t * (scene.near_height - scene.far_height))


def make_scene(spec: FootageSpec, index: int, rng: np.random.Generator) -> Scene:
    camera = random_camera(rng)
    backgrounds = ("tiles", "panels", "bricks", "gradient")
    camera = replace(camera, background=backgrounds[index % len(backgrounds)])
    probe = copy.deepcopy(rng)  # render_background draws the horizon first: read it from a copy
    horizon = int(spec.height * probe.uniform(0.55, 0.7))
    background = render_background(camera, spec.height, spec.width, rng)
    # A few static objects (doors, benches, bins) so the background is not plain texture.
    for _ in range(int(rng.integers(3, 7))):
        w, h = int(rng.uniform(0.04, 0.12) * spec.width), int(rng.uniform(0.05, 0.25) * spec.height)
        x, y = int(rng.uniform(0, spec.width - w)), int(rng.uniform(0.1 * spec.height, horizon))
        colour = tuple(int(v) for v in rng.integers(30, 220, 3))
        cv2.rectangle(background, (x, y - h), (x + w, y), colour, -1)
    scale = spec.height / 576.0
    near = spec.max_height * scale * rng.uniform(0.85, 1.0)
    far = spec.min_height * scale * rng.uniform(1.0, 1.2)
    return Scene(
        name=f"cam_{chr(ord('a') + index)}",
        background=background,
        horizon=horizon,
        near_height=float(near),
        far_height=float(far),
        gain=camera.gain,
        contrast=camera.contrast,
        cast=camera.cast,
        drift=float(rng.uniform(0.03, 0.08)),
        pole_x=float(rng.uniform(0.3, 0.7) * spec.width) if index % 2 == 0 else None,
    )


def plan_walks(spec: FootageSpec, scene: Scene, identities: list[int], groups: list[list[int]], rng) -> list[Walk]:
    """Every identity once in this camera: groups share a path; starts spread over the footage."""
    units = [[i] for i in identities if not any(i in g for g in groups)] + [list(g) for g in groups]
    order = rng.permutation(len(units))
    latest = max(spec.seconds * 0.7, 1.0)
    walks = []
    for slot, unit_index in enumerate(order):
        unit = units[int(unit_index)]
        start = latest * slot / max(len(units), 1) + rng.uniform(0, 0.3 * latest / max(len(units), 1))
        # Crossing pairs: every other unit walks the opposite way at a similar depth.
        direction = 1 if slot % 2 == 0 else -1
        floor_top = scene.horizon + 0.1 * (spec.height - scene.horizon)
        feet0 = rng.uniform(floor_top, spec.height * 0.97)
        feet1 = float(np.clip(feet0 + rng.normal(0, 0.08 * spec.height), floor_top, spec.height * 0.97))
        margin = 0.5 * scene.near_height
        x0, x1 = (-margin, spec.width + margin) if direction > 0 else (spec.width + margin, -margin)
        speed = rng.uniform(0.6, 0.9)
        stop_at = rng.uniform(0.3, 0.7) if rng.random() < spec.stop_fraction else -1.0
        for position, identity in enumerate(unit):
            lateral = 0.0 if len(unit) == 1 else (position - (len(unit) - 1) / 2) * 0.38
            walks.append(
                Walk(identity, float(start), x0, x1, float(feet0), float(feet1), float(speed), float(stop_at),
                     float(rng.uniform(2.0, 4.0)), lateral + float(rng.normal(0, 0.03)) * (len(unit) > 1))
            )  # fmt: skip
    return walks


def walk_position(walk: Walk, scene: Scene, spec: FootageSpec, t: float) -> tuple[float, float, float, float] | None:
    """(x, feet_y, body height, distance walked in body heights) at time ``t``, or None when off stage."""
    elapsed = t - walk.start
    if elapsed < 0:
        return None
    mid_h = person_height(scene, 0.5 * (walk.feet0 + walk.feet1), spec.height)
    length = np.hypot(walk.x1 - walk.x0, walk.feet1 - walk.feet0) / mid_h  # in body heights
    duration = length / walk.speed
    if walk.stop_at >= 0:
        stop_start = walk.stop_at * duration
        if elapsed > stop_start:
            elapsed = max(stop_start, elapsed - walk.stop_s)
        if t - walk.start > duration + walk.stop_s:
            return None
    elif elapsed > duration:
        return None
    fraction = elapsed / duration
    x = walk.x0 + fraction * (walk.x1 - walk.x0)
    feet = walk.feet0 + fraction * (walk.feet1 - walk.feet0)
    height = person_height(scene, feet, spec.height)
    # Walking side by side: offset along the depth direction (a little lower and higher in the frame).
    feet += walk.lateral * 0.35 * height
    x += walk.lateral * 0.6 * height * np.sign(walk.x1 - walk.x0)
    height = person_height(scene, feet, spec.height)
    return float(x), float(feet), float(height), float(elapsed * walk.speed)


def render_sprite(
    look: Appearance, height: float, phase: float, facing: int
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """The person alone: RGB (h, w, 3) float32, alpha (h, w) float32, and the feet's (x, y) in the sprite."""
    person = render_person(look, height, phase, facing)
    h, w = person.alpha.shape
    return person.rgb.astype(np.float32), person.alpha, w // 2, int(round(h - 1 - 0.012 * height))


def _cast_shadow(frame: np.ndarray, centre_x: float, feet: float, height: float) -> None:
    """Darken a soft ellipse on the floor (drawn in a patch around it, not over the whole frame)."""
    rx, ry, blur = int(0.3 * height), int(0.05 * height), max(1.0, 0.02 * height)
    margin = int(3 * blur) + 2
    x0, y0 = int(centre_x) - rx - margin, int(feet) - ry - margin
    x1, y1 = int(centre_x) + rx + margin + 1, int(feet) + ry + margin + 1
    fx0, fy0, fx1, fy1 = max(x0, 0), max(y0, 0), min(x1, frame.shape[1]), min(y1, frame.shape[0])
    if fx1 <= fx0 or fy1 <= fy0:
        return
    shadow = np.zeros((y1 - y0, x1 - x0), np.float32)
    cv2.ellipse(shadow, (int(centre_x) - x0, int(feet) - y0), (rx, ry), 0, 0, 360, 1.0, -1)
    shadow = cv2.GaussianBlur(shadow, (0, 0), blur)[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0]
    frame[fy0:fy1, fx0:fx1] *= 1.0 - 0.35 * shadow[..., None]


def _paste(frame: np.ndarray, labels: np.ndarray, label: int, rgb, alpha, left: int, top: int) -> tuple | None:
    """Alpha-composite a sprite at (left, top); returns the frame-clipped box (x1, y1, x2, y2) of its
    pixels and their count, or None if none lands in the frame."""
    h, w = alpha.shape
    fy0, fx0 = max(top, 0), max(left, 0)
    fy1, fx1 = min(top + h, frame.shape[0]), min(left + w, frame.shape[1])
    ys, xs = np.nonzero(alpha > 0.5)
    total = len(ys)
    if fy1 <= fy0 or fx1 <= fx0 or total == 0:
        return None
    sa = alpha[fy0 - top : fy1 - top, fx0 - left : fx1 - left, None]
    region = frame[fy0:fy1, fx0:fx1]
    region[:] = sa * rgb[fy0 - top : fy1 - top, fx0 - left : fx1 - left] + (1 - sa) * region
    labels[fy0:fy1, fx0:fx1][sa[..., 0] > 0.5] = label
    x1, x2 = xs.min() + left, xs.max() + 1 + left
    y1, y2 = ys.min() + top, ys.max() + 1 + top
    return (max(x1, 0), max(y1, 0), min(x2, frame.shape[1]), min(y2, frame.shape[0])), total


def render_camera(spec: FootageSpec, scene: Scene, walks: list[Walk], looks: dict[int, Appearance], out: Path, rng):
    """Write one camera's video and MOT ground truth; returns the number of ground-truth boxes."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "gt").mkdir(exist_ok=True)
    suffix = ".avi" if spec.codec.upper() == "MJPG" else ".mp4"
    video_path = out / f"video{suffix}"
    writer = cv2.VideoWriter(str(video_path), cv2.VideoWriter_fourcc(*spec.codec), spec.fps, (spec.width, spec.height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {spec.codec} video to {video_path}")
    num_frames = int(round(spec.seconds * spec.fps))
    rows = []
    background = scene.background.astype(np.float32)
    phases = {w.identity: float(rng.uniform(0, 2 * np.pi)) for w in walks}
    try:
        for index in range(num_frames):
            t = index / spec.fps
            frame = background.copy()
            labels = np.zeros((spec.height, spec.width), np.int32)
            placed = []
            for walk in walks:
                position = walk_position(walk, scene, spec, t)
                if position is not None:
                    placed.append((position, walk))
            placed.sort(key=lambda item: item[0][1])  # far (small feet y) first
            boxes = {}
            for (x, feet, height, walked), walk in placed:
                # Shadow: a soft dark ellipse on the floor, cast to one side (part of the background, not the box).
                _cast_shadow(frame, x + 0.25 * height, feet, height)
                facing = 1 if walk.x1 > walk.x0 else -1
                phase = phases[walk.identity] + walked * 2 * np.pi / 0.75
                rgb, alpha, fx, fy = render_sprite(looks[walk.identity], height, phase, facing)
                pasted = _paste(frame, labels, walk.identity, rgb, alpha, int(round(x)) - fx, int(round(feet)) - fy)
                if pasted is not None:
                    boxes[walk.identity] = pasted
            if scene.pole_x is not None:
                px, half = int(scene.pole_x), max(2, int(0.012 * spec.width))
                frame[: int(0.93 * spec.height), px - half : px + half] = (90, 95, 100)
                labels[: int(0.93 * spec.height), px - half : px + half] = 0
            for identity, (box, total) in boxes.items():
                visible = int(np.count_nonzero(labels[box[1] : box[3], box[0] : box[2]] == identity))
                x1, y1, x2, y2 = box
                if x2 - x1 < 2 or y2 - y1 < 2:
                    continue
                rows.append((index + 1, identity, x1, y1, x2 - x1, y2 - y1, round(visible / total, 3)))
            # Lighting: camera gain / contrast / cast and a slow drift of the brightness.
            brightness = 1.0 + scene.drift * np.sin(2 * np.pi * t / 25.0)
            lit = ((frame - 128.0) * scene.contrast + 128.0) * (scene.gain * brightness) * np.asarray(scene.cast)
            lit += rng.normal(0, 2.5, size=(spec.height, spec.width, 1))
            image = np.clip(lit, 0, 255).astype(np.uint8)
            writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    rows.sort()
    with open(out / "gt" / "gt.txt", "w", encoding="utf-8") as handle:
        for frame_no, identity, x, y, w, h, visibility in rows:
            handle.write(f"{frame_no},{identity},{x},{y},{w},{h},1,1,{visibility}\n")
    (out / "seqinfo.ini").write_text(
        f"[Sequence]\nname={scene.name}\nimDir=img1\nframeRate={spec.fps:g}\nseqLength={num_frames}\n"
        f"imWidth={spec.width}\nimHeight={spec.height}\nimExt=.jpg\n",
        encoding="utf-8",
    )
    return len(rows), video_path


def generate_footage(out: str | Path, spec: FootageSpec = PRESETS["default"]) -> Path:
    """Render every camera of ``spec`` into ``out`` (see the module docstring) and return ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(spec.seed)
    identities = list(range(1, spec.num_identities + 1))
    looks = {i: random_appearance(rng) for i in identities}
    # Groups of 2-3, the same in every camera (people who walk together keep doing so).
    groups: list[list[int]] = []
    pool = list(rng.permutation(identities))
    grouped = int(round(spec.group_fraction * len(identities)))
    while grouped >= 2 and len(pool) >= 2:
        size = 3 if grouped >= 3 and rng.random() < 0.3 and len(pool) >= 3 else 2
        groups.append([int(pool.pop()) for _ in range(size)])
        grouped -= size
    meta = {"spec": asdict(spec), "groups": groups, "cameras": {}}
    identity_rows = []
    for index in range(spec.num_cameras):
        scene = make_scene(spec, index, rng)
        walks = plan_walks(spec, scene, identities, groups, rng)
        count, video = render_camera(spec, scene, walks, looks, out / scene.name, rng)
        meta["cameras"][scene.name] = {
            "video": str(video.relative_to(out)),
            "gt": f"{scene.name}/gt/gt.txt",
            "boxes": count,
            "horizon": scene.horizon,
            "person_height": [scene.far_height, scene.near_height],
            "pole": scene.pole_x is not None,
        }
        seen = sorted({w.identity for w in walks})
        identity_rows += [(scene.name, i, i) for i in seen]
        log.info(
            "%s: %d frames, %d people, %d ground-truth boxes",
            scene.name,
            int(spec.seconds * spec.fps),
            len(seen),
            count,
        )
    with open(out / "identities.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["camera", "track_id", "identity"])
        writer.writerows(identity_rows)
    (out / "footage_meta.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> None:
    """Command line: render synthetic footage with MOTChallenge ground truth."""
    parser = argparse.ArgumentParser(prog="python -m training synthetic-footage", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default")
    parser.add_argument("--seconds", type=float, help="footage length per camera")
    parser.add_argument("--identities", type=int)
    parser.add_argument("--cameras", type=int)
    parser.add_argument("--fps", type=float)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--codec", choices=("mp4v", "MJPG"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    spec = PRESETS[args.preset]
    changes = {
        "seconds": args.seconds, "num_identities": args.identities, "num_cameras": args.cameras, "fps": args.fps,
        "seed": args.seed, "codec": args.codec,
    }  # fmt: skip
    spec = replace(spec, **{k: v for k, v in changes.items() if v is not None})
    if spec.num_cameras < 2 or spec.num_identities < 1:
        raise SystemExit("error: need at least 2 cameras and 1 identity")
    out = generate_footage(args.out, spec)
    print(f"synthetic footage ready in {out}")


if __name__ == "__main__":
    main()
