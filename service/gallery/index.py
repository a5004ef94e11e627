"""The vector index: FAISS exact squared-l2 search (IndexIDMap2 over IndexFlatL2) keyed by the record
store's row ids, its snapshot files, and an optional GPU replica.

The index is derived state: `service.gallery.local` rebuilds it from SQLite at start-up, or loads the
snapshot of the current generation when that snapshot's ids are exactly SQLite's (see that module for the
whole contract). It is not thread-safe by itself: the gallery serialises every call under its lock.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import faiss
import numpy as np

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
    """FAISS exact squared-l2 index of ``dim``-dimensional float32 vectors with int64 ids.

    Build one with `VectorIndex(dim)` (empty) or `VectorIndex.from_snapshot`, fill it with `add`, then
    optionally `enable_gpu` to search a GPU replica (deletions mark the replica stale; it is copied afresh
    before the next search).
    """

    def __init__(self, dim: int, cpu_index: Any = None):
        self.dim = dim
        self._cpu_index = cpu_index if cpu_index is not None else faiss.IndexIDMap2(faiss.IndexFlatL2(dim))
        self._gpu_resources = None
        self._gpu_index = None
        self._gpu_stale = False
        self.device = "cpu"

    @classmethod
    def from_snapshot(cls, path: Path, dim: int, expected_ids: np.ndarray) -> VectorIndex | None:
        """The index saved at ``path`` if it holds exactly ``expected_ids`` (sorted int64); else None."""
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as error:
            log.warning("index snapshot %s is unreadable (%s); rebuilding from SQLite", path.name, error)
            return None
        if (
            not isinstance(index, faiss.IndexIDMap2)
            or index.d != dim
            or index.ntotal != len(expected_ids)
            or not np.array_equal(np.sort(faiss.vector_to_array(index.id_map)), expected_ids)
        ):
            log.warning("index snapshot %s does not match the database; rebuilding from SQLite", path.name)
            return None
        return cls(dim, index)

    def __len__(self) -> int:
        return int(self._cpu_index.ntotal)

    def enable_gpu(self) -> None:
        """Searches a replica on GPU 0 from now on; stays on CPU with a warning if faiss cannot."""
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
        self._cpu_index.add_with_ids(vectors, ids)
        if self._gpu_index is not None and not self._gpu_stale:
            self._gpu_index.add_with_ids(vectors, ids)

    def remove(self, ids: Iterable[int]) -> None:
        self._cpu_index.remove_ids(np.fromiter(ids, dtype=np.int64))
        if self._gpu_index is not None:
            # GPU flat indexes cannot remove vectors: the replica is copied afresh before the next search.
            self._gpu_stale = True

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(distances, ids), each (n, k), ascending; ids of -1 where fewer than k vectors exist."""
        if self._gpu_index is not None:
            if self._gpu_stale:
                self._gpu_index = faiss.index_cpu_to_gpu(self._gpu_resources, 0, self._cpu_index)
                self._gpu_stale = False
            if k <= GPU_MAX_K:
                return self._gpu_index.search(queries, k)
        return self._cpu_index.search(queries, k)

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
            faiss.write_index(self._cpu_index, str(temporary))
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
