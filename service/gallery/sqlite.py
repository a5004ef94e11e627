"""The record store: SQLite tables of records and embeddings, the gallery's source of truth.

It owns the durability of a write: WAL mode with ``synchronous=FULL`` (a commit is fsynced before it
returns), one all-or-nothing write path (`RecordStore.transaction`) that also bumps the ``generation``
counter, disk failures turned into StorageFullError / StorageUnavailableError, the directory lock (one
process per gallery directory) and the model_version guard; the tables, their migration and the SQL of a
filter are in `service.gallery.sqlite_schema`. It knows nothing of FAISS; rows are keyed by
an integer ``row_id`` that the vector index uses as its id. The whole contract is written down in
`service.gallery.local`, which composes this store with the index.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from service import sqlite_storage
from service.errors import ConflictError, StartupError, StorageFullError, StorageUnavailableError
from service.gallery.base import TrackletFilter, TrackletRecord
from service.gallery.sqlite_schema import (
    RECORD_COLUMNS,
    SCHEMA,
    filter_sql,
    migrate,
    record_from_row,
    record_values,
)

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows
    fcntl = None

log = logging.getLogger(__name__)

DATABASE_NAME = "gallery.sqlite3"
LOCK_NAME = "gallery.lock"
_FETCH_CHUNK = 512

def storage_error(error: sqlite3.Error, action: str) -> StorageFullError | StorageUnavailableError:
    """The client-facing error for an SQLite failure caused by the disk (full, read-only, I/O)."""
    return sqlite_storage.storage_error(
        error,
        full=f"The gallery's disk is full, so the {action} was not stored (nothing was half-written). "
        "Searches still work; free space in the data directory and retry.",
        unavailable=f"The gallery cannot be written right now ({error}), so the {action} was not stored (nothing "
        "was half-written). Searches may still work; retry later.",
    )


class RecordStore:
    """SQLite records and embeddings of one gallery directory. Not thread-safe by itself: the gallery
    that owns it serialises every call under its own lock.

    Raises:
        StartupError: the directory is unusable or locked by another process, or it holds embeddings of
            another model_version (the message names the counts).
    """

    def __init__(self, data_dir: Path, dim: int, model_version: str):
        self.data_dir = Path(data_dir)
        self.dim = dim
        self.model_version = model_version
        self._lock_file = None
        self._db: sqlite3.Connection | None = None
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self._acquire_directory_lock()
            self._db = sqlite3.connect(
                self.data_dir / DATABASE_NAME, check_same_thread=False, isolation_level=None, timeout=30.0
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)
            migrate(self._db, self.data_dir)
            self._check_model_version()
        except StartupError:
            self.close()
            raise
        except (OSError, sqlite3.Error) as error:
            self.close()
            raise StartupError(f"gallery directory {self.data_dir} is unusable: {error}") from None

    # -- start-up ------------------------------------------------------------------------------------------
    def _acquire_directory_lock(self) -> None:
        # Two processes with their own in-memory index over one database would each miss the other's
        # enrolls, so one gallery directory serves one process.
        if fcntl is None:
            return
        self._lock_file = open(self.data_dir / LOCK_NAME, "a+")  # noqa: SIM115 - held for the store's life
        try:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            self._lock_file = None
            raise StartupError(f"gallery directory {self.data_dir} is in use by another service process") from None

    def release_directory_lock(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def _check_model_version(self) -> None:
        counts = dict(self._db.execute("SELECT model_version, COUNT(*) FROM tracklets GROUP BY model_version"))
        foreign = {version: count for version, count in counts.items() if version != self.model_version}
        if foreign:
            described = ", ".join(f"{count} by model_version {version}" for version, count in sorted(foreign.items()))
            raise StartupError(
                f"gallery {self.data_dir} holds tracklets embedded by another model ({described}; "
                f"{counts.get(self.model_version, 0)} by the loaded {self.model_version}); they cannot be searched "
                "together: point REID_DATA_DIR at a new directory and enroll again, or serve the model they came from"
            )

    # -- reads ---------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """The connection for reads; a disk failure becomes StorageUnavailableError (503)."""
        try:
            yield self._db
        except sqlite3.Error as error:
            if not sqlite_storage.is_storage_failure(error):
                raise
            raise StorageUnavailableError(f"The gallery cannot be read right now ({error}); retry later.") from None

    def generation(self) -> int:
        """The write counter: bumped by every committed change, names the index snapshot."""
        row = self._db.execute("SELECT value FROM gallery_meta WHERE key = 'generation'").fetchone()
        return int(row[0]) if row else 0

    def row_ids(self) -> np.ndarray:
        """Every row id, ascending (int64)."""
        return np.array([row for (row,) in self._db.execute("SELECT row_id FROM tracklets ORDER BY row_id")],
                        dtype=np.int64)

    def embeddings_in_chunks(self, chunk: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(row ids, embeddings (n, dim) float32) of every row in row order, ``chunk`` rows at a time."""
        cursor = self._db.execute("SELECT row_id, embedding FROM tracklets ORDER BY row_id")
        while rows := cursor.fetchmany(chunk):
            row_ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
            blobs = [row[1] for row in rows]
            if any(len(blob) != self.dim * 4 for blob in blobs):
                raise StartupError(f"gallery {self.data_dir} holds embeddings whose size is not dim {self.dim}")
            yield row_ids, np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(rows), self.dim)

    def get(self, tracklet_id: str) -> TrackletRecord | None:
        with self.reading() as db:
            row = db.execute(f"SELECT {RECORD_COLUMNS} FROM tracklets WHERE id = ?", (tracklet_id,)).fetchone()
        return record_from_row(row) if row else None

    def get_embedding(self, tracklet_id: str) -> np.ndarray | None:
        with self.reading() as db:
            row = db.execute("SELECT embedding FROM tracklets WHERE id = ?", (tracklet_id,)).fetchone()
        return np.frombuffer(row[0], dtype=np.float32).copy() if row else None

    def count(self, tracklet_filter: TrackletFilter | None = None) -> int:
        where, parameters = filter_sql(tracklet_filter)
        with self.reading() as db:
            (total,) = db.execute(f"SELECT COUNT(*) FROM tracklets {where}", parameters).fetchone()
        return int(total)

    def page(self, tracklet_filter: TrackletFilter | None, offset: int, limit: int) -> list[TrackletRecord]:
        """Records passing the filter in row (enrollment) order, ``offset`` skipped, at most ``limit``."""
        where, parameters = filter_sql(tracklet_filter)
        with self.reading() as db:
            rows = db.execute(
                f"SELECT {RECORD_COLUMNS} FROM tracklets {where} ORDER BY row_id LIMIT ? OFFSET ?",
                [*parameters, limit, offset],
            ).fetchall()
        return [record_from_row(row) for row in rows]

    def _rows_with(self, columns: str, key: str, values: list) -> list[tuple]:
        """``SELECT columns`` of the rows whose ``key`` column is one of ``values``, asked ``_FETCH_CHUNK``
        values at a time (SQLite bounds the number of parameters of one statement)."""
        rows: list[tuple] = []
        with self.reading() as db:
            for start in range(0, len(values), _FETCH_CHUNK):
                chunk = values[start : start + _FETCH_CHUNK]
                rows += db.execute(
                    f"SELECT {columns} FROM tracklets WHERE {key} IN ({','.join('?' * len(chunk))})", chunk
                ).fetchall()
        return rows

    def records_by_row_id(self, row_ids: list[int]) -> dict[int, TrackletRecord]:
        """The records of these row ids (missing ones left out), fetched in bounded chunks."""
        rows = self._rows_with(f"row_id, {RECORD_COLUMNS}", "row_id", row_ids)
        return {row[0]: record_from_row(row[1:]) for row in rows}

    def max_row_id(self) -> int:
        with self.reading() as db:
            (largest,) = db.execute("SELECT COALESCE(MAX(row_id), 0) FROM tracklets").fetchone()
        return int(largest)

    def row_ids_where(self, tracklet_filter: TrackletFilter, passing: bool = True) -> np.ndarray:
        """Row ids (int64, ascending) of the records that pass the filter, or with ``passing=False`` of those
        that do not (the smaller set to read when most records pass)."""
        where, parameters = filter_sql(tracklet_filter)
        if where and not passing:
            # A NULL condition fails the filter, so the complement is "not true", not "false".
            where = f"WHERE NOT COALESCE(({where.removeprefix('WHERE ')}), 0)"
        elif not where and not passing:
            return np.empty(0, dtype=np.int64)
        with self.reading() as db:
            rows = db.execute(f"SELECT row_id FROM tracklets {where} ORDER BY row_id", parameters).fetchall()
        return np.fromiter((row for (row,) in rows), dtype=np.int64, count=len(rows))

    def embeddings_by_row_id(self, row_ids: list[int]) -> dict[int, np.ndarray]:
        """The stored embeddings (float32, exact) of these row ids (missing ones left out)."""
        rows = self._rows_with("row_id, embedding", "row_id", row_ids)
        return {row: np.frombuffer(blob, dtype=np.float32) for row, blob in rows}

    def row_ids_of(self, tracklet_ids: list[str]) -> dict[str, int]:
        """Row ids of these tracklet ids (missing ones left out)."""
        return dict(self._rows_with("id, row_id", "id", tracklet_ids))

    # -- writes (call inside `transaction`) ----------------------------------------------------------------
    @contextlib.contextmanager
    def transaction(self, action: str) -> Iterator[RecordStore]:
        """One write transaction that also bumps the generation; all or nothing.

        Disk failures become StorageFullError / StorageUnavailableError naming ``action``; the transaction
        is rolled back first (a failed COMMIT can leave it open), so nothing is half-written.
        """

        def map_error(error: sqlite3.Error) -> Exception | None:
            return storage_error(error, action) if sqlite_storage.is_storage_failure(error) else None

        with sqlite_storage.write_transaction(self._db, map_error) as db:
            yield self
            db.execute("UPDATE gallery_meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")

    def row_id_of(self, tracklet_id: str) -> int | None:
        row = self._db.execute("SELECT row_id FROM tracklets WHERE id = ?", (tracklet_id,)).fetchone()
        return int(row[0]) if row else None

    def delete_row(self, row_id: int) -> None:
        self._db.execute("DELETE FROM tracklets WHERE row_id = ?", (row_id,))

    def insert(self, record: TrackletRecord, embedding: np.ndarray) -> int:
        """Inserts one row; returns its row id."""
        cursor = self._db.execute(
            f"INSERT INTO tracklets({RECORD_COLUMNS}, embedding) VALUES ({','.join('?' * 15)})",
            (*record_values(record), embedding.tobytes()),
        )
        return int(cursor.lastrowid)

    def insert_many(self, records: Iterable[TrackletRecord], embeddings: np.ndarray) -> np.ndarray:
        """Inserts rows with consecutive new row ids (returned); ConflictError if an id exists or repeats."""
        records = list(records)
        (first_row_id,) = self._db.execute("SELECT COALESCE(MAX(row_id), 0) + 1 FROM tracklets").fetchone()
        row_ids = np.arange(first_row_id, first_row_id + len(records), dtype=np.int64)
        try:
            self._db.executemany(
                f"INSERT INTO tracklets(row_id, {RECORD_COLUMNS}, embedding) VALUES ({','.join('?' * 16)})",
                ((int(row_id), *record_values(record), vector.tobytes())
                 for row_id, record, vector in zip(row_ids, records, embeddings, strict=True)),
            )
        except sqlite3.IntegrityError:
            raise ConflictError("Some of the tracklet ids are already enrolled or repeated.") from None
        return row_ids

    # -- shutdown ------------------------------------------------------------------------------------------
    def close(self) -> None:
        """A WAL checkpoint, then the database and the lock; a failing checkpoint is only logged."""
        database, self._db = self._db, None
        if database is not None:
            try:
                # Folds the WAL into the database file so the next open replays nothing.
                database.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as error:
                log.warning("WAL checkpoint at close failed (%s); SQLite replays the WAL at next open", error)
            with contextlib.suppress(sqlite3.Error):
                database.close()
        self.release_directory_lock()
