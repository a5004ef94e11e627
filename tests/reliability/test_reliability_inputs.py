"""Hand-written hostile inputs through the real app (lifespan, middleware, routes), each answered with a
4xx in the one error shape, nothing stored, and the service still answering. Complements the bad-input
table of tests/service/test_service_api.py (which uses lowered limits); these run at the default limits.
Also: the API-key check itself and the docs settings."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import stat
import tarfile
import zipfile

import pytest
from fastapi.testclient import TestClient
from service_media import encode_image, encode_video, png_header_only, tracklet_frames, zip_bytes

from service.app import create_app
from service.auth import KeyChecker, credentials_from_headers
from service.config import Settings

BOUNDARY = "hostile-boundary"


@pytest.fixture(scope="module")
def client(tiny_model, tmp_path_factory):
    settings = Settings(model_path=tiny_model, data_dir=tmp_path_factory.mktemp("hostile"), device="cpu",
                        intra_op_threads=1, max_wait_ms=1, _env_file=None)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def small_png(seed: int = 1) -> bytes:
    return encode_image(tracklet_frames(seed, 1, 8, 4)[0])


def frames(count: int = 2, seed: int = 1):
    return [("frames", (f"{k}.png", encode_image(frame), "image/png"))
            for k, frame in enumerate(tracklet_frames(seed, count))]


def gallery_total(client) -> int:
    return client.get("/tracklets").json()["total"]


def assert_refused(client, response, status: int, code: str) -> dict:
    """The one error shape, the header's request id, no traceback; the service still answers."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    assert error["request_id"] == response.headers["x-request-id"] and error["message"]
    assert "Traceback" not in response.text
    assert client.get("/healthz").status_code == 200
    return error


def raw_multipart(parts: list[tuple[bytes, bytes, bytes | None]]) -> bytes:
    """A multipart body from raw (field name, value, filename) bytes: for bytes no client library sends."""
    chunks = []
    for name, value, filename in parts:
        disposition = b'Content-Disposition: form-data; name="' + name + b'"'
        if filename is not None:
            disposition += b'; filename="' + filename + b'"\r\nContent-Type: application/octet-stream'
        chunks.append(b"--" + BOUNDARY.encode() + b"\r\n" + disposition + b"\r\n\r\n" + value + b"\r\n")
    return b"".join(chunks) + b"--" + BOUNDARY.encode() + b"--\r\n"


def post_raw(client, parts, path: str = "/tracklets"):
    return client.post(path, content=raw_multipart(parts),
                       headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})


# ------------------------------------------------------------------------------------------ huge media
def test_a_20000x20000_png_header_is_refused_before_decoding_in_every_media_kind(client):
    huge = png_header_only(20000, 20000)
    before = gallery_total(client)
    as_frame = client.post("/tracklets", files=[("frames", ("huge.png", huge, "image/png"))])
    assert "20000x20000" in assert_refused(client, as_frame, 413, "frame_too_large")["message"]
    in_archive = client.post("/tracklets", files=[("archive", ("a.zip", zip_bytes([("0.png", small_png()),
                                                                                   ("1.png", huge)]),
                                                                "application/zip"))])
    assert_refused(client, in_archive, 413, "frame_too_large")
    among_frames = client.post("/query", files=frames(3) + [("frames", ("huge.png", huge, "image/png"))])
    assert_refused(client, among_frames, 413, "frame_too_large")
    assert gallery_total(client) == before


def test_ten_thousand_tiny_frames_are_413_without_decoding_them(client):
    tiny = small_png()
    files = [("frames", (f"{k}.png", tiny, "image/png")) for k in range(10_000)]
    error = assert_refused(client, client.post("/tracklets", files=files), 413, "too_many_frames")
    assert "2000" in error["message"]


def test_a_zip_of_100000_entries_is_refused_from_its_directory_record(client):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for index in range(100_000):
            archive.writestr(f"{index}.png", b"")
    response = client.post("/tracklets", files=[("archive", ("many.zip", buffer.getvalue(), "application/zip"))])
    assert "100000 entries" in assert_refused(client, response, 413, "archive_too_many_entries")["message"]
    # Also when the directory record understates the count: the parsed directory is counted all the same.
    data = bytearray(buffer.getvalue())
    locator = data.rfind(b"PK\x06\x06")
    data[locator + 24 : locator + 40] = (5).to_bytes(8, "little") * 2
    response = client.post("/tracklets", files=[("archive", ("lying.zip", bytes(data), "application/zip"))])
    assert_refused(client, response, 413, "archive_too_many_entries")


