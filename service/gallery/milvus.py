"""The Milvus gallery backend (REID_GALLERY_BACKEND=milvus): records and embeddings in one Milvus collection,
shared by every API replica that points at it (REID_MILVUS_URI, REID_MILVUS_TOKEN, REID_MILVUS_COLLECTION).

One row per tracklet: the tracklet id is the primary key; the whole record as JSON (``record``); the fields
filters read (``person_id``, ``camera_id``, ``span_start``/``span_end``, ``meta_tags``: see
service/gallery/milvus_filters.py); ``seq``, the enrollment order; ``model_version``; the embedding.

Consistency: every read (get, list, count, search) runs at Milvus' **Strong** level, so it sees every
write acknowledged before it started, whichever replica made it. Bounded staleness with a session token
gives read-your-writes only to the client that wrote (one pymilvus client = one replica); behind a load
balancer the enroll and the next query usually reach different replicas, so only Strong keeps "enrolled
means searchable". Its cost is waiting for the query nodes to catch up with the newest write (a time tick,
~200 ms at most on a cluster; nothing on Milvus Lite).

Unique ids: Milvus does not enforce primary-key uniqueness (an insert of an existing key leaves two rows),
so every write is an **upsert** (a row with the same key is replaced in the same request: never two
rows, never a half-replaced record) after a Strong existence check, and a non-replacing enroll reads its
row back. Within one process a lock makes check-then-write atomic. Across replicas, two enrolls of one new
id at the same moment both pass the check; the read-back then answers 409 to the one whose row was
overwritten when that overwrite lands before its read-back; when each reads back its own row before the
other writes, both are acknowledged and the later write replaces the earlier (one row, the later record).
That window is the time between the check and the write (a few milliseconds); clients that need strict
first-writer-wins across replicas should send distinct ids (the service generates UUIDs when none is
sent).

Enrollment order: ``seq`` is the enrolling replica's clock in nanoseconds, strictly increasing within a
process; records are listed by (seq, id). Across replicas the order is that of their clocks.

Ties in distance order like the SQLite backend's (enrollment order): Milvus is asked for a few more hits
than top_k and they are sorted by (distance, seq). Approximate indexes (IVF, HNSW) are asked for about
twice top_k and their candidates re-ordered by exact distances from the stored embeddings, as the SQLite
backend does. Milvus returns at most 16384 hits per query, so a search asks for at most that many.

Unreachable Milvus: every call has a deadline (REID_MILVUS_TIMEOUT_S) and a failure is
StorageUnavailableError (503, with Milvus' reason). A write either reached Milvus whole or not at all (one
upsert request); if the answer is lost after Milvus applied it, the record is there complete, and
sending it again with replace=true is idempotent. A bulk import (several requests) deletes what it wrote
when a later request fails.

Why one module of over 400 lines with a class over 250: `MilvusGallery` is the whole `Gallery` interface
on one collection plus that collection's lifecycle (schema, index, guards), and every method shares the
same error mapping and Strong reads; the expression building is apart (milvus_filters.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import numpy as np

from service.errors import ConflictError, StartupError, StorageUnavailableError
from service.gallery.base import Match, TrackletFilter, TrackletRecord, now_iso, to_epoch_seconds
from service.gallery.index_kinds import IndexKind, IndexOptions
from service.gallery.milvus_filters import filter_expression, metadata_tags, string_literal

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Milvus' largest topk / query window.
MILVUS_MAX_K = 16384
#: Extra hits asked beyond top_k so distance ties at the boundary order by enrollment.
_TIE_MARGIN = 8
#: Rows per insert/query request (2048-d float32: 8 MiB per 1000 rows, under gRPC's 64 MiB).
_BATCH = 1000
#: IVF lists per segment: Milvus indexes each sealed segment (up to ~1 GiB, ~130k vectors at 2048-d).
IVF_LISTS = 1024
_HNSW_EF_CONSTRUCTION = 256
_LABEL_BYTES = 1024  # 256 characters of up to 4 bytes
#: pymilvus pings every 10 s even on an idle connection. A gRPC server that keeps gRPC's default ping policy
#: (one ping per 5 minutes without data, as Milvus Lite's server does) answers a third early ping by closing
#: the connection ("too many pings"), and pymilvus' shared connection then fails every later call. Pings
#: only while a call is in flight, once a minute, keep Milvus Lite's server and Milvus' alike content; a
#: connection that died while idle is found by the next call's deadline (REID_MILVUS_TIMEOUT_S).
_GRPC_OPTIONS = {"grpc.keepalive_time_ms": 60_000, "grpc.keepalive_permit_without_calls": False}


def milvus_index(options: IndexOptions, size: int) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(Milvus index type, build params, search params) for REID_INDEX and a collection of ``size``."""
    kind = options.kind
    if kind is IndexKind.AUTO:
        kind = IndexKind.FLAT if size < options.auto_flat_below else IndexKind.IVF
    if kind is IndexKind.FLAT:
        return "FLAT", {}, {}
    if kind is IndexKind.IVF:
        # Milvus has no fp16 IVF storage: fp16 and flat both store float32 vectors (IVF_FLAT).
        # Milvus' IVF_PQ takes other parameters than FAISS' 4-bit fast scan: pq is served by its 8-bit IVF.
        index_type = "IVF_SQ8" if options.ivf_storage in ("sq8", "pq") else "IVF_FLAT"
        return index_type, {"nlist": IVF_LISTS}, {"nprobe": min(options.ivf_nprobe, IVF_LISTS)}
    return "HNSW", {"M": options.hnsw_m, "efConstruction": _HNSW_EF_CONSTRUCTION}, {"ef": options.hnsw_ef_search}


