"""Footage made on the fly for the footage API tests: a fixed camera, a textured still background, and
people-shaped figures (head, torso, legs) walking across it, plus a helper that waits for a job."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

#: (torso BGR, legs BGR, x at frame 0, top y, pixels per frame): two people entering from either side and
#: crossing in opposite directions (nobody in the first frames, which a background model learns from).
WALKERS = (((200, 40, 40), (40, 40, 160), -30, 60, 5.0), ((40, 180, 40), (160, 160, 40), 330, 110, -4.5))


def street_frames(frames: int = 60, width: int = 320, height: int = 240,
                  walkers: Sequence[tuple] = WALKERS, seed: int = 0) -> list[np.ndarray]:
    """BGR frames of ``walkers`` (75 px tall figures) crossing a still, blurred-noise background."""
    rng = np.random.default_rng(seed)
    background = cv2.GaussianBlur(rng.integers(70, 110, (height, width, 3), dtype=np.uint8), (9, 9), 0)
    out = []
    for index in range(frames):
        frame = background.copy()
        for torso, legs, x0, top, speed in walkers:
            x = int(x0 + speed * index)
            cv2.circle(frame, (x + 12, top + 8), 7, (150, 170, 200), -1)
            cv2.rectangle(frame, (x, top + 15), (x + 24, top + 45), torso, -1)
            cv2.rectangle(frame, (x + 2, top + 45), (x + 22, top + 75), legs, -1)
        out.append(frame)
    return out


def staggered_walkers(count: int, every: int) -> list[tuple]:
    """Walkers entering one after another (every ``every`` frames), so tracklets end all along the video."""
    colours = [(200, 40, 40), (40, 180, 40), (40, 40, 200), (180, 180, 40), (180, 40, 180), (40, 180, 180)]
    return [(colours[index % 6], colours[(index + 3) % 6], -30 - 4 * every * index, 40 + (index % 3) * 50, 4.0)
            for index in range(count)]  # fmt: skip


def video_bytes(frames: Sequence[np.ndarray], fourcc: str = "MJPG", extension: str = ".avi", fps: int = 10) -> bytes:
    height, width = frames[0].shape[:2] if frames else (48, 64)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"footage{extension}"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
        assert writer.isOpened(), fourcc
        for frame in frames:
            writer.write(frame)
        writer.release()
        return path.read_bytes()


def wait_for_job(client, job_id: str, timeout_s: float = 120.0, until: Sequence[str] = ("done", "failed", "cancelled")):
    """Polls GET /jobs/{id} until its status is one of ``until``; returns the job."""
    deadline = time.monotonic() + timeout_s
    while True:
        response = client.get(f"/jobs/{job_id}")
        assert response.status_code == 200, response.text
        job = response.json()
        if job["status"] in until:
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.05)
