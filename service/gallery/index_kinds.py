"""The kinds of FAISS index the gallery can search (``REID_INDEX``), and how FAISS is called.

- ``flat``: IndexIDMap2 over IndexFlatL2, exact.
- ``ivf``: IndexIVFScalarQuantizer (8-bit or fp16 storage), IndexIVFPQFastScan (4-bit PQ, whose shortlist of
  PQ_SHORTLIST candidates is ranked by 8-bit codes kept beside it: `new_refine`) or IndexIVFFlat,
  trained by k-means on the gallery's own vectors. Below ``min_train_size`` vectors there is too little to
  train on, so the index stays flat (exact); past it, it is trained with nlist ~ 4 sqrt(n)
  (`ivf_list_count`), and retrained (rebuilt from SQLite, with more lists) each time the gallery has grown
  ``retrain_growth`` times since, so the lists stay balanced and short.
- ``hnsw``: IndexHNSWSQ (8-bit storage, its ranges trained on the gallery) under IndexIDMap2, flat below
  ``min_train_size`` too. HNSW cannot remove vectors: deleted ids are masked by the selector of every
  search, and the graph is rebuilt once a fifth of it is deleted.
- ``auto``: flat below ``auto_flat_below`` tracklets (measured: bench/bench_gallery.md), ivf above.

Why one FAISS query used to be 3.6x slower than numpy at 100k x 2048 (bench/bench_gallery.md): FAISS ran
its OpenMP threads (2 here) on a 2-core machine that other processes (and numpy's BLAS threads) also
use; OpenMP threads spin-wait at their barriers, so a single query's threads kept waiting for each other
while descheduled (measured: 1 thread 28 ms, 2 threads 79 ms, numpy 34 ms on a busy machine). One query
is memory-bound (the whole gallery is read once) and FAISS' own SIMD kernel (AVX2 / AVX-512, picked at
run time: ``faiss.get_compile_options()``) with one thread reads as fast as numpy's two-thread
matrix-vector product; the BLAS path is slower for one query (a one-column GEMM: 113 ms), faster for
batches (8 ms per query in a batch of 20). FAISS 1.15 picks BLAS when queries x dim reaches
``distance_compute_blas_threshold`` (128000 by default: 63 queries at d=2048). So searches run with
``threads`` OpenMP threads (default 1; ``omp_set_num_threads`` is per calling thread), batches of
``BLAS_FROM_QUERIES`` queries or more go to BLAS, and concurrent queries are batched into one call
(service/search/batching.py).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from enum import Enum

import faiss
import numpy as np

#: Query batches at least this large use BLAS (one pass over the gallery serves them all).
BLAS_FROM_QUERIES = 8


def set_blas_threshold(dim: int) -> None:
    """FAISS 1.15 takes the BLAS path when queries x dim >= ``distance_compute_blas_threshold`` (default
    128000: BLAS from 63 queries at d=2048, from one query at d >= 128000/1). Process-wide; the service
    has one dim."""
    faiss.cvar.distance_compute_blas_threshold = BLAS_FROM_QUERIES * dim


class IndexKind(str, Enum):
    FLAT = "flat"
    IVF = "ivf"
    HNSW = "hnsw"
    AUTO = "auto"


@dataclass(frozen=True)
class IndexOptions:
    """How the vector index is built and searched (Settings fields ``REID_INDEX*``)."""

    kind: IndexKind = IndexKind.AUTO
    #: ``auto``: flat below this many tracklets, ivf from it on.
    auto_flat_below: int = 50_000
    #: IVF storage: "pq" (4-bit codes of 4-dimensional sub-vectors, an eighth of a byte per dimension, SIMD
    #: scan, its shortlist ranked by 8-bit codes: one more byte per dimension; needs dim % 8 == 0, else
    #: sq8), "sq8" (1 byte per dimension), "fp16" (2), "flat" (4, exact distances).
    ivf_storage: str = "sq8"
    #: IVF lists visited per query (an eighth of the 4096 lists at 1M: recall@10 0.990, bench/bench_gallery.md).
    ivf_nprobe: int = 512
    #: IVF lists (k-means centroids); 0: `ivf_list_count` of the size trained on.
    ivf_lists: int = 0
    #: Approximate kinds: fewest candidates asked of the index, re-ordered by exact distance (see `candidates`).
    refine_candidates: int = 30
    #: Fewest vectors an IVF (k-means) or HNSW (8-bit ranges) is trained on; below, the index stays flat.
    min_train_size: int = 20_000
    #: Retrain (rebuild from SQLite) once the gallery is this many times the size trained on.
    retrain_growth: float = 4.0
    hnsw_m: int = 32
    hnsw_ef_search: int = 128
    hnsw_ef_construction: int = 64
    #: OpenMP threads of one search call.
    threads: int = 1

    def lists(self, size: int) -> int:
        """IVF lists of an index trained on ``size`` vectors."""
        return self.ivf_lists if self.ivf_lists > 0 else ivf_list_count(size)

    def candidates(self, top_k: int, kind: IndexKind) -> int:
        """Candidates an approximate index of ``kind`` is asked for to answer ``top_k``: they are re-ordered
        by their exact distances (from the stored float32 embeddings) and the best top_k kept."""
        # With pq storage these are the best of the index's own 8-bit ranking of PQ_SHORTLIST candidates
        # (`new_refine`): 30 of them gave recall@10 0.997 at 1M x 512 (bench/bench_gallery.md, run G).
        return max(self.refine_candidates, 2 * top_k)

    def resolved_kind(self, size: int) -> IndexKind:
        """The kind an index over ``size`` vectors is built as."""
        if self.kind is IndexKind.AUTO:
            return IndexKind.FLAT if size < self.auto_flat_below else IndexKind.IVF
        if self.kind is not IndexKind.FLAT and size < self.min_train_size:
            return IndexKind.FLAT
        return self.kind


def ivf_list_count(size: int) -> int:
    """nlist ~ 4 sqrt(n) as a power of two (4096 at a million, 1024 at 65,536), with at least 39 training
    vectors per list (FAISS' minimum): the low end of the 4-16 sqrt(n) FAISS suggests. More lists make
    each visited list shorter, so the same recall costs fewer scanned vectors (bench/bench_gallery.md: at
    1M x 512, 1024 lists needed a quarter of the gallery scanned for recall@10 0.989); the price is the
    k-means training and assignment, which grow with nlist (minutes at 1M on two cores, once per 4x growth)."""
    count = 2 ** max(4, round(math.log2(4 * math.sqrt(max(size, 1)))))
    while count > 16 and count * 39 > size:
        count //= 2
    return count


def new_index(kind: IndexKind, dim: int, size: int, options: IndexOptions) -> faiss.Index:
    """An empty index of ``kind`` for about ``size`` vectors (IVF and HNSW still to be trained)."""
    if kind is IndexKind.FLAT:
        return faiss.IndexIDMap2(faiss.IndexFlatL2(dim))
    if kind is IndexKind.IVF:
        quantizer = faiss.IndexFlatL2(dim)
        lists = options.lists(size)
        storage = {"sq8": faiss.ScalarQuantizer.QT_8bit, "fp16": faiss.ScalarQuantizer.QT_fp16}.get(options.ivf_storage)
        if options.ivf_storage == "pq" and dim % 8 == 0:
            # 4-bit product quantisation of dim/4 sub-vectors (an eighth of a byte per dimension), scanned with
            # SIMD look-up tables ("fast scan"); coarse, so its shortlist is ranked by 8-bit codes (`new_refine`).
            index = faiss.IndexIVFPQFastScan(quantizer, dim, lists, dim // 4, 4, faiss.METRIC_L2)
        elif storage is None:
            index = faiss.IndexIVFFlat(quantizer, dim, lists, faiss.METRIC_L2)
        else:
            index = faiss.IndexIVFScalarQuantizer(quantizer, dim, lists, storage, faiss.METRIC_L2)
        index.own_fields = True
        quantizer.this.disown()
        index.nprobe = options.ivf_nprobe
        return index
    graph = faiss.IndexHNSWSQ(dim, faiss.ScalarQuantizer.QT_8bit, options.hnsw_m)
    graph.hnsw.efConstruction = options.hnsw_ef_construction
    graph.hnsw.efSearch = options.hnsw_ef_search
    return faiss.IndexIDMap2(graph)


#: pq storage: candidates the 4-bit PQ scan hands to the 8-bit ranking (bench/bench_gallery.md: at 1M x 512
#: with nprobe 1024, re-ordering 1000 PQ candidates exactly gave recall@10 0.997, 300 gave 0.986).
PQ_SHORTLIST = 1000


def uses_refine(kind: IndexKind, dim: int, options: IndexOptions) -> bool:
    """Whether an index of ``kind`` keeps 8-bit codes to rank its candidates (`new_refine`): IVF with pq."""
    return kind is IndexKind.IVF and options.ivf_storage == "pq" and dim % 8 == 0


def new_refine(dim: int) -> faiss.Index:
    """8-bit codes of every vector of a pq index, which rank the PQ scan's shortlist before the exact
    re-ordering reads SQLite (FAISS' IndexRefine pattern: a coarse scan, then finer codes for its shortlist).
    FAISS' IndexRefine itself addresses the codes by position, not by id, so it cannot remove vectors or
    take SQLite's row ids; an IndexIDMap2 over an IndexScalarQuantizer can (`remove_ids` compacts the codes:
    O(n), about 0.1 s at 1M). One byte per dimension: 512 MB at 1M x 512."""
    return faiss.IndexIDMap2(faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_L2))


def kind_of(index: faiss.Index) -> IndexKind:
    """The kind of a built (or loaded) index."""
    if isinstance(index, faiss.IndexIVF):
        return IndexKind.IVF
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap) else index
    return IndexKind.HNSW if isinstance(inner, faiss.IndexHNSW) else IndexKind.FLAT


def stored_ids(index: faiss.Index) -> np.ndarray:
    """Every id the index holds (unsorted int64)."""
    if isinstance(index, faiss.IndexIVF):
        lists = index.invlists
        parts = [
            faiss.rev_swig_ptr(lists.get_ids(number), lists.list_size(number)).copy()
            for number in range(index.nlist) if lists.list_size(number)
        ]
        return np.concatenate(parts) if parts else np.empty(0, np.int64)
    return faiss.vector_to_array(index.id_map).astype(np.int64)


def search_parameters(kind: IndexKind, selector: faiss.IDSelector | None, options: IndexOptions):
    if kind is IndexKind.IVF:
        return faiss.SearchParametersIVF(sel=selector, nprobe=options.ivf_nprobe)
    if kind is IndexKind.HNSW:
        return faiss.SearchParametersHNSW(sel=selector, efSearch=options.hnsw_ef_search)
    return faiss.SearchParameters(sel=selector) if selector is not None else None


def bitmap_selector(row_ids: np.ndarray, largest: int, invert: bool = False) -> faiss.IDSelector:
    """A selector accepting exactly ``row_ids`` (or every id up to ``largest`` but them, with ``invert``).

    A bitmap over the row-id range: one bit per row id, built by numpy in microseconds per thousand ids,
    membership in O(1) inside the scan.
    """
    mask = np.full(largest + 1, invert, dtype=bool)
    mask[np.asarray(row_ids, dtype=np.int64)] = not invert
    bits = np.packbits(mask, bitorder="little")
    selector = faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bits))
    selector.bits = bits  # the selector reads this buffer: keep it alive with it
    return selector


class AndSelector(faiss.IDSelectorAnd):
    """IDSelectorAnd that keeps its two parts alive as long as itself (SWIG does not)."""

    def __init__(self, first: faiss.IDSelector, second: faiss.IDSelector):
        super().__init__(first, second)
        self.parts = (first, second)


class NotSelector(faiss.IDSelectorNot):
    """IDSelectorNot that keeps its part alive as long as itself."""

    def __init__(self, part: faiss.IDSelector):
        super().__init__(part)
        self.part = part


def batch_selector(row_ids: np.ndarray) -> faiss.IDSelector:
    selector = faiss.IDSelectorBatch(np.ascontiguousarray(row_ids, dtype=np.int64))
    return selector


class omp_threads:  # noqa: N801 - used as a context manager, named like one
    """Sets the calling thread's OpenMP thread count for FAISS (0 = every core) and restores it after."""

    def __init__(self, count: int):
        self.count = count

    def __enter__(self) -> None:
        self.previous = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(self.count if self.count > 0 else os.cpu_count() or 1)

    def __exit__(self, *exc_info) -> None:
        faiss.omp_set_num_threads(self.previous)