def test_nested_archives_are_not_expanded(client):
    inner_zip = zip_bytes([(f"{k}.png", small_png(k)) for k in range(3)])
    inner_tar = io.BytesIO()
    with tarfile.open(fileobj=inner_tar, mode="w") as archive:
        info = tarfile.TarInfo("0.png")
        info.size = len(small_png())
        archive.addfile(info, io.BytesIO(small_png()))
    for inner_name, inner in (("inner.zip", inner_zip), ("inner.tar", inner_tar.getvalue())):
        outer = zip_bytes([(inner_name, inner)])
        response = client.post("/tracklets", files=[("archive", ("outer.zip", outer, "application/zip"))])
        assert inner_name in assert_refused(client, response, 422, "invalid_media")["message"]
    # A zip of a zip of a zip ...: still one level read, one entry refused.
    nested = small_png()
    for depth in range(20):
        nested = zip_bytes([(f"level{depth}.zip", nested)])
    response = client.post("/tracklets", files=[("archive", ("deep.zip", nested, "application/zip"))])
    assert_refused(client, response, 422, "invalid_media")


def special_member(name: str, kind: bytes, **fields) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    for key, value in fields.items():
        setattr(info, key, value)
    return info


@pytest.mark.parametrize(("member", "words"), [
    (special_member("0.png", tarfile.SYMTYPE, linkname="/etc/passwd"), "link"),
    (special_member("0.png", tarfile.LNKTYPE, linkname="../../etc/shadow"), "link"),
    (special_member("0.png", tarfile.CHRTYPE, devmajor=1, devminor=3), "device"),
    (special_member("0.png", tarfile.BLKTYPE, devmajor=8, devminor=0), "device"),
    (special_member("0.png", tarfile.FIFOTYPE), "device"),
], ids=["symlink-out", "hardlink-up", "char-device", "block-device", "fifo"])
def test_tar_with_links_and_device_files_is_refused(client, member, words):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        good = tarfile.TarInfo("1.png")
        good.size = len(small_png())
        archive.addfile(good, io.BytesIO(small_png()))
        archive.addfile(member)
    before = gallery_total(client)
    response = client.post("/tracklets", files=[("archive", ("t.tgz", buffer.getvalue(), "application/gzip"))])
    assert words in assert_refused(client, response, 422, "unsafe_archive_entry")["message"]
    assert gallery_total(client) == before


def test_zip_symlink_entry_is_refused(client):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        link = zipfile.ZipInfo("0.png")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
    response = client.post("/tracklets", files=[("archive", ("l.zip", buffer.getvalue(), "application/zip"))])
    assert_refused(client, response, 422, "unsafe_archive_entry")


# ------------------------------------------------------------------------------------- wrong types
@pytest.mark.parametrize(("content_type", "body", "status", "code"), [
    ("multipart/form-data", b"--x\r\n", 400, "bad_request"),  # no boundary
    (f"multipart/form-data; boundary={BOUNDARY}", b"garbage without any part", 400, "bad_request"),
    ("text/plain", b"video=1", 422, "invalid_request"),
    ("application/x-www-form-urlencoded", b"person_id=x&frames=y", 422, "invalid_request"),
    ("application/json", b'{"frames": ["aGVsbG8="]}', 422, "invalid_request"),
    ("image/png", None, 422, "invalid_request"),  # an image as the whole body
    ("application/octet-stream", b"\x00\xff" * 100, 422, "invalid_request"),
])
def test_wrong_content_types_are_4xx(client, content_type, body, status, code):
    before = gallery_total(client)
    response = client.post("/tracklets", content=body if body is not None else small_png(),
                           headers={"Content-Type": content_type})
    assert_refused(client, response, status, code)
    assert gallery_total(client) == before


def test_declared_part_types_are_not_trusted_the_bytes_are(client):
    # A PNG declared as a PDF still decodes; a video sent as an image frame does not.
    disguised = [("frames", ("a.pdf", small_png(), "application/pdf"))]
    created = client.post("/tracklets", files=disguised, data={"tracklet_id": "disguised"})
    assert created.status_code == 201, created.text
    assert client.delete("/tracklets/disguised").status_code == 204
    video = encode_video(tracklet_frames(2, 4), "MJPG", ".avi")
    response = client.post("/tracklets", files=[("frames", ("clip.png", video, "image/png"))])
    assert_refused(client, response, 422, "invalid_media")


