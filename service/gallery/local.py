"""The default gallery backend: SQLite records and embeddings (the source of truth) plus a FAISS exact-l2
index derived from them, both in one local directory.

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
records of a different model_version fails with a message naming the counts (see `SqliteGallery`).

The parts: `service.gallery.sqlite.RecordStore` (tables, transactions, generation, directory lock,
model_version guard, schema migration) and `service.gallery.index.VectorIndex` (FAISS, snapshots, GPU
replica). This class holds the lock over both and the order of every write.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from service.errors import ConflictError
from service.gallery.base import Match, TrackletFilter, TrackletRecord, is_empty_filter, now_iso
from service.gallery.index import VectorIndex, remove_snapshots, snapshot_name
from service.gallery.index_kinds import IndexKind, IndexOptions, bitmap_selector
from service.gallery.sqlite import RecordStore

log = logging.getLogger(__name__)

_REBUILD_CHUNK = 8192
#: Filters whose selectors are kept (until the next write): repeated searches with one filter build it once.
_SELECTOR_CACHE = 32


class SqliteGallery:
    """Persistent gallery of tracklet records and embeddings with exact squared-l2 search (the `Gallery`
    interface).

    Over 250 lines because it is the one place that holds the lock over the record store and the index and
    orders every write and search between them; the parts themselves live in `RecordStore` and `VectorIndex`.

    Args:
        data_dir: directory of the SQLite database and index snapshot (created if missing).
        dim: embedding dimension of the loaded model.
        model_version: the loaded model's version; every stored record carries it.
        use_gpu: search on GPU 0 with faiss' GPU API (falls back to CPU with a warning if that fails).

    Raises:
        StartupError: the directory is unusable or locked by another process, or it holds embeddings of
            another model_version (the message names the counts; enroll again into a new REID_DATA_DIR,
            or serve the model those embeddings came from).
    """

    def __init__(
        self, data_dir: Path, dim: int, model_version: str, use_gpu: bool = False,
        index_options: IndexOptions | None = None,
    ):
        self.data_dir = Path(data_dir)
        self.dim = dim
        self.model_version = model_version
        self.index_options = index_options or IndexOptions()
        self._lock = threading.RLock()
        self._closed = False
        # Filter -> selector of the passing row ids, valid until the next write (``_writes`` changes).
        self._writes = 0
        self._selectors: OrderedDict[str, tuple[int, Any, int]] = OrderedDict()
        self.records = RecordStore(self.data_dir, dim, model_version)
        try:
            self.index, self.loaded_from_snapshot = self._open_index()
        except BaseException:
            self.records.close()
            self._closed = True
            raise
        if use_gpu:
            self.index.enable_gpu()
        log.info(
            "gallery %s open: %d tracklets, index %s, on %s", self.data_dir, len(self.index),
            "loaded from its snapshot" if self.loaded_from_snapshot else "rebuilt from SQLite", self.index_device,
        )

    def _open_index(self) -> tuple[VectorIndex, bool]:
        """The snapshot of the current generation if it is exactly SQLite's rows, else a rebuild."""
        current = self.data_dir / snapshot_name(self.records.generation())
        remove_snapshots(self.data_dir, keep=current)
        if current.is_file():
            index = VectorIndex.from_snapshot(current, self.dim, self.records.row_ids(), self.index_options)
            if index is not None:
                return index, True
        index = VectorIndex(self.dim, options=self.index_options)
        self._rebuild(index)
        return index, False

    def _rebuild(self, index: VectorIndex) -> None:
        index.rebuild(lambda: self.records.embeddings_in_chunks(_REBUILD_CHUNK), self.records.count())

    def _changed(self) -> None:
        """After every write: selectors are stale; the index is retrained or compacted when it asks to be."""
        self._writes += 1
        self._selectors.clear()
        if self.index.needs_rebuild():
            log.info("rebuilding the %s index from SQLite (%d tracklets)", self.index.kind.value, len(self.index))
            self._rebuild(self.index)

    @property
    def index_device(self) -> str:
        return self.index.device

    def generation(self) -> int:
        """The write counter: bumped by every committed change, names the index snapshot."""
        with self._lock:
            return self.records.generation()

    def write_snapshot(self) -> Path | None:
        """Writes the index snapshot of the current generation atomically; None if it could not be written.

        A failure (disk full, read-only directory) is logged and leaves the previous files as they were:
        the next start-up then rebuilds from SQLite, which is always correct.
        """
        with self._lock:
            if self._closed:
                return None
            return self.index.write_snapshot(self.data_dir, self.records.generation())

    # -- reads ---------------------------------------------------------------------------------------------
    def count(self, tracklet_filter: TrackletFilter | None = None) -> int:
        with self._lock:
            if is_empty_filter(tracklet_filter):
                return len(self.index)
            return self.records.count(tracklet_filter)

    def get(self, tracklet_id: str) -> TrackletRecord | None:
        with self._lock:
            return self.records.get(tracklet_id)

    def get_embedding(self, tracklet_id: str) -> np.ndarray | None:
        with self._lock:
            return self.records.get_embedding(tracklet_id)

    def list(
        self, tracklet_filter: TrackletFilter | None = None, offset: int = 0, limit: int = 100
    ) -> tuple[list[TrackletRecord], int]:
        """One page of the records passing the filter in enrollment order, and how many pass in all."""
        with self._lock:
            return self.records.page(tracklet_filter, offset, limit), self.records.count(tracklet_filter)

    def search(
        self, queries: np.ndarray, top_k: int, tracklet_filter: TrackletFilter | None = None
    ) -> list[list[Match]]:
        """For each query (n, dim), the top_k records passing the filter nearest by squared l2, ascending.

        The filter is applied inside the FAISS search: SQLite selects the passing row ids (or, when most
        pass, the failing ones), a bitmap IDSelector restricts the scan to them, so the order is exactly that
        of a brute-force search over the passing records (flat index). Approximate kinds (ivf, hnsw) are
        asked for a few more candidates, whose exact distances (from the stored embeddings) order them.
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        with self._lock:
            if len(self.index) == 0 or top_k < 1 or len(queries) == 0:
                return [[] for _ in queries]
            selector, passing = self._selector(tracklet_filter)
            if passing == 0:
                return [[] for _ in queries]
            exact = self.index.kind is IndexKind.FLAT
            wanted = min(passing, top_k if exact else self.index.options.candidates(top_k, self.index.kind))
            distances, row_ids = self.index.search(queries, wanted, selector, available=passing)
            ranked = [
                [(int(row_id), float(distance)) for row_id, distance in zip(id_row, distance_row, strict=True)
                 if row_id >= 0]
                for id_row, distance_row in zip(row_ids, distances, strict=True)
            ]
            if not exact:
                ranked = self._refined(queries, ranked, top_k)
            records = self.records.records_by_row_id(sorted({row_id for hits in ranked for row_id, _ in hits}))
        # Float32 expansion of |a-b|^2 can dip just below zero for identical vectors.
        return [
            [Match(record=records[row_id], distance=max(distance, 0.0)) for row_id, distance in hits
             if row_id in records]
            for hits in ranked
        ]

    def _selector(self, tracklet_filter: TrackletFilter | None) -> tuple[Any, int]:
        """(IDSelector or None, how many records pass) for a filter; cached until the next write."""
        total = len(self.index)
        if is_empty_filter(tracklet_filter):
            return None, total
        key = tracklet_filter.model_dump_json()
        cached = self._selectors.get(key)
        if cached is not None and cached[0] == self._writes:
            self._selectors.move_to_end(key)
            return cached[1], cached[2]
        passing = self.records.count(tracklet_filter)
        largest = self.records.max_row_id()
        if passing == 0:
            selector = None
        elif passing * 2 > total:
            # Most records pass: read the fewer that fail and select every other id.
            selector = bitmap_selector(self.records.row_ids_where(tracklet_filter, passing=False), largest, invert=True)
        else:
            selector = bitmap_selector(self.records.row_ids_where(tracklet_filter), largest)
        self._selectors[key] = (self._writes, selector, passing)
        while len(self._selectors) > _SELECTOR_CACHE:
            self._selectors.popitem(last=False)
        return selector, passing

    def _refined(self, queries: np.ndarray, ranked: list[list[tuple[int, float]]], top_k: int
                 ) -> list[list[tuple[int, float]]]:
        """Candidates of an approximate index re-ordered by their exact distances, top_k kept."""
        stored = self.records.embeddings_by_row_id(sorted({row_id for hits in ranked for row_id, _ in hits}))
        refined = []
        for query, hits in zip(queries, ranked, strict=True):
            candidates = np.array([row_id for row_id, _ in hits if row_id in stored], dtype=np.int64)
            if len(candidates) == 0:
                refined.append([])
                continue
            vectors = np.stack([stored[int(row_id)] for row_id in candidates])
            exact = np.einsum("ij,ij->i", vectors - query, vectors - query)
            order = np.lexsort((candidates, exact))[:top_k]
            refined.append([(int(candidates[i]), float(exact[i])) for i in order])
        return refined

    def get_embeddings(self, tracklet_ids: list[str]) -> dict[str, np.ndarray]:
        """The stored embeddings of these tracklet ids (missing ones left out), in one read."""
        with self._lock:
            row_ids = self.records.row_ids_of(list(tracklet_ids))
            vectors = self.records.embeddings_by_row_id(sorted(row_ids.values()))
        return {tracklet_id: vectors[row_id] for tracklet_id, row_id in row_ids.items() if row_id in vectors}

    def health(self) -> tuple[bool, str]:
        with self._lock:
            if self._closed:
                return False, "the gallery is closed"
            try:
                with self.records.reading() as db:
                    db.execute("SELECT value FROM gallery_meta WHERE key = 'generation'").fetchone()
            except Exception as error:  # noqa: BLE001 - health reports any failure rather than raising
                return False, f"the gallery cannot be read: {error}"
            return True, "ok"

    # -- writes --------------------------------------------------------------------------------------------
    def _vectors(self, embeddings: np.ndarray, count: int) -> np.ndarray:
        vectors = np.ascontiguousarray(embeddings, dtype=np.float32).reshape(count, self.dim)
        if not np.all(np.isfinite(vectors)):
            raise ValueError("embedding has non-finite values")
        return vectors

    def _stamped(self, record: TrackletRecord, created_at: str) -> TrackletRecord:
        return record.model_copy(update={"model_version": self.model_version, "created_at": created_at})

    def add(self, record: TrackletRecord, embedding: np.ndarray, replace: bool = False) -> TrackletRecord:
        """Stores a record and its embedding; returns only after the SQLite commit is durable.

        Raises ConflictError if the record's id exists and ``replace`` is false.
        """
        vector = self._vectors(embedding, 1)
        record = self._stamped(record, now_iso())
        with self._lock:
            with self.records.transaction("tracklet") as store:
                existing = store.row_id_of(record.id)
                if existing is not None and not replace:
                    raise ConflictError(
                        f"A tracklet with id '{record.id}' is already enrolled; send replace=true to overwrite it."
                    )
                if existing is not None:
                    store.delete_row(existing)
                row_id = store.insert(record, vector)
            if existing is not None:
                self.index.remove([existing])
            self.index.add(np.array([row_id], dtype=np.int64), vector)
            self._changed()
        return record

    def add_many(self, records: list[TrackletRecord], embeddings: np.ndarray) -> None:
        """Bulk enroll of new ids in one transaction (imports, benchmarks); all or nothing.

        Raises ConflictError, storing nothing, if any id is already enrolled or repeated.
        """
        vectors = self._vectors(embeddings, len(records))
        created_at = now_iso()
        stamped = [self._stamped(record, created_at) for record in records]
        with self._lock:
            with self.records.transaction("tracklets") as store:
                row_ids = store.insert_many(stamped, vectors)
            self.index.add(row_ids, vectors)
            self._changed()

    def delete(self, tracklet_id: str) -> bool:
        """Removes a record; it is gone from search when this returns. False if there was none."""
        with self._lock:
            with self.records.transaction("deletion") as store:
                existing = store.row_id_of(tracklet_id)
                if existing is None:
                    return False
                store.delete_row(existing)
            self.index.remove([existing])
            self._changed()
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
                try:
                    self.write_snapshot()
                except sqlite3.Error as error:  # reading the generation failed: the next start rebuilds
                    log.warning("could not read the generation for the index snapshot (%s)", error)
            self._closed = True
            self.records.close()
