"""Gallery query latency: FAISS exact l2 (IndexIDMap2 over IndexFlatL2, as the service) against numpy brute force.

For each gallery size: p50/p99 latency of one query (top-10) with FAISS alone, with the service's
`SqliteGallery.search` (FAISS + fetching the records from SQLite), and with numpy (precomputed norms,
one matrix-vector product, argpartition); that FAISS and numpy return the same top-10; and, for the
store, the bulk-enroll time and the start-up time: rebuilding the index from SQLite (after a crash) and
loading the index snapshot a clean stop leaves.

    PYTHONPATH=. .venv/bin/python bench/bench_gallery.py     # writes bench/bench_gallery.md

Default sizes: 10k and 100k embeddings of dim 2048 (ResNet-50's), and 1M of dim 512 (ResNet-18's;
1M x 2048 float32 is 8 GB per copy, more than this shared machine should be asked for). A benchmark run
by hand, not a test.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import shutil
import subprocess
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import faiss
import numpy as np

from bench.bench_search import (
    approximate_service_table,
    bench_kinds,
    bench_service_approximate,
    bench_service_search,
    kinds_table,
    parse_index_options,
    service_table,
)
from bench.machine import NotPaused, PausedDuringTiming, load_average, machine_description
from service.gallery import SqliteGallery, TrackletFilter, TrackletRecord
from service.gallery.index import VectorIndex

log = logging.getLogger("bench_gallery")
TOP_K = 10


def random_gallery(size: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    gallery = np.empty((size, dim), np.float32)
    for start in range(0, size, 65536):
        stop = min(size, start + 65536)
        gallery[start:stop] = rng.standard_normal((stop - start, dim), dtype=np.float32)
    return gallery


def numpy_top_k(gallery: np.ndarray, norms: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    distances = norms - 2.0 * (gallery @ query) + float(query @ query)
    candidates = np.argpartition(distances, k)[:k]
    order = candidates[np.argsort(distances[candidates])]
    return order, distances[order]


def percentile_ms(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000.0, q))


def same_results(faiss_ids: np.ndarray, faiss_distances: np.ndarray, numpy_ids: np.ndarray,
                 numpy_distances: np.ndarray) -> bool:
    """Equal top-k, allowing two neighbours whose float32 distances tie to swap places."""
    if np.array_equal(faiss_ids, numpy_ids):
        return True
    return set(faiss_ids.tolist()) == set(numpy_ids.tolist()) and np.allclose(
        faiss_distances, numpy_distances, rtol=1e-4)


def bench_size(size: int, dim: int, queries: int, with_store: bool, work_dir: Path) -> dict:
    log.info("gallery of %d x %d", size, dim)
    gallery = random_gallery(size, dim, seed=size)
    query_vectors = np.random.default_rng(7).standard_normal((queries, dim), dtype=np.float32)
    result: dict = {"size": size, "dim": dim, "queries": queries, "bytes": gallery.nbytes}

    started = time.perf_counter()
    index = faiss.IndexIDMap2(faiss.IndexFlatL2(dim))
    index.add_with_ids(gallery, np.arange(size, dtype=np.int64))
    result["faiss_add_s"] = time.perf_counter() - started
    norms = np.einsum("ij,ij->i", gallery, gallery)

    # Each engine in its own loop (after one warm-up query): interleaving them makes FAISS' OpenMP threads
    # and numpy's BLAS threads hand the two cores back and forth, which times neither fairly.
    # Before the fix: FAISS' default of one OpenMP thread per core for a single query.
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    faiss.cvar.distance_compute_blas_threshold = 128_000
    all_threads_times = []
    index.search(query_vectors[:1], TOP_K)
    for query in query_vectors:
        started = time.perf_counter()
        index.search(query[None], TOP_K)
        all_threads_times.append(time.perf_counter() - started)
    # The service's VectorIndex (one thread per search, BLAS only for batches).
    service_index = VectorIndex(dim)
    service_index.add(np.arange(size, dtype=np.int64), gallery)
    del index
    faiss_times, faiss_results = [], []
    service_index.search(query_vectors[:1], TOP_K)
    for query in query_vectors:
        started = time.perf_counter()
        faiss_results.append(service_index.search(query[None], TOP_K))
        faiss_times.append(time.perf_counter() - started)
    index = service_index
    numpy_times, numpy_results = [], []
    numpy_top_k(gallery, norms, query_vectors[0], TOP_K)
    for query in query_vectors:
        started = time.perf_counter()
        numpy_results.append(numpy_top_k(gallery, norms, query, TOP_K))
        numpy_times.append(time.perf_counter() - started)
    agree = sum(
        same_results(faiss_ids[0], faiss_distances[0], numpy_ids, numpy_distances)
        for (faiss_distances, faiss_ids), (numpy_ids, numpy_distances) in zip(faiss_results, numpy_results, strict=True)
    )
    result.update(faiss_times=faiss_times, numpy_times=numpy_times, agree=agree, all_threads_times=all_threads_times)
    del index
    gc.collect()

    if with_store:
        folder = Path(tempfile.mkdtemp(prefix="gallery-", dir=work_dir))
        try:
            store = SqliteGallery(folder, dim, "bench")
            started = time.perf_counter()
            ids = [f"t{index}" for index in range(size)]
            for start in range(0, size, 10_000):
                store.add_many([TrackletRecord(id=ids[index], camera_id=f"c{index % 6}")
                                for index in range(start, min(size, start + 10_000))], gallery[start : start + 10_000])
            result["store_add_s"] = time.perf_counter() - started
            store.close(snapshot=False)  # as after a crash: no index snapshot, so the next start rebuilds
            started = time.perf_counter()
            store = SqliteGallery(folder, dim, "bench")
            result["rebuild_s"] = time.perf_counter() - started
            assert not store.loaded_from_snapshot
            store_times, store_hits = [], []
            store.search(query_vectors[:1], TOP_K)
            for query in query_vectors:
                started = time.perf_counter()
                store_hits.append(store.search(query[None], TOP_K)[0])
                store_times.append(time.perf_counter() - started)
            store_agree = sum(
                [hit.record.id for hit in hits] == [f"t{index}" for index in numpy_ids]
                for hits, (numpy_ids, _) in zip(store_hits, numpy_results, strict=True)
            )
            excluded_times = []
            for query in query_vectors[: max(5, queries // 5)]:
                started = time.perf_counter()
                store.search(query[None], TOP_K, TrackletFilter(exclude_cameras=["c0"]))
                excluded_times.append(time.perf_counter() - started)
            store.close()  # a clean stop writes the index snapshot
            started = time.perf_counter()
            store = SqliteGallery(folder, dim, "bench")
            result["snapshot_load_s"] = time.perf_counter() - started
            assert store.loaded_from_snapshot
            result.update(store_times=store_times, store_agree=store_agree, excluded_times=excluded_times,
                          database_bytes=sum(path.stat().st_size for path in folder.iterdir()))
            store.close(snapshot=False)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000:2048,100000:2048,1000000:512",
                        help="comma-separated size:dim pairs for FAISS flat vs numpy")
    parser.add_argument("--queries", type=int, default=50, help="single queries timed per size")
    parser.add_argument("--store-max-size", type=int, default=100_000,
                        help="also time the SQLite-backed SqliteGallery up to this size")
    parser.add_argument("--kind-sizes", default="100000:2048,1000000:2048",
                        help="size:dim pairs for the index kinds (empty: skip); size:dim:kind+kind... runs only "
                        "those kinds at that size")
    parser.add_argument("--kinds", default="flat,ivf-sq8,ivf-fp16,hnsw", help="index kinds compared")
    parser.add_argument("--nprobes", default="16,48,128", help="IVF lists searched, one row each")
    parser.add_argument("--nlists", default="", help="IVF list counts, one build each (empty: the service's default)")
    parser.add_argument("--candidates", default="", help="candidates re-ordered exactly, one row each (empty: default)")
    parser.add_argument("--ef-searches", default="", help="HNSW efSearch values, one row each (empty: default)")
    parser.add_argument("--pause", default="", metavar="PATTERN",
                        help="stop the processes whose command line matches PATTERN (pgrep -f, a regex: write "
                        "'[t]raining ablation' so that this command's own line does not match it) during each timed "
                        "window, resuming them right after (a shared machine's background jobs)")
    parser.add_argument("--kind-queries", type=int, default=200, help="queries per index kind")
    parser.add_argument("--max-index-bytes", type=float, default=3e9,
                        help="skip a kind whose vectors would take more (flat 1M x 2048 is 8 GB)")
    parser.add_argument("--hnsw-max-size", type=int, default=200_000, help="skip hnsw above this size (build time)")
    parser.add_argument("--service-size", default="100000:2048",
                        help="size:dim of the filtered / re-ranked / batched service search (empty: skip)")
    parser.add_argument("--approximate-service", default="", metavar="SIZE:DIM",
                        help="also time the service's store with an approximate index at this size (empty: skip)")
    parser.add_argument("--approximate-options", default="kind=ivf,ivf_storage=pq,ivf_lists=4096,ivf_nprobe=1024",
                        help="IndexOptions of --approximate-service, key=value,...")
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("bench_gallery.md"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    load_before = load_average()
    pause = NotPaused()
    if args.pause:
        def matching() -> list[int]:
            found = subprocess.run(["pgrep", "-f", args.pause], capture_output=True, text=True, check=False).stdout
            return [int(pid) for pid in found.split() if int(pid) not in _ancestors()]

        pause = PausedDuringTiming(matching)
        log.info("pausing %s during timed windows", pause.pids)
    started = time.perf_counter()

    results, kind_results = [], []
    service_result = approximate_result = None

    def write(final: bool = False) -> None:
        # Written after every section, so an interrupted run still leaves what it measured.
        args.out.write_text(render(args, results, kind_results, service_result, load_before, started, final,
                                   pause, approximate_result))

    for item in filter(None, args.sizes.split(",")):
        size, dim = (int(part) for part in item.split(":"))
        results.append(bench_size(size, dim, args.queries, size <= args.store_max_size, args.work_dir))
        write()
    if args.service_size:
        size, dim = (int(part) for part in args.service_size.split(":"))
        service_result = bench_service_search(size, dim, args.queries, args.work_dir, pause=pause)
        write()
    for item in filter(None, args.kind_sizes.split(",")):
        size, dim, *only = item.split(":")
        kinds = only[0].split("+") if only else args.kinds.split(",")
        size, dim = int(size), int(dim)
        kind_results += bench_kinds(size, dim, args.kind_queries, kinds, int(args.max_index_bytes),
                                    args.hnsw_max_size, _ints(args.nprobes), _ints(args.nlists) or None,
                                    _ints(args.candidates) or None, _ints(args.ef_searches) or None, pause)
        write()
    if args.approximate_service:
        size, dim = (int(part) for part in args.approximate_service.split(":"))
        approximate_result = bench_service_approximate(size, dim, args.kind_queries,
                                                       parse_index_options(args.approximate_options), args.work_dir,
                                                       pause)
        write()
    write(final=True)
    log.info("wrote %s", args.out)
    return 0


def _ancestors() -> set[int]:
    """This process and its parents (their command lines hold the --pause pattern too: never stopped)."""
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return pids


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def render(args, results, kind_results, service_result, load_before: str, started: float, final: bool,
           pause: PausedDuringTiming | None = None, approximate_result=None) -> str:
    load_after = load_average()
    lines = [
        "# Gallery search: FAISS vs numpy, index kinds, filters, re-ranking, batching",
        "",
        f"Measured {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} with "
        "`PYTHONPATH=. .venv/bin/python bench/bench_gallery.py` (one run, "
        f"{(time.perf_counter() - started) / 60:.0f} min{'' if final else ', still running'}).",
        "",
        f"- Machine: {machine_description()}; no GPU: FAISS {faiss.__version__} CPU "
        f"({faiss.get_compile_options().strip()}), numpy {np.__version__}.",
        f"- Load average (1/5/15 min) before: {load_before}; after: {load_after} (shared machine: other jobs ran "
        "beside this one, so absolute times are noisy; ratios are from the same run).",
        f"- Timed windows: {(pause or NotPaused()).describe()}.",
        "",
        "## One query: FAISS flat vs numpy brute force",
        "",
        f"One query at a time, top-{TOP_K}, random Gaussian float32 embeddings. 'FAISS, all threads' is FAISS' "
        "default (one OpenMP thread per core), what the service did before; 'FAISS, service' is the service's "
        "VectorIndex: one thread per search (service/gallery/index_kinds.py says why). 'store' is "
        "SqliteGallery.search: FAISS plus reading the records from SQLite. The 1M row uses dim 512 (1M x 2048 "
        "float32 is 8 GB per copy, and numpy needs its own).",
        "",
        "| gallery | dim | data | FAISS, all threads p50 (ms) | FAISS, service p50 / p99 (ms) | numpy p50 / p99 (ms) "
        "| service / numpy (p50) | FAISS = numpy top-10 | store p50 / p99 (ms) | store, exclude camera p50 (ms) "
        "| bulk enroll (s) | start-up: rebuild from SQLite / load snapshot (s) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for result in results:
        store_cells = "| n/a | n/a | n/a | n/a "
        if "store_times" in result:
            store_cells = (
                f"| {percentile_ms(result['store_times'], 50):.1f} / {percentile_ms(result['store_times'], 99):.1f} "
                f"| {percentile_ms(result['excluded_times'], 50):.1f} | {result['store_add_s']:.1f} "
                f"| {result['rebuild_s']:.1f} / {result['snapshot_load_s']:.1f} "
            )
        ratio = percentile_ms(result["faiss_times"], 50) / percentile_ms(result["numpy_times"], 50)
        lines.append(
            f"| {result['size']:,} | {result['dim']} | {result['bytes'] / 2**20:,.0f} MiB "
            f"| {percentile_ms(result['all_threads_times'], 50):.1f} "
            f"| {percentile_ms(result['faiss_times'], 50):.1f} / {percentile_ms(result['faiss_times'], 99):.1f} "
            f"| {percentile_ms(result['numpy_times'], 50):.1f} / {percentile_ms(result['numpy_times'], 99):.1f} "
            f"| {ratio:.2f} | {result['agree']}/{result['queries']} {store_cells}|"
        )
    store_checks = [f"{result['store_agree']}/{result['queries']} at {result['size']:,}" for result in results
                    if "store_agree" in result]
    if store_checks:
        lines += [
            "",
            f"Store rankings equal to numpy's: {', '.join(store_checks)}. Gallery directory size "
            "(SQLite + index snapshot): "
            + ", ".join(f"{result['database_bytes'] / 2**20:,.0f} MiB at {result['size']:,}" for result in results
                        if "database_bytes" in result) + ".",
        ]
    if kind_results:
        lines += [
            "",
            "## Index kinds (REID_INDEX)",
            "",
            "Person-clustered embeddings (bench/bench_search.py: 8 tracklets per person around centres in a 64-d "
            "subspace; queries are new tracklets of enrolled persons), float16-exact values. One query at a time "
            "through the service's VectorIndex; approximate kinds are asked for 30 candidates, re-ordered by "
            "exact distance as the service does (from SQLite there; from memory here). recall@10: share of the "
            "exact top-10 found. Bytes per tracklet: the FAISS index only (SQLite also stores 4 x dim bytes per "
            "tracklet, the source of truth). Kinds whose vectors exceed "
            f"{args.max_index_bytes / 1e9:.0f} GB, and hnsw above {args.hnsw_max_size:,} tracklets (its build on "
            "two cores takes hours), are not run.",
            "",
            *kinds_table(kind_results),
        ]
    if service_result is not None:
        lines += ["", "## Filters, re-ranking and batching in the service", "", *service_table(service_result)]
    if approximate_result is not None:
        lines += ["", "## The service's store with an approximate index", "",
                  *approximate_service_table(approximate_result)]
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
