"""A generated video reID benchmark, written in the MARS layout so it runs through the real MARS loader.

Pedestrians are drawn procedurally (:mod:`training.data.pedestrian`): clothing colours and patterns,
sleeves, trousers or shorts, shoes, hair, bags, body height and build. A share of the identities are near
twins of another one that differ in one small detail (shoe, bag or hair colour), as in the paper's
Figure 1. Each camera has its own background texture, lighting and viewpoint
(:mod:`training.data.synthetic_scene`). Across a tracklet the person walks (legs and arms swing), the
detection box jitters, some frames are motion blurred and an occluder (a pole, a car, another person)
passes in front during part of the tracklet, so some frames are much more informative than others.

The test set also holds junk tracks (pid -1, names ``00-1...``: background with a fragment of a person,
like bad detections) and distractors (pid 0: people who are not among the identities), so that both
branches of the MARS protocol are exercised. Generation is deterministic for a seed.

Two presets (:data:`PRESETS`):

* ``default``: 400 identities (200 train, 200 test), 8-16 frames per tracklet, 40 distractors: 200
  queries against a gallery of 1,034 tracklets (seed 0), so one query moves rank-1 by 0.5 points and
  the heads of the ablation can be told apart; training sees 1,004 tracklets of 200 identities.
* ``small``: 80 identities, 8-24 frames, 6 distractors (40 queries, 218 gallery tracklets): the demo
  and the tests, generated in seconds.

Command line::

    python -m training synthetic --root data/synthetic [--preset small] [--identities 80 --cameras 3 ...]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
from scipy.io import savemat

from training.data.pedestrian import Appearance, draw_person, near_twin, random_appearance
from training.data.synthetic_scene import (
    Camera,
    apply_camera,
    draw_occluder,
    motion_blur,
    random_camera,
    random_occlusion,
    render_background,
)

log = logging.getLogger(__name__)

#: Written beside the data; its presence marks a folder this module may overwrite.
META_FILE = "synthetic_meta.json"
FORMAT_VERSION = 1

#: Frames are drawn this many times larger, then shrunk (smooth edges without per-shape anti-aliasing cost).
SUPERSAMPLE = 2


@dataclass(frozen=True)
class SyntheticSpec:
    """The parameters of a generated benchmark (stored in ``synthetic_meta.json``).

    Args:
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
    """

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
    format_version: int = field(default=FORMAT_VERSION, init=False)

    def __post_init__(self) -> None:
        low, high = self.frames_per_tracklet
        object.__setattr__(self, "frames_per_tracklet", (int(low), int(high)))
        if (self.num_identities < 4 or self.num_cameras < 2 or self.tracklets_per_camera < 1
                or not 1 <= low <= high <= 999):
            raise ValueError(
                "need >= 4 identities, >= 2 cameras, >= 1 tracklet per camera, 1 <= min <= max <= 999 frames"
            )

    def as_json(self) -> dict:
        """Plain JSON values (the frame range as a list), as compared against an existing benchmark."""
        return json.loads(json.dumps(asdict(self)))


#: The named benchmarks; ``default`` is what ``python -m training synthetic`` writes.
PRESETS = {
    "default": SyntheticSpec(num_identities=400, frames_per_tracklet=(8, 16), num_distractors=40),
    "small": SyntheticSpec(),
}


class Track(NamedTuple):
    """One tracklet to render, in the MARS naming."""

    #: MARS person folder and name prefix: ``0007``, ``0000`` for distractors, ``00-1`` for junk.
    folder: str
    pid: int
    #: 0-based camera index.
    camera: int
    #: 1-based tracklet number within (person, camera).
    number: int
    #: None for junk that shows no one.
    appearance: Appearance | None
    junk: bool


@dataclass
class BenchmarkPlan:
    """Everything decided before rendering: cameras, identities, who is train or test, which tracks."""

    cameras: list[Camera]
    appearances: list[Appearance]
    #: pid -> pid of the identity it is a near twin of.
    twin_of: dict[int, int]
    train_pids: list[int]
    test_pids: list[int]
    train_tracks: list[Track]
    #: Test identities' tracks, then distractors, then junk.
    test_tracks: list[Track]
    #: 0-based rows of ``test_tracks`` used as queries, one per test identity.
    query_rows: list[int]


def plan_benchmark(spec: SyntheticSpec) -> BenchmarkPlan:
    """Draw cameras, identities, the train/test split, every track and the queries from ``spec.seed``."""
    rng = np.random.default_rng(spec.seed)
    cameras = [random_camera(rng) for _ in range(spec.num_cameras)]
    appearances: list[Appearance] = []
    twin_of: dict[int, int] = {}
    for identity in range(spec.num_identities):
        if identity > 0 and rng.random() < spec.twin_fraction:
            original = int(rng.integers(identity))
            appearances.append(near_twin(rng, appearances[original]))
            twin_of[identity + 1] = original + 1
        else:
            appearances.append(random_appearance(rng))
    order = rng.permutation(spec.num_identities)
    train_pids = sorted(int(i) + 1 for i in order[: spec.num_identities // 2])
    test_pids = sorted(int(i) + 1 for i in order[spec.num_identities // 2 :])

    def tracks_of(pids: list[int]) -> list[Track]:
        """Each identity seen by 2..num_cameras cameras, ``tracklets_per_camera`` tracks in each."""
        tracks = []
        for pid in pids:
            num_seen = int(rng.integers(2, spec.num_cameras + 1))
            seen_by = sorted(rng.choice(spec.num_cameras, size=num_seen, replace=False).tolist())
            for camera in seen_by:
                for number in range(1, spec.tracklets_per_camera + 1):
                    tracks.append(Track(f"{pid:04d}", pid, camera, number, appearances[pid - 1], junk=False))
        return tracks

    train_tracks = tracks_of(train_pids)
    test_tracks = tracks_of(test_pids)
    # Queries: one tracklet of each test identity, in a random camera it was seen by.
    query_rows = []
    for pid in test_pids:
        rows = [row for row, track in enumerate(test_tracks) if track.pid == pid]
        query_rows.append(int(rng.choice(rows)))
    for number in range(1, spec.num_distractors + 1):
        camera = int(rng.integers(spec.num_cameras))
        test_tracks.append(Track("0000", 0, camera, number, random_appearance(rng), junk=False))
    for number in range(1, spec.num_junk + 1):
        test_tracks.append(Track("00-1", -1, int(rng.integers(spec.num_cameras)), number, None, junk=True))
    return BenchmarkPlan(cameras, appearances, twin_of, train_pids, test_pids, train_tracks, test_tracks, query_rows)


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
    canvas_height, canvas_width = height * SUPERSAMPLE, width * SUPERSAMPLE
    background = render_background(camera, canvas_height, canvas_width, rng)
    facing = 1 if rng.random() < 0.5 else -1
    gait_speed = rng.uniform(0.5, 0.9)
    first_phase = rng.uniform(0, 2 * np.pi)
    brightness = rng.uniform(0.9, 1.1)
    occlusion = random_occlusion(rng, num_frames) if rng.random() < 0.45 else None
    blurry = rng.random() < 0.35
    body_height = canvas_height * 0.92 * camera.scale
    centre = canvas_width * (0.5 + camera.offset)
    if junk:  # a detector firing on the background or on a fragment of someone
        look = random_appearance(rng) if rng.random() < 0.6 else None
        centre += canvas_width * rng.choice([-0.5, 0.5])
        body_height *= rng.uniform(1.2, 1.8)
    frames = []
    for index in range(num_frames):
        canvas = background.copy()
        # The detection box jitters: the person moves and changes size a little inside it.
        jitter_x, jitter_y = rng.normal(0, 0.02 * canvas_width), rng.normal(0, 0.012 * canvas_height)
        jitter_scale = 1.0 + rng.normal(0, 0.02)
        if look is not None:
            draw_person(
                canvas, look, centre + jitter_x, canvas_height * 0.975 + jitter_y, body_height * jitter_scale,
                first_phase + gait_speed * index, facing,
            )  # fmt: skip
        if occlusion is not None and occlusion.covers(index):
            draw_occluder(canvas, occlusion, occlusion.progress(index), body_height)
        image = apply_camera(canvas, camera, brightness)
        if blurry and rng.random() < 0.5:
            image = motion_blur(image, int(rng.integers(5, 13)), float(rng.uniform(-20, 20)))
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        noise = rng.normal(0, 3.0, size=image.shape)
        frames.append(np.clip(image + noise, 0, 255).astype(np.uint8))
    return frames


def mars_frame_name(track: Track, frame: int) -> str:
    """``0007C2T0001F003.jpg``: person, 1-based camera, tracklet number, 1-based frame."""
    return f"{track.folder}C{track.camera + 1}T{track.number:04d}F{frame:03d}.jpg"


def write_subset(root: Path, subset: str, tracks: list[Track], spec: SyntheticSpec, cameras: list[Camera]) -> tuple:
    """Render and write ``tracks`` under ``root/subset``; return (frame names in order, MARS track table)."""
    low, high = spec.frames_per_tracklet
    names: list[str] = []
    table = []
    for track in tracks:
        # Each track has its own generator, so one track's frames do not depend on the others'.
        track_rng = np.random.default_rng([spec.seed, 1 + (subset == "bbox_test"), track.pid + 2, track.camera,
                                           track.number])
        num_frames = int(track_rng.integers(low, high + 1))
        frames = render_tracklet(track.appearance, cameras[track.camera], num_frames, spec.height, spec.width,
                                 track_rng, junk=track.junk)
        out_dir = root / subset / track.folder
        out_dir.mkdir(parents=True, exist_ok=True)
        start = len(names) + 1
        for frame_number, frame in enumerate(frames, start=1):
            name = mars_frame_name(track, frame_number)
            cv2.imwrite(str(out_dir / name), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
            names.append(name)
        table.append([start, len(names), track.pid, track.camera + 1])
    return names, table


def prepare_folder(root: Path, spec: SyntheticSpec, overwrite: bool) -> bool:
    """True when ``root`` already holds this very benchmark; otherwise clear what may be cleared.

    A benchmark generated here with other parameters is replaced; a non-empty folder of anything else
    is cleared only with ``overwrite`` (raises FileExistsError otherwise).
    """
    meta_path = root / META_FILE
    if meta_path.is_file():
        if json.loads(meta_path.read_text())["spec"] == spec.as_json():
            log.info("synthetic benchmark with these parameters already in %s: reusing it", root)
            return True
        log.info("replacing the synthetic benchmark in %s (different parameters)", root)
        for sub in ("bbox_train", "bbox_test", "info", META_FILE):
            target = root / sub
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    elif root.exists() and any(root.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{root} is not empty and holds no {META_FILE}; choose an empty folder")
        for sub in ("bbox_train", "bbox_test", "info"):
            shutil.rmtree(root / sub, ignore_errors=True)
    return False


def generate_synthetic(
    root: str | Path, spec: SyntheticSpec | None = None, *, overwrite: bool = False, **spec_fields
) -> Path:
    """Render the benchmark ``spec`` (fields of :class:`SyntheticSpec` given as keywords override it)
    into ``root`` in the MARS layout and return ``root``.

    Identities are split in halves: train and test. Every identity is seen by 2..num_cameras cameras with
    ``tracklets_per_camera`` tracklets each; one query per test identity (one of its tracklets, random
    camera); the gallery is all test tracks, as in MARS. If ``root`` already holds a benchmark with the same
    parameters it is reused; a different one is replaced only with ``overwrite`` (or if it was generated
    here, i.e. has ``synthetic_meta.json``); a non-empty folder of anything else is never touched.
    """
    root = Path(root)
    spec = replace(spec or SyntheticSpec(), **spec_fields)
    if prepare_folder(root, spec, overwrite):
        return root
    plan = plan_benchmark(spec)
    info = root / "info"
    info.mkdir(parents=True, exist_ok=True)
    for subset, tracks, list_name, variable, mat_name in (
        ("bbox_train", plan.train_tracks, "train_name.txt", "track_train_info", "tracks_train_info.mat"),
        ("bbox_test", plan.test_tracks, "test_name.txt", "track_test_info", "tracks_test_info.mat"),
    ):
        names, table = write_subset(root, subset, tracks, spec, plan.cameras)
        (info / list_name).write_text("\n".join(names) + "\n", encoding="utf-8")
        savemat(str(info / mat_name), {variable: np.asarray(table, dtype=np.float64)})
    savemat(str(info / "query_IDX.mat"), {"query_IDX": np.asarray(plan.query_rows, dtype=np.float64) + 1})

    meta = {
        "spec": spec.as_json(),
        "train_pids": plan.train_pids,
        "test_pids": plan.test_pids,
        "near_twins": {str(pid): original for pid, original in plan.twin_of.items()},
        "cameras": [asdict(camera) for camera in plan.cameras],
        "num_train_tracks": len(plan.train_tracks),
        "num_test_tracks": len(plan.test_tracks),
        "num_queries": len(plan.query_rows),
    }
    (root / META_FILE).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    log.info(
        "synthetic benchmark written to %s: %d train / %d test identities, %d train / %d test tracks, %d queries",
        root, len(plan.train_pids), len(plan.test_pids), len(plan.train_tracks), len(plan.test_tracks),
        len(plan.query_rows),
    )  # fmt: skip
    return root


def main(argv: list[str] | None = None) -> None:
    """Command line: generate the synthetic benchmark (a preset, any field overridden by its option)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="data/synthetic", help="output folder (MARS layout)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default",
                        help="default: 200 queries, 1,034 gallery tracklets; small: the demo's (default: %(default)s)")
    parser.add_argument("--identities", type=int, help="identities, half train and half test")
    parser.add_argument("--cameras", type=int)
    parser.add_argument("--tracklets-per-camera", type=int)
    parser.add_argument("--min-frames", type=int)
    parser.add_argument("--max-frames", type=int)
    parser.add_argument("--distractors", type=int, help="distractor tracks (pid 0) in the test set")
    parser.add_argument("--height", type=int)
    parser.add_argument("--width", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    preset = PRESETS[args.preset]
    low, high = preset.frames_per_tracklet
    given = {
        "num_identities": args.identities, "num_cameras": args.cameras,
        "tracklets_per_camera": args.tracklets_per_camera, "num_distractors": args.distractors,
        "height": args.height, "width": args.width, "seed": args.seed,
        "frames_per_tracklet": (args.min_frames or low, args.max_frames or high),
    }  # fmt: skip
    spec = replace(preset, **{key: value for key, value in given.items() if value is not None})
    root = generate_synthetic(args.root, spec, overwrite=args.overwrite)
    print(f"synthetic benchmark ready in {root}")


if __name__ == "__main__":
    main()
