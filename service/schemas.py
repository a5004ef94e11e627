"""Response models of the API (request fields are documented on the routes' Form/File parameters)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from service.gallery.base import TrackletRecord


class TrackletPage(BaseModel):
    """One page of enrolled tracklets, in enrollment order."""

    items: list[TrackletRecord] = Field(description="The tracklets of this page.")
    total: int = Field(description="How many tracklets match the filters in all.")
    limit: int = Field(description="Page size asked for.")
    offset: int = Field(description="Index of this page's first tracklet among all matches.")


class Match(BaseModel):
    """One gallery tracklet ranked for a query."""

    rank: int = Field(description="1 for the nearest tracklet.")
    id: str = Field(description="Id of the gallery tracklet.")
    person_id: str | None = Field(None, description="Its identity label, if any.")
    camera_id: str | None = Field(None, description="Its camera label, if any.")
    distance: float = Field(description="Squared l2 distance between the embeddings; smaller is more alike.")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Its enrollment metadata.")
    start_time: datetime | None = Field(None, description="When the tracklet starts, if known (ISO 8601).")
    end_time: datetime | None = Field(None, description="When the tracklet ends, if known (ISO 8601).")
    rerank_distance: float | None = Field(
        None,
        description="rerank=true: the k-reciprocal re-ranked distance the order follows (in [0, 1]; null for a "
        "tracklet beyond the re-ranked shortlist, which follows it in plain distance order).",
    )
    person_matches: int | None = Field(
        None,
        description="group_by=person: how many of this person's tracklets pass the filters (1 for a tracklet "
        "without person_id, which stands for itself).",
    )


class QueryOut(BaseModel):
    """Ranked gallery matches for one query tracklet."""

    matches: list[Match] = Field(
        description="Nearest gallery tracklets passing the filters, by ascending distance (by rerank_distance "
        "with rerank=true); with group_by=person, the best-ranked tracklet of each person."
    )
    top_k: int = Field(description="How many matches (persons, with group_by=person) were asked for.")
    group_by: str | None = Field(None, description="'person' when one match per person was asked for.")
    reranked: bool = Field(False, description="Whether the order is k-reciprocal re-ranked.")
    query_tracklet_id: str | None = Field(None, description="The enrolled tracklet used as query, if one was.")
    query_camera_id: str | None = Field(None, description="The query's camera, used by exclude_same_camera.")
    frames_decoded: int | None = Field(None, description="Frames the query upload held (null for tracklet_id).")
    frames_used: int | None = Field(None, description="Distinct frames fed to the model (null for tracklet_id).")
    gallery_size: int = Field(description="Tracklets in the gallery when the query ran.")
    took_ms: float = Field(description="Server time for the whole query (decode, embed, search), milliseconds.")
    model_version: str = Field(description="Version of the model that embedded the query.")


class HealthOut(BaseModel):
    status: str = Field(description="Always 'ok' while the process serves requests.")


class ReadyOut(BaseModel):
    """Whether the service can answer enrolls and queries, and on what."""

    status: str = Field(description="'ready' once the model is loaded and the gallery open.")
    model_version: str = Field(description="Version of the loaded model.")
    model_name: str = Field(description="Name of the loaded model.")
    device: str = Field(description="Where embeddings are computed: 'cuda' or 'cpu'.")
    precision: str = Field(description="What the model computes in, from its card: 'fp32', 'fp16' or 'int8'.")
    providers: list[str] = Field(description="onnxruntime execution providers of the session, in priority order.")
    index_device: str = Field(description="Where the FAISS search runs: 'cuda' or 'cpu'.")
    gallery_size: int = Field(description="Tracklets enrolled.")
    embed_queue_depth: int = Field(description="Tracklets waiting for the embedder now.")


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable error code, e.g. 'invalid_media', 'too_many_frames'.")
    message: str = Field(description="What went wrong, in a sentence.")
    request_id: str | None = Field(None, description="The request's id (also in the X-Request-ID header).")


class ErrorOut(BaseModel):
    """The body of every 4xx and 5xx response."""

    error: ErrorDetail


def _error_responses(descriptions: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    responses: dict[int | str, dict[str, Any]] = {
        status: {"model": ErrorOut, "description": description} for status, description in descriptions.items()
    }
    if 503 in responses:
        responses[503]["headers"] = {
            "Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}
        }
    return responses


#: What any route may answer besides its own success and errors.
ERROR_RESPONSES = _error_responses({
    401: "Missing or wrong API key (every route but /healthz when REID_API_KEY is set).",
    422: "Invalid fields, or media that cannot be decoded.",
    500: "An unexpected failure; logged under the request id, no details in the answer.",
    503: "Busy (too many uploads in progress or the embedding queue full), still loading, or the gallery's "
    "storage unavailable (read-only or failing disk); retry after the Retry-After seconds.",
})
#: What a route that reads an upload may also answer.
UPLOAD_ERROR_RESPONSES = _error_responses({
    400: "The body is not parseable multipart/form-data (malformed, too many fields, a field over 1 MiB).",
    408: "The body did not arrive within REID_BODY_TIMEOUT_S; the connection is closed.",
    413: "Upload, frame count, frame size or archive over a limit.",
})
#: What a route that writes to the gallery may also answer.
STORAGE_FULL_RESPONSES = _error_responses({
    507: "The gallery's disk is full: nothing was stored (searches keep working); retry once space is freed.",
})
