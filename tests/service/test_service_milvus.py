"""What only the Milvus backend has: replicas sharing one Milvus, Milvus going away and coming back, ties and
filter values that try to inject, the index kind following REID_INDEX. On Milvus Lite servers started here
(`python -m milvus_lite server`), as a user would."""

from __future__ import annotations

import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from gallery_backends import GalleryOpener
from live_server import live_server
from milvus_server import MilvusLiteServer
from service_media import encode_image, tracklet_frames

from service.app import create_app
from service.config import Settings
from service.errors import ConflictError
from service.gallery import TrackletFilter, TrackletRecord
from service.gallery.milvus import MilvusGallery

pytestmark = pytest.mark.milvus

DIM = 8


def frame_files(seed: int, count: int = 4):
    return [("frames", (f"{seed}-{k}.png", encode_image(frame), "image/png"))
            for k, frame in enumerate(tracklet_frames(seed, count))]


def test_two_service_processes_share_one_milvus(tiny_model, tmp_path, milvus_server):
    """Enrolled through one replica, found (and deleted) through another: they share nothing but Milvus."""
    gallery = {"REID_GALLERY_BACKEND": "milvus", "REID_MILVUS_URI": milvus_server.uri,
               "REID_MILVUS_COLLECTION": "two_replicas"}
    with live_server(tiny_model, tmp_path / "a", tmp_path / "a.log", **gallery) as first, \
            live_server(tiny_model, tmp_path / "b", tmp_path / "b.log", **gallery) as second, \
            first.client() as one, second.client() as other:
        enrolled = one.post("/tracklets", files=frame_files(7), data={"tracklet_id": "seen-by-a", "camera_id": "c1"})
        assert enrolled.status_code == 201, enrolled.text
        # At once, through the other process: Strong reads see every acknowledged write.
        assert other.get("/tracklets/seen-by-a").json()["camera_id"] == "c1"
        answer = other.post("/query", files=frame_files(7), data={"top_k": 3}).json()
        best = answer["matches"][0]
        assert best["id"] == "seen-by-a" and best["distance"] == pytest.approx(0, abs=1e-4)
        assert answer["gallery_size"] == 1
        conflict = other.post("/tracklets", files=frame_files(8), data={"tracklet_id": "seen-by-a"})
        assert conflict.status_code == 409
        assert other.delete("/tracklets/seen-by-a").status_code == 204
        assert one.get("/tracklets/seen-by-a").status_code == 404
        assert one.post("/query", files=frame_files(7), data={"top_k": 3}).json()["matches"] == []


def test_milvus_going_away_is_503_with_nothing_half_written(tiny_model, tmp_path):
    server = MilvusLiteServer(tmp_path / "milvus", tmp_path / "milvus.log").start()
    settings = Settings(model_path=tiny_model, device="cpu", intra_op_threads=1, max_wait_ms=2, _env_file=None,
                        data_dir=tmp_path / "data", gallery_backend="milvus", milvus_uri=server.uri,
                        milvus_collection="outage", milvus_timeout_s=2.0)
    try:
        with TestClient(create_app(settings)) as client:
            assert client.post("/tracklets", files=frame_files(1), data={"tracklet_id": "before"}).status_code == 201
            server.stop()
            started = time.monotonic()
            refused = client.post("/tracklets", files=frame_files(2), data={"tracklet_id": "during"})
            assert refused.status_code == 503, refused.text
            error = refused.json()["error"]
            assert error["code"] == "storage_unavailable" and "Milvus" in error["message"]
            assert refused.headers["retry-after"] == "5" and time.monotonic() - started < 30
            assert client.post("/query", data={"tracklet_id": "before"}).status_code == 503
            assert client.get("/healthz").json() == {"status": "ok"}  # the process is alive
            not_ready = client.get("/readyz")
            assert not_ready.status_code == 503 and not_ready.json()["error"]["code"] == "not_ready"
            assert "Milvus" in not_ready.json()["error"]["message"]
            assert client.get("/metrics").status_code == 200  # the size gauge reads NaN meanwhile

            server.start()  # the same data directory and port
            deadline = time.monotonic() + 60
            while client.get("/readyz").status_code != 200:
                assert time.monotonic() < deadline, "not ready again after Milvus came back"
                time.sleep(0.5)
            # The refused enroll left nothing; the earlier one is intact and the gallery writable again.
            assert client.get("/tracklets/during").status_code == 404
            assert client.get("/tracklets/before").status_code == 200
            assert client.get("/readyz").json()["gallery_size"] == 1
            assert client.post("/tracklets", files=frame_files(2), data={"tracklet_id": "during"}).status_code == 201
    finally:
        server.stop()


def test_a_service_cannot_start_without_milvus(tiny_model, tmp_path):
    settings = Settings(model_path=tiny_model, device="cpu", _env_file=None, gallery_backend="milvus",
                        milvus_uri="http://127.0.0.1:9", milvus_timeout_s=1.0)
    from service.errors import StartupError
    from service.state import load_state

    with pytest.raises(StartupError, match="cannot reach Milvus at http://127.0.0.1:9"):
        load_state(settings)


@pytest.fixture
def store(tmp_path, milvus_server):
    gallery = GalleryOpener("milvus", milvus_server.uri)(tmp_path, DIM, "v-milvus")
    yield gallery
    gallery.drop()
    gallery.close()


