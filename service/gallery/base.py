"""What every gallery backend shares: the tracklet record, the search filter, a match, and the `Gallery`
interface the rest of the service uses (routes and the pipeline never see SQLite, FAISS or Milvus).

Times: a record's ``start_time``/``end_time`` are timezone-aware datetimes (ISO 8601 in the API) and are
stored by backends as float seconds since the Unix epoch, UTC. Footage without an absolute start time
stores seconds from the footage's start, so such a record reads back as a time on 1970-01-01.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any, Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: A metadata filter compares one key to one JSON scalar.
MetadataScalar = str | int | float | bool | None
# Keys become JSON paths inside SQL (and Milvus expressions): no quotes, backslashes or control characters.
_SAFE_METADATA_KEY = re.compile(r'^[^"\\\x00-\x1f\x7f]{1,128}$')


def now_iso() -> str:
    """The current time as ISO 8601 UTC with milliseconds (a record's ``created_at``)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def to_epoch_seconds(moment: datetime | None) -> float | None:
    """A datetime as float seconds since the Unix epoch (naive datetimes are taken as UTC)."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def from_epoch_seconds(seconds: float | None) -> datetime | None:
    """The inverse of `to_epoch_seconds`: an aware UTC datetime, or None."""
    return None if seconds is None else datetime.fromtimestamp(seconds, tz=timezone.utc)


class TrackletRecord(BaseModel):
    """One enrolled tracklet: what a backend stores beside the embedding, and what the API returns."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(description="The tracklet's id: the client's tracklet_id, or one the service generated.")
    person_id: str | None = Field(None, description="Identity label given at enrollment, if any.")
    camera_id: str | None = Field(None, description="Camera label given at enrollment, if any.")
    metadata: dict[str, Any] = Field(default_factory=dict, description="The JSON object given at enrollment.")
    frames_decoded: int = Field(0, description="Frames the upload held (all decoded and checked).")
    frames_used: int = Field(
        0,
        description="Distinct frames fed to the model: the model takes T frames sampled from uniform chunks; "
        "a tracklet shorter than T repeats frames, so this is min(frames_decoded, T).",
    )
    model_version: str = Field("", description="Version (ONNX sha256 prefix) of the model that embedded it.")
    created_at: str = Field("", description="Enrollment time, ISO-8601 UTC.")
    start_time: datetime | None = Field(
        None, description="When the tracklet starts (ISO 8601; given at enrollment, or from footage)."
    )
    end_time: datetime | None = Field(None, description="When the tracklet ends (ISO 8601), not before start_time.")
    job_id: str | None = Field(None, description="The footage job that produced this tracklet, if any.")
    frame_start: int | None = Field(None, ge=0, description="First footage frame of the tracklet (footage jobs).")
    frame_end: int | None = Field(None, ge=0, description="Last footage frame of the tracklet (footage jobs).")
    has_thumbnail: bool = Field(False, description="Whether the service keeps a thumbnail of this tracklet.")

    @field_validator("start_time", "end_time")
    @classmethod
    def _aware_utc(cls, value: datetime | None) -> datetime | None:
        # Stored as epoch seconds: a time without an offset is taken as UTC, and every time reads back in UTC.
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)

    @model_validator(mode="after")
    def _ordered(self) -> TrackletRecord:
        if self.start_time is not None and self.end_time is not None and self.end_time < self.start_time:
            raise ValueError("end_time is before start_time")
        if self.frame_start is not None and self.frame_end is not None and self.frame_end < self.frame_start:
            raise ValueError("frame_end is before frame_start")
        return self


