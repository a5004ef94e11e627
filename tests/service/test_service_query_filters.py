"""POST /query and GET /tracklets filters, group_by and rerank through the real app, on each gallery backend
(SQLite + FAISS, Milvus Lite); bad filters are 422."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import numpy as np
import pytest
from fastapi.testclient import TestClient

from models.rerank import RerankParameters, gallery_neighbour_lists, rerank_distance_matrix, rerank_query
from service.app import create_app
from service.config import Settings
from service.gallery import TrackletFilter, TrackletRecord

SIZE = 240
T0 = datetime(2026, 5, 1, 14, 0, tzinfo=timezone.utc).timestamp()


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat().replace("+00:00", "Z")


@pytest.fixture(scope="module")
def client(tiny_model, tmp_path_factory, open_store):
    settings = Settings(model_path=tiny_model, device="cpu", intra_op_threads=1, max_wait_ms=2, rerank_k1=6,
                        rerank_k2=3, rerank_shortlist=8, _env_file=None,
                        **open_store.settings(tmp_path_factory.mktemp("gallery")))
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def gallery(client):
    """SIZE tracklets imported in bulk: clustered embeddings, 4 cameras, times on most, metadata, persons."""
    state = client.app.state.service
    dim = state.embedder.card.dim
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(40, dim)).astype(np.float32)
    vectors = (centres[rng.integers(0, 40, SIZE)] + 0.5 * rng.normal(size=(SIZE, dim))).astype(np.float32)
    records = []
    for index in range(SIZE):
        start = T0 + 60.0 * (index % 120)
        timed = index % 9 != 0
        records.append(TrackletRecord(
            id=f"g{index}", person_id=f"p{index % 30}" if index % 4 else None, camera_id=f"cam{index % 4}",
            metadata={"site": "gate 3" if index % 3 else "lobby", "floor": index % 2},
            start_time=datetime.fromtimestamp(start, timezone.utc) if timed else None,
            end_time=datetime.fromtimestamp(start + 30.0, timezone.utc) if timed else None,
        ))  # fmt: skip
    state.gallery.add_many(records, vectors)
    return records, vectors


def brute_force(records, vectors, query, top_k, tracklet_filter) -> list[str]:
    keep = [i for i, record in enumerate(records) if tracklet_filter.matches(record)]
    distances = ((vectors[keep].astype(np.float64) - query) ** 2).sum(axis=1)
    return [records[keep[i]].id for i in np.argsort(distances, kind="stable")[:top_k]]


def ask(client, **fields):
    response = client.post("/query", data={key: str(value) for key, value in fields.items()})
    assert response.status_code == 200, response.text
    return response.json()


CASES = [
    ({"cameras": "cam1, cam3"}, TrackletFilter(cameras=["cam1", "cam3"])),
    ({"exclude_cameras": "cam0"}, TrackletFilter(exclude_cameras=["cam0"])),
    ({"after": iso(T0 + 1800), "before": iso(T0 + 3600)}, TrackletFilter(after=T0 + 1800, before=T0 + 3600)),
    ({"after": "2026-05-01T15:30:00+01:00"}, TrackletFilter(after=T0 + 1800)),
    ({"person_id": "p5"}, TrackletFilter(person_id="p5")),
    ({"metadata_filter": '{"site": "lobby", "floor": 1}'}, TrackletFilter(metadata={"site": "lobby", "floor": 1})),
    ({"cameras": "cam2,cam3", "before": iso(T0 + 3000), "metadata_filter": '{"site": "gate 3"}'},
     TrackletFilter(cameras=["cam2", "cam3"], before=T0 + 3000, metadata={"site": "gate 3"})),
]


@pytest.mark.parametrize(("fields", "reference"), CASES, ids=[str(case[0]) for case in CASES])
def test_filtered_query_equals_brute_force_restricted_to_the_filter(client, gallery, fields, reference):
    records, vectors = gallery
    body = ask(client, tracklet_id="g10", top_k=12, **fields)
    got = [match["id"] for match in body["matches"]]
    assert got == brute_force(records, vectors, vectors[10], 12, reference)
    assert len(got) == min(12, sum(reference.matches(record) for record in records))


def test_exclude_same_camera_combines_with_the_other_filters(client, gallery):
    records, vectors = gallery
    body = ask(client, tracklet_id="g10", top_k=10, exclude_same_camera="true", metadata_filter='{"floor": 0}')
    reference = TrackletFilter(exclude_cameras=[records[10].camera_id], metadata={"floor": 0})
    assert [match["id"] for match in body["matches"]] == brute_force(records, vectors, vectors[10], 10, reference)


def test_list_tracklets_takes_the_same_filters(client, gallery):
    records, _ = gallery
    page = client.get("/tracklets", params={"cameras": "cam1", "after": iso(T0 + 600), "limit": 1000}).json()
    expected = [r.id for r in records if TrackletFilter(cameras=["cam1"], after=T0 + 600).matches(r)]
    assert [item["id"] for item in page["items"]] == expected and page["total"] == len(expected)
    page = client.get("/tracklets", params={"metadata_filter": '{"site": "lobby"}', "exclude_cameras": "cam0,cam1",
                                            "limit": 1000}).json()
    expected = [r.id for r in records if r.metadata["site"] == "lobby" and r.camera_id not in ("cam0", "cam1")]
    assert [item["id"] for item in page["items"]] == expected


@pytest.mark.parametrize(("fields", "mentions"), [
    ({"after": "yesterday"}, "after"),
    ({"before": "2026-13-01T00:00:00Z"}, "before"),
    ({"after": "2026-05-01T15:00:00Z", "before": "2026-05-01T14:00:00Z"}, "later than before"),
    ({"metadata_filter": "{not json"}, "metadata_filter"),
    ({"metadata_filter": "[1, 2]"}, "JSON object"),
    ({"metadata_filter": '{"a": {"b": 1}}'}, "object"),
    ({"metadata_filter": '{"a\\"b": 1}'}, "metadata_filter"),
    ({"metadata_filter": '{"a": NaN}'}, "metadata_filter"),
    ({"cameras": " , "}, "cameras"),
    ({"group_by": "camera"}, "group_by"),
])  # fmt: skip
def test_bad_filters_are_422_with_the_reason(client, gallery, fields, mentions):
    before = client.get("/tracklets", params={"limit": 1}).json()["total"]
    for response in (client.post("/query", data={"tracklet_id": "g1", **fields}),
                     client.get("/tracklets", params=fields) if "group_by" not in fields else None):
        if response is None:
            continue
        assert response.status_code == 422, response.text
        assert mentions in json.dumps(response.json())
    assert client.get("/tracklets", params={"limit": 1}).json()["total"] == before


def test_group_by_person(client, gallery):
    records, vectors = gallery
    body = ask(client, tracklet_id="g21", top_k=6, group_by="person", exclude_cameras="cam3")
    reference = TrackletFilter(exclude_cameras=["cam3"])
    ranking = brute_force(records, vectors, vectors[21], SIZE, reference)
    by_id = {record.id: record for record in records}
    expected, seen = [], set()
    for identifier in ranking:
        key = by_id[identifier].person_id or identifier
        if key not in seen:
            seen.add(key)
            expected.append(identifier)
    assert body["group_by"] == "person"
    assert [match["id"] for match in body["matches"]] == expected[:6]
    for match in body["matches"]:
        person = match["person_id"]
        count = 1 if person is None else sum(
            1 for r in records if r.person_id == person and reference.matches(r))
        assert match["person_matches"] == count


def test_rerank_online_equals_the_offline_evaluation_path(client, gallery):
    records, vectors = gallery
    parameters = RerankParameters(k1=6, k2=3, lambda_value=0.3, shortlist_size=8)
    lists = gallery_neighbour_lists(vectors, parameters.k1)
    for query_index in (3, 77, 150):
        body = ask(client, tracklet_id=f"g{query_index}", top_k=14, rerank="true")
        # `python -m training evaluate --rerank` ranks each query by this distance matrix row.
        row = rerank_distance_matrix(vectors[query_index][None], vectors, parameters)[0]
        expected = [records[i].id for i in np.argsort(row, kind="stable")[:14]]
        assert body["reranked"] is True
        assert [match["id"] for match in body["matches"]] == expected
        shortlist, reranked = rerank_query(vectors[query_index], vectors, lists, parameters)
        shortlisted = [match["rerank_distance"] for match in body["matches"] if match["rerank_distance"] is not None]
        assert len(shortlisted) == min(14, len(shortlist))
        np.testing.assert_allclose(shortlisted, np.sort(reranked)[: len(shortlisted)], rtol=1e-6)
