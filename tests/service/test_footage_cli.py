"""``python -m service.footage`` against a live service: upload, progress on stderr, summary table on stdout."""

from __future__ import annotations

import subprocess
import sys

import pytest
from footage_media import street_frames, video_bytes
from live_server import API_KEY, REPO_ROOT, live_server

pytestmark = pytest.mark.slow


def run_cli(*argv: str) -> subprocess.CompletedProcess:
    environment = {"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "service.footage", *argv], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=180, env=environment)  # fmt: skip


def test_cli_enrolls_then_queries_and_prints_tables(tiny_model, tmp_path):
    clip = tmp_path / "street.avi"
    clip.write_bytes(video_bytes(street_frames()))
    notes = tmp_path / "notes.mp4"
    notes.write_text("not a video")
    with live_server(tiny_model, tmp_path / "data", tmp_path / "server.log") as server:
        common = ["--url", server.url, "--api-key", API_KEY, "--poll", "0.1"]
        enroll = run_cli(str(clip), "--camera-id", "cam-a", "--start-time", "2026-12-01T08:00:00Z", *common)
        assert enroll.returncode == 0, enroll.stderr
        assert "accepted" in enroll.stderr and "60/60 frames" in enroll.stderr
        lines = enroll.stdout.splitlines()
        assert lines[0].split() == ["tracklet", "frames", "first", "last", "start", "end"]
        rows = [line for line in lines[2:] if not line.startswith("job ")]
        assert len(rows) == 2 and all("2026-12-01T08:00:0" in row for row in rows)
        assert "done: 60 frames" in lines[-1] and "2 tracklets enrolled" in lines[-1]

        query = run_cli(str(clip), "--camera-id", "cam-b", "--mode", "query", *common)
        assert query.returncode == 0, query.stderr
        rows = query.stdout.splitlines()[2:4]
        enrolled_ids = {row.split()[0] for row in lines[2:4]}
        assert {row.split()[4] for row in rows} == enrolled_ids  # each track's rank-1 is its enrolled twin

        refused = run_cli(str(notes), "--camera-id", "cam-a", *common)
        assert refused.returncode == 2 and "422" in refused.stderr and "notes.mp4" in refused.stderr
        wrong_key = run_cli(str(clip), "--camera-id", "cam-a", "--url", server.url, "--api-key", "nope")
        assert wrong_key.returncode == 2 and "401" in wrong_key.stderr
