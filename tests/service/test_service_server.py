"""Against a real server process on a free loopback port: the whole life of a gallery, restarts, a kill -9
in the middle of a stream of enrolls, and start-up failures."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest
from live_server import API_KEY, REPO_ROOT, LiveServer, free_port, live_server, server_environment
from service_media import encode_image, encode_video, tracklet_frames, zip_bytes

from service.gallery import BACKENDS, SqliteGallery, TrackletRecord

pytestmark = pytest.mark.slow

def frames_upload(seed: int, count: int = 6):
    return [("frames", (f"{k}.png", encode_image(frame), "image/png"))
            for k, frame in enumerate(tracklet_frames(seed, count))]


def video_upload(seed: int, count: int = 8):
    return [("video", ("clip.mp4", encode_video(tracklet_frames(seed, count), "mp4v", ".mp4"), "video/mp4"))]


def archive_upload(seed: int, count: int = 5):
    entries = [(f"{k:03d}.png", encode_image(frame)) for k, frame in enumerate(tracklet_frames(seed, count))]
    return [("archive", ("t.zip", zip_bytes(entries), "application/zip"))]


def snapshot(client: httpx.Client) -> tuple[list[dict], dict[str, list]]:
    """Everything enrolled, and each tracklet's ranking when used as the query."""
    items = client.get("/tracklets", params={"limit": 1000}).json()["items"]
    rankings = {}
    for item in items:
        matches = client.post("/query", data={"tracklet_id": item["id"], "top_k": "10"}).json()["matches"]
        rankings[item["id"]] = [(match["id"], round(match["distance"], 4)) for match in matches]
    return items, rankings


def test_gallery_lifecycle_over_http_with_restart(tiny_model, tmp_path):
    data_dir, log_path = tmp_path / "gallery", tmp_path / "server.log"
    with live_server(tiny_model, data_dir, log_path) as server, server.client() as client:
        ready = client.get("/readyz").json()
        assert ready["device"] == "cpu" and ready["gallery_size"] == 0
        plan = [("p1-c1", "p1", "c1", frames_upload(11)), ("p1-c2", "p1", "c2", video_upload(12)),
                ("p2-c1", "p2", "c1", archive_upload(21)), ("p2-c2", "p2", "c2", frames_upload(22)),
                ("p3-c1", "p3", "c1", frames_upload(31))]
        for tracklet_id, person, camera, files in plan:
            response = client.post("/tracklets", files=files,
                                   data={"tracklet_id": tracklet_id, "person_id": person, "camera_id": camera})
            assert response.status_code == 201, response.text

        # The same media as query: itself first, at distance ~0.
        for tracklet_id, files in [("p1-c2", video_upload(12)), ("p2-c1", archive_upload(21))]:
            matches = client.post("/query", files=files, data={"top_k": "5"}).json()["matches"]
            assert matches[0]["id"] == tracklet_id
            assert matches[0]["distance"] < 1e-6 * matches[1]["distance"]

        # Cross-camera protocol.
        matches = client.post("/query", files=frames_upload(11),
                              data={"camera_id": "c1", "exclude_same_camera": "true", "top_k": "10"}).json()["matches"]
        assert {match["id"] for match in matches} == {"p1-c2", "p2-c2"}

        # Delete.
        assert client.delete("/tracklets/p3-c1").status_code == 204
        assert client.get("/tracklets/p3-c1").status_code == 404
        assert "p3-c1" not in [m["id"] for m in
                               client.post("/query", files=frames_upload(31), data={"top_k": "10"}).json()["matches"]]

        # Bad input over a real socket, including the streamed size limit.
        assert client.post("/tracklets", files=[("video", ("x.mp4", b"plain text", "video/mp4"))]).status_code == 422
        assert client.post("/tracklets", files=frames_upload(1, 2) + video_upload(1, 2)).status_code == 422
        assert client.post("/query", data={"tracklet_id": "p1-c1", "top_k": "0"}).status_code == 422
        assert client.post("/query", data={"tracklet_id": "nobody"}).status_code == 404
        big = client.post("/tracklets", files=[("video", ("big.mp4", b"\0" * 3_000_000, "video/mp4"))])
        assert big.status_code == 413 and big.json()["error"]["code"] == "upload_too_large"

        def streamed_body():
            yield b"--b\r\nContent-Disposition: form-data; name=\"video\"; filename=\"v.mp4\"\r\n\r\n"
            for _ in range(30):
                yield b"\0" * 100_000
            yield b"\r\n--b--\r\n"

        streamed = client.post("/tracklets", content=streamed_body(),
                               headers={"Content-Type": "multipart/form-data; boundary=b"})
        assert streamed.status_code == 413
        assert httpx.get(f"{server.url}/tracklets", timeout=10).status_code == 401
        assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
        items_before, rankings_before = snapshot(client)
        assert len(items_before) == 4

    log = server.log()
    assert API_KEY not in log
    request_lines = [line for line in log.splitlines() if "service.middleware" in line and " id=" in line]
    assert any("POST /tracklets 201" in line for line in request_lines)
    assert any("POST /tracklets 413" in line for line in request_lines)

    # Restart, this time as `uvicorn service.app:app`: everything enrolled is still there and ranks the same.
    with live_server(tiny_model, data_dir, log_path, command="uvicorn") as server, server.client() as client:
        assert client.get("/readyz").json()["gallery_size"] == 4
        items_after, rankings_after = snapshot(client)
        assert items_after == items_before
        assert rankings_after == rankings_before
        matches = client.post("/query", files=video_upload(12), data={"top_k": "1"}).json()["matches"]
        assert matches[0]["id"] == "p1-c2" and matches[0]["distance"] < 1e-3


