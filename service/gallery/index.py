"""The vector index: FAISS squared-l2 search (exact flat, IVF or HNSW: service/gallery/index_kinds.py) keyed
by the record store's row ids, with filters applied inside the search (IDSelector), its snapshot files,
and an optional GPU replica.

The index is derived state: `service.gallery.local` rebuilds it from SQLite at start-up, or loads the
snapshot of the current generation when that snapshot's ids are exactly SQLite's (see that module for the
whole contract). It is not thread-safe by itself: the gallery serialises every call under its lock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from service.gallery.index_kinds import (
    PQ_SHORTLIST,
    AndSelector,
    IndexKind,
    IndexOptions,
    NotSelector,
    batch_selector,
    kind_of,
    new_index,
    new_refine,
    omp_threads,
    search_parameters,
    set_blas_threshold,
    stored_ids,
    uses_refine,
)

log = logging.getLogger(__name__)

SNAPSHOT_PREFIX = "index-"
SNAPSHOT_SUFFIX = ".faiss"
#: faiss' GPU k-selection stops at 2048; a larger k is served by the CPU index.
GPU_MAX_K = 2048


def snapshot_name(generation: int) -> str:
    return f"{SNAPSHOT_PREFIX}{generation}{SNAPSHOT_SUFFIX}"


def faiss_gpu_count() -> int:
    """GPUs faiss can use (0 for faiss-cpu builds)."""
    get_num_gpus = getattr(faiss, "get_num_gpus", None)
    try:
        return int(get_num_gpus()) if get_num_gpus is not None else 0
    except RuntimeError:
        return 0


def _fsync_directory(directory: Path) -> None:
    """Makes a rename inside ``directory`` durable."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class VectorIndex:
    """FAISS squared-l2 index of ``dim``-dimensional float32 vectors with int64 ids, of the kind
    ``options`` resolves to for its size (service/gallery/index_kinds.py): exact flat, IVF or HNSW.

    Build one with `VectorIndex(dim, options=...)` then `rebuild` (or `add`), or `VectorIndex.from_snapshot`;
    optionally `enable_gpu` to search a GPU replica of a flat index (deletions mark the replica stale; it is
    copied afresh before the next search; filtered searches run on the CPU index, FAISS' GPU indexes take
    no IDSelector).
    """

    def __init__(self, dim: int, cpu_index: Any = None, options: IndexOptions | None = None, refine: Any = None):
        self.dim = dim
        self.options = options or IndexOptions()
        set_blas_threshold(dim)
        self._cpu_index = cpu_index if cpu_index is not None else new_index(IndexKind.FLAT, dim, 0, self.options)
        #: pq storage: the 8-bit codes that rank the PQ scan's shortlist (index_kinds.new_refine), else None.
        self._refine = refine
        #: The snapshot container that owns a loaded pq index and its codes (`from_snapshot`), else None.
        self._snapshot_owner: Any = None
        self.kind = kind_of(self._cpu_index)
        self.trained_size = int(self._cpu_index.ntotal)
        self._deleted: set[int] = set()
        self._deleted_selector: Any = None
        self._gpu_resources = None
        self._gpu_index = None
        self._gpu_stale = False
        self.device = "cpu"

    @classmethod
    def from_snapshot(
        cls, path: Path, dim: int, expected_ids: np.ndarray, options: IndexOptions | None = None
    ) -> VectorIndex | None:
        """The index saved at ``path`` if it holds exactly ``expected_ids`` (sorted int64) and is of the kind
        ``options`` asks for at that size; else None."""
        options = options or IndexOptions()
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as error:
            log.warning("index snapshot %s is unreadable (%s); rebuilding from SQLite", path.name, error)
            return None
        refine = container = None
        if isinstance(index, faiss.IndexRefine):
            # The snapshot of a pq index and its 8-bit codes (`write_snapshot`). The container owns both parts
            # and is kept alive beside them (handing their ownership to the part proxies instead corrupts
            # SWIG's bookkeeping once both are freed).
            container = index
            index = faiss.downcast_index(container.base_index)
            refine = faiss.downcast_index(container.refine_index)
            if not isinstance(refine, faiss.IndexIDMap2) or refine.d != dim:
                log.warning("index snapshot %s holds unexpected 8-bit codes; rebuilding from SQLite", path.name)
                return None
        kind = options.resolved_kind(len(expected_ids))
        if (
            not isinstance(index, (faiss.IndexIDMap2, faiss.IndexIVF))
            or index.d != dim
            or index.ntotal != len(expected_ids)
            or kind_of(index) is not kind
            or (refine is not None) != uses_refine(kind, dim, options)
            or not np.array_equal(np.sort(stored_ids(index)), expected_ids)
            or (refine is not None and not np.array_equal(np.sort(stored_ids(refine)), expected_ids))
        ):
            log.warning("index snapshot %s does not match the database or REID_INDEX; rebuilding from SQLite",
                        path.name)
            return None
        if isinstance(index, faiss.IndexIVF):
            index.nprobe = options.ivf_nprobe
        loaded = cls(dim, index, options, refine)
        loaded._snapshot_owner = container
        return loaded

    def rebuild(self, chunks: Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]], size: int) -> None:
        """(Re)builds from every (ids, vectors) chunk ``chunks()`` yields (called twice when the kind needs
        training: once for a sample, once to add), as the kind ``options`` picks for ``size`` vectors."""
        kind = self.options.resolved_kind(size)
        started = time.perf_counter()
        index = new_index(kind, self.dim, size, self.options)
        refine = new_refine(self.dim) if uses_refine(kind, self.dim, self.options) else None
        with omp_threads(0):
            if not index.is_trained and size > 0:
                sample = self._training_sample(chunks, size, self.options.lists(size))
                index.train(sample)
                if refine is not None:
                    refine.train(sample)
            for ids, vectors in chunks():
                vectors, ids = np.ascontiguousarray(vectors, dtype=np.float32), ids.astype(np.int64)
                index.add_with_ids(vectors, ids)
                if refine is not None:
                    refine.add_with_ids(vectors, ids)
        self._cpu_index, self._refine, self.kind, self.trained_size = index, refine, kind, size
        self._snapshot_owner = None
        self._deleted.clear()
        self._deleted_selector = None
        if self._gpu_index is not None:
            self._gpu_stale = True
        if kind is not IndexKind.FLAT:
            log.info("%s index of %d vectors built in %.1f s", kind.value, size, time.perf_counter() - started)

    @staticmethod
    def _training_sample(chunks, size: int, lists: int) -> np.ndarray:
        # k-means needs some tens of points per list (FAISS asks 39), not the whole gallery: every step-th row.
        wanted = min(size, max(lists * 40, 20_000))
        step = max(1, size // wanted)
        sample, seen = [], 0
        for _, vectors in chunks():
            sample.append(vectors[(-seen) % step :: step])
            seen += len(vectors)
        return np.ascontiguousarray(np.concatenate(sample)[:wanted], dtype=np.float32)

    def needs_rebuild(self) -> bool:
        """Whether the index should be rebuilt from SQLite: its kind changes with the size, it has grown
        ``retrain_growth`` times since it was trained, or a fifth of an HNSW graph is deleted."""
        size = len(self)
        if self.options.resolved_kind(size) is not self.kind:
            return True
        if self.kind is not IndexKind.FLAT and size >= self.options.retrain_growth * max(self.trained_size, 1):
            return True
        return len(self._deleted) > 0.2 * max(int(self._cpu_index.ntotal), 1)

    @property
    def lists(self) -> int:
        """IVF lists (k-means centroids) of the current index; 0 for the other kinds."""
        return int(self._cpu_index.nlist) if isinstance(self._cpu_index, faiss.IndexIVF) else 0

    @property
    def ranks_with_codes(self) -> bool:
        """Whether the index ranks its shortlist with 8-bit codes before answering (pq storage)."""
        return self._refine is not None

    def __len__(self) -> int:
        """Live vectors (masked HNSW deletions left out)."""
        return int(self._cpu_index.ntotal) - len(self._deleted)

    def memory_bytes(self) -> int:
        """Bytes of the serialised index and its 8-bit codes (what they hold in memory, near enough)."""
        parts = [self._cpu_index] if self._refine is None else [self._cpu_index, self._refine]
        return sum(int(faiss.serialize_index(part).nbytes) for part in parts)

    def enable_gpu(self) -> None:
        """Searches a replica on GPU 0 from now on (flat indexes); stays on CPU with a warning if faiss cannot."""
        if self.kind is not IndexKind.FLAT:
            log.warning("the faiss GPU replica serves flat indexes only; the %s index searches on CPU", self.kind.value)
            return
        try:
            self._gpu_resources = faiss.StandardGpuResources()
            self._gpu_index = faiss.index_cpu_to_gpu(self._gpu_resources, 0, self._cpu_index)
            self.device = "cuda"
        except (AttributeError, RuntimeError) as error:
            log.warning("faiss GPU index unavailable (%s); searching on CPU", error)
            self._gpu_resources = None
            self._gpu_index = None

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Adds vectors (n, dim) float32 under ids (n,) int64."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        ids = np.asarray(ids, dtype=np.int64)
        self._cpu_index.add_with_ids(vectors, ids)
        if self._refine is not None:
            self._refine.add_with_ids(vectors, ids)
        if self._gpu_index is not None and not self._gpu_stale:
            self._gpu_index.add_with_ids(vectors, ids)

    def remove(self, ids: Iterable[int]) -> None:
        ids = np.fromiter(ids, dtype=np.int64)
        if self.kind is IndexKind.HNSW:
            # HNSW graphs cannot drop nodes: the ids are masked from every search until the next rebuild.
            self._deleted.update(ids.tolist())
            self._deleted_selector = NotSelector(batch_selector(np.fromiter(self._deleted, np.int64)))
            return
        self._cpu_index.remove_ids(ids)
        if self._refine is not None:
            self._refine.remove_ids(ids)
        if self._gpu_index is not None:
            # GPU flat indexes cannot remove vectors: the replica is copied afresh before the next search.
            self._gpu_stale = True

    def search(
        self, queries: np.ndarray, k: int, selector: Any = None, available: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(distances, ids), each (n, k), ascending; ids of -1 where fewer than k vectors pass.

        ``selector`` (a FAISS IDSelector) restricts the search to the ids it accepts, inside the scan.
        ``available`` (how many ids pass): with a ``selector``, an IVF index visits len/available times the
        lists it would without one, up to all of them, so a filter that
        keeps a sixth of the gallery still scans about as many passing vectors as an unfiltered search and
        its recall stays the unfiltered one (bench/bench_gallery.md: one camera of six at 30,000 x 128,
        recall@10 0.89 without this, 1.00 with it). An approximate index that still finds fewer than
        min(k, available) is searched again with 4x the lists or candidates, up to an exhaustive search.
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        options = self.options
        if selector is not None and available and self.kind is IndexKind.IVF:
            options = self._scaled(options, len(self) / available)
        if self._refine is not None:
            # pq: the PQ scan's shortlist, ranked by the 8-bit codes; the best k of that order are answered.
            _, ids = self._search(queries, max(k, PQ_SHORTLIST), selector, available, options, need=k)
            return self._ranked_by_codes(queries, ids, k)
        return self._search(queries, k, selector, available, options, need=k)

    def _ranked_by_codes(self, queries: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        distances = np.full((len(queries), k), np.inf, dtype=np.float32)
        ranked = np.full((len(queries), k), -1, dtype=np.int64)
        for row, (query, candidates) in enumerate(zip(queries, ids, strict=True)):
            candidates = candidates[candidates >= 0]
            if len(candidates) == 0:
                continue
            with omp_threads(self.options.threads):  # FAISS decodes large batches with OpenMP
                decoded = self._refine.reconstruct_batch(candidates)
            decoded -= query
            approximate = np.einsum("ij,ij->i", decoded, decoded)
            order = np.lexsort((candidates, approximate))[:k]
            distances[row, : len(order)] = approximate[order]
            ranked[row, : len(order)] = candidates[order]
        return distances, ranked

    def _search(self, queries: np.ndarray, k: int, selector: Any, available: int | None, options: IndexOptions,
                need: int) -> tuple[np.ndarray, np.ndarray]:
        """The index's own k nearest (a pq index's shortlist: k > need); widened while fewer than ``need``."""
        if self._deleted_selector is not None:
            selector = self._deleted_selector if selector is None else AndSelector(selector, self._deleted_selector)
        if self._gpu_index is not None and selector is None:
            if self._gpu_stale:
                self._gpu_index = faiss.index_cpu_to_gpu(self._gpu_resources, 0, self._cpu_index)
                self._gpu_stale = False
            if k <= GPU_MAX_K:
                return self._gpu_index.search(queries, k)
        with omp_threads(options.threads):
            distances, ids = self._cpu_index.search(queries, k, params=search_parameters(self.kind, selector, options))
            wanted = min(need, available if available is not None else len(self))
            while self.kind is not IndexKind.FLAT:
                short = np.flatnonzero((ids >= 0).sum(axis=1) < wanted)
                if len(short) == 0 or not self._widen_possible(options):
                    break
                options = self._widened(options)
                distances[short], ids[short] = self._cpu_index.search(
                    queries[short], k, params=search_parameters(self.kind, selector, options)
                )
        return distances, ids

    def _scaled(self, options: IndexOptions, factor: float) -> IndexOptions:
        """``options`` visiting ``factor`` times the IVF lists, up to all of them."""
        if factor <= 1.0:
            return options
        return dataclasses.replace(options, ivf_nprobe=min(self.lists, math.ceil(options.ivf_nprobe * factor)))

    def _widen_possible(self, options: IndexOptions) -> bool:
        if self.kind is IndexKind.IVF:
            return options.ivf_nprobe < self._cpu_index.nlist
        return options.hnsw_ef_search < len(self)

    @staticmethod
    def _widened(options: IndexOptions) -> IndexOptions:
        return dataclasses.replace(
            options, ivf_nprobe=options.ivf_nprobe * 4, hnsw_ef_search=options.hnsw_ef_search * 4
        )

    def write_snapshot(self, directory: Path, generation: int) -> Path | None:
        """Writes the snapshot of ``generation`` atomically; None if it could not be written.

        Temporary file, fsync, rename, fsync of the directory: a crash leaves the previous files or the
        complete new one, never a torn one. A failure (disk full, read-only directory) is logged and
        leaves the previous files as they were; the next start-up then rebuilds from SQLite.
        """
        final = directory / snapshot_name(generation)
        if final.is_file():
            return final
        temporary = final.with_name(final.name + ".tmp")
        try:
            # A pq index and its 8-bit codes are written as one file: FAISS' IndexRefine holds both (as a
            # container only; `from_snapshot` takes them apart again).
            index = self._cpu_index if self._refine is None else faiss.IndexRefine(self._cpu_index, self._refine)
            faiss.write_index(index, str(temporary))
            with open(temporary, "rb") as written:
                os.fsync(written.fileno())
            os.replace(temporary, final)
            _fsync_directory(directory)
        except (OSError, RuntimeError) as error:
            log.warning("could not write the index snapshot (%s); the next start rebuilds from SQLite",
                        str(error).splitlines()[0] if str(error) else type(error).__name__)
            with contextlib.suppress(OSError):
                temporary.unlink()
            return None
        remove_snapshots(directory, keep=final)
        return final


def snapshot_files(directory: Path) -> list[Path]:
    """Every snapshot file and leftover temporary file in ``directory``."""
    return sorted(directory.glob(f"{SNAPSHOT_PREFIX}*{SNAPSHOT_SUFFIX}*"))


def remove_snapshots(directory: Path, keep: Path | None) -> None:
    """Deletes every snapshot file but ``keep``: older generations and torn temporary files are never trusted."""
    for stale in snapshot_files(directory):
        if stale != keep:
            with contextlib.suppress(OSError):
                stale.unlink()
