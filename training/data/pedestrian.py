"""Procedural pedestrians: what an identity looks like (:class:`Appearance`) and how it is drawn walking.

Clothing colours and patterns (plain, stripes, checks), short or long sleeves, trousers or shorts, shoes,
hair, bags, body height and build. :func:`near_twin` copies an identity except one small detail, as in the
paper's Figure 1. Used by the synthetic benchmark (:mod:`training.data.synthetic`) and reusable by anything
else that needs people on a picture: :func:`draw_person` paints onto a canvas, :func:`render_person` returns
a person alone with its alpha mask, to paste anywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import NamedTuple

import cv2
import numpy as np

Colour = tuple[int, int, int]

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

#: Anti-aliased OpenCV strokes.
SMOOTH = cv2.LINE_AA


@dataclass(frozen=True)
class Appearance:
    """Everything that makes one identity look like itself (RGB colours, sizes relative to body height)."""

    skin: Colour
    hair: Colour
    long_hair: bool
    shirt: Colour
    shirt_second: Colour
    pattern: str
    pattern_period: float
    long_sleeves: bool
    trousers: Colour
    shorts: bool
    shoes: Colour
    bag: str
    bag_colour: Colour
    height_scale: float
    build: float


def jitter_colour(rng: np.random.Generator, colour: Colour, amount: int) -> Colour:
    """``colour`` with each channel moved by up to ``amount``."""
    return tuple(int(np.clip(channel + rng.integers(-amount, amount + 1), 0, 255)) for channel in colour)


def pick(rng: np.random.Generator, options: tuple) -> object:
    """One of ``options``, uniformly."""
    return options[int(rng.integers(len(options)))]


def colours_far_from(palette: tuple, colour: Colour, threshold: int) -> tuple:
    """The palette entries differing from ``colour`` by more than ``threshold`` in some channel."""
    return tuple(entry for entry in palette if max(abs(a - b) for a, b in zip(entry, colour, strict=True)) > threshold)


def random_appearance(rng: np.random.Generator) -> Appearance:
    """A random person."""
    shirt = jitter_colour(rng, pick(rng, CLOTHING_COLOURS), 18)
    return Appearance(
        skin=jitter_colour(rng, pick(rng, SKIN_TONES), 10),
        hair=jitter_colour(rng, pick(rng, HAIR_COLOURS), 10),
        long_hair=bool(rng.random() < 0.35),
        shirt=shirt,
        shirt_second=jitter_colour(rng, pick(rng, CLOTHING_COLOURS), 18),
        pattern=str(pick(rng, PATTERNS)),
        pattern_period=float(rng.uniform(0.035, 0.06)),
        long_sleeves=bool(rng.random() < 0.6),
        trousers=jitter_colour(rng, pick(rng, CLOTHING_COLOURS), 18),
        shorts=bool(rng.random() < 0.2),
        shoes=jitter_colour(rng, pick(rng, SHOE_COLOURS), 10),
        bag=str(pick(rng, BAGS)),
        bag_colour=jitter_colour(rng, pick(rng, CLOTHING_COLOURS), 18),
        height_scale=float(rng.uniform(0.84, 1.0)),
        build=float(rng.uniform(0.95, 1.35)),
    )


def near_twin(rng: np.random.Generator, original: Appearance) -> Appearance:
    """A copy of ``original`` that differs in one small detail (shoe, bag or hair colour)."""
    detail = str(pick(rng, ("shoes", "shoes", "bag", "hair")))
    if detail == "bag" and original.bag == "none":
        detail = "shoes"
    if detail == "shoes":
        return replace(original, shoes=pick(rng, colours_far_from(SHOE_COLOURS, original.shoes, 60)))
    if detail == "bag":
        return replace(original, bag_colour=pick(rng, colours_far_from(CLOTHING_COLOURS, original.bag_colour, 80)))
    return replace(original, hair=pick(rng, colours_far_from(HAIR_COLOURS, original.hair, 50)))


def fill_shirt(canvas: np.ndarray, mask: np.ndarray, look: Appearance, stature: float, top: float) -> None:
    """Paint the shirt colour and pattern where ``mask`` is set (stripe period relative to ``stature``)."""
    canvas[mask] = look.shirt
    if look.pattern == "plain":
        return
    period = max(2.0, look.pattern_period * stature)
    rows, columns = np.nonzero(mask)
    horizontal = ((rows - top) // period) % 2 == 1
    vertical = (columns // period) % 2 == 1
    second = {"hstripes": horizontal, "vstripes": vertical, "checks": horizontal ^ vertical}[look.pattern]
    canvas[rows[second], columns[second]] = look.shirt_second


def draw_person(
    canvas: np.ndarray, look: Appearance, centre_x: float, feet_y: float, body_height: float, phase: float, facing: int
) -> None:
    """Draw a walking pedestrian on ``canvas`` (RGB uint8, modified in place), seen from a three-quarter side.

    ``body_height`` is the height in pixels of the tallest people (this one is ``look.height_scale`` of it);
    ``phase`` is the gait phase in radians; ``facing`` is +1 (walking right) or -1 (walking left).
    """
    stature = body_height * look.height_scale  # this person's height in pixels
    top = feet_y - stature
    build = look.build

    def at(dx: float, y: float) -> tuple[int, int]:
        """Canvas point ``dx`` pixels ahead of the body's axis (in the walking direction), at height ``y``."""
        return int(round(centre_x + facing * dx)), int(round(y))

    def thickness(value: float) -> int:
        return max(1, int(round(value)))

    swing = np.sin(phase)
    hip_y, shoulder_y, thigh_length = top + 0.52 * stature, top + 0.17 * stature, 0.24 * stature
    leg_width = 0.085 * stature * build
    lower_leg_colour = look.skin if look.shorts else look.trousers

    # Back leg and back arm first, so the front ones cover them.
    for side, sign in ((-1, -1.0), (1, 1.0)):
        foot_dx = sign * 0.11 * stature * swing
        hip = at(side * 0.035 * stature * build, hip_y)
        knee = at(0.55 * foot_dx + 0.01 * stature, hip_y + thigh_length)
        foot = at(foot_dx, feet_y - 0.03 * stature)
        cv2.line(canvas, hip, knee, look.trousers, thickness(leg_width), SMOOTH)
        cv2.line(canvas, knee, foot, lower_leg_colour, thickness(leg_width * 0.9), SMOOTH)
        shoe_centre = at(foot_dx + 0.03 * stature, feet_y - 0.018 * stature)
        shoe_axes = (thickness(0.055 * stature), thickness(0.026 * stature))
        cv2.ellipse(canvas, shoe_centre, shoe_axes, 0, 0, 360, look.shoes, -1, SMOOTH)
        if side == -1:
            hand = at(-0.09 * stature * swing, top + 0.5 * stature)
            cv2.line(canvas, at(0, shoulder_y + 0.02 * stature), hand, look.shirt, thickness(0.06 * stature * build),
                     SMOOTH)

    if look.bag == "backpack":
        x0, y0 = at(-0.2 * stature * build, shoulder_y + 0.01 * stature)
        x1, y1 = at(-0.07 * stature * build, top + 0.43 * stature)
        cv2.rectangle(canvas, (min(x0, x1), y0), (max(x0, x1), y1), look.bag_colour, -1, SMOOTH)

    # Torso: a tapered polygon filled with the shirt pattern.
    torso = np.array(
        [
            at(-0.13 * stature * build, shoulder_y),
            at(0.13 * stature * build, shoulder_y),
            at(0.11 * stature * build, hip_y),
            at(-0.11 * stature * build, hip_y),
        ],
        dtype=np.int32,
    )
    torso_mask = np.zeros(canvas.shape[:2], np.uint8)
    cv2.fillConvexPoly(torso_mask, torso, 1, SMOOTH)
    fill_shirt(canvas, torso_mask.astype(bool), look, stature, shoulder_y)

    # Head, hair, front arm (sleeve, then forearm in skin unless long sleeves), bag straps.
    head_radius = 0.062 * stature
    head_centre = at(0.01 * stature, top + 0.08 * stature)
    if look.long_hair:
        hair_x0, hair_y0 = at(-0.07 * stature, top + 0.06 * stature)
        hair_x1, hair_y1 = at(0.0, top + 0.25 * stature)
        cv2.rectangle(canvas, (min(hair_x0, hair_x1), hair_y0), (max(hair_x0, hair_x1), hair_y1), look.hair, -1,
                      SMOOTH)
    neck_top, neck_bottom = at(0.01 * stature, top + 0.13 * stature), at(0.01 * stature, shoulder_y + 0.02 * stature)
    cv2.line(canvas, neck_top, neck_bottom, look.skin, thickness(0.05 * stature))
    cv2.circle(canvas, head_centre, thickness(head_radius), look.skin, -1, SMOOTH)
    hair_axes = (thickness(head_radius * 1.05), thickness(head_radius * 0.75))
    cv2.ellipse(canvas, at(-0.004 * stature, top + 0.065 * stature), hair_axes, 0, 180, 360, look.hair, -1, SMOOTH)
    shoulder = at(0.02 * stature, shoulder_y + 0.02 * stature)
    elbow = at(0.02 * stature + 0.06 * stature * swing, top + 0.35 * stature)
    hand = at(0.02 * stature + 0.10 * stature * swing, top + 0.5 * stature)
    forearm_colour = look.shirt if look.long_sleeves else look.skin
    cv2.line(canvas, shoulder, elbow, look.shirt, thickness(0.065 * stature * build), SMOOTH)
    cv2.line(canvas, elbow, hand, forearm_colour, thickness(0.055 * stature * build), SMOOTH)
    cv2.circle(canvas, hand, thickness(0.028 * stature), look.skin, -1, SMOOTH)
    if look.bag == "backpack":
        strap_top, strap_bottom = at(-0.06 * stature * build, shoulder_y), at(-0.04 * stature * build,
                                                                               top + 0.36 * stature)
        cv2.line(canvas, strap_top, strap_bottom, look.bag_colour, 2, SMOOTH)
    elif look.bag == "handbag":
        bag_top = top + 0.44 * stature
        hand_x, _ = hand
        cv2.line(canvas, at(0.05 * stature, shoulder_y), (hand_x, int(bag_top)), look.bag_colour,
                 thickness(0.015 * stature), SMOOTH)
        cv2.rectangle(
            canvas, (hand_x - int(0.06 * stature), int(bag_top)),
            (hand_x + int(0.06 * stature), int(bag_top + 0.11 * stature)), look.bag_colour, -1, SMOOTH,
        )  # fmt: skip


