"""The HTTP API through the real app (lifespan, middleware, routes) with httpx's TestClient, on each gallery
backend (the ``client`` fixture runs the suite once on SQLite + FAISS and once on Milvus Lite)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from service_media import (
    encode_image,
    encode_video,
    png_header_only,
    tar_bytes,
    tracklet_frames,
    zip_bytes,
)

from service.app import create_app
from service.batching import MicroBatcher
from service.config import Settings
from service.decoding import NamedMedia
from service.middleware import is_admission_controlled


def frame_files(seed: int, count: int = 6, extension: str = ".png", height: int = 48, width: int = 24):
    """Multipart `frames` parts of one generated tracklet."""
    frames = tracklet_frames(seed, count, height, width)
    return [("frames", (f"{seed}-{k}{extension}", encode_image(frame, extension), "image/png"))
            for k, frame in enumerate(frames)]


def video_file(seed: int, count: int = 8):
    return [("video", ("clip.avi", encode_video(tracklet_frames(seed, count), "MJPG", ".avi"), "video/x-msvideo"))]


def archive_file(seed: int, count: int = 6):
    entries = [(f"frames/{k}.png", encode_image(frame)) for k, frame in enumerate(tracklet_frames(seed, count))]
    return [("archive", ("frames.zip", zip_bytes(entries), "application/zip"))]


def assert_error(response, status: int, code: str | None = None):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "request_id"}
    assert body["error"]["request_id"] == response.headers["x-request-id"]
    assert body["error"]["message"] and "Traceback" not in response.text
    if code is not None:
        assert body["error"]["code"] == code, body
    return body["error"]


@pytest.fixture(scope="module")
def client(tiny_model, tmp_path_factory, open_store):
    settings = Settings(model_path=tiny_model, device="cpu", intra_op_threads=1, max_wait_ms=2, _env_file=None,
                        **open_store.settings(tmp_path_factory.mktemp("gallery")))
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def state(client):
    return client.app.state.service


@pytest.fixture(scope="module")
def enrolled(client):
    """Four tracklets: persons A and B, each seen by cameras c1 and c2, each sent as a different media kind."""
    plan = [
        ("a1", "A", "c1", frame_files(101)),
        ("a2", "A", "c2", video_file(102)),
        ("b1", "B", "c1", archive_file(201)),
        ("b2", "B", "c2", frame_files(202, extension=".jpg")),
    ]
    records = {}
    for tracklet_id, person, camera, files in plan:
        response = client.post("/tracklets", files=files, data={
            "tracklet_id": tracklet_id, "person_id": person, "camera_id": camera,
            "metadata": json.dumps({"source": tracklet_id})})
        assert response.status_code == 201, response.text
        records[tracklet_id] = response.json()
    return records


# ------------------------------------------------------------------------------------------- health/model
def test_health_ready_and_model(client, tiny_card, open_store):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["device"] == "cpu"
    assert ready["index_device"] == {"sqlite": "cpu", "milvus": "milvus"}[open_store.backend]
    assert ready["providers"] == ["CPUExecutionProvider"] and ready["model_version"] == tiny_card["model_version"]
    model = client.get("/model").json()
    assert {key: value for key, value in model.items() if key != "serving"} == tiny_card
    assert model["serving"]["device"] == "cpu"
    # The CPU's int8 dot-product instruction set as service.cpu_features reads it (null without one).
    from service.cpu_features import cpu_flags, int8_dot_product

    assert model["serving"]["cpu_int8_dot_product"] == int8_dot_product(cpu_flags())
    assert ready["precision"] == model["serving"]["precision"] == model["precision"] == tiny_card["precision"]


def test_request_ids(client):
    response = client.get("/healthz", headers={"X-Request-ID": "client-id.42"})
    assert response.headers["x-request-id"] == "client-id.42"
    generated = client.get("/healthz", headers={"X-Request-ID": "x" * 500}).headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    assert client.get("/healthz").headers["x-request-id"] != client.get("/healthz").headers["x-request-id"]


# ----------------------------------------------------------------------------------------------- enroll
def test_enroll_returns_the_record(enrolled, tiny_card):
    record = enrolled["a1"]
    assert record["id"] == "a1" and record["person_id"] == "A" and record["camera_id"] == "c1"
    assert record["metadata"] == {"source": "a1"}
    # The card's test-time mode (consecutive clips, models.DEFAULT_TEST_MODE) uses every frame of a short upload.
    assert tiny_card["test_time"]["mode"] == "consecutive"
    assert record["frames_decoded"] == 6 and record["frames_used"] == 6
    assert record["model_version"] == tiny_card["model_version"] and record["created_at"].endswith("+00:00")
    assert enrolled["a2"]["frames_decoded"] == 8 and enrolled["b1"]["frames_decoded"] == 6


def test_enroll_headers_and_generated_id(client):
    before = scrape(client)
    response = client.post("/tracklets", files=frame_files(7, count=2))
    assert response.status_code == 201
    record = response.json()
    assert re.fullmatch(r"[0-9a-f]{32}", record["id"]) and record["person_id"] is None
    assert record["frames_decoded"] == 2 and record["frames_used"] == 2
    assert response.headers["location"] == f"/tracklets/{record['id']}"
    stages = dict(part.split(";dur=") for part in response.headers["server-timing"].split(", "))
    assert set(stages) == {"decode", "embed", "store"}
    # The header's durations are the ones /metrics recorded for this request's stages.
    after = scrape(client)
    for stage, milliseconds in stages.items():
        key = (("stage", stage),)
        recorded = after["reid_stage_duration_seconds_sum"][key] - before["reid_stage_duration_seconds_sum"][key]
        assert float(milliseconds) == pytest.approx(recorded * 1000, abs=0.006)
    assert client.delete(f"/tracklets/{record['id']}").status_code == 204


def test_stored_embedding_is_the_model_output_for_the_decoded_frames(client, state, enrolled):
    files = frame_files(101)
    decoded = state.decoder.decode_images([NamedMedia(name, data) for _, (name, data, _) in files])
    assert decoded.clips.shape[:2] == (2, 4)  # 6 frames, T=4: two consecutive clips
    direct = state.embedder.embed(decoded.clips).mean(axis=0)  # one embedding per clip, averaged
    np.testing.assert_allclose(state.gallery.get_embedding("a1"), direct, rtol=1e-4, atol=1e-5)


def test_conflict_and_replace(client, enrolled):
    assert_error(client.post("/tracklets", files=frame_files(5), data={"tracklet_id": "a1"}), 409, "conflict")
    assert client.get("/tracklets/a1").json()["metadata"] == {"source": "a1"}
    replaced = client.post("/tracklets", files=frame_files(101), data={
        "tracklet_id": "a1", "person_id": "A", "camera_id": "c1", "metadata": '{"source": "a1", "v": 2}',
        "replace": "true"})
    assert replaced.status_code == 201 and replaced.json()["metadata"] == {"source": "a1", "v": 2}
    assert client.get("/tracklets", params={"person_id": "A"}).json()["total"] == 2


def test_enroll_with_times_stores_and_returns_them_in_utc(client):
    response = client.post("/tracklets", files=frame_files(8, 2), data={
        "tracklet_id": "timed", "start_time": "2026-05-01T10:00:00+02:00", "end_time": "2026-05-01T08:00:30.5"})
    assert response.status_code == 201, response.text
    record = response.json()
    assert set(record) == {"id", "person_id", "camera_id", "metadata", "frames_decoded", "frames_used",
                           "model_version", "created_at", "start_time", "end_time", "job_id", "frame_start",
                           "frame_end", "has_thumbnail"}
    # An offset is converted to UTC; a time without one is UTC.
    assert (record["start_time"], record["end_time"]) == ("2026-05-01T08:00:00Z", "2026-05-01T08:00:30.500000Z")
    # Not from footage; a thumbnail is kept (REID_STORE_THUMBNAILS is on by default).
    assert (record["job_id"], record["frame_start"], record["frame_end"], record["has_thumbnail"]) == (
        None, None, None, True)
    assert client.get("/tracklets/timed").json() == record
    untimed = client.get("/tracklets", params={"limit": 1}).json()["items"][0]
    assert untimed["start_time"] is None and untimed["end_time"] is None
    assert client.delete("/tracklets/timed").status_code == 204


def test_admission_control_covers_the_routes_marked_for_it(client):
    """The middleware learns its routes from the routes' marker, not from a list of paths."""
    routes = client.app.state.admission_routes
    assert {(method, route.path) for route in routes for method in route.methods} == {
        ("POST", "/tracklets"), ("POST", "/query")}
    scope = {"type": "http", "method": "POST", "path": "/tracklets", "root_path": ""}
    assert is_admission_controlled(routes, scope) and is_admission_controlled(routes, {**scope, "path": "/query"})
    assert not is_admission_controlled(routes, {**scope, "method": "GET"})
    assert not is_admission_controlled(routes, {**scope, "path": "/tracklets/a1"})


