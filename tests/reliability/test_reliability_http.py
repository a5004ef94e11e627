"""Against a real server over loopback sockets: graceful SIGTERM, a client that uploads a byte per second,
API keys (rotation, refusal before the body is read, never in the log) and one log line per failure."""

from __future__ import annotations

import json
import re
import signal
import socket
import time

import httpx
import pytest
from live_server import API_KEY, LiveServer, live_server
from test_service_server import frames_upload

pytestmark = pytest.mark.slow

KEYS = ("first-SECRET-key-8c1e", "second-SECRET-key-77ab")
WRONG_KEY = "wrong-SECRET-key-d41f"


def multipart_body(files, data: dict[str, str], boundary: str = "reliability-boundary") -> tuple[bytes, str]:
    """A multipart/form-data body (what httpx would send), to be written to a raw socket piece by piece."""
    request = httpx.Request("POST", "http://x/", files=files, data=data)
    body = request.read()
    return body, request.headers["content-type"]


def raw_request_head(server: LiveServer, path: str, content_type: str, length: int, key: str | None) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{server.port}", f"Content-Type: {content_type}",
             f"Content-Length: {length}"]
    if key:
        lines.append(f"X-API-Key: {key}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_response(connection: socket.socket) -> tuple[int, dict[str, str], bytes, bool]:
    """Status, headers, body of one HTTP/1.1 response, and whether the server closed the connection after it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed before a response: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, value in (line.split(":", 1) for line in header_lines)}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = connection.recv(65536)
        if not chunk:
            break
        body += chunk
    # Closed means an orderly FIN or a reset: a server that closes with unread request bytes in its receive
    # buffer makes the kernel send RST. Allow a few seconds: on a loaded machine the close can trail the answer.
    previous_timeout = connection.gettimeout()
    connection.settimeout(5.0)
    try:
        closed = connection.recv(1) == b""
    except ConnectionResetError:
        closed = True
    except TimeoutError:
        closed = False
    finally:
        connection.settimeout(previous_timeout)
    return int(status_line.split()[1]), headers, body, closed


# ------------------------------------------------------------------------------------------- shutdown
def test_sigterm_finishes_requests_in_flight_flushes_and_exits_0(tiny_model, tmp_path):
    data_dir, log_path = tmp_path / "gallery", tmp_path / "server.log"
    env = {"REID_SHUTDOWN_TIMEOUT_S": "4", "REID_BODY_TIMEOUT_S": "60"}
    with live_server(tiny_model, data_dir, log_path, **env) as server:
        with server.client() as client:
            assert client.post("/tracklets", files=frames_upload(1, 4), data={"tracklet_id": "early"}).status_code \
                == 201
        body, content_type = multipart_body(frames_upload(2, 4), {"tracklet_id": "in-flight"})
        finishing = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        stalled = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        try:
            # Two uploads in progress: one will finish during the shutdown, one never does.
            head = raw_request_head(server, "/tracklets", content_type, len(body), API_KEY)
            finishing.sendall(head + body[: len(body) // 2])
            stalled.sendall(head + body[:100])
            time.sleep(0.5)
            signalled_at = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            with pytest.raises(httpx.ConnectError):  # no new connections once shutting down
                httpx.get(f"{server.url}/healthz", timeout=2)
            finishing.sendall(body[len(body) // 2 :])
            status, headers, answer, _ = read_response(finishing)
            assert status == 201, answer
            assert json.loads(answer)["id"] == "in-flight"
            exit_status = server.process.wait(30)
            took = time.monotonic() - signalled_at
        finally:
            finishing.close()
            stalled.close()
        assert exit_status == 0, server.log()[-3000:]
        assert 3.5 < took < 15, took  # waited for the stalled upload up to the 4 s timeout, then stopped
        log = server.log()
        assert "cancelled before an answer" in log and "gallery of 2 flushed and closed" in log
        assert "stopped on SIGTERM after a graceful shutdown" in log

    with live_server(tiny_model, data_dir, log_path) as server, server.client() as client:
        ids = {item["id"] for item in client.get("/tracklets").json()["items"]}
        assert ids == {"early", "in-flight"}
        assert "2 tracklets, index loaded from its snapshot" in server.log()


# --------------------------------------------------------------------------------- slow uploads and keys
@pytest.fixture(scope="module")
def keyed_server(tiny_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("keyed")
    with live_server(tiny_model, folder / "gallery", folder / "server.log", REID_API_KEY=",".join(KEYS),
                     REID_BODY_TIMEOUT_S="2", REID_LOG_LEVEL="DEBUG") as server:
        yield server


def test_a_byte_per_second_upload_is_cut_off_with_408(keyed_server):
    body, content_type = multipart_body(frames_upload(3, 4), {"tracklet_id": "slow"})
    with socket.create_connection(("127.0.0.1", keyed_server.port), timeout=10) as connection:
        connection.sendall(raw_request_head(keyed_server, "/tracklets", content_type, len(body), KEYS[0]))
        started = time.monotonic()
        connection.settimeout(1.0)
        answer = None
        for position in range(12):  # one byte per second, for at most 12 s
            try:
                connection.sendall(body[position : position + 1])
            except (BrokenPipeError, ConnectionResetError):
                break
            try:
                answer = read_response(connection)
                break
            except TimeoutError:
                continue
        took = time.monotonic() - started
    assert answer is not None, "the slow upload was never answered"
    status, headers, payload, closed = answer
    assert status == 408 and closed and headers["connection"] == "close"
    error = json.loads(payload)["error"]
    assert error["code"] == "request_timeout" and error["request_id"] == headers["x-request-id"]
    assert 1.5 < took < 6, took
    lines = keyed_server.request_log_lines(error["request_id"])
    assert len(lines) == 1 and "408" in lines[0] and "request_timeout" in lines[0]
    with keyed_server.client(KEYS[0]) as client:
        assert client.get("/tracklets/slow").status_code == 404


def test_keys_rotate_are_refused_before_the_body_and_never_reach_the_log(keyed_server):
    for key in KEYS:  # either key works: rotation without downtime
        with keyed_server.client(key) as client:
            assert client.get("/readyz").status_code == 200
        response = httpx.get(f"{keyed_server.url}/model", headers={"Authorization": f"Bearer {key}"}, timeout=30)
        assert response.status_code == 200
    refused_ids = []
    for headers in ({}, {"X-API-Key": WRONG_KEY}, {"Authorization": f"Bearer {WRONG_KEY}"},
                    {"Authorization": f"Basic {KEYS[0]}"}, {"X-API-Key": KEYS[0][:-1]}):
        for method, path in (("GET", "/readyz"), ("GET", "/metrics"), ("GET", "/model"), ("GET", "/tracklets"),
                             ("GET", "/tracklets/x"), ("DELETE", "/tracklets/x"), ("POST", "/query"),
                             ("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/no-such-route")):
            response = httpx.request(method, f"{keyed_server.url}{path}", headers=headers, timeout=30)
            assert response.status_code == 401, (method, path, headers, response.text)
            assert response.headers["www-authenticate"] == "Bearer"
            refused_ids.append(response.headers["x-request-id"])
    assert httpx.get(f"{keyed_server.url}/healthz", timeout=30).status_code == 200

    # Refused before the body is read: the 401 comes back while the announced 50 MB were never sent.
    with socket.create_connection(("127.0.0.1", keyed_server.port), timeout=10) as connection:
        connection.sendall(raw_request_head(keyed_server, "/tracklets", "multipart/form-data; boundary=x",
                                            50_000_000, WRONG_KEY))
        status, headers, payload, _ = read_response(connection)
    assert status == 401 and json.loads(payload)["error"]["code"] == "unauthorized"

    log = keyed_server.log()
    for secret in (*KEYS, WRONG_KEY, KEYS[0][:-1]):
        assert secret not in log
    assert "SECRET" not in log
    for request_id in refused_ids:
        lines = keyed_server.request_log_lines(request_id)
        assert len(lines) == 1 and re.search(r" 401 .* failed: unauthorized: ", lines[0]), lines


def test_every_failure_is_one_log_line_with_the_request_id_of_its_header(keyed_server):
    with keyed_server.client(KEYS[1]) as client:
        failures = [
            client.post("/tracklets", files=[("video", ("v.mp4", b"not a video", "video/mp4"))]),  # 422 media
            client.post("/tracklets", data={"person_id": "x"}),  # 422 no media
            client.post("/query", data={"top_k": "0", "tracklet_id": "a"}),  # 422 validation
            client.get("/tracklets/none"),  # 404
            client.put("/tracklets"),  # 405
            client.post("/tracklets", files=[("video", ("big.mp4", b"\0" * 2_100_000, "video/mp4"))]),  # 413
            client.post("/tracklets", content=b"--x\r\n", headers={"Content-Type": "multipart/form-data"}),  # 400
            client.get("/tracklets/%0Afake-line%0D", headers={"X-Request-ID": "client-chosen.1"}),  # 404
        ]
    assert [response.status_code for response in failures] == [422, 422, 422, 404, 405, 413, 400, 404]
    for response in failures:
        request_id = response.headers["x-request-id"]
        assert response.json()["error"]["request_id"] == request_id
        lines = keyed_server.request_log_lines(request_id)
        assert len(lines) == 1, (response.status_code, lines)
        assert f" {response.status_code} " in lines[0] and response.json()["error"]["code"] in lines[0]
    # Client-controlled text cannot forge log lines.
    assert "client-chosen.1" in failures[-1].headers["x-request-id"]
    assert not any(line.startswith("fake-line") for line in keyed_server.log().splitlines())