# ------------------------------------------------------------------------------------------ text fields
def test_non_utf8_field_values_are_read_as_latin1_or_refused(client):
    png = small_png()
    # Bytes that are not UTF-8 are read as Latin-1 (one character per byte), as documented: no 5xx, and
    # what is stored is what is returned.
    created = post_raw(client, [(b"person_id", b"caf\xe9 \xff", None), (b"tracklet_id", b"latin1", None),
                                (b"frames", png, b"fr\xe9me\xff.png")])
    assert created.status_code == 201, created.text
    assert created.json()["person_id"] == "caf\u00e9 \u00ff"
    assert client.get("/tracklets/latin1").json()["person_id"] == "caf\u00e9 \u00ff"
    assert client.delete("/tracklets/latin1").status_code == 204
    before = gallery_total(client)
    # Binary in a label decodes to control characters: refused.
    for value in (b"\x00\x01\x02", b"a\x85b", b"line\nbreak", b"\x1b[31mred"):
        response = post_raw(client, [(b"person_id", value, None), (b"frames", png, b"a.png")])
        assert_refused(client, response, 422, "invalid_request")
        response = post_raw(client, [(b"camera_id", value, None), (b"frames", png, b"a.png")], path="/query")
        assert_refused(client, response, 422, "invalid_request")
    # Not UTF-8 in tracklet_id: outside its pattern.
    response = post_raw(client, [(b"tracklet_id", b"id\xff", None), (b"frames", png, b"a.png")])
    assert_refused(client, response, 422, "invalid_request")
    # Not UTF-8 inside the metadata JSON: Latin-1 text, still a valid JSON object, returned as stored.
    response = post_raw(client, [(b"metadata", b'{"site": "gate \xb3"}', None), (b"frames", png, b"a.png"),
                                 (b"tracklet_id", b"meta-latin1", None)])
    assert response.status_code == 201 and response.json()["metadata"] == {"site": "gate \u00b3"}
    assert client.delete("/tracklets/meta-latin1").status_code == 204
    assert gallery_total(client) == before


def test_documented_length_limits_at_and_over_the_edge(client):
    at_limit = client.post("/tracklets", files=frames(), data={
        "tracklet_id": "t" * 128, "person_id": "p" * 256, "camera_id": "c" * 256,
        "metadata": json.dumps({"note": "n" * (16 * 1024 - 12)})})
    assert at_limit.status_code == 201, at_limit.text
    assert len(json.dumps(at_limit.json()["metadata"]).encode()) == 16 * 1024
    assert client.delete(f"/tracklets/{'t' * 128}").status_code == 204
    before = gallery_total(client)
    for data in ({"tracklet_id": "t" * 129}, {"person_id": "p" * 257}, {"camera_id": "c" * 257},
                 {"metadata": json.dumps({"note": "n" * (16 * 1024 - 11)})},
                 {"person_id": "p" * 100_000}, {"metadata": json.dumps({"n": "x" * 500_000})}):
        error = assert_refused(client, client.post("/tracklets", files=frames(), data=data), 422, "invalid_request")
        assert next(iter(data)) in error["message"]
    over_part_limit = client.post("/tracklets", files=frames(), data={"metadata": "x" * 2_000_000})
    assert_refused(client, over_part_limit, 400, "bad_request")  # the multipart parser's 1 MiB per field
    assert gallery_total(client) == before


@pytest.mark.parametrize(("metadata", "reason"), [
    ('{"a": NaN}', "not valid JSON"),
    ('{"a": -Infinity}', "not valid JSON"),
    ('{"a": "\\ud800"}', "not valid Unicode"),
    ('{"a": ' + "[" * 5000 + "]" * 5000 + "}", "nested too deeply"),
    ('{"a": ' + "1" * 5000 + "}", "not valid JSON"),
    ('{"a": 1} trailing', "not valid JSON"),
    ("[1, 2]", "JSON object"),
])
def test_metadata_that_could_not_be_returned_as_json_is_refused(client, metadata, reason):
    before = gallery_total(client)
    error = assert_refused(client, client.post("/tracklets", files=frames(), data={"metadata": metadata}), 422,
                           "invalid_request")
    assert reason in error["message"]
    assert gallery_total(client) == before


