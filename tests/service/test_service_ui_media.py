"""What the web page needs from the service: the page itself at /ui (public, GET / redirects), the frames a
tracklet was embedded from, its attention overlays (rendered torch-free, checked against onnxruntime +
models.overlay run here independently), media deleted with the tracklet, and query by tracklet id without
the query itself."""

from __future__ import annotations

import errno
import json

import cv2
import numpy as np
import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient
from service_media import encode_image, tracklet_frames
from test_service_api import assert_error

from models.overlay import overlay_frames
from service.app import create_app
from service.config import Settings

KEY = "page-test-key"


def frames_upload(seed: int, count: int = 6):
    return [("frames", (f"f{index:02d}.png", encode_image(frame), "image/png"))
            for index, frame in enumerate(tracklet_frames(seed, count))]  # fmt: skip


def make_client(model, folder, **settings):
    return TestClient(create_app(Settings(model_path=model, data_dir=folder, device="cpu", intra_op_threads=1,
                                          max_wait_ms=1, _env_file=None, **settings)))  # fmt: skip


@pytest.fixture(scope="module")
def client(tiny_model, tmp_path_factory):
    with make_client(tiny_model, tmp_path_factory.mktemp("gallery")) as test_client:
        yield test_client


def enroll(client, tracklet_id: str, seed: int, person: str, camera: str = "cam1"):
    response = client.post("/tracklets", files=frames_upload(seed),
                           data={"tracklet_id": tracklet_id, "person_id": person, "camera_id": camera})  # fmt: skip
    assert response.status_code == 201, response.text
    return response.json()


