"""Re-ranking online (Searcher over the gallery, neighbour lists cached) equals the offline path; group_by;
concurrent queries batched."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from gallery_backends import GalleryOpener

from models.rerank import RerankParameters, gallery_neighbour_lists, ranked_by_distance, rerank_query
from service.gallery import SqliteGallery, TrackletFilter, TrackletRecord
from service.gallery.index_kinds import IndexKind, IndexOptions
from service.search.batching import SearchBatcher
from service.search.searcher import ObservedGallery, Searcher

DIM = 16
VERSION = "v-rerank-00000001"
PARAMETERS = RerankParameters(k1=6, k2=3, lambda_value=0.3, shortlist_size=8)


def clustered(count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(30, DIM)).astype(np.float32)
    return (centres[rng.integers(0, 30, count)] + 0.5 * rng.normal(size=(count, DIM))).astype(np.float32)


def offline_top(query: np.ndarray, gallery: np.ndarray, ids: list[str], top_k: int) -> list[str]:
    """What `python -m training evaluate --rerank` ranks first for this query over this gallery."""
    shortlist, reranked = rerank_query(query, gallery, gallery_neighbour_lists(gallery, PARAMETERS.k1), PARAMETERS)
    return [ids[shortlist[i]] for i in ranked_by_distance(reranked, np.arange(len(shortlist)))[:top_k]]


#: Every index kind, searched exhaustively so that its answers (and so the re-ranking) are exact.
KINDS = {
    "flat": IndexOptions(kind=IndexKind.FLAT),
    "ivf": IndexOptions(kind=IndexKind.IVF, ivf_storage="flat", min_train_size=100, ivf_nprobe=64),
    "hnsw": IndexOptions(kind=IndexKind.HNSW, min_train_size=100, hnsw_ef_search=512),
}


@pytest.fixture(params=[*KINDS, pytest.param("milvus-flat", marks=pytest.mark.milvus)])
def searcher(request, tmp_path):
    if request.param == "milvus-flat":  # the same Searcher over the Milvus backend (Milvus Lite)
        store = GalleryOpener("milvus", request.getfixturevalue("milvus_server").uri)(tmp_path / "g", DIM, VERSION)
    else:
        store = SqliteGallery(tmp_path / "g", DIM, VERSION, index_options=KINDS[request.param])
    gallery = ObservedGallery(store)
    searcher = Searcher(gallery, PARAMETERS, neighbour_capacity=500)
    gallery.neighbours = searcher.neighbours
    yield searcher
    gallery.close()


def enroll(gallery, vectors: np.ndarray, start: int, bulk: bool) -> list[str]:
    ids = [f"t{start + i}" for i in range(len(vectors))]
    records = [TrackletRecord(id=identifier, person_id=f"p{(start + i) % 12}" if (start + i) % 5 else None,
                              camera_id=f"c{(start + i) % 3}") for i, identifier in enumerate(ids)]
    if bulk:
        gallery.add_many(records, vectors)
    else:
        for record, vector in zip(records, vectors, strict=True):
            gallery.add(record, vector)
    return ids


def test_online_rerank_equals_offline_and_stays_equal_as_the_gallery_changes(searcher):
    gallery = searcher.gallery
    vectors = clustered(220, seed=1)
    ids = enroll(gallery, vectors[:150], 0, bulk=True) + enroll(gallery, vectors[150:200], 150, bulk=False)
    current = dict(zip(ids, vectors[:200], strict=True))
    queries = clustered(6, seed=2)

    def check() -> None:
        order = list(current)
        matrix = np.stack([current[identifier] for identifier in order])
        for query in queries:
            online = [hit.record.id for hit in searcher.search(query, 10, rerank=True)]
            assert online == offline_top(query, matrix, order, 10)

    check()
    if hasattr(searcher.gallery, "index"):  # SQLite + FAISS: the index kind asked for (Milvus: FLAT)
        assert searcher.gallery.index.kind.value == next(k for k, o in KINDS.items()
                                                         if o is searcher.gallery.index.options)
    assert len(searcher.neighbours) > 0 and searcher.neighbours.misses > 0
    # Re-ranking really re-orders: the answer is not the plain nearest-first list.
    plain = [[hit.record.id for hit in searcher.search(query, 10)] for query in queries]
    assert plain != [[hit.record.id for hit in searcher.search(query, 10, rerank=True)] for query in queries]
    misses = searcher.neighbours.misses
    reads = []
    real_read = gallery.get_embeddings
    gallery.get_embeddings = lambda wanted: reads.append(list(wanted)) or real_read(wanted)
    check()
    del gallery.get_embeddings
    assert searcher.neighbours.misses == misses  # warm: every list came from the cache
    assert reads == []  # and every embedding (the shortlist's neighbours too) from its memory

    # Replace a remembered neighbour's embedding: the cache forgets the old one.
    shortlisted = [hit.record.id for hit in searcher.search(queries[0], 10, rerank=True)]
    remembered = [identifier for identifier in shortlisted if searcher.neighbours.vectors_of([identifier])]
    moved = (queries[0] + 0.02).astype(np.float32)
    gallery.add(gallery.get(remembered[-1]), moved, replace=True)
    current[remembered[-1]] = moved
    check()

    # Enroll near the queries and delete some of their neighbours: the cached lists that changed are dropped.
    near = (queries[:3] + 0.01).astype(np.float32)
    current.update(zip(enroll(gallery, near, 500, bulk=False), near, strict=True))
    current.update(zip(enroll(gallery, vectors[200:], 200, bulk=True), vectors[200:], strict=True))
    for hit in searcher.search(queries[3], 4, rerank=True)[:2]:
        assert gallery.delete(hit.record.id)
        del current[hit.record.id]
    check()


def test_rerank_with_a_filter_answers_only_passing_tracklets(searcher):
    gallery = searcher.gallery
    vectors = clustered(120, seed=3)
    enroll(gallery, vectors, 0, bulk=True)
    only = TrackletFilter(cameras=["c1"])
    hits = searcher.search(vectors[4], 10, only, rerank=True)
    assert len(hits) == 10 and {hit.record.camera_id for hit in hits} == {"c1"}
    assert all(hit.rerank_distance is not None for hit in hits)
    assert [hit.rerank_distance for hit in hits] == sorted(hit.rerank_distance for hit in hits)


def test_group_by_person_gives_the_best_tracklet_of_each_person_and_their_counts(searcher):
    gallery = searcher.gallery
    vectors = clustered(150, seed=4)
    enroll(gallery, vectors, 0, bulk=True)
    query = vectors[7]
    tracklet_filter = TrackletFilter(exclude_cameras=["c0"])
    grouped = searcher.search(query, 5, tracklet_filter, group_by_person=True)
    # Reference: the full ranking of passing tracklets, first tracklet of each group, counts of passing ones.
    (everything,) = gallery.search(query[None], 1000, tracklet_filter)
    expected, counts = [], {}
    for match in everything:
        person = match.record.person_id
        key = person if person is not None else "#" + match.record.id
        counts[key] = counts.get(key, 0) + 1
        if key not in [k for k, _ in expected]:
            expected.append((key, match.record.id))
    assert [hit.record.id for hit in grouped] == [identifier for _, identifier in expected[:5]]
    for hit, (key, _) in zip(grouped, expected, strict=False):
        assert hit.person_matches == counts[key]
    assert len({hit.record.person_id for hit in grouped if hit.record.person_id}) == sum(
        1 for hit in grouped if hit.record.person_id)
    reranked = searcher.search(query, 5, tracklet_filter, group_by_person=True, rerank=True)
    assert len(reranked) == 5 and len({hit.record.person_id or hit.record.id for hit in reranked}) == 5


def test_concurrent_queries_share_index_calls(tmp_path):
    store = SqliteGallery(tmp_path / "g", DIM, VERSION)
    vectors = clustered(400, seed=5)
    enroll(store, vectors, 0, bulk=True)
    sizes: list[int] = []
    calls: list[int] = []
    release = threading.Event()

    def slow_search(queries, top_k, tracklet_filter):
        calls.append(len(queries))
        release.wait(5)  # the first call holds the worker while the others queue up
        return store.search(queries, top_k, tracklet_filter)

    batcher = SearchBatcher(slow_search, on_batch=sizes.append)
    batcher.start()
    results: dict[int, list[str]] = {}

    def ask(number: int) -> None:
        results[number] = [match.record.id for match in batcher.search(vectors[number], 5, None)]

    threads = [threading.Thread(target=ask, args=(number,)) for number in range(9)]
    # The first query alone occupies the worker; the other eight are asked only once it is inside its call
    # (started together, all nine could reach the queue before the worker looks and share one call).
    threads[0].start()
    while not calls and threads[0].is_alive():
        threading.Event().wait(0.01)
    for thread in threads[1:]:
        thread.start()
    # Release once every other query waits in the queue.
    while batcher._queue.qsize() < 8 and all(thread.is_alive() for thread in threads):
        threading.Event().wait(0.01)
    release.set()
    for thread in threads:
        thread.join(10)
    batcher.stop()
    store.close()
    assert sizes == [1, 8]  # nine queries in two index calls
    for number in range(9):
        assert results[number][0] == f"t{number}"


def test_the_service_runs_numpy_blas_on_one_thread():
    from threadpoolctl import threadpool_info

    from service.search.searcher import single_threaded_blas

    single_threaded_blas()
    blas = [pool for pool in threadpool_info() if pool["user_api"] == "blas"]
    assert blas and all(pool["num_threads"] == 1 for pool in blas)
