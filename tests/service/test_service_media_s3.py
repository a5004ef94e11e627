"""The media store on both backends, and the service with REID_MEDIA_BACKEND=s3.

The S3 backend runs against moto's standalone S3 server started by the test as a subprocess
(`s3_server.MotoS3Server`): an emulator, because no real S3-compatible server (MinIO) can be installed on
the test machines; boto3 speaks real HTTP to it, so requests, error answers and a server that goes away
are real. Checked: enroll writes the thumbnail and frames to the bucket and the routes serve them from it;
delete removes every object; S3 stopped mid-way answers 503 JSON and leaves no record; a failing record
write leaves no media; the orphan sweep and the footage spool on both backends.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from s3_server import S3_TEST_CREDENTIALS, MotoS3Server
from service_media import encode_image, tracklet_frames
from test_service_api import assert_error

from service.app import create_app
from service.config import Settings
from service.errors import StartupError, StorageUnavailableError
from service.media import LocalMediaBackend, MediaStore, S3MediaBackend, open_backend
from service.media.store import SHARED_SWEEP_GRACE_S


@pytest.fixture(autouse=True)
def s3_credentials(monkeypatch):
    for name, value in S3_TEST_CREDENTIALS.items():
        monkeypatch.setenv(name, value)


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    """One moto server for the module's tests that keep it running; each test uses its own bucket."""
    server = MotoS3Server(tmp_path_factory.mktemp("moto") / "server.log").start()
    yield server
    server.stop()


def s3_backend(server: MotoS3Server, bucket: str) -> S3MediaBackend:
    settings = Settings(media_backend="s3", s3_endpoint=server.endpoint, s3_bucket=bucket, s3_timeout_s=2,
                        _env_file=None)  # fmt: skip
    return open_backend(settings)


@pytest.fixture(params=["local", "s3"])
def backend(request, tmp_path):
    if request.param == "local":
        return LocalMediaBackend(tmp_path / "data")
    return s3_backend(request.getfixturevalue("s3_server"), f"unit-{time.monotonic_ns()}")


# ------------------------------------------------------------------------------------------ the store itself
def test_blobs_files_prefixes_and_listing(backend, tmp_path):
    backend.put("frames/a/0.jpg", b"zero")
    backend.put("frames/a/1.jpg", b"one")
    backend.put("frames/ab/0.jpg", b"other")  # shares a's prefix as a string, not as a folder
    assert backend.get("frames/a/1.jpg") == b"one" and backend.get("frames/a/2.jpg") is None
    listed = dict(backend.list("frames/a/"))
    assert sorted(listed) == ["frames/a/0.jpg", "frames/a/1.jpg"]
    assert all(abs(modified - time.time()) < 120 for modified in listed.values())
    backend.delete_prefix("frames/a/")
    assert list(backend.list("frames/a/")) == [] and backend.get("frames/ab/0.jpg") == b"other"
    backend.delete("frames/ab/0.jpg")
    backend.delete("frames/ab/0.jpg")  # twice is fine
    assert backend.get("frames/ab/0.jpg") is None
    source = tmp_path / "upload.video"
    source.write_bytes(os.urandom(300_000))
    backend.put_file("footage/j1/video", source)
    assert backend.get_file("footage/j1/video", tmp_path / "fetched" / "video")
    assert (tmp_path / "fetched" / "video").read_bytes() == source.read_bytes()
    assert not backend.get_file("footage/nope/video", tmp_path / "fetched" / "none")
    assert not (tmp_path / "fetched" / "none").exists()


