"""The gallery: SQLite records and embeddings (the source of truth) plus a FAISS exact-l2 index derived from them.

Durability: SQLite in WAL mode with ``synchronous=FULL``, so a commit is on disk (fsync of the WAL) before
the service acknowledges it; that survives a killed process and also a power cut, at the price of one
fsync per enroll, which is small next to the embedding itself. Every change commits to SQLite first, then
updates the FAISS index (IndexIDMap2 over IndexFlatL2, keyed by the SQLite rowid), under one lock that
searches also take, so a search never sees a half-written record.

The FAISS index is derived state. Every write transaction also bumps a ``generation`` counter in SQLite.
A clean close writes an index snapshot named after the generation (``index-<generation>.faiss``:
temporary file, fsync, rename, fsync of the directory), so a crash while writing it leaves either the
previous state or the complete new file, never a torn one. At start-up the snapshot is used only when its
name is the current generation and its ids are exactly SQLite's row ids; anything else (no snapshot, a
crash after later writes, a leftover temporary file) rebuilds the index from SQLite. So the index can
never disagree with what was acknowledged; the snapshot only makes a clean restart of a large gallery
faster.

Disk trouble (full, read-only, I/O errors) never leaves half a record: the transaction is rolled back,
the index is untouched, and the caller gets `StorageFullError` (507) or `StorageUnavailableError` (503).

Embeddings from another model are never mixed with the loaded model's: opening a gallery that holds
records of a different model_version fails with a message naming the counts (see `GalleryStore`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from service.errors import ConflictError, StartupError, StorageFullError, StorageUnavailableError

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows
    fcntl = None

log = logging.getLogger(__name__)

DATABASE_NAME = "gallery.sqlite3"
LOCK_NAME = "gallery.lock"
SCHEMA_VERSION = 1
SNAPSHOT_PREFIX = "index-"
SNAPSHOT_SUFFIX = ".faiss"
_SQLITE_FULL = 13
_REBUILD_CHUNK = 8192
_FETCH_CHUNK = 512

_SCHEMA = """
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
    embedding BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS tracklets_person ON tracklets(person_id);
CREATE INDEX IF NOT EXISTS tracklets_camera ON tracklets(camera_id);
INSERT OR IGNORE INTO gallery_meta(key, value) VALUES ('generation', '0');
"""

_RECORD_COLUMNS = "id, person_id, camera_id, metadata, frames_decoded, frames_used, model_version, created_at"


@dataclass(frozen=True)
class TrackletRecord:
    """One enrolled tracklet, as stored and as returned to clients."""

    id: str
    person_id: str | None
    camera_id: str | None
    metadata: dict[str, Any] = field(default_factory=dict)
    frames_decoded: int = 0
    frames_used: int = 0
    model_version: str = ""
    created_at: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SearchHit:
    record: TrackletRecord
    distance: float
    """Squared l2 distance between the query and this record's embedding."""


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _record_from_row(row: sqlite3.Row | tuple) -> TrackletRecord:
    identifier, person_id, camera_id, metadata, decoded, used, version, created = row
    return TrackletRecord(identifier, person_id, camera_id, json.loads(metadata), decoded, used, version, created)


def storage_error(error: sqlite3.Error, action: str) -> StorageFullError | StorageUnavailableError:
    """The client-facing error for an SQLite failure caused by the disk (full, read-only, I/O)."""
    # Extended result codes keep the primary code in their low byte (SQLITE_IOERR_WRITE = 10 | 3 << 8).
    primary = (getattr(error, "sqlite_errorcode", None) or 0) & 0xFF
    if primary == _SQLITE_FULL:
        return StorageFullError(
            f"The gallery's disk is full, so the {action} was not stored (nothing was half-written). "
            "Searches still work; free space in the data directory and retry."
        )
    return StorageUnavailableError(
        f"The gallery cannot be written right now ({error}), so the {action} was not stored (nothing was "
        "half-written). Searches may still work; retry later."
    )


def _is_storage_failure(error: sqlite3.Error) -> bool:
    # Integrity and programming errors are the caller's or the code's, not the disk's.
    return not isinstance(error, (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError))


