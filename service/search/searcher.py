"""What a query asks of the gallery beyond a plain search: one answer per person, and re-ranking.

Backend-neutral: everything here goes through the `Gallery` interface (its filtered ``search``, ``get``,
``get_embedding``, ``count``), so the SQLite+FAISS and the Milvus backends rank the same way. Filters are
the gallery's own (`TrackletFilter`, applied inside its index search); this module never post-filters an
inflated result list, except the neighbours re-ranking brings in from outside the filtered shortlist,
which it checks against the filter's reference semantics (`TrackletFilter.matches`).

- ``group_by="person"``: the best-ranked tracklet of each person_id, top_k persons, each with how many of
  its tracklets pass the filter; a tracklet without person_id stands for itself. The search widens (4x)
  until top_k persons are found or the gallery is exhausted, so the answer is exact.
- ``rerank``: k-reciprocal re-ranking (models/rerank.py) on the query's shortlist and their cached
  neighbour lists (service/search/neighbours.py): the same code `python -m training evaluate --rerank`
  runs offline.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from models.rerank import RerankParameters, build_shortlist, ranked_by_distance, rerank_distances, squared_distances_to
from service.gallery.base import Gallery, Match, TrackletFilter, TrackletRecord, is_empty_filter
from service.search.batching import SearchBatcher
from service.search.neighbours import NeighbourCache

#: A search for group_by widens by this factor until it has top_k persons.
_WIDEN = 4


def single_threaded_blas() -> None:
    """Runs numpy's BLAS on one thread, process-wide (the service calls it at start-up; so does the bench).

    The service's numpy products are small: re-ranking's distances among ~100 shortlisted tracklets (a
    107 x 2048 product, 1 ms on one thread). With OpenBLAS' default of one thread per core, on two cores
    shared with other work, that product took 29 ms at p50 and 229 ms at p90 (measured: its threads
    spin-wait for each other while descheduled, as FAISS' OpenMP threads did: service/gallery/index_kinds.py).
    FAISS' own BLAS is the OpenMP build, already held to one thread per search by `VectorIndex`.
    """
    threadpool_limits(1, user_api="blas")


@dataclass(frozen=True)
class Hit:
    """One answer: a tracklet, its squared l2 distance, and what re-ranking and grouping add."""

    record: TrackletRecord
    distance: float
    rerank_distance: float | None = None
    #: group_by=person: tracklets of this person passing the filter (1 for a tracklet without person_id).
    person_matches: int | None = None


def group_key(record: TrackletRecord) -> str:
    """Tracklets of one person_id share a group; one without person_id is a group of its own."""
    return f"person:{record.person_id}" if record.person_id is not None else f"tracklet:{record.id}"


class Searcher:
    """Plain, grouped and re-ranked searches of one gallery.

    Args:
        gallery: any `Gallery` backend.
        rerank: the re-ranking parameters (k1, k2, lambda, shortlist size).
        neighbour_capacity: most neighbour lists cached for re-ranking.
    """

    def __init__(
        self,
        gallery: Gallery,
        rerank: RerankParameters = RerankParameters(),
        neighbour_capacity: int = 20_000,
        batcher: SearchBatcher | None = None,
    ):
        self.gallery = gallery
        self.rerank_parameters = rerank
        self.neighbours = NeighbourCache(rerank.k1, gallery.dim, neighbour_capacity, self._neighbour_search)
        self.batcher = batcher

    def _single(self, query: np.ndarray, top_k: int, tracklet_filter: TrackletFilter | None) -> list[Match]:
        if self.batcher is not None:
            return self.batcher.search(query, top_k, tracklet_filter)
        (matches,) = self.gallery.search(query[None], top_k, tracklet_filter)
        return matches

    # -- the entry point -----------------------------------------------------------------------------------
    def search(
        self,
        query: np.ndarray,
        top_k: int,
        tracklet_filter: TrackletFilter | None = None,
        group_by_person: bool = False,
        rerank: bool = False,
    ) -> list[Hit]:
        """The answer to one query (dim,) as `Hit`s, best first."""
        query = np.ascontiguousarray(query, dtype=np.float32).reshape(self.gallery.dim)
        if rerank:
            hits = self._reranked(query, top_k, tracklet_filter, group_by_person)
        elif group_by_person:
            hits = self._grouped(query, top_k, tracklet_filter)
        else:
            return [Hit(match.record, match.distance) for match in self._single(query, top_k, tracklet_filter)]
        if group_by_person:
            hits = self._with_person_counts(hits, tracklet_filter)
        return hits

    # -- one answer per person -----------------------------------------------------------------------------
    def _grouped(self, query: np.ndarray, top_k: int, tracklet_filter: TrackletFilter | None) -> list[Hit]:
        k = top_k * _WIDEN
        while True:
            matches = self._single(query, k, tracklet_filter)
            best: dict[str, Hit] = {}
            for match in matches:
                best.setdefault(group_key(match.record), Hit(match.record, match.distance))
            if len(best) >= top_k or len(matches) < k:
                return list(best.values())[:top_k]
            k *= _WIDEN

    def _with_person_counts(self, hits: list[Hit], tracklet_filter: TrackletFilter | None) -> list[Hit]:
        counted = []
        base = tracklet_filter if tracklet_filter is not None else TrackletFilter()
        for hit in hits:
            person = hit.record.person_id
            count = 1 if person is None else self.gallery.count(base.model_copy(update={"person_id": person}))
            counted.append(Hit(hit.record, hit.distance, hit.rerank_distance, count))
        return counted

    # -- re-ranking ----------------------------------------------------------------------------------------
    def _neighbour_search(self, vectors: np.ndarray, k: int) -> list[list[tuple[str, np.ndarray]]]:
        results = self.gallery.search(vectors, k, None)
        stored = self._embeddings([match.record.id for matches in results for match in matches])
        return [[(match.record.id, stored[match.record.id]) for match in matches if match.record.id in stored]
                for matches in results]

    def _embeddings(self, tracklet_ids: list[str]) -> dict[str, np.ndarray]:
        """Stored embeddings: those the neighbour cache holds, the rest read from the gallery (in bulk if it can)
        and remembered by the cache."""
        wanted = list(dict.fromkeys(tracklet_ids))
        generation = self.neighbours.generation
        found = self.neighbours.vectors_of(wanted)
        missing = [tracklet_id for tracklet_id in wanted if tracklet_id not in found]
        if not missing:
            return found
        bulk = getattr(self.gallery, "get_embeddings", None)
        if bulk is not None:
            read = bulk(missing)
        else:
            read = {tracklet_id: embedding for tracklet_id in missing
                    if (embedding := self.gallery.get_embedding(tracklet_id)) is not None}
        self.neighbours.remember(read, generation)
        found.update(read)
        return found

    def _reranked(
        self, query: np.ndarray, top_k: int, tracklet_filter: TrackletFilter | None, group_by_person: bool
    ) -> list[Hit]:
        parameters = self.rerank_parameters
        matches = self._single(query, parameters.shortlist_size, tracklet_filter)
        if not matches:
            return []
        records = {match.record.id: match.record for match in matches}
        vectors = self._embeddings(list(records))
        # The shortlist in exact-distance order (the offline path's), then the neighbours of each.
        nearest = [match.record.id for match in matches if match.record.id in vectors]
        exact = squared_distances_to(query, np.stack([vectors[identifier] for identifier in nearest]))
        nearest = [nearest[i] for i in ranked_by_distance(exact, np.arange(len(nearest)))]
        lists = self.neighbours.lists(nearest, vectors)
        shortlist = build_shortlist(nearest, lambda identifier: lists.get(identifier, ()))
        missing = [identifier for identifier in shortlist if identifier not in vectors]
        vectors.update(self._embeddings(missing))
        shortlist = [identifier for identifier in shortlist if identifier in vectors]
        embeddings = np.stack([vectors[identifier] for identifier in shortlist])
        reranked = rerank_distances(query, embeddings, parameters)
        original = squared_distances_to(query, embeddings)
        hits: list[Hit] = []
        seen_groups: set[str] = set()
        for position in ranked_by_distance(reranked, np.arange(len(shortlist))):
            identifier = shortlist[position]
            record = records.get(identifier)
            if record is None:
                # A neighbour from outside the filtered shortlist: it must pass the filter itself.
                record = self.gallery.get(identifier)
                if record is None or (not is_empty_filter(tracklet_filter) and not tracklet_filter.matches(record)):
                    continue
            if group_by_person:
                key = group_key(record)
                if key in seen_groups:
                    continue
                seen_groups.add(key)
            hits.append(Hit(record, float(original[position]), float(reranked[position])))
            if len(hits) == top_k:
                return hits
        # Fewer than top_k in the shortlist: the rest of the ranking follows in its original order (as offline).
        listed = set(shortlist)
        for match in self._single(query, top_k + len(listed), tracklet_filter):
            if match.record.id in listed:
                continue
            if group_by_person:
                key = group_key(match.record)
                if key in seen_groups:
                    continue
                seen_groups.add(key)
            hits.append(Hit(match.record, match.distance))
            if len(hits) == top_k:
                break
        return hits



class ObservedGallery:
    """A gallery whose writes keep a `NeighbourCache` up to date; everything else is the gallery's own.

    The service wraps its gallery in one (service/state.py), so every write path (POST /tracklets,
    DELETE, footage jobs, bulk import) updates the cached neighbour lists.
    """

    def __init__(self, gallery: Gallery):
        self._gallery = gallery
        self.neighbours: NeighbourCache | None = None

    def __getattr__(self, name: str):
        return getattr(self._gallery, name)

    def add(self, record: TrackletRecord, embedding: np.ndarray, replace: bool = False) -> TrackletRecord:
        stored = self._gallery.add(record, embedding, replace)
        if self.neighbours is not None:
            if replace:
                self.neighbours.deleted(record.id)
            self.neighbours.added(np.asarray(embedding, dtype=np.float32)[None])
        return stored

    def add_many(self, records: list[TrackletRecord], embeddings: np.ndarray) -> None:
        self._gallery.add_many(records, embeddings)
        if self.neighbours is not None:
            self.neighbours.added(embeddings)

    def delete(self, tracklet_id: str) -> bool:
        removed = self._gallery.delete(tracklet_id)
        if removed and self.neighbours is not None:
            self.neighbours.deleted(tracklet_id)
        return removed