def test_tracklet_media_and_footage_through_the_store(backend, tmp_path):
    store = MediaStore(backend)
    levels = [20, 80, 140, 200]
    frames = np.stack([np.full((64, 32, 3), (level, 255 - level, 128), np.uint8) for level in levels])
    assert store.write_frames("walker:1", frames) == 4 and store.write("walker:1", frames[2])
    store.write_attention("walker:1", 1, b"png-bytes")
    assert store.frame_count("walker:1") == 4
    loaded = store.load_frames("walker:1")
    assert loaded.shape == frames.shape and np.abs(loaded.astype(int) - frames.astype(int)).max() <= 3  # JPEG
    thumbnail = cv2.imdecode(np.frombuffer(store.read("walker:1"), np.uint8), cv2.IMREAD_COLOR)
    assert thumbnail.shape == (64, 32, 3)
    assert store.read_attention("walker:1", 1) == b"png-bytes"
    # Writing frames again replaces them and drops the overlays rendered from the old ones.
    assert store.write_frames("walker:1", frames[:3]) == 3 and store.frame_count("walker:1") == 3
    assert store.read_attention("walker:1", 1) is None
    store.delete("walker:1")
    assert store.read("walker:1") is None and store.frame_count("walker:1") == 0
    assert store.load_frames("walker:1") is None
    # Footage: what the accepting process puts, a worker elsewhere fetches; deleted with the job.
    video = tmp_path / "spooled.video"
    video.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(1000))
    store.put_footage("job-7", video)
    (tmp_path / "tracks.txt").write_text("1,1,0,0,10,20,1,-1,-1,-1\n")
    store.put_footage("job-7", tmp_path / "tracks.txt", name="tracks.txt")
    assert store.fetch_footage("job-7", tmp_path / "worker" / "job-7.video")
    assert (tmp_path / "worker" / "job-7.video").read_bytes() == video.read_bytes()
    assert store.fetch_footage("job-7", tmp_path / "worker" / "tracks", name="tracks.txt")
    assert (tmp_path / "worker" / "tracks").read_text().startswith("1,1,")
    store.delete_footage("job-7")
    assert not store.fetch_footage("job-7", tmp_path / "worker" / "again")
    assert list(backend.list("footage/")) == []


def test_orphans_are_swept_on_both_backends_and_a_shared_store_spares_recent_writes(backend):
    store = MediaStore(backend)
    picture = np.zeros((64, 32, 3), np.uint8)
    for tracklet_id in ("kept", "orphan", "frameless"):
        store.write(tracklet_id, picture)
    for tracklet_id in ("kept", "orphan"):
        store.write_frames(tracklet_id, np.stack([picture] * 2))
        store.write_attention(tracklet_id, 1, b"png")
    records = {"kept": True, "frameless": False}  # frameless: a record without has_thumbnail
    has_record = records.__contains__
    has_thumbnail = records.get

    def keys() -> list[str]:
        return sorted(key for prefix in ("thumbnails/", "frames/", "attention/") for key, _ in backend.list(prefix))

    everything = keys()
    # Media written after the sweep's start (less the grace on a shared store) is an enroll in progress.
    assert store.remove_orphans(has_thumbnail, time.time() - 60, has_record) == 0 and keys() == everything
    if backend.shared:
        assert store.remove_orphans(has_thumbnail, time.time() + 5, has_record) == 0 and keys() == everything
    later = time.time() + 5 + (SHARED_SWEEP_GRACE_S if backend.shared else 0)
    assert store.remove_orphans(has_thumbnail, later, has_record) == 4  # 2 thumbnails, frames, attention
    assert keys() == ["attention/kept/1.png", "frames/kept/0.jpg", "frames/kept/1.jpg", "thumbnails/kept.jpg"]


def test_a_stopped_s3_server_is_a_storage_error_not_a_crash(tmp_path):
    server = MotoS3Server(tmp_path / "moto.log").start()
    backend = s3_backend(server, "going-away")
    store = MediaStore(backend)
    store.write("there", np.zeros((8, 8, 3), np.uint8))
    server.stop()
    for call in (lambda: store.read("there"), lambda: store.write("new", np.zeros((8, 8, 3), np.uint8)),
                 lambda: store.frame_count("there"), lambda: store.delete("there"),
                 lambda: store.put_footage("j", Path(__file__))):  # fmt: skip
        with pytest.raises(StorageUnavailableError) as raised:
            call()
        assert "going-away" in raised.value.message and raised.value.status_code == 503
    # The sweep gives up quietly (the next start resumes it); an overlay that cannot be cached is only logged.
    assert store.remove_orphans(lambda _: False, time.time() + 2 * SHARED_SWEEP_GRACE_S, lambda _: False) == 0
    store.write_attention("there", 1, b"png")


def test_settings_that_cannot_work_stop_the_start(tmp_path):
    with pytest.raises(StartupError, match="REID_S3_ENDPOINT"):
        open_backend(Settings(media_backend="s3", _env_file=None))
    port_with_nothing = MotoS3Server(tmp_path / "unused.log").port
    with pytest.raises(StartupError, match="cannot be reached"):
        open_backend(Settings(media_backend="s3", s3_endpoint=f"http://127.0.0.1:{port_with_nothing}",
                              s3_timeout_s=1, _env_file=None))  # fmt: skip