def test_filter_values_never_become_expression_text(store):
    vector = np.zeros(DIM, np.float32)
    nasty = ['c" or camera_id != "', "c' or 1 == 1 or '", 'c\\" or true or \\"', "c]) or (id != '", "ü漢\t\n\r"]
    for number, camera in enumerate(nasty):
        store.add(TrackletRecord(id=f"t{number}", camera_id=camera, person_id=camera, metadata={"k": camera}), vector)
    store.add(TrackletRecord(id="plain", camera_id="c"), vector)
    for number, camera in enumerate(nasty):
        for tracklet_filter in (TrackletFilter(cameras=[camera]), TrackletFilter(person_id=camera),
                                TrackletFilter(metadata={"k": camera})):
            assert [record.id for record in store.list(tracklet_filter)[0]] == [f"t{number}"]
        assert store.count(TrackletFilter(exclude_cameras=[camera])) == len(nasty)


def test_metadata_filters_follow_json_types(store):
    vector = np.zeros(DIM, np.float32)
    for name, value in (("int", 1), ("float", 1.0), ("true", True), ("text", "1"), ("null", None),
                        ("list", [1]), ("big", 2**60 + 1), ("half", 0.5)):
        store.add(TrackletRecord(id=name, metadata={"k": value}), vector)
    store.add(TrackletRecord(id="absent"), vector)

    def ids(value):
        return sorted(record.id for record in store.list(TrackletFilter(metadata={"k": value}))[0])

    assert ids(1) == ids(1.0) == ["float", "int"]  # 1 and 1.0 are one JSON number; true is not 1
    assert ids(True) == ["true"] and ids("1") == ["text"] and ids(None) == ["null"]
    assert ids(2**60 + 1) == ["big"] and ids(2**60) == [] and ids(0.5) == ["half"]


def test_the_index_follows_reid_index_and_is_rebuilt_when_it_changes(tmp_path, milvus_server):
    from service.gallery.index_kinds import IndexKind, IndexOptions

    opener = GalleryOpener("milvus", milvus_server.uri)
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(60, DIM)).astype(np.float32)
    gallery = opener(tmp_path, DIM, "v", index_options=IndexOptions(kind=IndexKind.FLAT))
    gallery.add_many([TrackletRecord(id=f"t{k}") for k in range(60)], vectors)
    assert gallery.index_type == "FLAT"
    gallery.close()
    hnsw = opener(tmp_path, DIM, "v", index_options=IndexOptions(kind=IndexKind.HNSW, hnsw_ef_search=200))
    try:
        assert hnsw.index_type == "HNSW" and hnsw.count() == 60
        (hits,) = hnsw.search(vectors[5:6], 3)
        assert hits[0].record.id == "t5" and hits[0].distance == pytest.approx(0.0, abs=1e-5)
        with pytest.raises(ConflictError):
            hnsw.add_many([TrackletRecord(id="new"), TrackletRecord(id="new")], vectors[:2])
        assert hnsw.count() == 60
    finally:
        hnsw.drop()
        hnsw.close()
    assert isinstance(hnsw, MilvusGallery)


def test_migrate_copies_a_sqlite_gallery_into_milvus_and_is_idempotent(tiny_model, tiny_card, tmp_path,
                                                                      milvus_server):
    from datetime import datetime, timezone

    from service.gallery import SqliteGallery

    dim, version = tiny_card["embedding"]["dim"], tiny_card["model_version"]
    rng = np.random.default_rng(4)
    vectors = rng.normal(size=(25, dim)).astype(np.float32)
    source = SqliteGallery(tmp_path / "gallery", dim, version)
    for number in range(25):
        source.add(TrackletRecord(
            id=f"m{number}", person_id=f"p{number % 4}", camera_id=None if number == 3 else f"c{number % 2}",
            metadata={"n": number, "odd": bool(number % 2)}, job_id="job" if number > 20 else None,
            start_time=datetime.fromtimestamp(1_700_000_000 + number, timezone.utc) if number % 5 else None,
        ), vectors[number])
    source.delete("m7")
    expected = source.list(None, 0, 100)[0]
    source.close()
    argv = ["migrate", "--to", "milvus", "--model", str(tiny_model), "--data-dir", str(tmp_path / "gallery"),
            "--milvus-uri", milvus_server.uri, "--milvus-collection", "migrated", "--chunk", "10"]
    from service.gallery.__main__ import main

    assert main(argv) == 0
    assert main(argv) == 0  # a second run copies nothing and changes nothing
    target = MilvusGallery(milvus_server.uri, "migrated", dim, version)
    try:
        listed, total = target.list(None, 0, 100)
        assert total == 24 and listed == expected  # every field, created_at and the enrollment order kept
        (hits,) = target.search(vectors[11:12], 1)
        assert hits[0].record.id == "m11" and hits[0].distance == pytest.approx(0.0, abs=1e-4)
        np.testing.assert_array_equal(target.get_embedding("m24"), vectors[24])
    finally:
        target.drop()
        target.close()


def test_concurrent_enrolls_of_one_id_in_a_process_store_one_record(store):
    import threading

    outcomes: list[str] = []

    def enroll(number: int) -> None:
        try:
            store.add(TrackletRecord(id="contested", person_id=f"p{number}"), np.full(DIM, number, np.float32))
            outcomes.append("stored")
        except ConflictError:
            outcomes.append("conflict")

    threads = [threading.Thread(target=enroll, args=(number,)) for number in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["conflict"] * 5 + ["stored"]
    assert store.count() == 1 and len(store.list()[0]) == 1