# ------------------------------------------------------------------------------------------------ query
def brute_force_ranking(state, query: np.ndarray) -> list[tuple[str, float]]:
    records, _ = state.gallery.list(limit=1000)
    distances = [(record.id, float(np.sum((state.gallery.get_embedding(record.id).astype(np.float64) - query) ** 2)))
                 for record in records]
    return sorted(distances, key=lambda item: item[1])


def test_query_with_the_same_media_ranks_it_first_at_distance_zero(client, state, enrolled):
    for tracklet_id, files in [("a1", frame_files(101)), ("a2", video_file(102)), ("b1", archive_file(201))]:
        response = client.post("/query", files=files, data={"top_k": "4"})
        assert response.status_code == 200, response.text
        body = response.json()
        matches = body["matches"]
        assert matches[0]["id"] == tracklet_id and matches[0]["rank"] == 1
        assert matches[0]["distance"] < 1e-6 * max(matches[1]["distance"], 1.0)
        distances = [match["distance"] for match in matches]
        assert distances == sorted(distances) and len(matches) == 4
        assert body["frames_used"] == {"a1": 6, "a2": 8, "b1": 6}[tracklet_id]  # every frame (consecutive clips)
        assert body["top_k"] == 4
        # took_ms covers the stages of Server-Timing and no more than the client waited.
        stages = [float(part.split(";dur=")[1]) for part in response.headers["server-timing"].split(", ")]
        assert sum(stages) - 0.03 <= body["took_ms"] <= response.elapsed.total_seconds() * 1000
        assert set(response.headers["server-timing"].split(", ")[0].split(";")[:1]) == {"decode"}