def test_every_acknowledged_enroll_survives_kill_9(tiny_model, tmp_path):
    data_dir, log_path = tmp_path / "gallery", tmp_path / "server.log"
    acknowledged: list[int] = []
    attempted: list[int] = []
    stop = threading.Event()
    seeds = iter(range(1000, 2000))
    seed_lock = threading.Lock()

    def enroll_forever(server: LiveServer) -> None:
        with server.client() as client:
            while not stop.is_set():
                with seed_lock:
                    seed = next(seeds)
                    attempted.append(seed)
                try:
                    response = client.post("/tracklets", files=frames_upload(seed, 4),
                                           data={"tracklet_id": f"s{seed}", "camera_id": "c1"})
                except httpx.TransportError:
                    return  # the server died under us: this enroll was never acknowledged
                if response.status_code == 201:
                    acknowledged.append(seed)

    with live_server(tiny_model, data_dir, log_path) as server:
        workers = [threading.Thread(target=enroll_forever, args=(server,)) for _ in range(3)]
        for worker in workers:
            worker.start()
        deadline = time.monotonic() + 60
        while len(acknowledged) < 8 and time.monotonic() < deadline:
            time.sleep(0.02)
        server.process.send_signal(signal.SIGKILL)  # requests are in flight right now
        server.process.wait(10)
        stop.set()
        for worker in workers:
            worker.join(30)
    assert len(acknowledged) >= 8

    with live_server(tiny_model, data_dir, log_path) as server, server.client() as client:
        enrolled = {item["id"] for item in client.get("/tracklets", params={"limit": 1000}).json()["items"]}
        # Every acknowledged enroll is there; beyond them only enrolls that were in flight at the kill (at
        # most one per worker) may have committed.
        assert {f"s{seed}" for seed in acknowledged} <= enrolled <= {f"s{seed}" for seed in attempted}
        assert len(enrolled) - len(acknowledged) <= len(workers)
        for seed in acknowledged:
            matches = client.post("/query", files=frames_upload(seed, 4), data={"top_k": "1"}).json()["matches"]
            assert matches[0]["id"] == f"s{seed}" and matches[0]["distance"] < 1e-3


def run_to_exit(argv: list[str], environment: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=REPO_ROOT, env=environment, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("command", ["module", "uvicorn"])
def test_missing_model_exits_at_once_with_one_line(tmp_path, command):
    environment = server_environment(tmp_path / "absent.onnx", tmp_path / "gallery")
    argv = ([sys.executable, "-m", "service", "--port", str(free_port())] if command == "module"
            else [sys.executable, "-m", "uvicorn", "service.app:app", "--port", str(free_port())])
    result = run_to_exit(argv, environment)
    assert result.returncode != 0
    output = (result.stderr + result.stdout).strip()
    assert "Traceback" not in output
    reason = [line for line in output.splitlines() if "cannot start" in line]
    assert len(reason) == 1 and "absent.onnx" in reason[0] and "not found" in reason[0]


def test_gallery_of_another_model_refuses_to_start(tiny_model, tiny_card, tmp_path):
    store = SqliteGallery(tmp_path / "gallery", tiny_card["embedding"]["dim"], "an-older-model")
    for index in range(2):
        store.add(TrackletRecord(id=f"old{index}"), np.full(tiny_card["embedding"]["dim"], index, np.float32))
    store.close()
    result = run_to_exit([sys.executable, "-m", "service", "--port", str(free_port())],
                         server_environment(tiny_model, tmp_path / "gallery"))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "2 by model_version an-older-model" in result.stderr
    assert json.loads(tiny_model.with_suffix(".json").read_text())["model_version"] in result.stderr


def test_an_unknown_gallery_backend_exits_at_once_with_one_line(tiny_model, tmp_path):
    result = run_to_exit([sys.executable, "-m", "service", "--port", str(free_port())],
                         server_environment(tiny_model, tmp_path / "gallery", REID_GALLERY_BACKEND="cassandra"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    reason = [line for line in result.stderr.splitlines() if "cannot start" in line]
    assert reason == ["reid service cannot start: REID_GALLERY_BACKEND='cassandra' is not a gallery backend; "
                      f"choose one of: {', '.join(sorted(BACKENDS))}"]