def test_unusual_request_ids_paths_and_headers(client):
    for unusable in ("\u00e9t\u00e9".encode("latin-1"), b"two words", b"a" * 129, b"id\x7f"):
        generated = client.get("/healthz", headers={"X-Request-ID": unusable}).headers["x-request-id"]
        assert len(generated) == 32 and generated.isalnum()
    response = client.get("/tracklets/" + "x" * 60_000)
    assert_refused(client, response, 404, "not_found")
    assert len(response.json()["error"]["message"]) < 61_000
    # A person_id filter no enrolled label could have (control characters, over 256 characters) is the
    # client's mistake, refused like the same value at enrollment.
    response = client.get("/tracklets", params={"person_id": "\u0000\uffff" * 1000, "limit": "5"})
    assert_refused(client, response, 422, "invalid_request")
    assert "person_id" in response.json()["error"]["message"]
    response = client.get("/tracklets", params={"limit": "9" * 40})
    assert_refused(client, response, 422, "invalid_request")


# ------------------------------------------------------------------------------------------ access control
def test_key_checker_compares_against_every_key_whatever_the_match(monkeypatch):
    calls = []
    real_compare = hmac.compare_digest

    def counting_compare(left, right):
        calls.append((len(left), len(right)))
        return real_compare(left, right)

    monkeypatch.setattr(hmac, "compare_digest", counting_compare)
    checker = KeyChecker(["old-key", "a-much-longer-new-key", "third"])
    for supplied, accepted in ((b"old-key", True), (b"third", True), (b"a-much-longer-new-key", True),
                               (b"wrong", False), (b"", False), (b"old-key" * 1000, False)):
        calls.clear()
        assert checker.accepts(supplied) is accepted
        # No early exit, and every comparison is between equal-length digests (lengths leak nothing).
        assert calls == [(32, 32)] * 3
    assert not KeyChecker([]).enabled and KeyChecker(["k"]).enabled
    assert hashlib.sha256(b"k").digest() in KeyChecker(["k"])._digests


def test_every_credential_presented_must_be_an_accepted_key():
    checker = KeyChecker(["k1", "k2"])
    needs_key = "needs an API key"

    def verdict(*headers: tuple[bytes, bytes]) -> str | None:
        return checker.check(credentials_from_headers(headers))

    assert verdict((b"Authorization", b"Bearer  k1 ")) is None
    assert verdict((b"authorization", b"bearer k2"), (b"x-api-key", b"k1")) is None
    assert needs_key in verdict()
    assert needs_key in verdict((b"accept", b"k1"), (b"x-api-keys", b"k1"))
    # A wrong, empty or unusable credential is refused, even beside a right one.
    for headers in ([(b"x-api-key", b"k1"), (b"authorization", b"Bearer nope")],
                    [(b"x-api-key", b"k1"), (b"authorization", b"Basic k1")],
                    [(b"x-api-key", b"k1"), (b"authorization", b"Bearer ")],
                    [(b"x-api-key", b"k1"), (b"authorization", b"")],
                    [(b"x-api-key", b""), (b"authorization", b"Bearer k1")],
                    [(b"x-api-key", b"k1"), (b"x-api-key", b"k3")],
                    [(b"x-api-key", b"  ")],
                    [(b"authorization", b"k1")]):
        assert verdict(*headers) == "The API key is not valid.", headers


@pytest.mark.parametrize(("docs_enabled", "docs_public", "without_key", "with_key"), [
    (True, False, 401, 200), (True, True, 200, 200), (False, False, 401, 404), (False, True, 401, 404),
])
def test_docs_follow_their_settings(tiny_model, tmp_path, docs_enabled, docs_public, without_key, with_key):
    settings = Settings(model_path=tiny_model, data_dir=tmp_path, device="cpu", api_key="k1,k2",
                        docs_enabled=docs_enabled, docs_public=docs_public, _env_file=None)
    with TestClient(create_app(settings)) as test_client:
        for path in ("/docs", "/openapi.json", "/redoc"):
            assert test_client.get(path).status_code == without_key, path
            assert test_client.get(path, headers={"X-API-Key": "k2"}).status_code == with_key, path
        assert test_client.get("/healthz").status_code == 200
        assert test_client.get("/tracklets").status_code == 401
