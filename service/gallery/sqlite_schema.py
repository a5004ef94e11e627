"""The SQLite layout of a gallery: the tables, schema versions and their migration, a record as a row
and back, and a `TrackletFilter` as a WHERE clause."""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
from pathlib import Path
from typing import Any

from service.errors import StartupError
from service.gallery.base import TrackletFilter, TrackletRecord, from_epoch_seconds, to_epoch_seconds

log = logging.getLogger(__name__)

#: 1: the first release. 2: start_time, end_time (epoch seconds), job_id, frame_start, frame_end, has_thumbnail.
SCHEMA_VERSION = 2

SCHEMA = """
CREATE TABLE IF NOT EXISTS gallery_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tracklets (
    row_id INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    person_id TEXT,
    camera_id TEXT,
    metadata TEXT NOT NULL,
    frames_decoded INTEGER NOT NULL,
    frames_used INTEGER NOT NULL,
    model_version TEXT NOT NULL,
    created_at TEXT NOT NULL,
    embedding BLOB NOT NULL,
    start_time REAL,
    end_time REAL,
    job_id TEXT,
    frame_start INTEGER,
    frame_end INTEGER,
    has_thumbnail INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS tracklets_person ON tracklets(person_id);
CREATE INDEX IF NOT EXISTS tracklets_camera ON tracklets(camera_id);
INSERT OR IGNORE INTO gallery_meta(key, value) VALUES ('generation', '0');
"""
#: Columns added after schema version 1 (new databases get them from CREATE TABLE, a version-1 database
#: from ALTER TABLE at its first open by this release).
_COLUMNS_SINCE_V1 = (
    ("start_time", "REAL"),
    ("end_time", "REAL"),
    ("job_id", "TEXT"),
    ("frame_start", "INTEGER"),
    ("frame_end", "INTEGER"),
    ("has_thumbnail", "INTEGER NOT NULL DEFAULT 0"),
)
RECORD_COLUMNS = (
    "id, person_id, camera_id, metadata, frames_decoded, frames_used, model_version, created_at, "
    "start_time, end_time, job_id, frame_start, frame_end, has_thumbnail"
)


def record_values(record: TrackletRecord) -> tuple:
    """The values of `RECORD_COLUMNS` for ``record``, in order."""
    return (
        record.id, record.person_id, record.camera_id, json.dumps(record.metadata), record.frames_decoded,
        record.frames_used, record.model_version, record.created_at, to_epoch_seconds(record.start_time),
        to_epoch_seconds(record.end_time), record.job_id, record.frame_start, record.frame_end,
        int(record.has_thumbnail),
    )


def record_from_row(row: sqlite3.Row | tuple) -> TrackletRecord:
    (identifier, person_id, camera_id, metadata, decoded, used, version, created, start, end, job_id, frame_start,
     frame_end, has_thumbnail) = row
    # model_construct: the row was validated when it was stored; reading a page must not re-validate it.
    return TrackletRecord.model_construct(
        id=identifier, person_id=person_id, camera_id=camera_id, metadata=json.loads(metadata),
        frames_decoded=decoded, frames_used=used, model_version=version, created_at=created,
        start_time=from_epoch_seconds(start), end_time=from_epoch_seconds(end), job_id=job_id,
        frame_start=frame_start, frame_end=frame_end, has_thumbnail=bool(has_thumbnail),
    )


def migrate(db: sqlite3.Connection, data_dir: Path) -> None:
    """Brings a database of an older schema to `SCHEMA_VERSION` in one transaction (new ones included)."""
    row = db.execute("SELECT value FROM gallery_meta WHERE key = 'schema_version'").fetchone()
    columns = {name for (_, name, *_rest) in db.execute("PRAGMA table_info(tracklets)")}
    # Every database since version 1 records its version; a fresh one has just been created as the current.
    version = int(row[0]) if row else SCHEMA_VERSION
    if version > SCHEMA_VERSION:
        raise StartupError(
            f"gallery {data_dir} has schema version {version}, newer than this service's {SCHEMA_VERSION}; "
            "serve it with a newer release"
        )
    db.execute("BEGIN IMMEDIATE")
    try:
        for name, declaration in _COLUMNS_SINCE_V1:
            if name not in columns:
                db.execute(f"ALTER TABLE tracklets ADD COLUMN {name} {declaration}")
        db.execute("CREATE INDEX IF NOT EXISTS tracklets_job ON tracklets(job_id)")
        db.execute("INSERT OR REPLACE INTO gallery_meta(key, value) VALUES ('schema_version', ?)",
                   (str(SCHEMA_VERSION),))
        db.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        raise
    if version < SCHEMA_VERSION:
        log.info("gallery %s migrated from schema version %d to %d", data_dir, version, SCHEMA_VERSION)


def filter_sql(tracklet_filter: TrackletFilter | None) -> tuple[str, list[Any]]:
    """A WHERE clause (with the word, or empty) and its parameters selecting the records that pass."""
    if tracklet_filter is None:
        return "", []
    conditions: list[str] = []
    parameters: list[Any] = []
    if tracklet_filter.cameras is not None:
        conditions.append(f"camera_id IN ({','.join('?' * len(tracklet_filter.cameras))})"
                          if tracklet_filter.cameras else "0")
        parameters.extend(tracklet_filter.cameras)
    if tracklet_filter.exclude_cameras:
        placeholders = ",".join("?" * len(tracklet_filter.exclude_cameras))
        conditions.append(f"(camera_id IS NULL OR camera_id NOT IN ({placeholders}))")
        parameters.extend(tracklet_filter.exclude_cameras)
    if tracklet_filter.person_id is not None:
        conditions.append("person_id = ?")
        parameters.append(tracklet_filter.person_id)
    # A record with one of the two times is the instant it gives; with neither, NULL makes it fail the window.
    if tracklet_filter.after is not None:
        conditions.append("COALESCE(end_time, start_time) >= ?")
        parameters.append(tracklet_filter.after)
    if tracklet_filter.before is not None:
        conditions.append("COALESCE(start_time, end_time) <= ?")
        parameters.append(tracklet_filter.before)
    for key, expected in (tracklet_filter.metadata or {}).items():
        path = f'$."{key}"'  # keys are validated by TrackletFilter: no quotes or backslashes
        if expected is None or isinstance(expected, bool):
            conditions.append("json_type(metadata, ?) = ?")
            parameters.extend([path, "null" if expected is None else ("true" if expected else "false")])
        elif isinstance(expected, str):
            conditions.append("(json_type(metadata, ?) = 'text' AND json_extract(metadata, ?) = ?)")
            parameters.extend([path, path, expected])
        else:
            conditions.append("(json_type(metadata, ?) IN ('integer', 'real') AND json_extract(metadata, ?) = ?)")
            parameters.extend([path, path, expected])
    return (f"WHERE {' AND '.join(conditions)}" if conditions else ""), parameters
