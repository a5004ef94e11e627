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
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import faiss
import numpy as np

from bench.machine import load_average, machine_description
from service.gallery import SqliteGallery, TrackletFilter, TrackletRecord

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
    faiss_times, faiss_results = [], []
    index.search(query_vectors[:1], TOP_K)
    for query in query_vectors:
        started = time.perf_counter()
        faiss_results.append(index.search(query[None], TOP_K))
        faiss_times.append(time.perf_counter() - started)
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
    result.update(faiss_times=faiss_times, numpy_times=numpy_times, agree=agree)
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
                        help="comma-separated size:dim pairs")
    parser.add_argument("--queries", type=int, default=50, help="single queries timed per size")
    parser.add_argument("--store-max-size", type=int, default=100_000,
                        help="also time the SQLite-backed SqliteGallery up to this size")
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("bench_gallery.md"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    load_before = load_average()

    results = []
    for item in args.sizes.split(","):
        size, dim = (int(part) for part in item.split(":"))
        results.append(bench_size(size, dim, args.queries, size <= args.store_max_size, args.work_dir))
    load_after = load_average()

    lines = [
        "# Gallery query latency: FAISS vs numpy brute force",
        "",
        f"Measured {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} with "
        "`PYTHONPATH=. .venv/bin/python bench/bench_gallery.py`.",
        "",
        f"- Machine: {machine_description()}; no GPU: FAISS {faiss.__version__} CPU (IndexIDMap2 over IndexFlatL2, "
        f"{faiss.omp_get_max_threads()} OpenMP threads), numpy {np.__version__}.",
        f"- Load average (1/5/15 min) before: {load_before}; after: {load_after} (shared machine).",
        f"- One query at a time, top-{TOP_K}, random Gaussian float32 embeddings and queries. 'store' is the "
        "service's SqliteGallery.search: FAISS plus reading the 10 records from SQLite.",
        "- The 1M row uses dim 512 (ResNet-18's embedding) instead of 2048: 1M x 2048 float32 is 8 GB per copy "
        "(FAISS keeps its own), more than this shared 24 GB machine should hold for a benchmark.",
        "",
        "| gallery | dim | data | FAISS p50 / p99 (ms) | numpy p50 / p99 (ms) | FAISS = numpy top-10 "
        "| store p50 / p99 (ms) | store, exclude camera p50 (ms) | bulk enroll (s) | start-up: rebuild from SQLite "
        "/ load snapshot (s) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for result in results:
        store_cells = "| n/a | n/a | n/a | n/a "
        if "store_times" in result:
            store_cells = (
                f"| {percentile_ms(result['store_times'], 50):.1f} / {percentile_ms(result['store_times'], 99):.1f} "
                f"| {percentile_ms(result['excluded_times'], 50):.1f} | {result['store_add_s']:.1f} "
                f"| {result['rebuild_s']:.1f} / {result['snapshot_load_s']:.1f} "
            )
        lines.append(
            f"| {result['size']:,} | {result['dim']} | {result['bytes'] / 2**20:,.0f} MiB "
            f"| {percentile_ms(result['faiss_times'], 50):.1f} / {percentile_ms(result['faiss_times'], 99):.1f} "
            f"| {percentile_ms(result['numpy_times'], 50):.1f} / {percentile_ms(result['numpy_times'], 99):.1f} "
            f"| {result['agree']}/{result['queries']} {store_cells}|"
        )
    store_checks = [f"{result['store_agree']}/{result['queries']} at {result['size']:,}" for result in results
                    if "store_agree" in result]
    lines += [
        "",
        f"Store rankings equal to numpy's: {', '.join(store_checks)}. Gallery directory size "
        "(SQLite + index snapshot): "
        + ", ".join(f"{result['database_bytes'] / 2**20:,.0f} MiB at {result['size']:,}" for result in results
                    if "database_bytes" in result) + ".",
        "",
    ]
    args.out.write_text("\n".join(lines))
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
