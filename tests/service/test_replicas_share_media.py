"""Replicas that share nothing on disk: two API processes and a footage worker, each with its own data
directory, sharing a Milvus Lite server (the gallery), a redis-server (the job queue) and an S3 server (the
media: thumbnails, frames, overlays, uploaded footage and the jobs' tracks), all started here as a user would.

The S3 server is moto's standalone server (`s3_server.MotoS3Server`): an emulator, because no real
S3-compatible server (MinIO) can be installed on the test machines; the processes reach it over HTTP with
boto3 exactly as they would reach MinIO.
"""

from __future__ import annotations

import uuid
from contextlib import ExitStack

import pytest
from footage_media import wait_for_job
from live_server import live_server
from s3_server import S3_TEST_CREDENTIALS, MotoS3Server
from service_media import encode_image, tracklet_frames
from test_footage_queue import short_footage, submit, worker_process  # noqa: F401 (short_footage: a fixture)

pytestmark = [pytest.mark.redis, pytest.mark.milvus, pytest.mark.slow]


@pytest.fixture
def shared_env(redis_url, milvus_server, tmp_path, monkeypatch):
    for name, value in S3_TEST_CREDENTIALS.items():
        monkeypatch.setenv(name, value)  # the processes inherit them, as boto3's standard variables
    s3 = MotoS3Server(tmp_path / "moto.log").start()
    yield s3, {
        "REID_JOB_QUEUE": "redis", "REID_REDIS_URL": redis_url, "REID_JOB_HEARTBEAT_S": "1",
        "REID_GALLERY_BACKEND": "milvus", "REID_MILVUS_URI": milvus_server.uri,
        "REID_MILVUS_COLLECTION": f"replicas_{uuid.uuid4().hex[:12]}", "REID_MAX_FOOTAGE_BYTES": "200000000",
        "REID_MEDIA_BACKEND": "s3", "REID_S3_ENDPOINT": s3.endpoint, "REID_S3_BUCKET": "replica-media",
    }  # fmt: skip
    s3.stop()


def test_enroll_and_footage_through_one_replica_media_and_tracks_through_the_other(
    tiny_model, tmp_path, shared_env, short_footage  # noqa: F811
):
    s3, env = shared_env
    with ExitStack() as stack:
        first = stack.enter_context(live_server(tiny_model, tmp_path / "a", tmp_path / "a.log", **env))
        second = stack.enter_context(live_server(tiny_model, tmp_path / "b", tmp_path / "b.log", **env))
        stack.enter_context(worker_process(tiny_model, tmp_path / "w", tmp_path / "w.log", "w1", **env))
        one, other = stack.enter_context(first.client()), stack.enter_context(second.client())

        # A tracklet enrolled through one replica has its pictures served by the other.
        frames = [("frames", (f"{index}.png", encode_image(frame), "image/png"))
                  for index, frame in enumerate(tracklet_frames(7, 6))]  # fmt: skip
        assert one.post("/tracklets", files=frames, data={"tracklet_id": "shared-1"}).status_code == 201
        thumbnail = other.get("/tracklets/shared-1/thumbnail")
        assert thumbnail.status_code == 200 and thumbnail.content[:2] == b"\xff\xd8"
        assert thumbnail.content == one.get("/tracklets/shared-1/thumbnail").content
        assert other.get("/tracklets/shared-1/frames").json()["count"] == 4
        rendered = other.get("/tracklets/shared-1/attention/1")  # rendered there, cached in the bucket
        assert rendered.status_code == 200 and one.get("/tracklets/shared-1/attention/1").content == rendered.content

        # Footage accepted by one replica runs on the worker (its own data directory: it reads the upload
        # from the bucket); the other replica answers the job, its tracks and its tracklets' thumbnails.
        job_id = submit(one, short_footage, "cam-shared")
        done = wait_for_job(other, job_id)
        assert done["status"] == "done" and len(done["result"]["tracklets"]) == 2, done
        tracks = other.get(f"/jobs/{job_id}/tracks", params={"format": "mot"})
        assert tracks.status_code == 200 and tracks.text.count("\n") > 10
        for record in done["result"]["tracklets"]:
            assert record["has_thumbnail"]
            assert other.get(f"/tracklets/{record['id']}/thumbnail").status_code == 200
        # The video left the bucket with the job; the tracks stay; no replica kept anything of it on disk.
        assert s3.keys("replica-media", "footage/") == [f"footage/{job_id}/tracks.txt"]
        for folder in ("a", "b"):
            assert list((tmp_path / folder / "footage-spool").iterdir()) == []
            assert not (tmp_path / folder / "thumbnails").exists()

        # Deleting through the other replica removes the media from the bucket.
        assert other.delete("/tracklets/shared-1").status_code == 204
        assert not [key for key in s3.keys("replica-media") if "shared-1" in key]
