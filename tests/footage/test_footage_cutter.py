"""Cutting tracks into tracklets, crop choice and the crop geometry."""

from __future__ import annotations

import numpy as np
import pytest

from service.footage.crops import PAD_RGB, crop_quality, crop_resize_pad
from service.footage.cutter import TrackletCutter
from service.footage.pipeline import format_mot, interpolate_gaps

H, W = 64, 32  # card size


def frame_with_marker(index: int) -> np.ndarray:
    """A 480x640 BGR frame whose pixel values encode the frame index (so crops say where they came from)."""
    return np.full((480, 640, 3), index % 250, np.uint8)


def feed(cutter: TrackletCutter, track_id: int, frames: range, box_of, others=None) -> None:
    for f in frames:
        box = np.asarray(box_of(f), np.float32)
        cutter.observe(track_id, f, frame_with_marker(f), box, 0.9, np.zeros((0, 4)) if others is None else others)


def test_cut_every_max_seconds_and_at_the_end():
    out = []
    cutter = TrackletCutter(out.append, H, W, fps=10, max_tracklet_s=2.0, min_frames=3, min_box_height=20)
    feed(cutter, 7, range(0, 45), lambda f: (100 + f, 100, 140 + f, 200))
    cutter.end_track(7)
    assert [(t.track_id, t.part, t.frame_start, t.frame_end) for t in out] == [
        (7, 0, 0, 19), (7, 1, 20, 39), (7, 2, 40, 44),
    ]  # fmt: skip
    assert out[1].start_s == pytest.approx(2.0) and out[1].end_s == pytest.approx(3.9)
    for t in out:
        assert t.crop_frames == sorted(t.crop_frames) and t.frame_start <= t.crop_frames[0]
        assert all(c.shape == (H, W, 3) and c.dtype == np.uint8 for c in t.crops)
        assert len(t.boxes) == t.num_frames == t.frame_end - t.frame_start + 1
        assert t.clip(4).shape == (4, H, W, 3)


def test_short_or_small_tracks_are_dropped():
    out = []
    cutter = TrackletCutter(out.append, H, W, fps=10, min_frames=8, min_box_height=50)
    feed(cutter, 1, range(5), lambda f: (100, 100, 140, 200))  # 5 frames < 8
    feed(cutter, 2, range(20), lambda f: (300, 100, 316, 140))  # 40 px tall < 50
    feed(cutter, 3, range(20), lambda f: (400, 100, 440, 200))
    cutter.finish()
    assert [t.track_id for t in out] == [3] and cutter.dropped == 2


def test_crops_avoid_the_frame_edge_and_occlusion_and_stay_bounded():
    out = []
    cutter = TrackletCutter(out.append, H, W, fps=25, max_tracklet_s=100, min_frames=1, min_box_height=10, max_crops=8)

    def box_of(f: int) -> tuple:
        if f < 100:  # entering: cut off at the left edge
            return (0, 100, 40, 200)
        return (200, 100, 240, 200)

    occluder = np.asarray([[190, 90, 250, 210]], np.float32)
    for f in range(300):
        box = np.asarray(box_of(f), np.float32)
        others = occluder if 100 <= f < 150 else np.zeros((0, 4), np.float32)
        cutter.observe(1, f, frame_with_marker(f), box, 0.9, others)
    cutter.finish()
    (tracklet,) = out
    assert len(tracklet.crops) <= 8
    assert all(f >= 150 for f in tracklet.crop_frames)  # neither at the edge nor behind the occluder
    spread = np.diff(tracklet.crop_frames)
    assert len(tracklet.crops) >= 3 and spread.min() > 0
    # The crop really is the frame at that index (pixel values encode it).
    assert tracklet.crops[0][H // 2, W // 2, 0] == tracklet.crop_frames[0] % 250


def test_all_crops_kept_when_none_is_good():
    out = []
    cutter = TrackletCutter(out.append, H, W, fps=25, min_frames=1, min_box_height=10)
    feed(cutter, 1, range(20), lambda f: (0, 100, 40, 200))  # never leaves the edge
    cutter.finish()
    assert len(out[0].crops) == 20


def test_crop_keeps_aspect_ratio_and_pads_with_the_mean_colour():
    frame = np.zeros((100, 200, 3), np.uint8)
    frame[10:90, 50:70] = (0, 0, 255)  # red in BGR, 20 wide x 80 tall
    crop = crop_resize_pad(frame, (50, 10, 70, 90), 64, 32)  # scale min(64/80, 32/20) = 0.8 -> 16 x 64
    assert crop.shape == (64, 32, 3)
    assert (crop[:, 8:24] == (255, 0, 0)).all()  # RGB red, centred
    assert (crop[:, :8] == PAD_RGB).all() and (crop[:, 24:] == PAD_RGB).all()
    # Boxes partly outside the frame are clipped, never fail.
    assert crop_resize_pad(frame, (-20, -5, 30, 300), 64, 32).shape == (64, 32, 3)


def test_quality_prefers_large_unoccluded_boxes_inside_the_frame():
    shape = (480, 640, 3)
    none = np.zeros((0, 4))
    big = crop_quality((100, 100, 180, 300), 0.9, shape, none, 256)
    small = crop_quality((100, 100, 116, 140), 0.9, shape, none, 256)
    edge = crop_quality((0, 100, 80, 300), 0.9, shape, none, 256)
    hidden = crop_quality((100, 100, 180, 300), 0.9, shape, np.asarray([[90, 90, 150, 310]]), 256)
    assert big > small > 0 and edge == 0 and 0 < hidden < big


def test_gap_interpolation_and_mot_text():
    boxes = [(0, 10.0, 20.0, 30.0, 60.0, 0.9), (3, 40.0, 20.0, 30.0, 60.0, 0.6), (20, 0.0, 0.0, 1.0, 1.0, 1.0)]
    filled = interpolate_gaps(boxes, max_gap=5)
    assert [b[0] for b in filled] == [0, 1, 2, 3, 20]
    assert filled[1][1] == pytest.approx(20.0) and filled[1][5] == pytest.approx(0.6)
    text = format_mot({4: filled[:2], 2: [(1, 1.0, 2.0, 3.0, 4.0, 0.5)]})
    assert text.splitlines() == [
        "1,4,10.00,20.00,30.00,60.00,0.900,-1,-1,-1",
        "2,2,1.00,2.00,3.00,4.00,0.500,-1,-1,-1",
        "2,4,20.00,20.00,30.00,60.00,0.600,-1,-1,-1",
    ]
