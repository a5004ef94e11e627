"""Response models of the API (request fields are documented on the routes' Form/File parameters)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class TrackletOut(BaseModel):
    """An enrolled tracklet."""

    id: str = Field(description="The tracklet's id: the client's tracklet_id, or one the service generated.")
    person_id: str | None = Field(None, description="Identity label given at enrollment, if any.")
    camera_id: str | None = Field(None, description="Camera label given at enrollment, if any.")
    metadata: dict[str, Any] = Field(default_factory=dict, description="The JSON object given at enrollment.")
    frames_decoded: int = Field(description="Frames the upload held (all decoded and checked).")
    frames_used: int = Field(
        description="Distinct frames fed to the model: the model takes T frames sampled from uniform chunks; "
        "a tracklet shorter than T repeats frames, so this is min(frames_decoded, T)."
    )
    model_version: str = Field(description="Version (ONNX sha256 prefix) of the model that embedded it.")
    created_at: str = Field(description="Enrollment time, ISO-8601 UTC.")


class TrackletPage(BaseModel):
    """One page of enrolled tracklets, in enrollment order."""

    items: list[TrackletOut] = Field(description="The tracklets of this page.")
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


class QueryOut(BaseModel):
    """Ranked gallery matches for one query tracklet."""

    matches: list[Match] = Field(description="Nearest gallery tracklets, by ascending distance.")
    top_k: int = Field(description="How many matches were asked for.")
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


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorOut, "description": description}
    for status, description in {
        401: "Missing or wrong API key.",
        413: "Upload, frame count, frame size or archive over a limit.",
        422: "Invalid fields or media that cannot be decoded.",
        503: "The embedder's queue is full; retry after the Retry-After seconds.",
    }.items()
}