def test_query_ranking_equals_brute_force_over_the_stored_embeddings(client, state, enrolled):
    response = client.post("/query", files=frame_files(999), data={"top_k": "10"})
    files = frame_files(999)
    decoded = state.decoder.decode_images([NamedMedia(name, data) for _, (name, data, _) in files])
    query = state.embedder.embed(decoded.clips).mean(axis=0).astype(np.float64)
    expected = brute_force_ranking(state, query)
    matches = response.json()["matches"]
    assert [match["id"] for match in matches] == [key for key, _ in expected]
    np.testing.assert_allclose([match["distance"] for match in matches], [d for _, d in expected], rtol=1e-3)


def test_query_by_tracklet_id_and_exclude_same_camera(client, enrolled):
    body = client.post("/query", data={"tracklet_id": "b1", "top_k": "10"}).json()
    assert body["matches"][0]["id"] == "b1" and body["matches"][0]["distance"] == pytest.approx(0.0, abs=1e-6)
    assert body["query_camera_id"] == "c1" and body["frames_used"] is None
    excluded = client.post("/query", data={"tracklet_id": "b1", "top_k": "10", "exclude_same_camera": "true"}).json()
    assert {match["camera_id"] for match in excluded["matches"]} == {"c2"}
    assert {match["id"] for match in excluded["matches"]} == {"a2", "b2"}
    # Media query with an explicit camera.
    by_media = client.post("/query", files=frame_files(101),
                           data={"camera_id": "c2", "exclude_same_camera": "true", "top_k": "1"}).json()
    assert [match["camera_id"] for match in by_media["matches"]] == ["c1"] and by_media["matches"][0]["id"] == "a1"
    assert_error(client.post("/query", files=frame_files(101), data={"exclude_same_camera": "true"}), 422)


# ---------------------------------------------------------------------------------------- read / delete
def test_get_list_and_filters(client, enrolled):
    assert client.get("/tracklets/b2").json()["person_id"] == "B"
    page = client.get("/tracklets", params={"camera_id": "c2"}).json()
    assert {item["id"] for item in page["items"]} == {"a2", "b2"} and page["total"] == 2
    paged = client.get("/tracklets", params={"limit": 1, "offset": 1}).json()
    everything = client.get("/tracklets", params={"limit": 1000}).json()
    assert everything["total"] == len(everything["items"]) == len(client.app.state.service.gallery.list(limit=1000)[0])
    assert paged["items"] == everything["items"][1:2] and (paged["limit"], paged["offset"]) == (1, 1)
    assert paged["total"] == everything["total"]
    assert_error(client.get("/tracklets", params={"limit": 0}), 422, "invalid_request")
    assert_error(client.get("/tracklets/no-such-id"), 404, "not_found")