def _fsync_directory(directory: Path) -> None:
    """Makes a rename inside ``directory`` durable."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def snapshot_name(generation: int) -> str:
    return f"{SNAPSHOT_PREFIX}{generation}{SNAPSHOT_SUFFIX}"


def faiss_gpu_count() -> int:
    """GPUs faiss can use (0 for faiss-cpu builds)."""
    get_num_gpus = getattr(faiss, "get_num_gpus", None)
    try:
        return int(get_num_gpus()) if get_num_gpus is not None else 0
    except RuntimeError:
        return 0


class GalleryStore:
    """Persistent gallery of tracklet embeddings with exact squared-l2 search.

    Args:
        data_dir: directory of the SQLite database (created if missing).
        dim: embedding dimension of the loaded model.
        model_version: the loaded model's version; every stored record must carry it.
        use_gpu: search on GPU 0 with faiss' GPU API (falls back to CPU with a warning if that fails).

    Raises:
        StartupError: the directory is unusable or locked by another process, or it holds embeddings of
            another model_version (the message names the counts; enroll again into a new REID_DATA_DIR,
            or serve the model those embeddings came from).
    """

    def __init__(self, data_dir: Path, dim: int, model_version: str, use_gpu: bool = False):
        self.data_dir = Path(data_dir)
        self.dim = dim
        self.model_version = model_version
        self._lock = threading.RLock()
        self._lock_file = None
        self._closed = False
        self._cpu_index: Any = None
        self.loaded_from_snapshot = False
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self._acquire_directory_lock()
            self._db = sqlite3.connect(
                self.data_dir / DATABASE_NAME, check_same_thread=False, isolation_level=None, timeout=30.0
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            self._db.execute(
                "INSERT OR IGNORE INTO gallery_meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
        except (OSError, sqlite3.Error) as error:
            self._release_directory_lock()
            raise StartupError(f"gallery directory {self.data_dir} is unusable: {error}") from None
        try:
            self._check_model_version()
        except StartupError:
            self.close(snapshot=False)
            raise
        self._gpu_resources = None
        self._gpu_index = None
        self._gpu_stale = False
        self.index_device = "cpu"
        try:
            self.loaded_from_snapshot = self._load_snapshot()
            if not self.loaded_from_snapshot:
                self._cpu_index = faiss.IndexIDMap2(faiss.IndexFlatL2(dim))
                self._rebuild_index()
        except BaseException:
            self.close(snapshot=False)
            raise
        if use_gpu:
            self._enable_gpu()
        log.info(
            "gallery %s open: %d tracklets, index %s, on %s", self.data_dir, len(self),
            "loaded from its snapshot" if self.loaded_from_snapshot else "rebuilt from SQLite", self.index_device,
        )

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

    def _release_directory_lock(self) -> None:
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

    def generation(self) -> int:
        """The write counter: bumped by every committed change, names the index snapshot."""
        with self._lock:
            row = self._db.execute("SELECT value FROM gallery_meta WHERE key = 'generation'").fetchone()
        return int(row[0]) if row else 0

    def _snapshot_paths(self) -> list[Path]:
        return sorted(self.data_dir.glob(f"{SNAPSHOT_PREFIX}*{SNAPSHOT_SUFFIX}*"))

    def _load_snapshot(self) -> bool:
        """Loads the index snapshot of the current generation if it is exactly SQLite's rows; else False."""
        current = self.data_dir / snapshot_name(self.generation())
        for stale in self._snapshot_paths():
            if stale != current:
                # Older generations and temporary files of an interrupted snapshot: never trusted.
                with contextlib.suppress(OSError):
                    stale.unlink()
        if not current.is_file():
            return False
        try:
            index = faiss.read_index(str(current))
        except RuntimeError as error:
            log.warning("index snapshot %s is unreadable (%s); rebuilding from SQLite", current.name, error)
            return False
        row_ids = np.array([row for (row,) in self._db.execute("SELECT row_id FROM tracklets ORDER BY row_id")],
                           dtype=np.int64)
        if (
            not isinstance(index, faiss.IndexIDMap2)
            or index.d != self.dim
            or index.ntotal != len(row_ids)
            or not np.array_equal(np.sort(faiss.vector_to_array(index.id_map)), row_ids)
        ):
            log.warning("index snapshot %s does not match the database; rebuilding from SQLite", current.name)
            return False
        self._cpu_index = index
        return True

    def write_snapshot(self) -> Path | None:
        """Writes the index snapshot of the current generation atomically; None if it could not be written.

        A failure (disk full, read-only directory) is logged and leaves the previous files as they were:
        the next start-up then rebuilds from SQLite, which is always correct.
        """
        with self._lock:
            if self._closed or self._cpu_index is None:
                return None
            final = self.data_dir / snapshot_name(self.generation())
            if final.is_file():
                return final
            temporary = final.with_name(final.name + ".tmp")
            try:
                faiss.write_index(self._cpu_index, str(temporary))
                with open(temporary, "rb") as written:
                    os.fsync(written.fileno())
                os.replace(temporary, final)
                _fsync_directory(self.data_dir)
            except (OSError, RuntimeError) as error:
                log.warning("could not write the index snapshot (%s); the next start rebuilds from SQLite",
                            str(error).splitlines()[0] if str(error) else type(error).__name__)
                with contextlib.suppress(OSError):
                    temporary.unlink()
                return None
            for stale in self._snapshot_paths():
                if stale != final:
                    with contextlib.suppress(OSError):
                        stale.unlink()
            return final

    def _rebuild_index(self) -> None:
        cursor = self._db.execute("SELECT row_id, embedding FROM tracklets ORDER BY row_id")
        while rows := cursor.fetchmany(_REBUILD_CHUNK):
            row_ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
            blobs = [row[1] for row in rows]
            if any(len(blob) != self.dim * 4 for blob in blobs):
                raise StartupError(f"gallery {self.data_dir} holds embeddings whose size is not dim {self.dim}")
            vectors = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(rows), self.dim)
            self._cpu_index.add_with_ids(vectors, row_ids)

    def _enable_gpu(self) -> None:
        try:
            self._gpu_resources = faiss.StandardGpuResources()
            self._gpu_index = faiss.index_cpu_to_gpu(self._gpu_resources, 0, self._cpu_index)
            self.index_device = "cuda"
        except (AttributeError, RuntimeError) as error:
            log.warning("faiss GPU index unavailable (%s); searching on CPU", error)
            self._gpu_resources = None
            self._gpu_index = None

    # -- reads ---------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._cpu_index.ntotal)

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._db
            except sqlite3.Error as error:
                if not _is_storage_failure(error):
                    raise
                raise StorageUnavailableError(
                    f"The gallery cannot be read right now ({error}); retry later."
                ) from None

    def get(self, tracklet_id: str) -> TrackletRecord | None:
        with self._reading() as db:
            row = db.execute(f"SELECT {_RECORD_COLUMNS} FROM tracklets WHERE id = ?", (tracklet_id,)).fetchone()
        return _record_from_row(row) if row else None

    def get_embedding(self, tracklet_id: str) -> np.ndarray | None:
        with self._reading() as db:
            row = db.execute("SELECT embedding FROM tracklets WHERE id = ?", (tracklet_id,)).fetchone()
        return np.frombuffer(row[0], dtype=np.float32).copy() if row else None

    def list(
        self, person_id: str | None = None, camera_id: str | None = None, limit: int = 100, offset: int = 0
    ) -> tuple[list[TrackletRecord], int]:
        """One page of records in enroll order, and how many match the filters in all."""
        conditions, parameters = [], []
        if person_id is not None:
            conditions.append("person_id = ?")
            parameters.append(person_id)
        if camera_id is not None:
            conditions.append("camera_id = ?")
            parameters.append(camera_id)
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        with self._reading() as db:
            (total,) = db.execute(f"SELECT COUNT(*) FROM tracklets {where}", parameters).fetchone()
            rows = db.execute(
                f"SELECT {_RECORD_COLUMNS} FROM tracklets {where} ORDER BY row_id LIMIT ? OFFSET ?",
                [*parameters, limit, offset],
            ).fetchall()
        return [_record_from_row(row) for row in rows], int(total)

    def search(self, query: np.ndarray, top_k: int, exclude_camera_id: str | None = None) -> list[SearchHit]:
        """The top_k records nearest to ``query`` (dim,) by squared l2, ascending.

        With ``exclude_camera_id``, records of that camera are skipped (the cross-camera reID protocol);
        the search asks FAISS for top_k plus the number of such records, so exactly top_k others come back
        whenever the gallery has them.
        """
        query = np.ascontiguousarray(query, dtype=np.float32).reshape(1, self.dim)
        with self._reading():
            total = len(self)
            if total == 0 or top_k < 1:
                return []
            excluded = 0
            if exclude_camera_id is not None:
                (excluded,) = self._db.execute(
                    "SELECT COUNT(*) FROM tracklets WHERE camera_id = ?", (exclude_camera_id,)
                ).fetchone()
            k = min(total, top_k + int(excluded))
            distances, row_ids = self._search_index(query, k)
            hits: list[SearchHit] = []
            ranked = [(int(row_id), float(distance)) for row_id, distance in zip(row_ids[0], distances[0], strict=True)]
            ranked = [(row_id, distance) for row_id, distance in ranked if row_id >= 0]
            for start in range(0, len(ranked), _FETCH_CHUNK):
                chunk = ranked[start : start + _FETCH_CHUNK]
                records = self._records_by_row_id([row_id for row_id, _ in chunk])
                for row_id, distance in chunk:
                    record = records.get(row_id)
                    if record is None or (exclude_camera_id is not None and record.camera_id == exclude_camera_id):
                        continue
                    # Float32 expansion of |a-b|^2 can dip just below zero for identical vectors.
                    hits.append(SearchHit(record, max(distance, 0.0)))
                    if len(hits) == top_k:
                        return hits
            return hits

    def _search_index(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self._gpu_index is not None:
            if self._gpu_stale:
                # GPU flat indexes cannot remove vectors: after deletions the replica is copied afresh.
                self._gpu_index = faiss.index_cpu_to_gpu(self._gpu_resources, 0, self._cpu_index)
                self._gpu_stale = False
            # faiss' GPU k-selection stops at 2048; larger k (many excluded records) is served on CPU.
            if k <= 2048:
                return self._gpu_index.search(queries, k)
        return self._cpu_index.search(queries, k)

    def _records_by_row_id(self, row_ids: list[int]) -> dict[int, TrackletRecord]:
        placeholders = ",".join("?" * len(row_ids))
        rows = self._db.execute(
            f"SELECT row_id, {_RECORD_COLUMNS} FROM tracklets WHERE row_id IN ({placeholders})", row_ids
        ).fetchall()
        return {row[0]: _record_from_row(row[1:]) for row in rows}

    # -- writes --------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _transaction(self, action: str) -> Iterator[sqlite3.Connection]:
        """One write transaction that also bumps the generation; all or nothing.

        Disk failures become StorageFullError / StorageUnavailableError naming ``action``; the transaction
        is rolled back first (a failed COMMIT can leave it open), so nothing is half-written.
        """
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute(
                    "UPDATE gallery_meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'"
                )
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as error:
            if not _is_storage_failure(error):
                raise
            raise storage_error(error, action) from None

    def add(
        self,
        embedding: np.ndarray,
        tracklet_id: str,
        person_id: str | None = None,
        camera_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        frames_decoded: int = 0,
        frames_used: int = 0,
        replace: bool = False,
    ) -> TrackletRecord:
        """Stores a record and its embedding; returns only after the SQLite commit is durable.

        Raises ConflictError if ``tracklet_id`` exists and ``replace`` is false.
        """
        vector = np.ascontiguousarray(embedding, dtype=np.float32).reshape(self.dim)
        if not np.all(np.isfinite(vector)):
            raise ValueError("embedding has non-finite values")
        record = TrackletRecord(
            id=tracklet_id,
            person_id=person_id,
            camera_id=camera_id,
            metadata=dict(metadata or {}),
            frames_decoded=frames_decoded,
            frames_used=frames_used,
            model_version=self.model_version,
            created_at=_now_iso(),
        )
        with self._lock:
            with self._transaction("tracklet") as db:
                existing = db.execute("SELECT row_id FROM tracklets WHERE id = ?", (tracklet_id,)).fetchone()
                if existing is not None and not replace:
                    raise ConflictError(
                        f"A tracklet with id '{tracklet_id}' is already enrolled; send replace=true to overwrite it."
                    )
                if existing is not None:
                    db.execute("DELETE FROM tracklets WHERE row_id = ?", existing)
                cursor = db.execute(
                    "INSERT INTO tracklets(id, person_id, camera_id, metadata, frames_decoded, frames_used, "
                    "model_version, created_at, embedding) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        record.id, record.person_id, record.camera_id, json.dumps(record.metadata),
                        record.frames_decoded, record.frames_used, record.model_version, record.created_at,
                        vector.tobytes(),
                    ),
                )
                row_id = cursor.lastrowid
            if existing is not None:
                self._remove_from_index(existing[0])
            row_ids = np.array([row_id], dtype=np.int64)
            self._cpu_index.add_with_ids(vector.reshape(1, -1), row_ids)
            if self._gpu_index is not None and not self._gpu_stale:
                self._gpu_index.add_with_ids(vector.reshape(1, -1), row_ids)
        return record

    def add_many(
        self,
        embeddings: np.ndarray,
        tracklet_ids: Sequence[str],
        person_ids: Sequence[str | None] | None = None,
        camera_ids: Sequence[str | None] | None = None,
    ) -> int:
        """Bulk enroll of new ids in one transaction (imports, benchmarks); all or nothing.

        Raises ConflictError, storing nothing, if any id is already enrolled or repeated.
        """
        vectors = np.ascontiguousarray(embeddings, dtype=np.float32).reshape(len(tracklet_ids), self.dim)
        if not np.all(np.isfinite(vectors)):
            raise ValueError("embeddings have non-finite values")
        person_ids = list(person_ids) if person_ids is not None else [None] * len(tracklet_ids)
        camera_ids = list(camera_ids) if camera_ids is not None else [None] * len(tracklet_ids)
        created_at = _now_iso()
        with self._lock:
            try:
                with self._transaction("tracklets") as db:
                    (first_row_id,) = db.execute("SELECT COALESCE(MAX(row_id), 0) + 1 FROM tracklets").fetchone()
                    row_ids = np.arange(first_row_id, first_row_id + len(tracklet_ids), dtype=np.int64)
                    db.executemany(
                        "INSERT INTO tracklets(row_id, id, person_id, camera_id, metadata, frames_decoded, "
                        "frames_used, model_version, created_at, embedding) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            (int(row_id), identifier, person, camera, "{}", 0, 0, self.model_version, created_at,
                             vector.tobytes())
                            for row_id, identifier, person, camera, vector in zip(
                                row_ids, tracklet_ids, person_ids, camera_ids, vectors, strict=True
                            )
                        ),
                    )
            except sqlite3.IntegrityError:
                raise ConflictError("Some of the tracklet ids are already enrolled or repeated.") from None
            self._cpu_index.add_with_ids(vectors, row_ids)
            if self._gpu_index is not None and not self._gpu_stale:
                self._gpu_index.add_with_ids(vectors, row_ids)
        return len(tracklet_ids)

    def _remove_from_index(self, row_id: int) -> None:
        self._cpu_index.remove_ids(np.array([row_id], dtype=np.int64))
        if self._gpu_index is not None:
            self._gpu_stale = True

    def delete(self, tracklet_id: str) -> bool:
        """Removes a record; it is gone from search when this returns. False if there was none."""
        with self._lock:
            with self._transaction("deletion") as db:
                existing = db.execute("SELECT row_id FROM tracklets WHERE id = ?", (tracklet_id,)).fetchone()
                if existing is None:
                    return False
                db.execute("DELETE FROM tracklets WHERE row_id = ?", existing)
            self._remove_from_index(existing[0])
        return True

    def close(self, snapshot: bool = True) -> None:
        """Flushes and closes: the index snapshot (when ``snapshot``), a WAL checkpoint, the database, the lock.

        Safe to call twice; a snapshot or checkpoint that fails (disk full, read-only) is only logged,
        since SQLite already holds every committed change.
        """
        with self._lock:
            if self._closed:
                return
            if snapshot:
                self.write_snapshot()
            self._closed = True
            database = getattr(self, "_db", None)
            if database is not None:
                try:
                    # Folds the WAL into the database file so the next open replays nothing.
                    database.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                except sqlite3.Error as error:
                    log.warning("WAL checkpoint at close failed (%s); SQLite replays the WAL at next open", error)
                with contextlib.suppress(sqlite3.Error):
                    database.close()
            self._release_directory_lock()