# ------------------------------------------------------------------------------------------ the service on S3
def frames_upload(seed: int, count: int = 6):
    return [("frames", (f"f{index:02d}.png", encode_image(frame), "image/png"))
            for index, frame in enumerate(tracklet_frames(seed, count))]  # fmt: skip


def s3_client(model, data_dir, server: MotoS3Server, bucket: str) -> TestClient:
    settings = Settings(model_path=model, data_dir=data_dir, device="cpu", intra_op_threads=1, max_wait_ms=1,
                        media_backend="s3", s3_endpoint=server.endpoint, s3_bucket=bucket, s3_timeout_s=2,
                        _env_file=None)  # fmt: skip
    return TestClient(create_app(settings))


def test_enroll_serve_and_delete_media_in_the_bucket(tiny_model, tiny_card, tmp_path, s3_server):
    bucket = "service-media"
    with s3_client(tiny_model, tmp_path / "gallery", s3_server, bucket) as client:
        response = client.post("/tracklets", files=frames_upload(1), data={"tracklet_id": "alice-1"})
        assert response.status_code == 201 and response.json()["has_thumbnail"], response.text
        count = tiny_card["num_frames"]
        assert s3_server.keys(bucket) == sorted(["thumbnails/alice-1.jpg",
                                                 *(f"frames/alice-1/{index}.jpg" for index in range(count))])
        assert not (tmp_path / "gallery" / "thumbnails").exists()  # nothing on the local disk
        stored = s3_server.client().get_object(Bucket=bucket, Key="thumbnails/alice-1.jpg")["Body"].read()
        thumbnail = client.get("/tracklets/alice-1/thumbnail")
        assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/jpeg"
        assert thumbnail.content == stored
        assert client.get("/tracklets/alice-1/frames").json()["count"] == count
        frame = client.get(f"/tracklets/alice-1/frames/{count - 1}")
        assert frame.status_code == 200
        assert cv2.imdecode(np.frombuffer(frame.content, np.uint8), cv2.IMREAD_COLOR).shape[:2] == (
            tiny_card["input"]["height"], tiny_card["input"]["width"])
        attention = client.get("/tracklets/alice-1/attention/1")
        assert attention.status_code == 200 and attention.content[:4] == b"\x89PNG"
        assert "attention/alice-1/1.png" in s3_server.keys(bucket)  # the cache is in the bucket too
        assert client.delete("/tracklets/alice-1").status_code == 204
        assert s3_server.keys(bucket) == []
        assert_error(client.get("/tracklets/alice-1/thumbnail"), 404, "not_found")


def test_a_failing_record_write_leaves_no_media_in_the_bucket(tiny_model, tmp_path, s3_server):
    bucket = "record-fails"
    with s3_client(tiny_model, tmp_path / "gallery", s3_server, bucket) as client:
        assert client.post("/tracklets", files=frames_upload(2), data={"tracklet_id": "kept"}).status_code == 201
        kept = s3_server.keys(bucket)
        gallery = client.app.state.service.gallery
        # SQLite's own switch: every write fails with the real SQLITE_READONLY error (see the storage tests).
        gallery.records._db.execute("PRAGMA query_only = ON")
        refused = client.post("/tracklets", files=frames_upload(3), data={"tracklet_id": "refused"})
        assert_error(refused, 503, "storage_unavailable")
        gallery.records._db.execute("PRAGMA query_only = OFF")
        assert s3_server.keys(bucket) == kept  # the frames and thumbnail written first were removed
        assert_error(client.get("/tracklets/refused"), 404)