def test_delete_takes_effect_at_once(client):
    response = client.post("/tracklets", files=frame_files(303), data={"tracklet_id": "temp"})
    assert response.status_code == 201
    assert client.post("/query", files=frame_files(303), data={"top_k": "1"}).json()["matches"][0]["id"] == "temp"
    assert client.delete("/tracklets/temp").status_code == 204
    assert "temp" not in [match["id"] for match in
                          client.post("/query", files=frame_files(303), data={"top_k": "50"}).json()["matches"]]
    assert_error(client.get("/tracklets/temp"), 404)
    assert_error(client.delete("/tracklets/temp"), 404)
    assert_error(client.post("/query", data={"tracklet_id": "temp"}), 404)


# ---------------------------------------------------------------------------------------------- bad input
def gallery_total(client) -> int:
    return client.get("/tracklets").json()["total"]


BAD_REQUESTS = [
    ("text as video", {"files": [("video", ("v.mp4", b"hello, I am text", "video/mp4"))]}, 422, "invalid_media"),
    ("corrupt image", {"files": [("frames", ("a.png", b"\x89PNG\r\n\x1a\ngarbage", "image/png"))]}, 422,
     "invalid_media"),
    ("no decodable frames", {"files": [("archive", ("a.zip", zip_bytes([(".hidden", b"x")]), "application/zip"))]},
     422, "invalid_media"),
    ("two media", {"files": frame_files(1, 2) + video_file(1, 2)}, 422, "invalid_request"),
    ("no media", {"data": {"person_id": "x"}}, 422, "invalid_request"),
    ("frames as text", {"data": {"frames": "not a file"}}, 422, "invalid_request"),
    ("metadata not object", {"files": frame_files(1, 2), "data": {"metadata": "[1, 2]"}}, 422, "invalid_request"),
    ("metadata not json", {"files": frame_files(1, 2), "data": {"metadata": "{oops"}}, 422, "invalid_request"),
    ("replace not bool", {"files": frame_files(1, 2), "data": {"replace": "maybe"}}, 422, "invalid_request"),
    ("bad tracklet id", {"files": frame_files(1, 2), "data": {"tracklet_id": "../../etc"}}, 422, "invalid_request"),
    ("zip slip", {"files": [("archive", ("a.zip", zip_bytes([("../x.png", encode_image(tracklet_frames(1, 1)[0]))]),
                                         "application/zip"))]}, 422, "unsafe_archive_entry"),
    ("json body", {"json": {"video": "x"}}, 422, "invalid_request"),
    ("start_time not a time", {"files": frame_files(1, 2), "data": {"start_time": "yesterday"}}, 422,
     "invalid_request"),
    ("end_time out of range", {"files": frame_files(1, 2), "data": {"end_time": "0001-01-01T00:00:00+01:00"}}, 422,
     "invalid_request"),
    ("end before start", {"files": frame_files(1, 2), "data": {"start_time": "2026-05-01T08:00:00Z",
                                                               "end_time": "2026-05-01T09:59:59+02:00"}}, 422,
     "invalid_request"),
]