def test_the_page_is_served_without_a_key_and_the_api_still_needs_one(tiny_model, tmp_path):
    with make_client(tiny_model, tmp_path, api_key=KEY) as client:
        root = client.get("/", follow_redirects=False)
        assert root.status_code == 307 and root.headers["location"] == "/ui/"
        assert client.get("/ui", follow_redirects=False).headers["location"] == "/ui/"
        page = client.get("/ui/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert '<script type="module" src="app.js">' in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
        for name, kind in (("app.js", "javascript"), ("api.js", "javascript"), ("style.css", "text/css")):
            asset = client.get(f"/ui/{name}")
            assert asset.status_code == 200 and kind in asset.headers["content-type"], name
        assert_error(client.get("/ui/%2e%2e/config.py"), 404)
        assert_error(client.get("/tracklets"), 401, "unauthorized")
        assert client.get("/tracklets", headers={"X-API-Key": KEY}).status_code == 200
        # The page is not an API operation.
        paths = client.get("/openapi.json", headers={"X-API-Key": KEY}).json()["paths"]
        assert "/" not in paths and not any(path.startswith("/ui") for path in paths)


def test_frames_are_kept_at_the_model_size_and_served(client, tiny_card):
    enroll(client, "kept", seed=1, person="p1")
    listing = client.get("/tracklets/kept/frames").json()
    count = tiny_card["num_frames"]
    assert listing == {"count": count, "urls": [f"/tracklets/kept/frames/{index}" for index in range(count)]}
    for index in range(count):
        response = client.get(f"/tracklets/kept/frames/{index}")
        assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
        image = cv2.imdecode(np.frombuffer(response.content, np.uint8), cv2.IMREAD_COLOR)
        assert image.shape == (tiny_card["input"]["height"], tiny_card["input"]["width"], 3)
    assert_error(client.get(f"/tracklets/kept/frames/{count}"), 404, "not_found")
    assert_error(client.get("/tracklets/nobody/frames"), 404, "not_found")
    assert_error(client.get("/tracklets/kept/frames/-1"), 422)


def test_attention_overlays_match_onnxruntime_and_the_overlay_renderer(client, tiny_model, tiny_card):
    enroll(client, "seen", seed=2, person="p2")
    listing = client.get("/tracklets/seen/attention").json()["granularities"]
    names = tiny_card["attention_outputs"]
    assert names and [item["granularity"] for item in listing] == list(range(1, len(names) + 1))
    assert listing[0]["name"] == "G-1st" and listing[0]["url"] == "/tracklets/seen/attention/1"
    # The same rendering, computed here from the stored frames without the service's code.
    frames = np.stack([
        cv2.cvtColor(cv2.imdecode(np.frombuffer(client.get(f"/tracklets/seen/frames/{index}").content, np.uint8),
                                  cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        for index in range(tiny_card["num_frames"])
    ])  # fmt: skip
    session = ort.InferenceSession(str(tiny_model), providers=["CPUExecutionProvider"])
    attentions = session.run(names, {tiny_card["input"]["name"]: frames[None]})
    for number, attention in enumerate(attentions, start=1):
        response = client.get(f"/tracklets/seen/attention/{number}")
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
        served = cv2.cvtColor(cv2.imdecode(np.frombuffer(response.content, np.uint8), cv2.IMREAD_COLOR),
                              cv2.COLOR_BGR2RGB)  # fmt: skip
        expected = overlay_frames(frames, attention[0])
        width = frames.shape[2]
        assert served.shape == (frames.shape[1], len(frames) * (width + 2) - 2, 3)
        for index in range(len(frames)):
            left = index * (width + 2)
            # PNG is lossless; onnxruntime may differ in the last bits between sessions, so allow 1 level.
            assert np.abs(served[:, left:left + width].astype(int) - expected[index].astype(int)).max() <= 1
        # Cached: the second answer is the same file.
        assert client.get(f"/tracklets/seen/attention/{number}").content == response.content
    assert_error(client.get(f"/tracklets/seen/attention/{len(names) + 1}"), 404, "not_found")
    assert_error(client.get("/tracklets/seen/attention/0"), 422)


def test_delete_removes_every_picture(client):
    enroll(client, "gone", seed=3, person="p3")
    assert client.get("/tracklets/gone/attention/1").status_code == 200
    data_dir = client.app.state.settings.data_dir
    folders = [data_dir / "frames" / "gone", data_dir / "attention" / "gone", data_dir / "thumbnails" / "gone.jpg"]
    assert all(path.exists() for path in folders)
    assert client.delete("/tracklets/gone").status_code == 204
    assert not any(path.exists() for path in folders)
    assert_error(client.get("/tracklets/gone/frames/0"), 404)


def test_no_frames_kept_when_turned_off(tiny_model, tmp_path):
    with make_client(tiny_model, tmp_path, store_frames=False) as client:
        enroll(client, "private", seed=4, person="p4")
        assert client.get("/tracklets/private/frames").json() == {"count": 0, "urls": []}
        assert client.get("/tracklets/private/attention").json() == {"granularities": []}
        assert_error(client.get("/tracklets/private/attention/1"), 404, "not_found")
        assert not any((tmp_path / "frames").iterdir())


def test_query_by_tracklet_id_can_leave_the_query_out(client):
    for index, (seed, person) in enumerate([(10, "a"), (11, "a"), (12, "b"), (13, "c")]):
        enroll(client, f"q{index}", seed=seed, person=person, camera=f"cam{index}")

    def ids(**fields):
        response = client.post("/query", data={"tracklet_id": "q0", "top_k": 3, "cameras": "cam0,cam1,cam2,cam3",
                                               **fields})  # fmt: skip
        assert response.status_code == 200, response.text
        return response.json()["matches"]

    full = ids(top_k=4)
    assert full[0]["id"] == "q0" and full[0]["distance"] == pytest.approx(0.0, abs=1e-3)
    without = ids(exclude_query="true")
    assert [match["id"] for match in without] == [match["id"] for match in full[1:4]]
    assert [match["rank"] for match in without] == [1, 2, 3]
    grouped = ids(exclude_query="true", group_by="person")
    # Person a is now represented by q1, their only other tracklet; every person once, by distance.
    by_person = {match["person_id"]: match for match in grouped}
    assert set(by_person) == {"a", "b", "c"} and by_person["a"]["id"] == "q1"
    assert by_person["a"]["person_matches"] == 1
    distances = {match["id"]: match["distance"] for match in full}
    assert [match["distance"] for match in grouped] == sorted(distances[match["id"]] for match in grouped)
    assert_error(client.post("/query", files=frames_upload(10), data={"exclude_query": "true"}), 422)
    assert_error(client.post("/query", data={"tracklet_id": "q0", "exclude_query": "true", "group_by": "person",
                                             "rerank": "true"}), 422, "invalid_request")  # fmt: skip
    json.dumps(without)


@pytest.mark.parametrize(("code", "status"), [(errno.ENOSPC, 507), (errno.EIO, 503)])
def test_a_failing_disk_while_writing_frames_stores_nothing(client, monkeypatch, code, status):
    import service.media.backends as media_module

    def failing_fsync(descriptor: int) -> None:
        raise OSError(code, "simulated")

    monkeypatch.setattr(media_module.os, "fsync", failing_fsync)
    response = client.post("/tracklets", files=frames_upload(30), data={"tracklet_id": f"disk-{code}"})
    assert_error(response, status)
    monkeypatch.undo()
    assert client.get(f"/tracklets/disk-{code}").status_code == 404
    assert not (client.app.state.settings.data_dir / "frames" / f"disk-{code}").exists()
