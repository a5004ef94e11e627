"""POST /footage and the /jobs resource through the real app: streamed upload, the job pool, the vision
pipeline (weight-free detector), enroll and query modes, tracks as JSON and MOTChallenge text, bad input."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from footage_media import WALKERS, staggered_walkers, street_frames, video_bytes, wait_for_job
from test_service_api import assert_error

from models import sample_clip_indices
from service.app import create_app
from service.config import Settings
from service.footage.jobs import Job, JobMode, JobStatus


@pytest.fixture(scope="module")
def street() -> bytes:
    return video_bytes(street_frames())


@pytest.fixture(scope="module")
def client(tiny_model, tmp_path_factory):
    settings = Settings(model_path=tiny_model, data_dir=tmp_path_factory.mktemp("gallery"), device="cpu",
                        intra_op_threads=1, max_wait_ms=2, max_frame_dimension=1024, footage_queue_size=2,
                        _env_file=None)  # fmt: skip
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def submit(client, video: bytes, name: str = "street.avi", **fields):
    return client.post("/footage", files={"video": (name, video, "video/x-msvideo")},
                       data={"camera_id": "cam-a", **fields})  # fmt: skip


@pytest.fixture(scope="module")
def enrolled_job(client, street):
    response = submit(client, street, start_time="2026-12-01T08:00:00Z")
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["location"] == f"/jobs/{job['job_id']}"
    assert job["status"] in ("queued", "running") and job["mode"] == "enroll" and job["camera_id"] == "cam-a"
    return wait_for_job(client, job["job_id"])


def test_enroll_mode_enrolls_each_walker_once_with_its_provenance(client, enrolled_job):
    job = enrolled_job
    assert job["status"] == "done", job
    assert job["error"] is None and job["warnings"] == []
    assert job["progress"]["frames_processed"] == job["progress"]["frames_total"] == 60
    assert job["progress"]["tracks"] == 2 and job["progress"]["tracklets"] == 2 and job["progress"]["fps"] > 0
    tracklets = job["result"]["tracklets"]
    assert len(tracklets) == 2
    for record in tracklets:
        stored = client.get(f"/tracklets/{record['id']}").json()
        assert stored == record
        assert stored["camera_id"] == "cam-a" and stored["job_id"] == job["job_id"] and stored["has_thumbnail"]
        # The clip starts at 08:00:00 UTC at 10 fps: times are absolute and follow the frame range.
        start = datetime.fromisoformat(stored["start_time"])
        end = datetime.fromisoformat(stored["end_time"])
        assert start == datetime(2026, 12, 1, 8, tzinfo=timezone.utc) + timedelta(seconds=stored["frame_start"] / 10)
        assert end == datetime(2026, 12, 1, 8, tzinfo=timezone.utc) + timedelta(seconds=stored["frame_end"] / 10)
        assert stored["frame_end"] > stored["frame_start"] and stored["frames_decoded"] > 10
    listed = client.get("/tracklets", params={"camera_id": "cam-a"}).json()
    assert sorted(item["id"] for item in listed["items"]) == sorted(record["id"] for record in tracklets)


def test_tracks_as_json_and_as_motchallenge_text(client, enrolled_job):
    job_id = enrolled_job["job_id"]
    tracks = client.get(f"/jobs/{job_id}/tracks").json()["tracks"]
    assert len(tracks) == 2
    mot = client.get(f"/jobs/{job_id}/tracks", params={"format": "mot"})
    assert mot.status_code == 200 and mot.headers["content-type"].startswith("text/plain")
    rows = [line.split(",") for line in mot.text.splitlines()]
    assert len(rows) == sum(len(track["boxes"]) for track in tracks)
    assert all(len(row) == 10 and row[7:] == ["-1", "-1", "-1"] for row in rows)
    frames = [int(row[0]) for row in rows]
    assert min(frames) >= 1 and max(frames) <= 60 and frames == sorted(frames)
    # JSON frames are 0-based, MOT frames 1-based: the same boxes.
    first = tracks[0]["boxes"][0]
    match = [row for row in rows if int(row[1]) == tracks[0]["track_id"] and int(row[0]) == first["frame"] + 1]
    assert float(match[0][2]) == pytest.approx(first["left"]) and float(match[0][5]) == pytest.approx(first["height"])
    # The walker heading right enters at x=-30 and moves 5 px a frame; its box follows it.
    walker = min(tracks, key=lambda track: track["boxes"][0]["left"])
    box = walker["boxes"][len(walker["boxes"]) // 2]
    assert abs(box["left"] - (-30 + 5 * box["frame"])) < 8 and abs(box["height"] - 75) < 12


def test_query_mode_finds_each_track_in_the_gallery(client, enrolled_job, street):
    response = submit(client, street, mode="query", top_k=3)
    assert response.status_code == 202
    job = wait_for_job(client, response.json()["job_id"])
    assert job["status"] == "done" and job["result"]["tracklets"] is None
    queries = job["result"]["queries"]
    assert len(queries) == 2
    enrolled = {record["id"]: record for record in enrolled_job["result"]["tracklets"]}
    for query in queries:
        assert len(query["matches"]) == 2  # the gallery holds 2 tracklets (top_k 3)
        best = query["matches"][0]
        # The same footage cuts the same tracklets: the nearest is the one enrolled from the same frames.
        assert best["distance"] == pytest.approx(0.0, abs=1e-3)
        assert enrolled[best["id"]]["frame_start"] == query["frame_start"]
        assert best["camera_id"] == "cam-a" and best["start_time"].startswith("2026-12-01T08:00")
        assert isinstance(query["start_time"], float)  # no start_time: seconds from the footage start
    assert client.get("/tracklets").json()["total"] == 2  # query mode stores nothing


def test_unfinished_footage_jobs_are_a_metric(client, enrolled_job):
    assert "reid_footage_jobs_unfinished 0" in client.get("/metrics").text


def test_jobs_list_newest_first_and_pages(client, enrolled_job):
    page = client.get("/jobs", params={"limit": 1}).json()
    assert page["total"] >= 2 and len(page["items"]) == 1
    assert client.get("/jobs", params={"status": "done", "limit": 100}).json()["items"][-1]["job_id"] == \
        enrolled_job["job_id"]


def test_a_video_without_people_ends_done_with_no_tracklets(client):
    still = street_frames(frames=30, walkers=())
    job = wait_for_job(client, submit(client, video_bytes(still)).json()["job_id"])
    assert job["status"] == "done" and job["result"]["tracklets"] == [] and job["progress"]["frames_processed"] == 30


def test_a_video_with_zero_frames_ends_done_with_no_tracklets(client):
    job = wait_for_job(client, submit(client, video_bytes([])).json()["job_id"])
    assert job["status"] == "done" and job["result"]["tracklets"] == [] and job["progress"]["frames_processed"] == 0


def test_a_truncated_video_is_processed_as_far_as_it_decodes(client, street):
    response = submit(client, street[: len(street) * 2 // 3], name="cut.avi", mode="query")
    assert response.status_code == 202, response.text
    job = wait_for_job(client, response.json()["job_id"])
    assert job["status"] == "done"
    assert 0 < job["progress"]["frames_processed"] < 60
    assert len(job["warnings"]) == 1 and "truncated" in job["warnings"][0]


def test_bad_input_answers(client, street):
    assert_error(submit(client, b"these are not the frames you are looking for" * 10, name="notes.avi"), 422,
                 "invalid_media")  # fmt: skip
    missing = client.post("/footage", files={"video": ("street.avi", street, "video/x-msvideo")})
    assert "camera_id" in assert_error(missing, 422)["message"]
    assert_error(client.post("/footage", data={"camera_id": "cam-a"}, files={"other": ("x", b"x")}), 422)
    assert_error(submit(client, street, mode="sideways"), 422)
    assert_error(submit(client, street, start_time="yesterday"), 422)
    assert_error(client.post("/footage", json={"camera_id": "cam-a"}), 415)
    many = {f"field{index}": "x" for index in range(40)}
    assert "fields" in assert_error(submit(client, street, **many), 422)["message"]
    assert "longer than" in assert_error(submit(client, street, camera_id="c" * 70000), 422)["message"]
    wide = video_bytes(street_frames(frames=2, width=1100, height=16, walkers=()))
    assert "1100x16" in assert_error(submit(client, wide), 413)["message"]
    assert_error(client.get("/jobs/no-such-job"), 404, "not_found")
    assert_error(client.delete("/jobs/no-such-job"), 404, "not_found")
    assert_error(client.get("/jobs/no-such-job/tracks"), 404, "not_found")
    # Nothing of these uploads stayed on disk.
    assert list(client.app.state.service.footage.folders.spool.iterdir()) == []


def test_cancelling_a_finished_job_is_a_conflict(client, enrolled_job):
    assert_error(client.delete(f"/jobs/{enrolled_job['job_id']}"), 409, "conflict")


def test_cancelling_a_queued_job(client, street):
    store = client.app.state.service.footage.store
    # A row that is queued but was never handed to a worker stays queued until cancelled.
    store.create(Job(id="parked", status=JobStatus.queued, mode=JobMode.enroll, camera_id="cam-z",
                     video_name="x.avi", created_at=time.time()))  # fmt: skip
    response = client.delete("/jobs/parked")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert_error(client.delete("/jobs/parked"), 409)
    assert_error(client.get("/jobs/parked/tracks"), 404)


def test_past_the_queue_limit_footage_is_refused_before_the_body(client, street):
    store = client.app.state.service.footage.store
    ids = [f"waiting-{index}" for index in range(3)]  # 1 worker + a queue of 2
    for job_id in ids:
        store.create(Job(id=job_id, status=JobStatus.queued, mode=JobMode.enroll, camera_id="cam-z",
                         video_name="x.avi", created_at=time.time()))  # fmt: skip
    try:
        response = submit(client, street)
        assert_error(response, 503, "busy")
        assert int(response.headers["retry-after"]) > 0
    finally:
        for job_id in ids:
            store.cancel_if_queued(job_id)
    assert submit(client, street, mode="query").status_code == 202


def test_thumbnails_of_footage_tracklets_and_uploads(client, enrolled_job, tmp_path):
    record = enrolled_job["result"]["tracklets"][0]
    response = client.get(f"/tracklets/{record['id']}/thumbnail")
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    picture = cv2.imdecode(np.frombuffer(response.content, np.uint8), cv2.IMREAD_COLOR)
    # The tiny model's crops are 64x32, the 75 px walker scaled to 64 px: rows 20-40 are its torso.
    assert picture.shape == (64, 32, 3)
    torso = picture[20:40, 8:24].reshape(-1, 3).mean(axis=0)
    torsos = np.array([walker[0] for walker in WALKERS], np.float64)  # BGR
    assert np.abs(torsos - torso).max(axis=1).min() < 40, torso  # a walker's torso, not the grey background
    # A plain upload stores one too (its middle sampled frame), and deleting the tracklet deletes it.
    frames = [("frames", (f"{k}.png", cv2.imencode(".png", np.full((48, 24, 3), 40 * k, np.uint8))[1].tobytes(),
                          "image/png")) for k in range(5)]  # fmt: skip
    uploaded = client.post("/tracklets", files=frames, data={"tracklet_id": "plain-1"})
    assert uploaded.status_code == 201 and uploaded.json()["has_thumbnail"]
    thumbnail = client.get("/tracklets/plain-1/thumbnail")
    grey = cv2.imdecode(np.frombuffer(thumbnail.content, np.uint8), cv2.IMREAD_COLOR)
    used = sorted(set(sample_clip_indices(5, 4).ravel().tolist()))  # the card's clips (consecutive: all 5 frames)
    middle = used[len(used) // 2]
    assert abs(float(grey.mean()) - 40 * middle) < 6
    path = client.app.state.service.media.path("plain-1")
    assert path.is_file()
    assert client.delete("/tracklets/plain-1").status_code == 204
    assert not path.exists()
    assert_error(client.get("/tracklets/plain-1/thumbnail"), 404)


def test_thumbnails_can_be_turned_off(tiny_model, tmp_path):
    settings = Settings(model_path=tiny_model, data_dir=tmp_path, device="cpu", intra_op_threads=1,
                        store_thumbnails=False, _env_file=None)  # fmt: skip
    with TestClient(create_app(settings)) as private:
        frames = [("frames", ("0.png", cv2.imencode(".png", np.zeros((48, 24, 3), np.uint8))[1].tobytes()))]
        record = private.post("/tracklets", files=frames).json()
        assert record["has_thumbnail"] is False
        assert_error(private.get(f"/tracklets/{record['id']}/thumbnail"), 404)
        assert list((tmp_path / "thumbnails").iterdir()) == []


def running_long_job(client, camera_id: str) -> str:
    """A 1200-frame job's id, once it has enrolled its first two tracklets (so it is mid-way)."""
    long = video_bytes(street_frames(frames=1200, walkers=staggered_walkers(40, 30)))
    job_id = submit(client, long, camera_id=camera_id).json()["job_id"]
    deadline = time.monotonic() + 120
    while len(client.get(f"/jobs/{job_id}").json()["result"]["tracklets"]) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    return job_id