@pytest.mark.parametrize(("label", "request_kwargs", "status", "code"), BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_bad_enrolls_are_4xx_and_change_nothing(client, enrolled, label, request_kwargs, status, code):
    before = gallery_total(client)
    assert_error(client.post("/tracklets", **request_kwargs), status, code)
    assert gallery_total(client) == before


@pytest.mark.parametrize(
    ("data", "status"),
    [({"top_k": "0"}, 422), ({"top_k": "1001"}, 422), ({"top_k": "ten"}, 422),
     ({"exclude_same_camera": "perhaps"}, 422), ({"tracklet_id": "a2"}, 422)],
)
def test_bad_queries(client, enrolled, data, status):
    assert_error(client.post("/query", files=frame_files(1, 2), data=data), status, "invalid_request")


def test_no_query_at_all_and_unknown_routes(client):
    assert_error(client.post("/query", data={"top_k": "3"}), 422, "invalid_request")
    assert_error(client.get("/nowhere"), 404, "not_found")
    assert_error(client.put("/tracklets"), 405, "method_not_allowed")


def test_queue_full_is_503_with_retry_after(client, state, monkeypatch):
    monkeypatch.setattr(state, "batcher", MicroBatcher(lambda clips: clips, queue_size=1))  # never started
    error = assert_error(client.post("/tracklets", files=frame_files(4, 2)), 503, "busy")
    assert "embedder" in error["message"]
    assert client.post("/tracklets", files=frame_files(4, 2)).headers["retry-after"] == "1"


def test_an_internal_failure_is_a_500_without_traceback(client, state, monkeypatch):
    def broken_search(*args, **kwargs):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(state.gallery, "search", broken_search)
    error = assert_error(client.post("/query", data={"tracklet_id": "a1"}), 500, "internal_error")
    assert "secret internal detail" not in error["message"]


def scrape(client) -> dict[str, dict[tuple, float]]:
    """/metrics parsed: sample name -> {sorted label items: value}."""
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def request_count(samples, method: str, route: str, status: str) -> float:
    return samples["reid_http_requests_total"].get(
        (("method", method), ("route", route), ("status", status)), 0.0)


def test_metrics(client, enrolled, open_store):
    before = scrape(client)
    assert client.post("/tracklets", files=frame_files(31, 2), data={"tracklet_id": "metered"}).status_code == 201
    assert_error(client.post("/tracklets", files=frame_files(31, 2), data={"metadata": "[]"}), 422)
    assert client.get("/healthz").status_code == 200
    after = scrape(client)
    # Exactly the requests made in between, under their route templates and statuses.
    assert request_count(after, "POST", "/tracklets", "201") - request_count(before, "POST", "/tracklets", "201") == 1
    assert request_count(after, "POST", "/tracklets", "422") - request_count(before, "POST", "/tracklets", "422") == 1
    assert request_count(after, "GET", "/metrics", "200") - request_count(before, "GET", "/metrics", "200") == 1
    healthz = (("le", "+Inf"), ("method", "GET"), ("route", "/healthz"), ("status", "200"))
    assert after["reid_http_request_duration_seconds_bucket"][healthz] == request_count(after, "GET", "/healthz", "200")
    # One enroll: one decode and one store stage, one more embedded tracklet (in some batch).
    for stage in ("decode", "embed", "store"):
        key = (("stage", stage),)
        assert after["reid_stage_duration_seconds_count"][key] - before["reid_stage_duration_seconds_count"][key] == 1
    assert after["reid_embed_batch_size_sum"][()] - before["reid_embed_batch_size_sum"][()] == 1
    assert after["reid_gallery_size"][()] == gallery_total(client)
    assert after["reid_embed_queue_depth"][()] == 0
    (info,) = after["reid_model_info"]
    assert dict(info) == {"model_version": client.app.state.service.embedder.card.model_version, "device": "cpu",
                          "index_device": {"sqlite": "cpu", "milvus": "milvus"}[open_store.backend]}
    assert client.delete("/tracklets/metered").status_code == 204


def test_made_up_methods_do_not_add_metric_series(client):
    """Methods are a label: any the service does not know is counted as "other", so a client cannot grow
    /metrics by sending new ones."""
    client.request("FROB", "/healthz")
    before = scrape(client)
    for method in ("BREW", "PROPFIND", "X" * 60, "SEARCH", "M-SEARCH"):
        assert_error(client.request(method, "/healthz"), 405, "method_not_allowed")
    after = scrape(client)
    assert set(after["reid_http_requests_total"]) == set(before["reid_http_requests_total"])
    methods = {dict(labels)["method"] for labels in after["reid_http_requests_total"]}
    assert methods <= {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"} and "other" in methods

    def count_other(samples) -> float:
        return sum(value for labels, value in samples["reid_http_requests_total"].items()
                   if dict(labels)["method"] == "other")

    assert count_other(after) - count_other(before) == 5


def test_openapi_describes_every_field(client):
    schema = client.get("/openapi.json").json()
    assert {"/tracklets", "/tracklets/{tracklet_id}", "/query", "/healthz", "/readyz", "/metrics", "/model"} <= set(
        schema["paths"])
    undocumented = []
    for name, component in schema["components"]["schemas"].items():
        if name in ("HTTPValidationError", "ValidationError") or name.startswith("ValidationError"):
            continue  # FastAPI's own, never returned (our handler reshapes validation errors)
        for field, spec in component.get("properties", {}).items():
            if not spec.get("description") and "$ref" not in spec:
                undocumented.append(f"{name}.{field}")
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                if not parameter.get("description"):
                    undocumented.append(f"{method} {path} {parameter['name']}")
    assert undocumented == []
    assert client.get("/docs").status_code == 200


# ------------------------------------------------------------------------------- limits and authentication
@pytest.fixture(scope="module")
def limited(tiny_model, tmp_path_factory):
    settings = Settings(
        model_path=tiny_model, data_dir=tmp_path_factory.mktemp("limited"), device="cpu", intra_op_threads=1,
        max_upload_bytes=300_000, max_frames=6, max_frame_dimension=100, max_archive_entries=5,
        max_archive_bytes=150_000, api_key="first-key,rotated-key", docs_enabled=False, _env_file=None,
    )
    with TestClient(create_app(settings), headers={"X-API-Key": "first-key"}) as test_client:
        yield test_client


def test_api_keys(limited):
    assert limited.get("/healthz", headers={"X-API-Key": ""}).status_code == 200  # liveness needs no key
    for path in ("/readyz", "/metrics", "/model", "/tracklets"):
        error = assert_error(limited.get(path, headers={"X-API-Key": ""}), 401, "unauthorized")
        assert "API key" in error["message"]
    response = limited.get("/readyz", headers={"X-API-Key": "wrong"})
    assert_error(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"
    assert limited.get("/readyz", headers={"Authorization": "Bearer rotated-key"}).status_code == 200
    assert limited.get("/readyz", headers={"X-API-Key": "", "Authorization": "Bearer nope"}).status_code == 401
    assert limited.get("/readyz").status_code == 200
    assert_error(limited.post("/tracklets", files=frame_files(1, 2), headers={"X-API-Key": ""}), 401)
    assert limited.get("/tracklets").json()["total"] == 0


def test_docs_can_be_turned_off(limited):
    assert limited.get("/docs").status_code == 404 and limited.get("/openapi.json").status_code == 404


def test_upload_over_the_limit_with_content_length(limited):
    big = [("video", ("big.avi", b"\0" * 400_000, "video/x-msvideo"))]
    assert_error(limited.post("/tracklets", files=big), 413, "upload_too_large")


def test_upload_over_the_limit_streamed_without_content_length(limited, monkeypatch):
    boundary = "limit-test-boundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"video\"; filename=\"v.avi\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    chunks_sent = []

    def body():
        yield head
        for _ in range(40):  # 40 x 20 kB = 800 kB, well over the 300 kB limit
            chunks_sent.append(1)
            yield b"\0" * 20_000
        yield f"\r\n--{boundary}--\r\n".encode()

    response = limited.post("/tracklets", content=body(),
                            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert "content-length" not in {key.lower() for key in response.request.headers}
    assert_error(response, 413, "upload_too_large")


def test_limits_are_413(limited):
    small = encode_image(tracklet_frames(3, 1)[0])
    too_many = [("frames", (f"{k}.png", small, "image/png")) for k in range(7)]
    assert_error(limited.post("/tracklets", files=too_many), 413, "too_many_frames")
    wide = encode_image(tracklet_frames(3, 1, height=40, width=120)[0])
    assert_error(limited.post("/tracklets", files=[("frames", ("w.png", wide, "image/png"))]), 413, "frame_too_large")
    huge = png_header_only(20000, 20000)
    assert_error(limited.post("/tracklets", files=[("frames", ("h.png", huge, "image/png"))]), 413, "frame_too_large")
    entries = [(f"{k}.png", small) for k in range(6)]
    assert_error(limited.post("/tracklets", files=[("archive", ("a.tar", tar_bytes(entries), "application/x-tar"))]),
                 413, "archive_too_many_entries")
    bomb = tar_bytes([("1.png", small), ("2.png", b"\0" * 200_000)], "w:gz")
    assert_error(limited.post("/tracklets", files=[("archive", ("b.tgz", bomb, "application/gzip"))]), 413,
                 "archive_too_large")
    long_video = [("video", ("l.avi", encode_video(tracklet_frames(3, 7, 16, 8), "MJPG", ".avi"), "video/avi"))]
    assert_error(limited.post("/tracklets", files=long_video), 413, "too_many_frames")
    assert limited.get("/tracklets").json()["total"] == 0
