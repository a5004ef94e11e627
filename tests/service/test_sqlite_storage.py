"""The shared SQLite write transaction and disk-error mapping (service.sqlite_storage), on real databases.

A full disk is a real SQLITE_FULL: the connection's ``max_page_count`` is capped at the pages it already
holds, so the next write that needs a page fails exactly as on a full filesystem.
"""

from __future__ import annotations

import sqlite3
import time

import pytest

from service import sqlite_storage
from service.errors import StorageFullError, StorageUnavailableError
from service.footage.jobs import Job, JobMode, JobStatus, JobStore


def connect(path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("CREATE TABLE items (id TEXT PRIMARY KEY, payload TEXT)")
    return db


def fill_disk(db: sqlite3.Connection) -> None:
    (pages,) = db.execute("PRAGMA page_count").fetchone()
    db.execute(f"PRAGMA max_page_count = {pages}")


def as_storage_error(error: sqlite3.Error) -> Exception:
    return sqlite_storage.storage_error(error, full="disk full", unavailable=f"unavailable: {error}")


def test_a_transaction_commits_or_leaves_nothing(tmp_path):
    db = connect(tmp_path / "a.sqlite3")
    with sqlite_storage.write_transaction(db, as_storage_error) as tx:
        tx.execute("INSERT INTO items VALUES ('a', 'x')")
    with pytest.raises(RuntimeError), sqlite_storage.write_transaction(db, as_storage_error) as tx:
        tx.execute("INSERT INTO items VALUES ('b', 'x')")
        raise RuntimeError("the caller failed half-way")
    assert not db.in_transaction
    assert [row for (row,) in db.execute("SELECT id FROM items")] == ["a"]


def test_a_full_disk_is_storage_full_and_is_rolled_back(tmp_path):
    db = connect(tmp_path / "a.sqlite3")
    fill_disk(db)
    with pytest.raises(StorageFullError, match="disk full"), sqlite_storage.write_transaction(
        db, as_storage_error
    ) as tx:
        tx.execute("INSERT INTO items VALUES ('small', 'x')")
        tx.execute("INSERT INTO items VALUES ('large', ?)", ("y" * 200_000,))
    assert not db.in_transaction and db.execute("SELECT COUNT(*) FROM items").fetchone() == (0,)


def test_other_errors_map_to_unavailable_or_pass_through_as_the_caller_chooses(tmp_path):
    db = connect(tmp_path / "a.sqlite3")
    db.execute("INSERT INTO items VALUES ('a', 'x')")
    with pytest.raises(StorageUnavailableError, match="unavailable: UNIQUE constraint"):
        with sqlite_storage.write_transaction(db, as_storage_error) as tx:
            tx.execute("INSERT INTO items VALUES ('a', 'again')")

    def only_disk_failures(error: sqlite3.Error) -> Exception | None:
        return as_storage_error(error) if sqlite_storage.is_storage_failure(error) else None

    with pytest.raises(sqlite3.IntegrityError) as error:
        with sqlite_storage.write_transaction(db, only_disk_failures) as tx:
            tx.execute("INSERT INTO items VALUES ('a', 'again')")
    assert not sqlite_storage.is_disk_full(error.value) and not db.in_transaction
    assert db.execute("SELECT payload FROM items").fetchall() == [("x",)]


def test_the_job_store_reports_a_full_disk_and_keeps_the_job_as_it_was(tmp_path):
    store = JobStore(tmp_path)
    store.create(Job(id="j", status=JobStatus.queued, mode=JobMode.enroll, camera_id="cam", video_name="v.mp4",
                     video_bytes=10, created_at=time.time()))  # fmt: skip
    fill_disk(store._db)
    with pytest.raises(StorageFullError, match="footage job could not be recorded"):
        store.add_warning("j", "w" * 200_000)
    assert store.get("j").warnings == [] and store.get("j").status is JobStatus.queued
    store.close()
