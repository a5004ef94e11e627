"""SIGKILL while a footage job is running: after the restart the job reads failed with the reason, and its
list of enrolled tracklets is exactly what the gallery holds from it (whole tracklets, nothing half-stored,
no orphan files); a queued job's video survives and the job runs after the restart."""

from __future__ import annotations

import time

import pytest
from footage_media import staggered_walkers, street_frames, video_bytes, wait_for_job
from live_server import live_server

pytestmark = pytest.mark.slow


def test_sigkill_during_a_running_job(tiny_model, tmp_path):
    data_dir = tmp_path / "data"
    footage = video_bytes(street_frames(frames=1500, walkers=staggered_walkers(50, 30)))
    with live_server(tiny_model, data_dir, tmp_path / "server.log", REID_MAX_FOOTAGE_BYTES="200000000") as server:
        with server.client() as client:
            response = client.post("/footage", files={"video": ("long.avi", footage)}, data={"camera_id": "cam-k"})
            assert response.status_code == 202, response.text
            job_id = response.json()["job_id"]
            # Kill once it has enrolled a few tracklets and is still going.
            deadline = time.monotonic() + 120
            while True:
                job = client.get(f"/jobs/{job_id}").json()
                assert job["status"] in ("queued", "running"), job
                if len(job["result"]["tracklets"]) >= 3:
                    break
                assert time.monotonic() < deadline, job
                time.sleep(0.02)
            server.kill()
    with live_server(tiny_model, data_dir, tmp_path / "server2.log") as server, server.client() as client:
        job = client.get(f"/jobs/{job_id}").json()
        assert job["status"] == "failed"
        assert "stopped (restart or crash) while this job was running" in job["error"]
        listed = {record["id"] for record in job["result"]["tracklets"]}
        assert len(listed) >= 3
        stored = client.get("/tracklets", params={"camera_id": "cam-k", "limit": 1000}).json()["items"]
        assert {record["id"] for record in stored} == listed
        assert all(record["job_id"] == job_id for record in stored)
        assert client.get(f"/jobs/{job_id}/tracks").status_code == 404
        assert client.delete(f"/jobs/{job_id}").status_code == 409
        assert list((data_dir / "footage-spool").iterdir()) == []


def test_a_queued_job_survives_a_restart_and_runs(tiny_model, tmp_path):
    data_dir = tmp_path / "data"
    long = video_bytes(street_frames(frames=1500, walkers=staggered_walkers(50, 30)))
    short = video_bytes(street_frames(frames=40))
    with live_server(tiny_model, data_dir, tmp_path / "server.log", REID_MAX_FOOTAGE_BYTES="200000000") as server:
        with server.client() as client:
            first = client.post("/footage", files={"video": ("long.avi", long)}, data={"camera_id": "cam-q"})
            second = client.post("/footage", files={"video": ("short.avi", short)}, data={"camera_id": "cam-q"})
            assert first.status_code == second.status_code == 202
            assert client.get(f"/jobs/{second.json()['job_id']}").json()["status"] == "queued"
            server.kill()
    with live_server(tiny_model, data_dir, tmp_path / "server2.log") as server, server.client() as client:
        assert client.get(f"/jobs/{first.json()['job_id']}").json()["status"] == "failed"
        job = wait_for_job(client, second.json()["job_id"])
        assert job["status"] == "done" and len(job["result"]["tracklets"]) == 2