class RenderedPerson(NamedTuple):
    """A person alone: colours and coverage, to composite as ``alpha * rgb + (1 - alpha) * background``."""

    #: (H, W, 3) uint8 RGB, the person's colours where ``alpha`` > 0 (black elsewhere).
    rgb: np.ndarray
    #: (H, W) float32 in [0, 1]: how much of each pixel the person covers (anti-aliased edges in between).
    alpha: np.ndarray

    @property
    def mask(self) -> np.ndarray:
        """(H, W) bool: pixels the person touches."""
        return self.alpha > 0


def render_person(
    look: Appearance, body_height: float, phase: float = 0.0, facing: int = 1, size: tuple[int, int] | None = None
) -> RenderedPerson:
    """``look`` walking at gait ``phase`` in an (H, W) box of its own, as :func:`draw_person` would draw it
    with ``centre_x = W / 2`` and ``feet_y = H - 1 - 0.02 * body_height``.

    ``size`` defaults to a box that holds the person whatever the pose: about 1.04 x ``body_height``
    tall and 0.7 x ``body_height`` wide. The alpha mask is measured, not guessed: the person is drawn on a
    black and on a white canvas, and each pixel's coverage is read from how much the two differ.
    """
    height, width = size or (math.ceil(body_height * 1.04) + 2, math.ceil(body_height * 0.7) + 2)
    feet_y = height - 1 - 0.02 * body_height
    on_black = np.zeros((height, width, 3), np.uint8)
    on_white = np.full((height, width, 3), 255, np.uint8)
    for canvas in (on_black, on_white):
        draw_person(canvas, look, width / 2.0, feet_y, body_height, phase, facing)
    # black: alpha * colour; white: alpha * colour + (1 - alpha) * 255.
    difference = on_white.astype(np.float32) - on_black.astype(np.float32)
    alpha = np.clip(1.0 - difference.max(axis=2) / 255.0, 0.0, 1.0).astype(np.float32)
    rgb = np.where(alpha[..., None] > 0, on_black / np.maximum(alpha[..., None], 1e-6), 0.0)
    return RenderedPerson(np.clip(np.round(rgb), 0, 255).astype(np.uint8), alpha)
