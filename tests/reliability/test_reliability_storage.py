"""Storage failures: a full disk (a real, tiny tmpfs), a database that stops accepting writes, and a crash
while the index snapshot is being written. Each must leave nothing half-written and queries working."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from live_server import PrivateTmpfs, live_server
from test_service_server import REPO_ROOT, frames_upload

from service.app import create_app
from service.config import Settings
from service.gallery import SqliteGallery, TrackletRecord
from service.gallery.index import snapshot_name
from service.gallery.sqlite import DATABASE_NAME

DIM = 8
VERSION = "v-storage-test"


def enroll(client, tracklet_id: str, seed: int):
    return client.post("/tracklets", files=frames_upload(seed, 4), data={"tracklet_id": tracklet_id})


def enrolled_ids(client) -> set[str]:
    return {item["id"] for item in client.get("/tracklets", params={"limit": 1000}).json()["items"]}


@pytest.fixture
def tmpfs(tmp_path):
    try:
        mount = PrivateTmpfs(tmp_path / "gallery", "3m").start()
    except OSError as error:
        pytest.skip(f"no private tmpfs on this machine ({error}); test_read_only_database covers the code path")
    yield mount
    mount.close()


@pytest.mark.slow
def test_disk_full_is_507_nothing_half_written_and_queries_keep_working(tiny_model, tmpfs, tmp_path):
    log_path = tmp_path / "server.log"
    data_dir = tmpfs.mount_point
    with live_server(tiny_model, data_dir, log_path, prefix=tmpfs.prefix) as server, server.client() as client:
        for index in range(3):
            assert enroll(client, f"before{index}", 100 + index).status_code == 201
        filled = tmpfs.run(f'cat /dev/zero > "{data_dir}/filler" 2>/dev/null; df -k "{data_dir}" | tail -1')
        assert filled.stdout.split()[3] == "0", filled.stdout  # no space left

        acknowledged_while_full, refused = [], None
        for index in range(40):  # SQLite may still fit a few commits into WAL pages it already owns
            response = enroll(client, f"full{index}", 200 + index)
            if response.status_code == 201:
                acknowledged_while_full.append(f"full{index}")
                continue
            refused = (f"full{index}", response)
            break
        assert refused is not None, "the disk never reported full"
        refused_id, response = refused
        assert response.status_code == 507, response.text
        error = response.json()["error"]
        assert error["code"] == "storage_full" and "disk is full" in error["message"]
        assert error["request_id"] == response.headers["x-request-id"]
        lines = server.request_log_lines(error["request_id"])
        assert len(lines) == 1 and "507" in lines[0] and "storage_full" in lines[0], lines

        # Nothing half-written, and reads, searches and queries by media still work on the full disk.
        assert client.get(f"/tracklets/{refused_id}").status_code == 404
        expected = {"before0", "before1", "before2", *acknowledged_while_full}
        assert enrolled_ids(client) == expected
        by_id = client.post("/query", data={"tracklet_id": "before1", "top_k": "3"})
        assert by_id.status_code == 200 and by_id.json()["matches"][0]["id"] == "before1"
        by_media = client.post("/query", files=frames_upload(102, 4), data={"top_k": "1"})
        assert by_media.status_code == 200 and by_media.json()["matches"][0]["id"] == "before2"
        assert client.get("/readyz").json()["gallery_size"] == len(expected)

        # Space back: enrolls work again without a restart.
        tmpfs.run(f'rm -f "{data_dir}/filler"')
        assert enroll(client, refused_id, 999).status_code == 201
        expected.add(refused_id)
        assert server.terminate() == 0

    integrity = tmpfs.run(f"{sys.executable} -c \"import sqlite3; print(sqlite3.connect('{data_dir}/{DATABASE_NAME}')"
                          ".execute('PRAGMA integrity_check').fetchone()[0])\"")
    assert integrity.stdout.strip() == "ok", integrity
    with live_server(tiny_model, data_dir, log_path, prefix=tmpfs.prefix) as server, server.client() as client:
        assert enrolled_ids(client) == expected
        assert client.post("/query", files=frames_upload(999, 4), data={"top_k": "1"}).json()["matches"][0]["id"] \
            == refused_id


def test_read_only_database_is_503_with_nothing_stored_and_reads_keep_working(tiny_model, tmp_path, caplog):
    """The data directory turning read-only under a running service, through a setting-free seam: SQLite's
    own ``query_only`` switch, which fails every write with the real SQLITE_READONLY error (as root,
    chmod cannot make a directory read-only, and a tmpfs with open files refuses to remount read-only)."""
    settings = Settings(model_path=tiny_model, data_dir=tmp_path / "gallery", device="cpu", intra_op_threads=1,
                        _env_file=None)
    with TestClient(create_app(settings)) as client:
        assert enroll(client, "kept", 1).status_code == 201
        gallery = client.app.state.service.gallery
        generation = gallery.generation()
        gallery.records._db.execute("PRAGMA query_only = ON")
        with caplog.at_level("WARNING"):
            response = enroll(client, "refused", 2)
        assert response.status_code == 503, response.text
        error = response.json()["error"]
        assert error["code"] == "storage_unavailable" and "readonly" in error["message"]
        assert response.headers["retry-after"] == "5"
        assert any(f"id={error['request_id']}" in record.getMessage() and "503" in record.getMessage()
                   for record in caplog.records)
        deletion = client.delete("/tracklets/kept")
        assert deletion.status_code == 503 and deletion.json()["error"]["code"] == "storage_unavailable"
        # Nothing changed: not in SQLite, not in the index, generation untouched; reads and searches work.
        assert gallery.generation() == generation and gallery.count() == 1
        assert enrolled_ids(client) == {"kept"}
        assert client.post("/query", files=frames_upload(1, 4), data={"top_k": "5"}).json()["matches"][0]["id"] \
            == "kept"
        gallery.records._db.execute("PRAGMA query_only = OFF")
        assert enroll(client, "refused", 2).status_code == 201


# ------------------------------------------------------------------------------------------ index snapshot
def make_gallery(path: Path, count: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    vectors = {f"t{index}": rng.normal(size=DIM).astype(np.float32) for index in range(count)}
    store = SqliteGallery(path, DIM, VERSION)
    for key, vector in vectors.items():
        store.add(TrackletRecord(id=key), vector)
    store.close()
    return vectors


def assert_searches_match(store: SqliteGallery, vectors: dict[str, np.ndarray]) -> None:
    assert store.count() == len(vectors)
    for key, vector in vectors.items():
        hit = store.search(vector[None], 1)[0][0]
        assert hit.record.id == key and hit.distance == pytest.approx(0.0, abs=1e-6)


def test_clean_close_writes_a_snapshot_that_the_next_open_uses(tmp_path):
    vectors = make_gallery(tmp_path, 20)
    store = SqliteGallery(tmp_path, DIM, VERSION)
    assert store.loaded_from_snapshot
    assert sorted(path.name for path in tmp_path.glob("index-*")) == [snapshot_name(store.generation())]
    assert_searches_match(store, vectors)
    store.delete("t3")
    del vectors["t3"]
    # A replace may reuse row ids: the generation still moves.
    store.add(TrackletRecord(id="t5"), np.zeros(DIM, np.float32), replace=True)
    vectors["t5"] = np.zeros(DIM, np.float32)
    store.close()
    reopened = SqliteGallery(tmp_path, DIM, VERSION)
    assert reopened.loaded_from_snapshot
    assert_searches_match(reopened, vectors)
    reopened.close()


def test_writes_after_the_snapshot_make_it_stale_and_the_index_is_rebuilt(tmp_path):
    vectors = make_gallery(tmp_path, 10)
    store = SqliteGallery(tmp_path, DIM, VERSION)
    store.add(TrackletRecord(id="late"), np.ones(DIM, np.float32))
    vectors["late"] = np.ones(DIM, np.float32)
    store.delete("t0")
    del vectors["t0"]
    store.records.release_directory_lock()  # a crash: no close, no new snapshot
    store.records._db.close()
    reopened = SqliteGallery(tmp_path, DIM, VERSION)
    assert not reopened.loaded_from_snapshot
    assert_searches_match(reopened, vectors)
    reopened.close()


def test_a_snapshot_that_disagrees_with_sqlite_is_not_used(tmp_path):
    vectors = make_gallery(tmp_path, 10)
    (snapshot,) = tmp_path.glob("index-*.faiss")
    # Same name (generation), other content: e.g. a file restored from elsewhere.
    other = SqliteGallery(tmp_path / "other", DIM, VERSION)
    other.add(TrackletRecord(id="x"), np.ones(DIM, np.float32))
    other.close()
    (other_snapshot,) = (tmp_path / "other").glob("index-*.faiss")
    snapshot.write_bytes(other_snapshot.read_bytes())
    store = SqliteGallery(tmp_path, DIM, VERSION)
    assert not store.loaded_from_snapshot
    assert_searches_match(store, vectors)
    store.close()
    snapshot.write_bytes(b"not a faiss index")
    store = SqliteGallery(tmp_path, DIM, VERSION)
    assert not store.loaded_from_snapshot
    assert_searches_match(store, vectors)
    store.close()


CRASHING_SNAPSHOT = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    import service.gallery.index as gallery_module
    from service.gallery import SqliteGallery, TrackletRecord

    path, where = sys.argv[1], sys.argv[2]
    store = SqliteGallery(path, {dim}, "{version}")
    store.add(TrackletRecord(id="added-before-the-crash"), np.full({dim}, 7.0, np.float32))
    real_write_index, real_replace = gallery_module.faiss.write_index, gallery_module.os.replace

    def write_half_then_die(index, target):
        real_write_index(index, target)
        size = os.path.getsize(target)
        with open(target, "r+b") as partial:
            partial.truncate(size // 2)
        os.kill(os.getpid(), signal.SIGKILL)

    def die_before_rename(source, target):
        os.kill(os.getpid(), signal.SIGKILL)

    def rename_then_die(source, target):
        real_replace(source, target)
        os.kill(os.getpid(), signal.SIGKILL)

    hooks = {{"while-writing": ("faiss", "write_index", write_half_then_die),
              "before-rename": ("os", "replace", die_before_rename),
              "after-rename": ("os", "replace", rename_then_die)}}
    module_name, attribute, hook = hooks[where]
    setattr(getattr(gallery_module, module_name), attribute, hook)
    store.close()
    raise SystemExit("the hook did not kill the process")
""").format(dim=DIM, version=VERSION)


@pytest.mark.parametrize("where", ["while-writing", "before-rename", "after-rename"])
def test_a_crash_while_writing_the_snapshot_leaves_a_loadable_gallery(tmp_path, where):
    vectors = make_gallery(tmp_path, 12)  # a clean close: an older snapshot is on disk
    result = subprocess.run([sys.executable, "-c", CRASHING_SNAPSHOT, str(tmp_path), where], cwd=REPO_ROOT,
                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    vectors["added-before-the-crash"] = np.full(DIM, 7.0, np.float32)
    leftovers = sorted(path.name for path in tmp_path.glob("index-*"))
    assert leftovers, "the crash should have left snapshot files behind"

    store = SqliteGallery(tmp_path, DIM, VERSION)
    # Only the complete file renamed into place counts; a torn temporary file or an older generation never.
    assert store.loaded_from_snapshot == (where == "after-rename")
    assert_searches_match(store, vectors)
    assert sorted(path.name for path in tmp_path.glob("index-*")) == (
        [snapshot_name(store.generation())] if where == "after-rename" else [])
    store.close()
    with sqlite3.connect(tmp_path / DATABASE_NAME) as database:
        assert database.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