def test_s3_stopped_mid_way_answers_503_and_leaves_no_record(tiny_model, tmp_path):
    server = MotoS3Server(tmp_path / "moto.log").start()
    try:
        with s3_client(tiny_model, tmp_path / "gallery", server, "outage") as client:
            assert client.post("/tracklets", files=frames_upload(4), data={"tracklet_id": "before"}).status_code == 201
            server.stop()
            started = time.monotonic()
            error = assert_error(client.post("/tracklets", files=frames_upload(5), data={"tracklet_id": "during"}),
                                 503, "storage_unavailable")  # fmt: skip
            assert "outage" in error["message"] and time.monotonic() - started < 30
            assert_error(client.get("/tracklets/during"), 404, "not_found")
            assert {item["id"] for item in client.get("/tracklets").json()["items"]} == {"before"}
            # Media reads say why too; searches, which need no media, keep working.
            assert_error(client.get("/tracklets/before/thumbnail"), 503, "storage_unavailable")
            assert_error(client.get("/tracklets/before/frames"), 503, "storage_unavailable")
            query = client.post("/query", files=frames_upload(4), data={"top_k": "1"})
            assert query.status_code == 200 and query.json()["matches"][0]["id"] == "before"
            # A delete removes the record (204); its media, out of reach now, is what the next start sweeps.
            assert client.delete("/tracklets/before").status_code == 204
            assert_error(client.get("/tracklets/before"), 404, "not_found")
    finally:
        server.stop()


def test_a_worker_keeps_no_footage_once_its_job_ended(backend, tmp_path):
    """REID_JOB_QUEUE=redis with S3 media (`MediaFootageFolders`): the worker fetches the video into its own disk
    and stores the job's tracks in the bucket; once the job ended it holds nothing of it (docker/README: a
    worker holds nothing), while any replica still reads the tracks."""
    from service.footage.media_spool import MediaFootageFolders

    store = MediaStore(backend)
    replica, worker = MediaFootageFolders(tmp_path / "replica", store), MediaFootageFolders(tmp_path / "worker", store)
    replica.video("job-9").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(100))
    replica.put("job-9")
    assert worker.fetch("job-9").is_file()
    worker.save_tracks("job-9", "1,1,0,0,10,20,1,-1,-1,-1\n")
    worker.remove("job-9")
    assert replica.read_tracks("job-9") == "1,1,0,0,10,20,1,-1,-1,-1\n"
    assert [path for path in (tmp_path / "worker").rglob("*") if path.is_file()] == []


def test_a_replace_whose_media_write_fails_leaves_the_old_record_its_pictures(tiny_model, tiny_card, tmp_path):
    """POST /tracklets?replace=true when the media store fails mid-way (here a real write error on the local disk:
    the thumbnail's temporary name is taken by a directory) answers 503 and keeps the old record; the old record
    must still have its frames and thumbnail, not lose them to the failed replace."""
    settings = Settings(model_path=tiny_model, data_dir=tmp_path / "gallery", device="cpu", intra_op_threads=1,
                        max_wait_ms=1, _env_file=None)  # fmt: skip
    with TestClient(create_app(settings)) as client:
        assert client.post("/tracklets", files=frames_upload(1), data={"tracklet_id": "bob"}).status_code == 201
        old = client.get("/tracklets/bob").json()
        (tmp_path / "gallery" / "thumbnails" / "bob.jpg.tmp").mkdir()
        failed = client.post("/tracklets", files=frames_upload(2), data={"tracklet_id": "bob", "replace": "true"})
        assert_error(failed, 503, "storage_unavailable")
        assert client.get("/tracklets/bob").json() == old
        count = tiny_card["num_frames"]
        assert client.get("/tracklets/bob/frames").json()["count"] == count
        assert all(client.get(f"/tracklets/bob/frames/{index}").status_code == 200 for index in range(count))
        assert client.get("/tracklets/bob/thumbnail").status_code == 200


def test_a_local_media_error_on_delete_is_not_a_500(tiny_model, tmp_path):
    """DELETE /tracklets/{id} when the local media store fails to remove a file (a real OS error: the frames'
    folder is a plain file, as a damaged data directory may have it): the record is gone and the answer is 204,
    the media left to the start-up sweep, as when S3 is away; never a 500."""
    import shutil

    settings = Settings(model_path=tiny_model, data_dir=tmp_path / "gallery", device="cpu", intra_op_threads=1,
                        max_wait_ms=1, _env_file=None)  # fmt: skip
    with TestClient(create_app(settings)) as client:
        assert client.post("/tracklets", files=frames_upload(1), data={"tracklet_id": "carol"}).status_code == 201
        frames = tmp_path / "gallery" / "frames" / "carol"
        shutil.rmtree(frames)
        frames.write_bytes(b"not a folder")
        assert client.delete("/tracklets/carol").status_code == 204
        assert_error(client.get("/tracklets/carol"), 404, "not_found")