def _milvus_errors() -> tuple[type[BaseException], ...]:
    import grpc
    from pymilvus.exceptions import MilvusException

    return (MilvusException, grpc.RpcError, ConnectionError)


class MilvusGallery:
    """A `Gallery` in a Milvus collection (Milvus server or cluster, or Milvus Lite for a ``.db`` path URI).

    Over 250 lines because it is one whole backend (writes, reads, search, index management, health) over one
    collection; splitting it would spread one consistency argument (module docstring) across files.

    Args:
        uri: Milvus address (``http://host:19530``) or a Milvus Lite file path (``gallery.db``).
        token: Milvus credentials (``user:password`` or an API key), or None.
        collection: the collection's name; created on first use.
        dim, model_version: the loaded model's.
        index_options: REID_INDEX and its parameters, mapped by `milvus_index`.
        timeout_s: deadline of every Milvus call.

    Raises:
        StartupError: Milvus cannot be reached, or the collection holds embeddings of another dim or
            model_version (the message names the counts).
    """

    index_device = "milvus"

    def __init__(self, uri: str, collection: str, dim: int, model_version: str, token: str | None = None,
                 index_options: IndexOptions | None = None, timeout_s: float = 10.0):
        from pymilvus import MilvusClient

        self.uri = uri
        self.collection = collection
        self.dim = dim
        self.model_version = model_version
        self.index_options = index_options or IndexOptions()
        self.timeout_s = timeout_s
        self._errors = _milvus_errors()
        self._write_lock = threading.Lock()
        self._last_seq = 0
        self._closed = False
        # Milvus Lite has no MVCC timestamp to pin a query iterator to; pymilvus then warns on every listing
        # and uses its own clock, which is right for Lite (a Milvus server never takes that path).
        logging.getLogger("pymilvus.client.iterator.query_iterator").setLevel(logging.ERROR)
        try:
            self.client = MilvusClient(uri=uri, token=token or "", timeout=timeout_s, grpc_options=_GRPC_OPTIONS)
        except self._errors as error:
            raise StartupError(f"cannot reach Milvus at {uri}: {_reason(error)}") from None
        try:
            if not self.client.has_collection(collection, timeout=timeout_s):
                self._create()
            self._check_dim()
            self._ensure_index()
            self.client.load_collection(collection, timeout=timeout_s)
            self._check_model_version()
        except StartupError:
            self.close()
            raise
        except self._errors as error:
            self.close()
            raise StartupError(f"Milvus collection {collection!r} at {uri} is unusable: {_reason(error)}") from None
        self.index_type = self._current_index_type()
        self._search_params = self._search_params_for(self.index_type)
        log.info("gallery: Milvus collection %r at %s, %d tracklets, index %s", collection, uri, self.count(),
                 self.index_type)

    # -- collection ----------------------------------------------------------------------------------------
    def _create(self) -> None:
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False,
                                            description="MG-RAFA reID gallery: tracklet records and embeddings")
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=256)
        schema.add_field("seq", DataType.INT64)
        schema.add_field("model_version", DataType.VARCHAR, max_length=256)
        schema.add_field("person_id", DataType.VARCHAR, max_length=_LABEL_BYTES, nullable=True)
        schema.add_field("camera_id", DataType.VARCHAR, max_length=_LABEL_BYTES, nullable=True)
        schema.add_field("span_start", DataType.DOUBLE, nullable=True)
        schema.add_field("span_end", DataType.DOUBLE, nullable=True)
        schema.add_field("meta_tags", DataType.JSON)
        schema.add_field("record", DataType.JSON)
        schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=self.dim)
        index_params = self._index_params(0)
        self.client.create_collection(self.collection, schema=schema, index_params=index_params,
                                      consistency_level="Strong", timeout=self.timeout_s)
        log.info("created Milvus collection %r (dim %d)", self.collection, self.dim)

    def _index_params(self, size: int):
        index_type, build, _ = milvus_index(self.index_options, size)
        params = self.client.prepare_index_params()
        params.add_index("embedding", index_type=index_type, metric_type="L2", params=build)
        return params

    def _search_params_for(self, index_type: str) -> dict[str, Any]:
        if index_type == "FLAT":
            return {}
        if index_type.startswith("HNSW"):
            return {"ef": self.index_options.hnsw_ef_search}
        return {"nprobe": min(self.index_options.ivf_nprobe, IVF_LISTS)}

    def _current_index_type(self) -> str:
        described = self.client.describe_index(self.collection, "embedding", timeout=self.timeout_s)
        return str((described or {}).get("index_type", "FLAT")).upper()

    def _check_dim(self) -> None:
        fields = self.client.describe_collection(self.collection, timeout=self.timeout_s)["fields"]
        vector = next((field for field in fields if field["name"] == "embedding"), None)
        stored = int(vector["params"]["dim"]) if vector else None
        if stored != self.dim:
            raise StartupError(
                f"Milvus collection {self.collection!r} holds {stored}-d embeddings, the loaded model makes "
                f"{self.dim}-d ones: set REID_MILVUS_COLLECTION to a new collection, or serve the model they came from"
            )

    def _ensure_index(self) -> None:
        """Rebuilds the vector index when REID_INDEX asks for another kind than the collection has."""
        size = self._count_expression("")
        wanted, _, _ = milvus_index(self.index_options, size)
        current = self._current_index_type() if self.client.list_indexes(self.collection) else None
        if current == wanted:
            return
        log.info("Milvus collection %r: building a %s index (was %s) over %d tracklets", self.collection, wanted,
                 current, size)
        self.client.release_collection(self.collection, timeout=self.timeout_s)
        if current is not None:
            self.client.drop_index(self.collection, "embedding", timeout=self.timeout_s)
        self.client.create_index(self.collection, self._index_params(size), timeout=self.timeout_s)

    def _check_model_version(self) -> None:
        foreign: dict[str, int] = {}
        expression = f"model_version != {string_literal(self.model_version)}"
        for row in self._iterate(expression, ["model_version"]):
            foreign[row["model_version"]] = foreign.get(row["model_version"], 0) + 1
        if foreign:
            described = ", ".join(f"{count} by model_version {version}" for version, count in sorted(foreign.items()))
            own = self._count_expression(f"model_version == {string_literal(self.model_version)}")
            raise StartupError(
                f"Milvus collection {self.collection!r} holds tracklets embedded by another model ({described}; "
                f"{own} by the loaded {self.model_version}); they cannot be searched together: set "
                "REID_MILVUS_COLLECTION to a new collection and enroll again, or serve the model they came from"
            )

    # -- Milvus calls --------------------------------------------------------------------------------------
    @contextmanager
    def _storage(self, action: str) -> Iterator[None]:
        try:
            yield
        except self._errors as error:
            raise StorageUnavailableError(
                f"The gallery (Milvus at {self.uri}) cannot {action} right now ({_reason(error)}); retry later."
            ) from None

    def _call(self, action: str, function: Callable[..., T], *args, **kwargs) -> T:
        with self._storage(action):
            try:
                return function(*args, timeout=self.timeout_s, **kwargs)
            except self._errors as error:
                if not _not_loaded(error):
                    raise
                # A restarted Milvus Lite (or a collection someone released) must be loaded again.
                log.warning("Milvus collection %r was not loaded; loading it", self.collection)
                self.client.load_collection(self.collection, timeout=self.timeout_s)
                return function(*args, timeout=self.timeout_s, **kwargs)

    def _query(self, expression: str, fields: list[str], **kwargs) -> list[dict[str, Any]]:
        return list(self._call("be read", self.client.query, self.collection, filter=expression,
                               output_fields=fields, consistency_level="Strong", **kwargs))

    def _by_ids(self, ids: list[str], fields: list[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(ids), _BATCH):
            chunk = ids[start : start + _BATCH]
            for row in self._call("be read", self.client.query, self.collection, ids=chunk, output_fields=fields,
                                  consistency_level="Strong"):
                found[row["id"]] = row
        return found

    def _iterate(self, expression: str, fields: list[str]) -> Iterator[dict[str, Any]]:
        """Every row passing ``expression`` (any order), read in batches."""
        with self._storage("be read"):
            iterator = self.client.query_iterator(self.collection, batch_size=_BATCH, filter=expression,
                                                  output_fields=fields, timeout=self.timeout_s)
            try:
                while batch := iterator.next():
                    yield from batch
            finally:
                iterator.close()

    def _count_expression(self, expression: str) -> int:
        (row,) = self._query(expression, ["count(*)"])
        return int(row["count(*)"])

    # -- reads ---------------------------------------------------------------------------------------------
    def count(self, tracklet_filter: TrackletFilter | None = None) -> int:
        expression = filter_expression(tracklet_filter)
        return 0 if expression is None else self._count_expression(expression)

    def get(self, tracklet_id: str) -> TrackletRecord | None:
        row = self._by_ids([tracklet_id], ["record"]).get(tracklet_id)
        return TrackletRecord.model_validate(row["record"]) if row else None

    def get_embedding(self, tracklet_id: str) -> np.ndarray | None:
        return self.get_embeddings([tracklet_id]).get(tracklet_id)

    def get_embeddings(self, tracklet_ids: list[str]) -> dict[str, np.ndarray]:
        """The stored embeddings of these ids (missing ones left out), in one read per thousand."""
        rows = self._by_ids(list(dict.fromkeys(tracklet_ids)), ["embedding"])
        return {key: np.asarray(row["embedding"], dtype=np.float32) for key, row in rows.items()}

    def list(
        self, tracklet_filter: TrackletFilter | None = None, offset: int = 0, limit: int = 100
    ) -> tuple[list[TrackletRecord], int]:
        """One page in enrollment order. Milvus queries have no ORDER BY, so the (seq, id) keys of the passing
        records are read (16 bytes and the id each: ~50 MB per million) and sorted here; then the page's
        records are fetched."""
        expression = filter_expression(tracklet_filter)
        if expression is None:
            return [], 0
        keys = sorted((int(row["seq"]), row["id"]) for row in self._iterate(expression, ["seq"]))
        page = [key for _, key in keys[offset : offset + limit]]
        rows = self._by_ids(page, ["record"])
        return [TrackletRecord.model_validate(rows[key]["record"]) for key in page if key in rows], len(keys)

    def search(
        self, queries: np.ndarray, top_k: int, tracklet_filter: TrackletFilter | None = None
    ) -> list[list[Match]]:
        """For each query (n, dim), the top_k records passing the filter nearest by squared l2, ascending;
        ties in enrollment order. On FLAT, exactly a brute-force search restricted to the filter."""
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        expression = filter_expression(tracklet_filter)
        if top_k < 1 or len(queries) == 0 or expression is None:
            return [[] for _ in queries]
        exact = self.index_type == "FLAT"
        wanted = min(MILVUS_MAX_K, top_k + _TIE_MARGIN if exact else max(2 * top_k, top_k + 10))
        params = dict(self._search_params)
        if "ef" in params:
            params["ef"] = max(params["ef"], wanted)
        fields = ["seq", "record"] if exact else ["seq", "record", "embedding"]
        results = self._call("be searched", self.client.search, self.collection,
                             data=[query.tolist() for query in queries], filter=expression, limit=wanted,
                             output_fields=fields, search_params={"metric_type": "L2", "params": params},
                             consistency_level="Strong")
        answers = []
        for query, hits in zip(queries, results, strict=True):
            ranked = []
            for hit in hits:
                entity = hit["entity"]
                if exact:
                    distance = float(hit["distance"])
                else:
                    vector = np.asarray(entity["embedding"], dtype=np.float32)
                    distance = float(np.dot(vector - query, vector - query))
                ranked.append((max(distance, 0.0), int(entity["seq"]), entity["record"]))
            ranked.sort(key=lambda item: (item[0], item[1]))
            answers.append([Match(record=TrackletRecord.model_validate(record), distance=distance)
                            for distance, _, record in ranked[:top_k]])
        return answers

    def health(self) -> tuple[bool, str]:
        if self._closed:
            return False, "the gallery is closed"
        try:
            timeout = min(self.timeout_s, 5.0)
            if not self.client.has_collection(self.collection, timeout=timeout):
                return False, f"Milvus at {self.uri} has no collection {self.collection!r}"
            state = self.client.get_load_state(self.collection, timeout=timeout).get("state")
            if getattr(state, "name", str(state)) != "Loaded":
                self.client.load_collection(self.collection, timeout=self.timeout_s)
        except self._errors as error:
            return False, f"Milvus at {self.uri} cannot be reached: {_reason(error)}"
        return True, "ok"

    # -- writes --------------------------------------------------------------------------------------------
    def _next_seq(self) -> int:
        self._last_seq = max(time.time_ns(), self._last_seq + 1)
        return self._last_seq

    def _vectors(self, embeddings: np.ndarray, count: int) -> np.ndarray:
        vectors = np.ascontiguousarray(embeddings, dtype=np.float32).reshape(count, self.dim)
        if not np.all(np.isfinite(vectors)):
            raise ValueError("embedding has non-finite values")
        return vectors

    def _row(self, record: TrackletRecord, vector: np.ndarray, seq: int) -> dict[str, Any]:
        start, end = to_epoch_seconds(record.start_time), to_epoch_seconds(record.end_time)
        return {
            "id": record.id, "seq": seq, "model_version": record.model_version, "person_id": record.person_id,
            "camera_id": record.camera_id, "span_start": start if start is not None else end,
            "span_end": end if end is not None else start, "meta_tags": metadata_tags(record.metadata),
            "record": record.model_dump(mode="json"), "embedding": vector.tolist(),
        }

    def _stamped(self, record: TrackletRecord, created_at: str) -> TrackletRecord:
        return record.model_copy(update={"model_version": self.model_version, "created_at": created_at})

    def add(self, record: TrackletRecord, embedding: np.ndarray, replace: bool = False) -> TrackletRecord:
        """Stores a record and its embedding (one upsert); ConflictError if the id exists and not ``replace``."""
        vector = self._vectors(embedding, 1)[0]
        record = self._stamped(record, now_iso())
        with self._write_lock:
            if not replace and self._by_ids([record.id], ["seq"]):
                raise ConflictError(
                    f"A tracklet with id '{record.id}' is already enrolled; send replace=true to overwrite it."
                )
            seq = self._next_seq()
            self._call("be written", self.client.upsert, self.collection, [self._row(record, vector, seq)])
            if not replace:
                stored = self._by_ids([record.id], ["seq"]).get(record.id)
                if stored is None or int(stored["seq"]) != seq:
                    raise ConflictError(f"A tracklet with id '{record.id}' was enrolled at the same time by another "
                                        "request; send replace=true to overwrite it.")
        return record

    def add_many(self, records: list[TrackletRecord], embeddings: np.ndarray) -> None:
        """Bulk enroll of new ids; ConflictError, storing nothing, if any id exists or repeats. Written in
        requests of a thousand; if one fails, those already written are deleted again."""
        created_at = now_iso()
        self._write_new([self._stamped(record, created_at) for record in records], embeddings)

    def copy_in(self, records: list[TrackletRecord], embeddings: np.ndarray) -> None:
        """`add_many` keeping each record's created_at (a migration); their order is the enrollment order."""
        self._write_new([record.model_copy(update={"model_version": self.model_version}) for record in records],
                        embeddings)

    def existing_ids(self, tracklet_ids: list[str]) -> set[str]:
        """Which of these ids the collection holds."""
        return set(self._by_ids(list(tracklet_ids), ["seq"]))

    def _write_new(self, records: list[TrackletRecord], embeddings: np.ndarray) -> None:
        vectors = self._vectors(embeddings, len(records))
        ids = [record.id for record in records]
        with self._write_lock:
            if len(set(ids)) != len(ids) or self._by_ids(ids, ["seq"]):
                raise ConflictError("Some of the tracklet ids are already enrolled or repeated.")
            written: list[str] = []
            try:
                for start in range(0, len(records), _BATCH):
                    rows = [self._row(record, vector, self._next_seq())
                            for record, vector in zip(records[start : start + _BATCH], vectors[start : start + _BATCH],
                                                      strict=True)]
                    self._call("be written", self.client.upsert, self.collection, rows)
                    written.extend(row["id"] for row in rows)
            except BaseException:
                if written:
                    try:
                        self._delete_ids(written)
                    except Exception:  # noqa: BLE001 - the original failure is the one to report
                        log.error("bulk import failed and %d of its tracklets could not be removed again", len(written))
                raise

    def _delete_ids(self, ids: list[str]) -> None:
        for start in range(0, len(ids), _BATCH):
            self._call("be written", self.client.delete, self.collection, ids=ids[start : start + _BATCH])

    def delete(self, tracklet_id: str) -> bool:
        """Removes a record; out of every search (Strong reads) when this returns. False if there was none."""
        with self._write_lock:
            if not self._by_ids([tracklet_id], ["seq"]):
                return False
            self._delete_ids([tracklet_id])
        return True

    def drop(self) -> None:
        """Deletes the whole collection (tests, and a migration that is started over)."""
        self._call("be written", self.client.drop_collection, self.collection)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.client.close()
        except Exception as error:  # noqa: BLE001 - closing a client of an unreachable Milvus only logs
            log.warning("closing the Milvus client failed: %s", error)


def _not_loaded(error: BaseException) -> bool:
    """Whether Milvus refused a read because the collection is not loaded (code 101, or Lite's message)."""
    message = str(getattr(error, "message", "") or error).lower()
    return getattr(error, "code", None) == 101 or "not loaded" in message or "state 'released'" in message


def _reason(error: BaseException) -> str:
    """Milvus' own message of an error, on one line."""
    message = getattr(error, "message", None) or getattr(error, "details", lambda: None)() or str(error)
    return " ".join(str(message).split())[:300]
