"""Sections of bench/bench_gallery.py about search: index kinds at scale, filtered search, re-ranking, batching.

Data: person-clustered embeddings, the shape reID galleries have: persons whose centres lie in a 64-d
subspace of the d-dim space (CNN features have a low intrinsic dimension), 8 tracklets per person
around their centre; queries are new tracklets of enrolled persons. Stored as float16-exact values
(generated, rounded to float16, kept as float16 and searched as float32), so 1M x 2048 fits in 4 GB.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.machine import NotPaused, PausedDuringTiming
from service.gallery import SqliteGallery, TrackletFilter, TrackletRecord
from service.gallery.index import VectorIndex
from service.gallery.index_kinds import PQ_SHORTLIST, IndexKind, IndexOptions
from service.search.batching import SearchBatcher
from service.search.searcher import ObservedGallery, Searcher, single_threaded_blas

log = logging.getLogger("bench_search")
TOP_K = 10
_CHUNK = 65_536
_LATENT = 64
_PER_PERSON = 8


class PersonData:
    """Deterministic person-clustered vectors: chunk by chunk, any size, float16-exact.

    Every person's latent centre is drawn at once (persons x 64 float32: 32 MB at a million tracklets) and
    each chunk's noise in one float32 call, so 1M x 2048 is generated in tens of seconds, not minutes.
    """

    def __init__(self, size: int, dim: int, seed: int = 0):
        self.size, self.dim, self.seed = size, dim, seed
        rng = np.random.default_rng(seed)
        self.projection = (rng.standard_normal((_LATENT, dim), dtype=np.float32) / np.sqrt(_LATENT)).astype(np.float32)
        self.latent = rng.standard_normal((max(1, -(-size // _PER_PERSON)), _LATENT), dtype=np.float32)

    def centres(self, persons: np.ndarray) -> np.ndarray:
        return self.latent[persons] @ self.projection

    def chunk(self, start: int, stop: int, salt: int = 0) -> np.ndarray:
        rng = np.random.default_rng((self.seed, salt, start))
        persons = np.arange(start, stop) // _PER_PERSON
        block = rng.standard_normal((stop - start, self.dim), dtype=np.float32)
        block *= 0.35
        block += self.centres(persons)
        return block.astype(np.float16)

    def chunks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for start in range(0, self.size, _CHUNK):
            stop = min(self.size, start + _CHUNK)
            yield np.arange(start, stop, dtype=np.int64), self.chunk(start, stop).astype(np.float32)

    def all(self) -> np.ndarray:
        """Every vector as float16 (one copy: filled chunk by chunk)."""
        data = np.empty((self.size, self.dim), dtype=np.float16)
        for start in range(0, self.size, _CHUNK):
            stop = min(self.size, start + _CHUNK)
            data[start:stop] = self.chunk(start, stop)
        return data

    def queries(self, count: int) -> np.ndarray:
        rng = np.random.default_rng((self.seed, 99))
        persons = rng.integers(0, self.size // _PER_PERSON, count)
        noise = 0.35 * rng.standard_normal((count, self.dim), dtype=np.float32)
        return (self.centres(persons) + noise).astype(np.float16).astype(np.float32)


def _chunks_of(data: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for start in range(0, len(data), _CHUNK):
        block = data[start : start + _CHUNK].astype(np.float32)
        yield np.arange(start, start + len(block), dtype=np.int64), block


def exact_top(data: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k row ids per query, streaming over float16 data in chunks (each chunk's k best by
    argpartition, merged with the best so far)."""
    best_ids = np.zeros((len(queries), 0), dtype=np.int64)
    best_distances = np.zeros((len(queries), 0), dtype=np.float64)
    query_norms = (queries.astype(np.float64) ** 2).sum(1)
    for start in range(0, len(data), _CHUNK):
        block = data[start : start + _CHUNK].astype(np.float32)
        norms = np.einsum("ij,ij->i", block, block).astype(np.float64)
        distances = query_norms[:, None] + norms[None] - 2.0 * (queries @ block.T)
        kept = np.argpartition(distances, min(k, distances.shape[1] - 1), axis=1)[:, : k + 1]
        best_ids = np.concatenate([best_ids, kept + start], axis=1)
        best_distances = np.concatenate([best_distances, np.take_along_axis(distances, kept, 1)], axis=1)
        keep = np.argsort(best_distances, axis=1, kind="stable")[:, :k]
        best_ids = np.take_along_axis(best_ids, keep, 1)
        best_distances = np.take_along_axis(best_distances, keep, 1)
    return best_ids


