"""HTTP framing and connection bounds, over raw loopback sockets against real servers (`python -m service`,
plain `uvicorn service.app:app`, and uvicorn with the service's protocol): request smuggling, slow headers,
too many connections; and through the app in-process: truncated multipart, overflowing metadata numbers,
405 answers with their Allow header."""

from __future__ import annotations

import socket
import time

import pytest
from fastapi.testclient import TestClient
from live_server import API_KEY, live_server
from service_media import encode_image, tracklet_frames

from service.app import create_app
from service.config import Settings

pytestmark = pytest.mark.slow


def read_all(connection: socket.socket, timeout_s: float) -> tuple[bytes, bool]:
    """Everything the server sends until it closes (True) or goes quiet for ``timeout_s`` (False)."""
    connection.settimeout(timeout_s)
    data = b""
    try:
        while chunk := connection.recv(65536):
            data += chunk
    except TimeoutError:
        return data, False
    except ConnectionResetError:
        pass
    return data, True


def smuggling_attempt(port: int) -> bytes:
    """A POST with Content-Length and Transfer-Encoding; after its chunked body, a second request."""
    smuggled = f"GET /tracklets HTTP/1.1\r\nHost: x\r\nX-API-Key: {API_KEY}\r\n\r\n".encode()
    body = b"0\r\n\r\n" + smuggled
    head = (f"POST /query HTTP/1.1\r\nHost: x\r\nX-API-Key: {API_KEY}\r\nContent-Type: application/json\r\n"
            f"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(head + body)
        data, closed = read_all(connection, 5)
    assert closed, data
    return data


def assert_smuggling_refused(port: int) -> None:
    data = smuggling_attempt(port)
    assert data.startswith(b"HTTP/1.1 400"), data[:200]
    assert data.count(b"HTTP/1.1 ") == 1, data  # the bytes after the body were never served
    assert b"Transfer-Encoding" in data and b"connection: close" in data.lower()


def trickle_headers(port: int, pause_s: float, budget_s: float) -> tuple[bytes, bool, float]:
    """Sends a request's headers one byte per ``pause_s``; returns what came back, whether the server closed,
    and after how long."""
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slowloris\r\nAccept: */*\r\n\r\n"
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        for byte in request:
            try:
                connection.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            connection.settimeout(pause_s)
            try:
                answer = connection.recv(65536)
            except TimeoutError:
                answer = None
            if answer is not None:  # the server spoke (and then closed) before the headers were complete
                rest, _ = read_all(connection, 2)
                return answer + rest, True, time.monotonic() - started
            if time.monotonic() - started > budget_s:
                return b"", False, time.monotonic() - started
        data, closed = read_all(connection, 2)
    return data, closed, time.monotonic() - started


def test_python_m_service_refuses_smuggling_slow_headers_and_too_many_connections(tiny_model, tmp_path):
    env = {"REID_HEADER_TIMEOUT_S": "2", "REID_MAX_CONNECTIONS": "4"}
    with live_server(tiny_model, tmp_path / "gallery", tmp_path / "server.log", **env) as server:
        assert_smuggling_refused(server.port)

        data, closed, elapsed = trickle_headers(server.port, pause_s=0.5, budget_s=15)
        assert closed and data.startswith(b"HTTP/1.1 408"), data
        assert 1.5 < elapsed < 6

        # A complete request on a kept-alive connection still works, and its connection then idles out.
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as connection:
            connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert connection.recv(65536).startswith(b"HTTP/1.1 200")

        idle = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(4)]
        try:
            time.sleep(0.3)
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as extra:
                data, closed = read_all(extra, 5)
            assert closed and data.startswith(b"HTTP/1.1 503"), data
        finally:
            for connection in idle:
                connection.close()
        time.sleep(0.5)
        with server.client() as client:  # once the idle ones are gone, connections are served again
            assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize("command", ["uvicorn-guarded", "uvicorn-factory-guarded"])
def test_uvicorn_with_the_service_protocol_closes_slow_headers(tiny_model, tmp_path, command):
    env = {"REID_HEADER_TIMEOUT_S": "2"}
    with live_server(tiny_model, tmp_path / "gallery", tmp_path / "server.log", command=command, **env) as server:
        data, closed, elapsed = trickle_headers(server.port, pause_s=0.5, budget_s=15)
        assert closed and data.startswith(b"HTTP/1.1 408") and 1.5 < elapsed < 6
        assert_smuggling_refused(server.port)


def test_plain_uvicorn_refuses_smuggling_too(tiny_model, tmp_path):
    with live_server(tiny_model, tmp_path / "gallery", tmp_path / "server.log", command="uvicorn") as server:
        assert_smuggling_refused(server.port)


# ------------------------------------------------------------------------------------------- in-process
@pytest.fixture(scope="module")
def client(tiny_model, tmp_path_factory):
    settings = Settings(model_path=tiny_model, data_dir=tmp_path_factory.mktemp("framing"), device="cpu",
                        intra_op_threads=1, max_wait_ms=1, _env_file=None)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def multipart(count: int, boundary: str = "frame-boundary", close: bool = True) -> bytes:
    parts = [
        (f"--{boundary}\r\nContent-Disposition: form-data; name=\"frames\"; filename=\"{k}.png\"\r\n"
         "Content-Type: image/png\r\n\r\n").encode() + encode_image(frame) + b"\r\n"
        for k, frame in enumerate(tracklet_frames(5, count))
    ]
    return b"".join(parts) + (f"--{boundary}--\r\n".encode() if close else b"")


def test_truncated_multipart_is_refused_and_nothing_is_stored(client):
    before = client.get("/tracklets").json()["total"]
    headers = {"Content-Type": "multipart/form-data; boundary=frame-boundary"}
    response = client.post("/tracklets", content=multipart(8, close=False), headers=headers)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "bad_request" and "truncated" in response.json()["error"]["message"]
    assert client.get("/tracklets").json()["total"] == before
    # The same body with its closing boundary is enrolled with all 8 frames.
    response = client.post("/tracklets", content=multipart(8), headers=headers)
    assert response.status_code == 201, response.text
    assert response.json()["frames_decoded"] == 8


@pytest.mark.parametrize("text", ['{"x": 1e400}', '{"x": -1E999}', '{"x": [1, 2e308]}', '{"x": NaN}'])
def test_metadata_numbers_that_overflow_are_refused(client, text):
    files = [("frames", ("0.png", encode_image(tracklet_frames(1, 1)[0]), "image/png"))]
    response = client.post("/tracklets", files=files, data={"metadata": text})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_request"


@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("PUT", "/tracklets", "GET, POST"),
    ("PATCH", "/tracklets/some-id", "GET, DELETE"),
    ("GET", "/query", "POST"),
    ("DELETE", "/healthz", "GET"),
])
def test_405_names_the_allowed_methods(client, method, path, allowed):
    response = client.request(method, path)
    assert response.status_code == 405
    assert response.headers["allow"] == allowed
    assert f"allowed: {allowed}." in response.json()["error"]["message"]


def test_a_close_delimiter_inside_part_data_does_not_hide_truncation(client):
    boundary = "frame-boundary"
    # The close delimiter's bytes inside a field's value (not at a line start) are data, not the end.
    metadata = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"metadata\"\r\n\r\n"
                f'{{"note": "x--{boundary}--"}}\r\n').encode()
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    response = client.post("/tracklets", content=metadata + multipart(3, close=False), headers=headers)
    assert response.status_code == 400, response.text
    response = client.post("/tracklets", content=metadata + multipart(3), headers=headers)
    assert response.status_code == 201, response.text
    assert response.json()["metadata"] == {"note": f"x--{boundary}--"}


@pytest.mark.parametrize("template", [
    "ffconcat version 1.0\nfile {name}\n",
    "#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n{name}\n#EXT-X-ENDLIST\n",
    "#EXTM3U\n#EXTINF:10,\nfile:{name}\n#EXT-X-ENDLIST\n",
])
def test_playlists_are_refused_alike_whether_the_file_exists(client, template, tmp_path):
    existing = tmp_path / "server-side.avi"
    existing.write_bytes(b"RIFF\x00\x00\x00\x00AVI ")
    answers = []
    for name in (str(existing), str(tmp_path / "missing.avi"), "README.md", "no-such-file.mp4"):
        files = [("video", ("clip.mp4", template.format(name=name).encode(), "video/mp4"))]
        response = client.post("/tracklets", files=files)
        error = response.json()["error"]
        answers.append((response.status_code, error["code"], error["message"]))
    assert answers[0][0] == 422 and len(set(answers)) == 1, answers