class TrackletFilter(BaseModel):
    """Which records a search, list or count considers. Every field is optional; all given fields must hold.

    An empty filter (or None) means every record.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    cameras: list[str] | None = Field(None, description="Only records whose camera_id is one of these.")
    exclude_cameras: list[str] | None = Field(
        None, description="No record whose camera_id is one of these (records without a camera are kept)."
    )
    after: float | None = Field(
        None,
        description="Epoch seconds: only records whose [start_time, end_time] reaches this time or later. With "
        "after or before, records without times are excluded; a record with only one of the two times is "
        "treated as the instant it gives.",
    )
    before: float | None = Field(
        None, description="Epoch seconds: only records whose [start_time, end_time] begins at this time or earlier."
    )
    person_id: str | None = Field(None, description="Only records of this person_id.")
    metadata: dict[str, MetadataScalar] | None = Field(
        None, description="Only records whose metadata holds every key with exactly this JSON value."
    )

    @field_validator("metadata")
    @classmethod
    def _safe_keys(cls, value: dict[str, MetadataScalar] | None) -> dict[str, MetadataScalar] | None:
        for key in value or {}:
            if not _SAFE_METADATA_KEY.match(key):
                raise ValueError(f"metadata filter key {key!r} must be 1-128 characters without quotes or backslashes")
        return value

    def is_empty(self) -> bool:
        return all(getattr(self, name) is None for name in type(self).model_fields)

    def matches(self, record: TrackletRecord) -> bool:
        """Whether ``record`` passes (the reference semantics every backend's own filtering must equal)."""
        if self.cameras is not None and record.camera_id not in self.cameras:
            return False
        if self.exclude_cameras is not None and record.camera_id in self.exclude_cameras:
            return False
        if self.person_id is not None and record.person_id != self.person_id:
            return False
        if self.after is not None or self.before is not None:
            start = to_epoch_seconds(record.start_time)
            end = to_epoch_seconds(record.end_time)
            start, end = (start if start is not None else end), (end if end is not None else start)
            if start is None or end is None:
                return False
            if self.after is not None and end < self.after:
                return False
            if self.before is not None and start > self.before:
                return False
        for key, expected in (self.metadata or {}).items():
            if key not in record.metadata:
                return False
            actual = record.metadata[key]
            # JSON semantics: true is not 1, and 1 equals 1.0.
            if isinstance(expected, bool) or isinstance(actual, bool) or expected is None or actual is None:
                if type(actual) is not type(expected) or actual != expected:
                    return False
            elif actual != expected or isinstance(actual, (dict, list)):
                return False
        return True


def is_empty_filter(tracklet_filter: TrackletFilter | None) -> bool:
    return tracklet_filter is None or tracklet_filter.is_empty()


class Match(BaseModel):
    """One gallery record ranked for a query."""

    model_config = ConfigDict(frozen=True)

    record: TrackletRecord
    distance: float = Field(description="Squared l2 distance between the query and this record's embedding.")


@runtime_checkable
class Gallery(Protocol):
    """A persistent gallery of tracklet records and their embeddings, with exact squared-l2 search.

    Backends: `service.gallery.local.SqliteGallery` (SQLite + FAISS, the default) and
    `service.gallery.milvus.MilvusGallery` (a Milvus collection several replicas share). Chosen by
    `service.gallery.open_gallery` from REID_GALLERY_BACKEND. Every method may raise StorageFullError
    (507) or StorageUnavailableError (503) when the storage fails; a write then stores nothing.
    """

    dim: int
    model_version: str
    #: Where searches run, for /readyz and /metrics: "cpu", "cuda", or a backend's own word.
    index_device: str

    def add(self, record: TrackletRecord, embedding: np.ndarray, replace: bool = False) -> TrackletRecord:
        """Stores ``record`` and its embedding (dim,) durably; returns the record as stored (its model_version
        and created_at set by the gallery). ConflictError (409) if the id exists and ``replace`` is false."""
        ...

    def add_many(self, records: list[TrackletRecord], embeddings: np.ndarray) -> None:
        """Bulk import of new ids in one transaction; all or nothing (ConflictError on any existing id)."""
        ...

    def get(self, tracklet_id: str) -> TrackletRecord | None: ...

    def get_embedding(self, tracklet_id: str) -> np.ndarray | None: ...

    def delete(self, tracklet_id: str) -> bool:
        """Removes a record; it is out of every search when this returns. False if there was none."""
        ...

    def list(
        self, tracklet_filter: TrackletFilter | None = None, offset: int = 0, limit: int = 100
    ) -> tuple[list[TrackletRecord], int]:
        """One page of the records passing the filter, in enrollment order, and how many pass in all."""
        ...

    def count(self, tracklet_filter: TrackletFilter | None = None) -> int: ...

    def search(
        self, queries: np.ndarray, top_k: int, tracklet_filter: TrackletFilter | None = None
    ) -> list[list[Match]]:
        """For each query (n, dim) float32, the top_k records passing the filter by ascending squared l2:
        exactly the order of a brute-force search over those records."""
        ...

    def health(self) -> tuple[bool, str]:
        """Whether the gallery can serve requests now, and why not."""
        ...

    def close(self) -> None: ...
