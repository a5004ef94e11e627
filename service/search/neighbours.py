"""Each gallery tracklet's k1 nearest gallery neighbours, cached for online re-ranking and kept up to date.

Re-ranking a query needs the neighbour lists of its shortlist (models/rerank.py). Computing a list is one
index search; the cache keeps them, so a warm query costs the same whatever the gallery size. A list is
computed on first use and dropped exactly when it may have changed:

- enroll of v: every cached list whose k1-th distance exceeds d(owner, v) (v would enter it), found with
  one product of v against the cached owners' embeddings (kept beside their lists);
- delete of t: every cached list holding t (a reverse map says which), and t's own.

Distances are `models.rerank.squared_distances_to` of the stored float32 embeddings, candidates come from
the gallery's own search, so a list equals `models.rerank.gallery_neighbour_lists` (the offline path) on
an exact index. At most ``capacity`` lists are kept (least recently used dropped first).

The cache also remembers up to ``capacity`` embeddings of tracklets that appeared in lists (the neighbours
a shortlist brings in), so a warm re-ranked query reads no embedding from the gallery; one is forgotten
when its tracklet is deleted or replaced, and one read across a gallery change is not remembered.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from models.rerank import ranked_by_distance, squared_distances_to

#: Extra candidates asked of the index beyond k1 + 1 (self), so float32 near-ties cannot drop a neighbour.
_MARGIN = 8


@dataclass
class _Entry:
    neighbours: list[str]
    radius: float  # the k1-th neighbour's distance; inf while the gallery holds fewer than k1 others
    slot: int


class NeighbourCache:
    """Cached k1-nearest-neighbour lists of gallery tracklets (ids), invalidated on enroll and delete.

    Args:
        k1: neighbours per list.
        dim: embedding dimension.
        capacity: most lists kept.
        search: ``(vectors (n, d), k) -> [[(tracklet id, embedding)...] per vector]`` nearest first: the
            gallery's unfiltered search with the stored embeddings of the hits.
    """

    def __init__(
        self,
        k1: int,
        dim: int,
        capacity: int,
        search: Callable[[np.ndarray, int], list[list[tuple[str, np.ndarray]]]],
    ):
        self.k1 = k1
        self.capacity = capacity
        self._search = search
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._listed_by: dict[str, set[str]] = {}
        self._vectors = np.zeros((capacity, dim), dtype=np.float32)
        self._radii = np.full(capacity, -np.inf)
        self._free = list(range(capacity - 1, -1, -1))
        self._owners: list[str | None] = [None] * capacity
        # Embeddings of other tracklets (neighbours), least recently used first.
        self._remembered: OrderedDict[str, np.ndarray] = OrderedDict()
        # Bumped by every gallery change: a list computed across a change is returned but not kept.
        self._generation = 0
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def lists(self, owners: Sequence[str], vectors: dict[str, np.ndarray]) -> dict[str, list[str]]:
        """The neighbour list of each owner (whose embedding is in ``vectors``), computed where not cached."""
        with self._lock:
            found = {}
            for owner in owners:
                entry = self._entries.get(owner)
                if entry is not None:
                    self._entries.move_to_end(owner)
                    found[owner] = entry.neighbours
            self.hits += len(found)
            missing = [owner for owner in dict.fromkeys(owners) if owner not in found and owner in vectors]
            generation = self._generation
        if missing:
            self.misses += len(missing)
            queries = np.stack([vectors[owner] for owner in missing])
            results = self._search(queries, self.k1 + 1 + _MARGIN)
            computed = {owner: self._exact_list(owner, vectors[owner], hits)
                        for owner, hits in zip(missing, results, strict=True)}
            with self._lock:
                for owner, (neighbours, radius) in computed.items():
                    if self._generation == generation:
                        self._store(owner, vectors[owner], neighbours, radius)
                    found[owner] = neighbours
            self.remember({identifier: embedding for hits in results for identifier, embedding in hits}, generation)
        return found

    @property
    def generation(self) -> int:
        """The change counter: read it before reading embeddings from the gallery, pass it to `remember`."""
        return self._generation

    def remember(self, embeddings: dict[str, np.ndarray], generation: int) -> None:
        """Keeps these stored embeddings, unless the gallery changed since ``generation`` was read."""
        with self._lock:
            if self._generation != generation:
                return
            for identifier, embedding in embeddings.items():
                self._remembered[identifier] = np.asarray(embedding, dtype=np.float32)
                self._remembered.move_to_end(identifier)
            while len(self._remembered) > self.capacity:
                self._remembered.popitem(last=False)

    def _exact_list(self, owner: str, vector: np.ndarray, hits: list[tuple[str, np.ndarray]]
                    ) -> tuple[list[str], float]:
        others = [(identifier, embedding) for identifier, embedding in hits if identifier != owner]
        if not others:
            return [], np.inf
        distances = squared_distances_to(vector, np.stack([embedding for _, embedding in others]))
        order = ranked_by_distance(distances, np.arange(len(others)))[: self.k1]
        radius = float(distances[order[-1]]) if len(order) == self.k1 else np.inf
        return [others[i][0] for i in order], radius

    def _store(self, owner: str, vector: np.ndarray, neighbours: list[str], radius: float) -> None:
        if owner in self._entries:
            self._drop(owner)
        if not self._free:
            self._drop(next(iter(self._entries)))
        slot = self._free.pop()
        self._vectors[slot] = vector
        self._radii[slot] = radius
        self._owners[slot] = owner
        self._entries[owner] = _Entry(neighbours, radius, slot)
        for neighbour in neighbours:
            self._listed_by.setdefault(neighbour, set()).add(owner)

    def _drop(self, owner: str) -> None:
        entry = self._entries.pop(owner, None)
        if entry is None:
            return
        self._radii[entry.slot] = -np.inf
        self._owners[entry.slot] = None
        self._free.append(entry.slot)
        for neighbour in entry.neighbours:
            holders = self._listed_by.get(neighbour)
            if holders is not None:
                holders.discard(owner)
                if not holders:
                    del self._listed_by[neighbour]

    def vectors_of(self, tracklet_ids: Sequence[str]) -> dict[str, np.ndarray]:
        """The embeddings the cache holds (owners of cached lists, remembered neighbours) among ``tracklet_ids``."""
        with self._lock:
            found = {}
            for identifier in tracklet_ids:
                entry = self._entries.get(identifier)
                if entry is not None:
                    found[identifier] = self._vectors[entry.slot].copy()
                elif (embedding := self._remembered.get(identifier)) is not None:
                    self._remembered.move_to_end(identifier)
                    found[identifier] = embedding
            return found

    # -- gallery changes -----------------------------------------------------------------------------------
    def added(self, vectors: np.ndarray) -> None:
        """New tracklets with these embeddings (n, d): drops every list one of them would enter."""
        vectors = np.asarray(vectors, dtype=np.float32).reshape(-1, self._vectors.shape[1])
        with self._lock:
            self._generation += 1
            if not self._entries:
                return
            live = np.flatnonzero(self._radii > -np.inf)
            cached = self._vectors[live]
            stale = np.zeros(len(live), dtype=bool)
            for vector in vectors:
                # <=: a new tracklet at exactly the k1-th distance may take its place by the tie order.
                stale |= squared_distances_to(vector, cached) <= self._radii[live]
            for slot in live[stale].tolist():
                self._drop(self._owners[slot])

    def deleted(self, tracklet_id: str) -> None:
        """A tracklet left the gallery: drops its list and every list holding it."""
        with self._lock:
            self._generation += 1
            self._drop(tracklet_id)
            self._remembered.pop(tracklet_id, None)
            for owner in list(self._listed_by.get(tracklet_id, ())):
                self._drop(owner)

    def clear(self) -> None:
        with self._lock:
            self._generation += 1
            self._remembered.clear()
            for owner in list(self._entries):
                self._drop(owner)
