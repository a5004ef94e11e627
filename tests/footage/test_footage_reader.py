"""The footage reader: streaming, the container allowlist, the frame-size limit before decoding, and
truncated streams."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from service.errors import InvalidMediaError, LimitExceededError
from service.footage.pipeline import FootageSettings, run_footage
from service.footage.reader import FrameReader, probe_footage


def write_video(path, frames: int = 12, size=(160, 120), codec: str = "MJPG", fps: float = 8.0):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, size)
    for index in range(frames):
        frame = np.full((size[1], size[0], 3), 20 * index % 255, np.uint8)
        writer.write(frame)
    writer.release()
    return path


@pytest.mark.parametrize(("codec", "name"), [("MJPG", "clip.avi"), ("mp4v", "clip.mp4")])
def test_reads_every_frame_in_order_with_the_container_facts(tmp_path, codec, name):
    path = write_video(tmp_path / name, codec=codec)
    info = probe_footage(path)
    assert (info.width, info.height, info.frame_count) == (160, 120, 12) and info.fps == pytest.approx(8.0)
    reader = FrameReader(path)
    indices = [index for index, frame in reader]
    assert indices == list(range(12)) and reader.frames_read == 12 and not reader.truncated


def test_not_a_video_and_playlists_are_refused_before_ffmpeg(tmp_path):
    text = tmp_path / "list.mp4"
    text.write_text("ffconcat version 1.0\nfile /etc/passwd\n")
    with pytest.raises(InvalidMediaError):
        probe_footage(text)
    png = tmp_path / "image.avi"
    cv2.imwrite(str(tmp_path / "x.png"), np.zeros((8, 8, 3), np.uint8))
    png.write_bytes((tmp_path / "x.png").read_bytes())
    with pytest.raises(InvalidMediaError):
        FrameReader(png)


def test_frame_size_over_the_limit_is_413_before_decoding(tmp_path):
    path = write_video(tmp_path / "big.avi", size=(320, 240))
    with pytest.raises(LimitExceededError):
        probe_footage(path, max_frame_dimension=300)
    with pytest.raises(LimitExceededError):
        settings = FootageSettings(max_frame_dimension=300)
        run_footage(path, card_height=64, card_width=32, on_tracklet=lambda t: None, settings=settings)


def test_truncated_stream_keeps_what_decodes(tmp_path):
    path = write_video(tmp_path / "cut.avi", frames=40)
    data = path.read_bytes()
    cut = tmp_path / "cut-short.avi"
    cut.write_bytes(data[: len(data) // 2])
    reader = FrameReader(cut)
    count = sum(1 for _ in reader)
    assert 0 < count < 40
    assert reader.info.frame_count == 40 and reader.truncated  # the AVI header still announces 40 frames


def test_zero_frames_and_no_people(tmp_path):
    path = write_video(tmp_path / "empty.avi", frames=30)
    got = []
    summary = run_footage(path, card_height=64, card_width=32, on_tracklet=got.append)
    assert summary.frames_processed == 30 and summary.tracks == {} and got == [] and summary.tracklets == 0


def test_stop_request_ends_the_run_early(tmp_path):
    path = write_video(tmp_path / "long.avi", frames=50)
    calls = []

    def should_stop() -> bool:
        calls.append(1)
        return len(calls) > 10

    summary = run_footage(path, card_height=64, card_width=32, on_tracklet=lambda t: None, should_stop=should_stop)
    assert summary.stopped and summary.frames_processed == 10
