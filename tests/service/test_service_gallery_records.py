"""The gallery's record type and interface: times and footage fields, every filter field (list, count and
search against a brute-force reference), the schema migration of a version-1 gallery, backend choice."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timezone

import numpy as np
import pytest
from pydantic import ValidationError

from service.config import Settings
from service.errors import StartupError
from service.gallery import Gallery, SqliteGallery, TrackletFilter, TrackletRecord, open_gallery
from service.gallery.sqlite import DATABASE_NAME
from service.gallery.sqlite_schema import SCHEMA_VERSION

DIM = 8
VERSION = "v-records-test"
HOUR = 3600.0
T0 = datetime(2026, 5, 1, 8, 0, tzinfo=timezone.utc).timestamp()


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=timezone.utc)


def make_records() -> list[TrackletRecord]:
    """24 records over 3 cameras, 4 people, some with times (one hour each, an hour apart), varied metadata."""
    records = []
    for index in range(24):
        timed = index % 4 != 3
        records.append(TrackletRecord(
            id=f"r{index}", person_id=f"p{index % 4}", camera_id=None if index == 23 else f"cam{index % 3}",
            metadata={"site": "gate" if index % 2 else "hall", "floor": index % 3, "night": index >= 12,
                      "note": None if index % 5 == 0 else "x"},
            start_time=at(T0 + index * HOUR) if timed else None,
            end_time=at(T0 + index * HOUR + HOUR / 2) if timed and index % 7 else None,
        ))
    return records


@pytest.fixture(scope="module")
def gallery(tmp_path_factory, open_store):
    store = open_store(tmp_path_factory.mktemp("records"), DIM, VERSION)
    rng = np.random.default_rng(3)
    records = make_records()
    vectors = rng.normal(size=(len(records), DIM)).astype(np.float32)
    store.add_many(records[:10], vectors[:10])
    for record, vector in zip(records[10:], vectors[10:], strict=True):
        store.add(record, vector)
    yield store, records, vectors
    store.close()


FILTERS = [
    TrackletFilter(),
    TrackletFilter(cameras=["cam1"]),
    TrackletFilter(cameras=["cam0", "cam2"]),
    TrackletFilter(cameras=[]),
    TrackletFilter(exclude_cameras=["cam0"]),
    TrackletFilter(person_id="p2"),
    TrackletFilter(after=T0 + 10 * HOUR),
    TrackletFilter(before=T0 + 5.2 * HOUR),
    TrackletFilter(after=T0 + 4.4 * HOUR, before=T0 + 9 * HOUR),
    TrackletFilter(metadata={"site": "gate"}),
    TrackletFilter(metadata={"floor": 1, "night": True}),
    TrackletFilter(metadata={"floor": 1.0}),
    TrackletFilter(metadata={"night": False}),
    TrackletFilter(metadata={"note": None}),
    TrackletFilter(metadata={"missing": "x"}),
    TrackletFilter(metadata={"floor": True}),
    TrackletFilter(cameras=['cam1" or camera_id != "', "cam0"], exclude_cameras=["x') or (1 == 1"]),
    TrackletFilter(person_id='p1" or person_id != "'),
    TrackletFilter(cameras=["cam1", "cam2"], exclude_cameras=["cam2"], person_id="p1", metadata={"site": "gate"}),
]


def expected_ids(records: list[TrackletRecord], tracklet_filter: TrackletFilter) -> list[str]:
    return [record.id for record in records if tracklet_filter.matches(record)]


def test_reference_semantics_of_a_few_filters():
    records = {record.id: record for record in make_records()}
    # r5: cam2, p1, 13:00-13:30; r3: no times; r14: only a start (14 % 7 == 0), at 22:00.
    assert TrackletFilter(after=T0 + 5.5 * HOUR).matches(records["r5"])
    assert not TrackletFilter(after=T0 + 5.6 * HOUR, before=T0 + 6 * HOUR).matches(records["r5"])
    assert not TrackletFilter(after=T0).matches(records["r3"])  # a window excludes records without times
    assert TrackletFilter(before=T0 + 14 * HOUR, after=T0 + 14 * HOUR).matches(records["r14"])
    assert not TrackletFilter(after=T0 + 14.1 * HOUR).matches(records["r14"])
    assert TrackletFilter(exclude_cameras=["cam0"]).matches(records["r23"])  # no camera: not excluded
    assert not TrackletFilter(cameras=["cam0"]).matches(records["r23"])
    assert not TrackletFilter(metadata={"floor": True}).matches(records["r1"])  # floor 1 is not true


@pytest.mark.parametrize("tracklet_filter", FILTERS, ids=lambda item: json.dumps(item.model_dump(exclude_none=True)))
def test_list_and_count_equal_the_reference(gallery, tracklet_filter):
    store, records, _ = gallery
    expected = expected_ids(records, tracklet_filter)
    assert store.count(tracklet_filter) == len(expected)
    page, total = store.list(tracklet_filter, offset=0, limit=1000)
    assert [record.id for record in page] == expected and total == len(expected)
    page, total = store.list(tracklet_filter, offset=2, limit=3)
    assert [record.id for record in page] == expected[2:5] and total == len(expected)


@pytest.mark.parametrize("tracklet_filter", FILTERS, ids=lambda item: json.dumps(item.model_dump(exclude_none=True)))
def test_search_equals_brute_force_over_the_passing_records(gallery, tracklet_filter):
    store, records, vectors = gallery
    queries = np.random.default_rng(4).normal(size=(3, DIM)).astype(np.float32)
    passing = [position for position, record in enumerate(records) if tracklet_filter.matches(record)]
    results = store.search(queries, 5, tracklet_filter)
    assert len(results) == 3
    for query, matches in zip(queries, results, strict=True):
        distances = ((vectors[passing].astype(np.float64) - query) ** 2).sum(axis=1)
        order = np.argsort(distances, kind="stable")[:5]
        assert [match.record.id for match in matches] == [records[passing[k]].id for k in order]
        np.testing.assert_allclose([match.distance for match in matches], distances[order], rtol=1e-4, atol=1e-5)


def test_records_keep_times_footage_fields_and_stamps(gallery):
    store, records, _ = gallery
    stored = store.get("r5")
    assert stored.start_time == at(T0 + 5 * HOUR) and stored.end_time == at(T0 + 5.5 * HOUR)
    assert stored.model_version == VERSION and stored.created_at.endswith("+00:00")
    assert stored.model_dump(mode="json")["start_time"] == "2026-05-01T13:00:00Z"
    footage = TrackletRecord(id="from-footage", job_id="job-1", frame_start=30, frame_end=90,
                             start_time=at(12.5), end_time=at(14.0))
    store.add(footage, np.zeros(DIM, np.float32))
    again = store.get("from-footage")
    assert (again.job_id, again.frame_start, again.frame_end, again.has_thumbnail) == ("job-1", 30, 90, False)
    assert again.start_time.timestamp() == 12.5 and again.end_time.timestamp() == 14.0
    assert store.delete("from-footage")


def test_record_validation():
    with pytest.raises(ValidationError, match="end_time is before start_time"):
        TrackletRecord(id="x", start_time=at(T0), end_time=at(T0 - 1))
    with pytest.raises(ValidationError, match="frame_end is before frame_start"):
        TrackletRecord(id="x", frame_start=5, frame_end=4)
    naive = TrackletRecord(id="x", start_time=datetime(2026, 1, 1, 12, 0))
    assert naive.start_time == datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
    with pytest.raises(ValidationError, match="quotes"):
        TrackletFilter(metadata={'a"b': 1})


VERSION_1_SCHEMA = """
CREATE TABLE gallery_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE tracklets (
    row_id INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, person_id TEXT, camera_id TEXT, metadata TEXT NOT NULL,
    frames_decoded INTEGER NOT NULL, frames_used INTEGER NOT NULL, model_version TEXT NOT NULL,
    created_at TEXT NOT NULL, embedding BLOB NOT NULL
);
CREATE INDEX tracklets_person ON tracklets(person_id);
CREATE INDEX tracklets_camera ON tracklets(camera_id);
INSERT INTO gallery_meta(key, value) VALUES ('generation', '2'), ('schema_version', '1');
"""


def test_a_version_1_gallery_is_migrated_and_keeps_its_records(tmp_path):
    """A database exactly as the first release wrote it opens, gains the new columns, and serves its records."""
    vectors = np.arange(2 * DIM, dtype=np.float32).reshape(2, DIM)
    with sqlite3.connect(tmp_path / DATABASE_NAME) as database:
        database.executescript(VERSION_1_SCHEMA)
        for index in range(2):
            database.execute(
                "INSERT INTO tracklets(id, person_id, camera_id, metadata, frames_decoded, frames_used, model_version,"
                " created_at, embedding) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (f"old{index}", "p", "c", '{"k": 1}', 9, 8, VERSION, "2026-01-01T00:00:00.000+00:00",
                 vectors[index].tobytes()),
            )
    database.close()
    store = SqliteGallery(tmp_path, DIM, VERSION)
    old = store.get("old1")
    assert old.model_dump(exclude={"created_at"}) == TrackletRecord(
        id="old1", person_id="p", camera_id="c", metadata={"k": 1}, frames_decoded=9, frames_used=8,
        model_version=VERSION).model_dump(exclude={"created_at"})
    assert store.search(vectors[1:], 1)[0][0].record.id == "old1"
    assert store.generation() == 2
    store.add(TrackletRecord(id="new", start_time=at(T0), job_id="j"), np.ones(DIM, np.float32))
    assert store.list(TrackletFilter(after=T0 - 1))[0][0].id == "new"
    store.close()
    with sqlite3.connect(tmp_path / DATABASE_NAME) as database:
        (version,) = database.execute("SELECT value FROM gallery_meta WHERE key = 'schema_version'").fetchone()
        columns = [row[1] for row in database.execute("PRAGMA table_info(tracklets)")]
    database.close()
    assert int(version) == SCHEMA_VERSION == 2
    assert columns[-6:] == ["start_time", "end_time", "job_id", "frame_start", "frame_end", "has_thumbnail"]
    reopened = SqliteGallery(tmp_path, DIM, VERSION)  # a second open migrates nothing and loses nothing
    assert reopened.count() == 3 and reopened.get("new").job_id == "j"
    reopened.close()


def test_a_gallery_of_a_newer_schema_is_refused(tmp_path):
    SqliteGallery(tmp_path, DIM, VERSION).close()
    with sqlite3.connect(tmp_path / DATABASE_NAME) as database:
        database.execute("UPDATE gallery_meta SET value = '99' WHERE key = 'schema_version'")
    database.close()
    with pytest.raises(StartupError, match="schema version 99"):
        SqliteGallery(tmp_path, DIM, VERSION)
    with sqlite3.connect(tmp_path / DATABASE_NAME) as database:
        database.execute("UPDATE gallery_meta SET value = '2' WHERE key = 'schema_version'")
    database.close()
    SqliteGallery(tmp_path, DIM, VERSION).close()  # the refusal released the directory lock


def test_open_gallery_chooses_the_backend_and_refuses_an_unknown_one(tmp_path):
    settings = Settings(data_dir=tmp_path, device="cpu", _env_file=None)
    gallery = open_gallery(settings, DIM, VERSION)
    try:
        assert isinstance(gallery, SqliteGallery) and isinstance(gallery, Gallery)
        assert gallery.health() == (True, "ok") and gallery.index_device == "cpu"
    finally:
        gallery.close()
    assert gallery.health() == (False, "the gallery is closed")
    wrong = Settings(data_dir=tmp_path, device="cpu", gallery_backend="cassandra", _env_file=None)
    with pytest.raises(StartupError, match="REID_GALLERY_BACKEND='cassandra' is not a gallery backend; choose one "
                                          "of: milvus, sqlite"):
        open_gallery(wrong, DIM, VERSION)


def test_lookups_by_many_ids_span_several_statements_and_leave_out_missing_ones(tmp_path):
    from service.gallery.sqlite import _FETCH_CHUNK, RecordStore

    store = RecordStore(tmp_path, DIM, VERSION)
    count = 2 * _FETCH_CHUNK + 7  # three IN statements
    vectors = np.random.default_rng(5).standard_normal((count, DIM)).astype(np.float32)
    records = [TrackletRecord(id=f"t{index}", person_id=f"p{index}", model_version=VERSION) for index in range(count)]
    with store.transaction("enroll"):
        row_ids = store.insert_many(records, vectors)
    by_id = {record.id: int(row_id) for record, row_id in zip(records, row_ids, strict=True)}
    asked = [*by_id, "missing"]
    assert store.row_ids_of(asked) == by_id
    wanted = [*map(int, row_ids), int(row_ids[-1]) + 100]
    found = store.records_by_row_id(wanted)
    assert sorted(found) == sorted(map(int, row_ids))
    assert all(found[by_id[record.id]] == record for record in records)
    stored = store.embeddings_by_row_id(wanted)
    assert sorted(stored) == sorted(map(int, row_ids))
    assert all(np.array_equal(stored[int(row_id)], vector) for row_id, vector in zip(row_ids, vectors, strict=True))
    assert store.row_ids_of([]) == {} and store.records_by_row_id([]) == {}
    store.close()