@dataclass
class KindResult:
    kind: str
    size: int
    dim: int
    detail: str
    build_s: float
    bytes_per_tracklet: float
    times: list[float] = field(default_factory=list)
    recall: float = 0.0


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000.0, q))


def bench_kinds(size: int, dim: int, queries: int, kinds: list[str], max_index_bytes: int, hnsw_max_size: int,
                nprobes: list[int], nlists: list[int] | None = None, candidates: list[int] | None = None,
                ef_searches: list[int] | None = None, pause: PausedDuringTiming | None = None) -> list[KindResult]:
    """Each index kind over ``size`` x ``dim``: build time, bytes per tracklet, p50/p99 of one query with
    the service's exact re-ordering of the candidates, recall@10 against exact search.

    IVF is built once per ``nlists`` entry (default: the service's `ivf_list_count`) and searched with each
    of ``nprobes``; HNSW with each of ``ef_searches``; approximate kinds re-order each of ``candidates``
    counts of candidates by exact distance (the service's `IndexOptions.candidates`). Only the timed
    loops run inside ``pause``'s windows.
    """
    pause = pause or NotPaused()
    source = PersonData(size, dim)
    log.info("index kinds: generating %d x %d", size, dim)
    started = time.perf_counter()
    data = source.all()
    query_vectors = source.queries(queries)
    truth = exact_top(data, query_vectors, TOP_K)
    log.info("generated with the exact top-%d in %.0f s", TOP_K, time.perf_counter() - started)
    results = []
    for name in kinds:
        kind, _, storage = name.partition("-")
        bytes_per_value = {"flat": 4, "fp16": 2, "pq": 0.5}.get(storage or kind, 1)
        if size * dim * bytes_per_value > max_index_bytes:
            log.info("skipping %s at %d x %d (%.1f GB)", name, size, dim, size * dim * bytes_per_value / 1e9)
            continue
        if kind == "hnsw" and size > hnsw_max_size:
            log.info("skipping hnsw at %d (build time)", size)
            continue
        for lists in (nlists or [0]) if kind == "ivf" else [0]:
            options = IndexOptions(kind=IndexKind(kind), ivf_storage=storage or "sq8", min_train_size=1000,
                                   ivf_lists=lists)
            index = VectorIndex(dim, options=options)
            log.info("building %s over %d x %d", name, size, dim)
            started = time.perf_counter()
            index.rebuild(lambda: _chunks_of(data), size)
            build_s = time.perf_counter() - started
            log.info("built in %.0f s", build_s)
            bytes_per_tracklet = index.memory_bytes() / size
            counts = candidates or [options.candidates(TOP_K, index.kind)]
            if kind == "flat":
                settings = [(options, "IndexFlatL2, exact", TOP_K)]
            elif kind == "ivf":
                settings = [(dataclasses.replace(options, ivf_nprobe=nprobe),
                             f"nlist {options.lists(size)}, nprobe {nprobe}, {options.ivf_storage}, "
                             f"{wanted} candidates",
                             wanted) for nprobe in nprobes for wanted in counts]
            else:
                settings = [(dataclasses.replace(options, hnsw_ef_search=ef),
                             f"M {options.hnsw_m}, efSearch {ef}, sq8, {wanted} candidates", wanted)
                            for ef in (ef_searches or [options.hnsw_ef_search]) for wanted in counts]
            for searched, label, wanted in settings:
                index.options = searched
                result = KindResult(name, size, dim, label, build_s, bytes_per_tracklet)
                found = []
                with pause.window():
                    index.search(query_vectors[:1], wanted)
                    for query in query_vectors:
                        started = time.perf_counter()
                        _, ids = index.search(query[None], wanted)
                        hits = ids[0][ids[0] >= 0]
                        if kind != "flat":
                            # The service re-orders an approximate index's candidates by their exact distances.
                            exact = ((data[hits].astype(np.float32) - query) ** 2).sum(1)
                            hits = hits[np.argsort(exact, kind="stable")]
                        found.append(hits[:TOP_K])
                        result.times.append(time.perf_counter() - started)
                result.recall = float(np.mean([len(set(got.tolist()) & set(want.tolist())) / TOP_K
                                               for got, want in zip(found, truth, strict=True)]))
                log.info("%s %s: p50 %.1f ms, recall@10 %.3f", name, label, _percentile(result.times, 50),
                         result.recall)
                results.append(result)
            del index
            gc.collect()
    return results


