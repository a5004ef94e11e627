"""The gallery on each backend (SQLite + FAISS, Milvus: the ``open_store`` fixture): add / search / delete /
reload, checked against a numpy brute-force search; then what only the SQLite backend has."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from service.errors import ConflictError, StartupError
from service.gallery import Gallery, SqliteGallery, TrackletFilter, TrackletRecord
from service.gallery.sqlite import DATABASE_NAME

DIM = 16
VERSION = "v-test-0000000001"


def brute_force(gallery: dict[str, np.ndarray], cameras: dict[str, str], query: np.ndarray, top_k: int,
                exclude_camera: str | None = None) -> list[tuple[str, float]]:
    """Reference ranking: squared l2 in float64, ascending."""
    ids = [key for key in gallery if exclude_camera is None or cameras[key] != exclude_camera]
    if not ids:
        return []
    matrix = np.stack([gallery[key] for key in ids]).astype(np.float64)
    distances = ((matrix - query.astype(np.float64)) ** 2).sum(axis=1)
    order = np.argsort(distances, kind="stable")[:top_k]
    return [(ids[position], float(distances[position])) for position in order]


def assert_same_ranking(hits, expected):
    assert [hit.record.id for hit in hits] == [key for key, _ in expected]
    np.testing.assert_allclose([hit.distance for hit in hits], [distance for _, distance in expected], rtol=1e-4,
                               atol=1e-4)


def search(store: Gallery, query: np.ndarray, top_k: int, tracklet_filter: TrackletFilter | None = None):
    """The matches of one query."""
    (matches,) = store.search(query[None], top_k, tracklet_filter)
    return matches


@pytest.fixture
def filled(tmp_path, open_store):
    """A store with 150 random embeddings over 3 cameras, and the same data as plain dicts."""
    rng = np.random.default_rng(0)
    store = open_store(tmp_path / "gallery", DIM, VERSION)
    vectors, cameras = {}, {}
    for index in range(150):
        key = f"t{index}"
        vectors[key] = rng.normal(size=DIM).astype(np.float32)
        cameras[key] = f"cam{index % 3}"
        store.add(TrackletRecord(id=key, person_id=f"p{index % 25}", camera_id=cameras[key], metadata={"i": index},
                                 frames_decoded=index + 1, frames_used=min(index + 1, 8)), vectors[key])
    yield store, vectors, cameras
    store.close()


def test_search_equals_numpy_brute_force(filled):
    store, vectors, cameras = filled
    rng = np.random.default_rng(1)
    for _ in range(10):
        query = rng.normal(size=DIM).astype(np.float32)
        assert_same_ranking(search(store, query, 7), brute_force(vectors, cameras, query, 7))
    assert len(search(store, query, 1000)) == 150  # top_k above the gallery size returns everything


def test_exclude_camera_equals_brute_force_and_still_fills_top_k(filled):
    store, vectors, cameras = filled
    query = vectors["t4"]  # camera cam1
    hits = search(store, query, 25, TrackletFilter(exclude_cameras=["cam1"]))
    assert len(hits) == 25
    assert all(hit.record.camera_id != "cam1" for hit in hits)
    assert_same_ranking(hits, brute_force(vectors, cameras, query, 25, exclude_camera="cam1"))


def test_a_stored_vector_finds_itself_at_distance_zero(filled):
    store, vectors, _ = filled
    hits = search(store, vectors["t123"], 3)
    assert hits[0].record.id == "t123" and hits[0].distance == pytest.approx(0.0, abs=1e-6)
    assert hits[0].distance >= 0.0
    assert hits[0].record.metadata == {"i": 123} and hits[0].record.frames_decoded == 124
    np.testing.assert_array_equal(store.get_embedding("t123"), vectors["t123"])


def test_delete_removes_from_search_at_once(filled):
    store, vectors, cameras = filled
    assert store.delete("t123") is True
    assert store.delete("t123") is False
    assert store.get("t123") is None and store.get_embedding("t123") is None
    del vectors["t123"]
    assert store.count() == 149
    hits = search(store, np.asarray(filled[1].get("t122")), 5)
    assert "t123" not in [hit.record.id for hit in hits]
    query = np.random.default_rng(5).normal(size=DIM).astype(np.float32)
    assert_same_ranking(search(store, query, 150), brute_force(vectors, cameras, query, 150))


def test_conflict_and_replace(filled):
    store, _, _ = filled
    new_vector = np.full(DIM, 9.0, np.float32)
    with pytest.raises(ConflictError):
        store.add(TrackletRecord(id="t5"), new_vector)
    assert store.get("t5").metadata == {"i": 5}  # unchanged by the refused add
    record = store.add(TrackletRecord(id="t5", person_id="p-new"), new_vector, replace=True)
    assert record.person_id == "p-new" and store.count() == 150
    hits = search(store, new_vector, 1)
    assert hits[0].record.id == "t5" and hits[0].distance == pytest.approx(0.0)
    np.testing.assert_array_equal(store.get_embedding("t5"), new_vector)


def test_ties_in_distance_rank_in_enrollment_order(tmp_path, open_store):
    store = open_store(tmp_path, DIM, VERSION)
    same = np.ones(DIM, np.float32)
    for name in ("late-z", "early-a", "middle-m"):
        store.add(TrackletRecord(id=name), same)
    store.add(TrackletRecord(id="early-a"), same, replace=True)  # a replace enrolls anew: last in the order
    assert [hit.record.id for hit in search(store, same, 3)] == ["late-z", "middle-m", "early-a"]
    assert [hit.record.id for hit in search(store, same, 2)] == ["late-z", "middle-m"]
    assert [record.id for record in store.list()[0]] == ["late-z", "middle-m", "early-a"]
    store.close()


def test_list_pages_and_filters(filled):
    store, _, _ = filled
    page, total = store.list(limit=10, offset=0)
    assert total == 150 and [record.id for record in page] == [f"t{k}" for k in range(10)]
    page, total = store.list(limit=10, offset=145)
    assert [record.id for record in page] == [f"t{k}" for k in range(145, 150)]
    page, total = store.list(TrackletFilter(person_id="p7"), limit=100)
    assert total == 6 and {record.id for record in page} == {f"t{k}" for k in range(7, 150, 25)}
    page, total = store.list(TrackletFilter(person_id="p7", cameras=["cam1"]), limit=100)
    assert total == 2 and all(record.camera_id == "cam1" and record.person_id == "p7" for record in page)


def test_reload_rebuilds_the_same_index(tmp_path, open_store):
    rng = np.random.default_rng(2)
    vectors = {f"t{index}": rng.normal(size=DIM).astype(np.float32) for index in range(50)}
    cameras = dict.fromkeys(vectors, "c")
    store = open_store(tmp_path, DIM, VERSION)
    for key, vector in vectors.items():
        store.add(TrackletRecord(id=key, camera_id="c"), vector)
    store.delete("t10")
    store.add(TrackletRecord(id="t20"), np.zeros(DIM, np.float32), replace=True)
    del vectors["t10"]
    vectors["t20"] = np.zeros(DIM, np.float32)
    queries = rng.normal(size=(5, DIM)).astype(np.float32)
    before = [[(hit.record.id, hit.distance) for hit in search(store, query, 10)] for query in queries]
    store.close()

    reopened = open_store(tmp_path, DIM, VERSION)
    assert reopened.count() == 49
    after = [[(hit.record.id, hit.distance) for hit in search(reopened, query, 10)] for query in queries]
    assert after == before
    for query in queries:
        assert_same_ranking(search(reopened, query, 10), brute_force(vectors, cameras, query, 10))
    reopened.close()


def test_sqlite_is_durable_wal_full(tmp_path):
    store = SqliteGallery(tmp_path, DIM, VERSION)
    journal = store.records._db.execute("PRAGMA journal_mode").fetchone()[0]
    synchronous = store.records._db.execute("PRAGMA synchronous").fetchone()[0]
    assert journal == "wal" and synchronous == 2  # 2 = FULL
    store.add(TrackletRecord(id="a"), np.ones(DIM, np.float32))
    # Committed: visible to an independent connection before the store is closed.
    other = sqlite3.connect(tmp_path / DATABASE_NAME)
    assert other.execute("SELECT id, model_version FROM tracklets").fetchall() == [("a", VERSION)]
    other.close()
    store.close()


def test_refuses_a_gallery_of_another_model_version(tmp_path, open_store):
    store = open_store(tmp_path, DIM, "old-version")
    for index in range(3):
        store.add(TrackletRecord(id=f"t{index}"), np.ones(DIM, np.float32) * index)
    store.close()
    with pytest.raises(StartupError, match="3 by model_version old-version") as error:
        open_store(tmp_path, DIM, "new-version")
    setting = "REID_DATA_DIR" if open_store.backend == "sqlite" else "REID_MILVUS_COLLECTION"
    assert setting in str(error.value) and "\n" not in str(error.value)
    # Refusing left the gallery usable by the right model.
    again = open_store(tmp_path, DIM, "old-version")
    assert again.count() == 3
    again.close()


def test_one_process_per_gallery_directory(tmp_path):
    store = SqliteGallery(tmp_path, DIM, VERSION)
    with pytest.raises(StartupError, match="in use"):
        SqliteGallery(tmp_path, DIM, VERSION)
    store.close()
    SqliteGallery(tmp_path, DIM, VERSION).close()  # free again once closed


def test_empty_gallery_and_bad_vectors(tmp_path, open_store):
    store = open_store(tmp_path, DIM, VERSION)
    assert search(store, np.zeros(DIM, np.float32), 5) == []
    with pytest.raises(ValueError):
        store.add(TrackletRecord(id="nan"), np.full(DIM, np.nan, np.float32))
    with pytest.raises(ValueError):
        store.add(TrackletRecord(id="wrong-dim"), np.zeros(DIM + 1, np.float32))
    assert store.count() == 0 and store.list()[1] == 0
    store.close()


def test_unusable_directory_is_a_startup_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StartupError, match="unusable"):
        SqliteGallery(blocker / "gallery", DIM, VERSION)


def test_bulk_add_is_all_or_nothing_and_searchable(tmp_path, open_store):
    rng = np.random.default_rng(9)
    store = open_store(tmp_path, DIM, VERSION)
    store.add(TrackletRecord(id="single"), rng.normal(size=DIM).astype(np.float32))
    vectors = rng.normal(size=(40, DIM)).astype(np.float32)
    ids = [f"bulk{index}" for index in range(40)]
    store.add_many([TrackletRecord(id=key, camera_id="c") for key in ids], vectors)
    assert store.count() == 41 and store.get("bulk7").camera_id == "c"
    hits = search(store, vectors[7], 1)
    assert hits[0].record.id == "bulk7" and hits[0].distance == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ConflictError):
        store.add_many([TrackletRecord(id="new-one"), TrackletRecord(id="bulk3")], vectors[:2])
    assert store.count() == 41 and store.get("new-one") is None
    store.close()
    reopened = open_store(tmp_path, DIM, VERSION)
    assert reopened.count() == 41 and search(reopened, vectors[39], 1)[0].record.id == "bulk39"
    reopened.close()