def test_cancelling_a_running_job_keeps_and_lists_what_it_enrolled(client):
    job_id = running_long_job(client, "cam-long")
    response = client.delete(f"/jobs/{job_id}")
    assert response.status_code == 200
    job = wait_for_job(client, job_id)
    assert job["status"] == "cancelled" and job["error"] is None
    assert job["progress"]["frames_processed"] < 1200
    listed = {record["id"] for record in job["result"]["tracklets"]}
    stored = client.get("/tracklets", params={"camera_id": "cam-long", "limit": 1000}).json()["items"]
    assert {record["id"] for record in stored} == listed and len(listed) >= 2
    # The tracks stop where the job stopped; the video is gone from the spool.
    rows = client.get(f"/jobs/{job_id}/tracks", params={"format": "mot"}).text.splitlines()
    assert rows and max(int(row.split(",")[0]) for row in rows) <= job["progress"]["frames_processed"]
    assert not client.app.state.service.footage.folders.video(job_id).exists()
    assert_error(client.delete(f"/jobs/{job_id}"), 409)


def test_footage_over_its_size_limit_is_refused_while_streaming(tiny_model, tmp_path, street):
    settings = Settings(model_path=tiny_model, data_dir=tmp_path, device="cpu", intra_op_threads=1,
                        max_footage_bytes=len(street) // 2, _env_file=None)  # fmt: skip
    with TestClient(create_app(settings)) as small:
        error = assert_error(submit(small, street), 413, "upload_too_large")
        assert str(len(street) // 2) in error["message"]
        assert list((tmp_path / "footage-spool").iterdir()) == []
        assert small.get("/jobs").json()["total"] == 0


def test_a_job_cancelled_while_a_tracklet_waits_for_the_embedder_still_saves_its_tracks(client, monkeypatch):
    """The cancel lands while the job's next tracklet waits for room in the embedding queue (held full
    here): that tracklet is dropped, and the job still ends cancelled with its tracks so far, not without."""
    job_id = running_long_job(client, "cam-wait")
    batcher = client.app.state.service.batcher
    monkeypatch.setattr(type(batcher), "queue_depth", property(lambda self: 10**9))  # no room for the job
    time.sleep(1.0)  # the next tracklet is cut and waits
    assert client.delete(f"/jobs/{job_id}").status_code == 200
    job = wait_for_job(client, job_id)
    assert job["status"] == "cancelled" and job["error"] is None
    tracks = client.get(f"/jobs/{job_id}/tracks", params={"format": "mot"})
    assert tracks.status_code == 200 and tracks.text.count("\n") > 10