@dataclass
class ServiceSearchResult:
    size: int
    dim: int
    plain: list[float]
    exclude_camera: list[float]
    one_camera: list[float]
    rerank_cold: list[float]
    rerank_warm: list[float]
    shortlist: float
    sequential_qps: float
    batched_qps: float
    clients: int
    rerank_added: list[float] = field(default_factory=list)


def bench_service_search(size: int, dim: int, queries: int, work_dir: Path, clients: int = 16,
                         pause: PausedDuringTiming | None = None) -> ServiceSearchResult:
    """Through SqliteGallery + Searcher (the service's objects): plain, filtered and re-ranked query
    latency, and the throughput of ``clients`` concurrent queries with and without batching."""
    source = PersonData(size, dim, seed=1)
    folder = Path(tempfile.mkdtemp(prefix="search-", dir=work_dir))
    try:
        gallery = ObservedGallery(SqliteGallery(folder, dim, "bench", index_options=IndexOptions(kind=IndexKind.FLAT)))
        log.info("service search: importing %d x %d", size, dim)
        for row_ids, vectors in source.chunks():
            gallery.add_many([TrackletRecord(id=f"t{i}", person_id=f"p{i // _PER_PERSON}", camera_id=f"c{i % 6}")
                              for i in row_ids.tolist()], vectors)
        single_threaded_blas()  # as the service does at start-up
        searcher = Searcher(gallery)
        gallery.neighbours = searcher.neighbours
        query_vectors = source.queries(queries)

        def timed(call) -> list[float]:
            call(query_vectors[0])
            times = []
            for query in query_vectors:
                started = time.perf_counter()
                call(query)
                times.append(time.perf_counter() - started)
            return times

        with (pause or NotPaused()).window():  # the timed part only, not the import
            plain = timed(lambda q: searcher.search(q, TOP_K))
            exclude_camera = timed(lambda q: searcher.search(q, TOP_K, TrackletFilter(exclude_cameras=["c0"])))
            one_camera = timed(lambda q: searcher.search(q, TOP_K, TrackletFilter(cameras=["c3"])))
            searcher.neighbours.clear()
            rerank_cold = []
            for query in query_vectors:
                started = time.perf_counter()
                searcher.search(query, TOP_K, rerank=True)
                rerank_cold.append(time.perf_counter() - started)
            rerank_warm = timed(lambda q: searcher.search(q, TOP_K, rerank=True))
            # Paired: the shortlist search alone, then the whole re-ranked query, back to back per query; their
            # difference is what re-ranking adds beyond its one index search (robust to a busy machine's drift).
            added = []
            for query in query_vectors:
                started = time.perf_counter()
                gallery.search(query[None], searcher.rerank_parameters.shortlist_size, None)
                middle = time.perf_counter()
                searcher.search(query, TOP_K, rerank=True)
                added.append((time.perf_counter() - middle) - (middle - started))
            shortlist = float(np.mean([
                sum(hit.rerank_distance is not None for hit in searcher.search(q, 2000, rerank=True))
                for q in query_vectors[:5]
            ]))

            def throughput(search) -> float:
                each = max(2, queries // clients)
                threads = [threading.Thread(target=lambda: [search(q) for q in query_vectors[:each]])
                           for _ in range(clients)]
                started = time.perf_counter()
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                return clients * each / (time.perf_counter() - started)

            sequential_qps = throughput(lambda q: gallery.search(q[None], TOP_K, None))
            batcher = SearchBatcher(lambda *query: gallery.search(*query))
            batcher.start()
            batched_qps = throughput(lambda q: batcher.search(q, TOP_K, None))
            batcher.stop()
        gallery.close(snapshot=False)
        return ServiceSearchResult(size, dim, plain, exclude_camera, one_camera, rerank_cold, rerank_warm, shortlist,
                                   sequential_qps, batched_qps, clients, added)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def kinds_table(results: list[KindResult]) -> list[str]:
    lines = [
        "| gallery | dim | index | settings | recall@10 | p50 / p99 (ms) | bytes per tracklet (index) | build (s) |",
        "|---:|---:|---|---|---:|---:|---:|---:|",
    ]
    for result in results:
        lines.append(
            f"| {result.size:,} | {result.dim} | {result.kind} | {result.detail} | {result.recall:.3f} "
            f"| {_percentile(result.times, 50):.1f} / {_percentile(result.times, 99):.1f} "
            f"| {result.bytes_per_tracklet:,.0f} | {result.build_s:.0f} |"
        )
    return lines


def service_table(result: ServiceSearchResult) -> list[str]:
    def cell(times: list[float]) -> str:
        return f"{_percentile(times, 50):.1f} / {_percentile(times, 99):.1f}"

    added_warm = _percentile(result.rerank_warm, 50) - _percentile(result.plain, 50)
    added_cold = _percentile(result.rerank_cold, 50) - _percentile(result.plain, 50)
    return [
        f"Through the service's SqliteGallery + Searcher (flat index) over {result.size:,} x {result.dim}, "
        f"top-{TOP_K}:",
        "",
        "| query | p50 / p99 (ms) |",
        "|---|---:|",
        f"| plain | {cell(result.plain)} |",
        f"| exclude one camera of 6 (5/6 pass: a bitmap of the failing ids) | {cell(result.exclude_camera)} |",
        f"| one camera of 6 (1/6 pass) | {cell(result.one_camera)} |",
        f"| rerank=true, neighbour lists cached (warm) | {cell(result.rerank_warm)} |",
        f"| rerank=true, cache empty (cold: 30 neighbour searches) | {cell(result.rerank_cold)} |",
        "",
        f"Re-ranking adds {added_warm:.1f} ms at p50 with the neighbour lists cached ({added_cold:.1f} ms cold); "
        f"the shortlist held {result.shortlist:.0f} tracklets on average (k1 20, k2 6, lambda 0.3, 30 nearest "
        "and their neighbours). Paired per query (the shortlist's index search alone, then the whole re-ranked "
        f"query): re-ranking adds {_percentile(result.rerank_added, 50):.1f} ms at p50 "
        f"({_percentile(result.rerank_added, 90):.1f} ms at p90) beyond its one index search.",
        "",
        f"{result.clients} concurrent clients, single queries: {result.sequential_qps:.1f} queries/s one index call "
        f"each, {result.batched_qps:.1f} queries/s batched (SearchBatcher): "
        f"x{result.batched_qps / result.sequential_qps:.1f}.",
    ]


@dataclass
class ApproximateServiceResult:
    size: int
    dim: int
    settings: str
    import_s: float
    startup_s: float
    plain: list[float]
    plain_recall: float
    one_camera: list[float]
    one_camera_recall: float


def parse_index_options(text: str) -> IndexOptions:
    """``key=value,...`` over IndexOptions' fields (``kind=ivf,ivf_storage=pq,ivf_nprobe=1024``)."""
    fields = {item.name: item.type for item in dataclasses.fields(IndexOptions)}
    values: dict[str, object] = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        if key not in fields:
            raise ValueError(f"unknown index option {key!r} (one of {', '.join(fields)})")
        values[key] = IndexKind(value) if key == "kind" else value if key == "ivf_storage" else (
            float(value) if key == "retrain_growth" else int(value))
    return IndexOptions(**values)


def bench_service_approximate(size: int, dim: int, queries: int, options: IndexOptions, work_dir: Path,
                              pause: PausedDuringTiming | None = None) -> ApproximateServiceResult:
    """The service's own store (SqliteGallery behind the Searcher) with an approximate index, as a user
    would run it: records and embeddings imported, then the gallery opened with ``options`` (the start-up
    trains the index from SQLite), then single queries, plain and filtered to one camera of six, timed
    end to end (FAISS, the exact re-ordering of the candidates read from SQLite, the records) with their
    recall@10 against exact search over the same (filtered) vectors."""
    source = PersonData(size, dim)  # the same data and queries as bench_kinds at this size
    folder = Path(tempfile.mkdtemp(prefix="approximate-", dir=work_dir))
    gallery = None
    try:
        flat = SqliteGallery(folder, dim, "bench", index_options=IndexOptions(kind=IndexKind.FLAT))
        log.info("approximate service search: importing %d x %d", size, dim)
        started = time.perf_counter()
        for row_ids, vectors in source.chunks():
            flat.add_many([TrackletRecord(id=f"t{i}", person_id=f"p{i // _PER_PERSON}", camera_id=f"c{i % 6}")
                           for i in row_ids.tolist()], vectors)
        import_s = time.perf_counter() - started
        flat.close(snapshot=False)
        del flat
        gc.collect()
        log.info("imported in %.0f s; opening with %s", import_s, options)
        started = time.perf_counter()
        gallery = ObservedGallery(SqliteGallery(folder, dim, "bench", index_options=options))
        startup_s = time.perf_counter() - started
        log.info("opened (index %s trained from SQLite) in %.0f s", gallery.index.kind.value, startup_s)
        single_threaded_blas()  # as the service does at start-up
        searcher = Searcher(gallery)
        gallery.neighbours = searcher.neighbours
        query_vectors = source.queries(queries)
        data = source.all()
        truth = exact_top(data, query_vectors, TOP_K)
        camera_rows = np.arange(3, size, 6)
        camera_truth = camera_rows[exact_top(data[camera_rows], query_vectors, TOP_K)]
        del data
        gc.collect()
        one_camera = TrackletFilter(cameras=["c3"])

        def run(tracklet_filter) -> tuple[list[float], list[list[int]]]:
            searcher.search(query_vectors[0], TOP_K, tracklet_filter)
            times, found = [], []
            for query in query_vectors:
                started = time.perf_counter()
                hits = searcher.search(query, TOP_K, tracklet_filter)
                times.append(time.perf_counter() - started)
                found.append([int(hit.record.id[1:]) for hit in hits])
            return times, found

        with (pause or NotPaused()).window():
            plain, plain_found = run(None)
            filtered, filtered_found = run(one_camera)

        def recall(found: list[list[int]], want: np.ndarray) -> float:
            return float(np.mean([len(set(got) & set(row.tolist())) / TOP_K
                                  for got, row in zip(found, want, strict=True)]))

        shortlist = f"{PQ_SHORTLIST} PQ candidates ranked by 8-bit codes, " if gallery.index.ranks_with_codes else ""
        settings = (f"{gallery.index.kind.value}, {options.ivf_storage}, nlist {gallery.index.lists}, "
                    f"nprobe {options.ivf_nprobe}, {shortlist}"
                    f"{options.candidates(TOP_K, gallery.index.kind)} re-ordered exactly")
        return ApproximateServiceResult(size, dim, settings, import_s, startup_s, plain, recall(plain_found, truth),
                                        filtered, recall(filtered_found, camera_truth))
    finally:
        if gallery is not None:
            gallery.close(snapshot=False)
        shutil.rmtree(folder, ignore_errors=True)


def approximate_service_table(result: ApproximateServiceResult) -> list[str]:
    def cell(times: list[float]) -> str:
        return f"{_percentile(times, 50):.1f} / {_percentile(times, 99):.1f}"

    return [
        f"SqliteGallery + Searcher (the service's objects; records and embeddings from SQLite) over "
        f"{result.size:,} x {result.dim} person-clustered tracklets ({result.settings}), one query at a time, "
        f"top-{TOP_K}. Import (flat index): {result.import_s:.0f} s; start-up training the index from SQLite: "
        f"{result.startup_s:.0f} s.",
        "",
        "| query | p50 / p99 (ms) | recall@10 vs exact |",
        "|---|---:|---:|",
        f"| plain | {cell(result.plain)} | {result.plain_recall:.3f} |",
        f"| one camera of six (`cameras=c3`) | {cell(result.one_camera)} | {result.one_camera_recall:.3f} |",
    ]
