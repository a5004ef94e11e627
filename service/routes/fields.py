"""Multipart fields of the enroll and query routes: their declarations (they document the OpenAPI schema)
and the checks pydantic's field constraints cannot express (labels, the metadata object, times)."""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, timezone
from typing import Annotated, Any

from fastapi import File, Form, UploadFile

from service.errors import InvalidRequestError

TRACKLET_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$"
LABEL_MAX_LENGTH = 256

VideoField = Annotated[
    UploadFile | None,
    File(description="A video file OpenCV decodes (mp4, avi, mkv, ...). Exactly one of video, frames, archive."),
]
FramesField = Annotated[
    list[UploadFile] | None,
    File(description="One or more image files (repeat the field); the tracklet's order is the upload order."),
]
ArchiveField = Annotated[
    UploadFile | None,
    File(description="A .zip or .tar (.tar.gz, ...) of image files; the order is that of the file names "
         "(natural order: frame2 before frame10)."),
]
PersonIdField = Annotated[
    str | None,
    Form(max_length=LABEL_MAX_LENGTH, description="Identity label of the person, if known (at most 256 characters, "
         "no control characters)."),
]
MetadataField = Annotated[
    str | None,
    Form(description='Any JSON object, as a string, e.g. {"site": "gate 3"}; returned with matches. At most '
         "REID_MAX_METADATA_BYTES bytes of UTF-8 (16384 by default); NaN and Infinity are not JSON."),
]
ReplaceField = Annotated[
    bool, Form(description="Overwrite an enrolled tracklet with the same tracklet_id instead of answering 409.")
]
TopKField = Annotated[int, Form(ge=1, le=1000, description="How many matches to return (1-1000).")]
ExcludeSameCameraField = Annotated[
    bool,
    Form(description="Skip gallery tracklets from the query's camera (the cross-camera reID protocol). "
         "Needs the query's camera: camera_id, or that of the enrolled tracklet_id."),
]
StartTimeField = Annotated[
    str | None,
    Form(max_length=64, description="When the tracklet starts, ISO 8601 (e.g. 2026-05-01T08:00:00Z; a time without "
         "an offset is UTC). Returned in UTC."),
]
EndTimeField = Annotated[
    str | None,
    Form(max_length=64, description="When the tracklet ends, ISO 8601; not before start_time."),
]


def _refuse_non_standard_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 parses to inf, which JSON cannot send back
        raise ValueError(f"the number {text[:40]} is too large")
    return value


def parse_metadata(text: str | None, max_bytes: int) -> dict[str, Any]:
    """The ``metadata`` field: a JSON object given as a string (absent: {}), at most ``max_bytes`` of UTF-8.

    Refused with InvalidRequestError (422): over the size, not JSON (NaN and Infinity are not, nor numbers
    that overflow to infinity such as 1e400), not an object, nested too deep to parse, or holding text that
    cannot be sent back as UTF-8 (lone surrogates).
    """
    if text is None:
        return {}
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidRequestError("metadata holds characters that are not valid Unicode text.") from None
    if size > max_bytes:
        raise InvalidRequestError(f"metadata is {size} bytes; at most {max_bytes} bytes are allowed.")
    try:
        value = json.loads(text, parse_constant=_refuse_non_standard_constant, parse_float=_finite_float)
    except json.JSONDecodeError as error:
        raise InvalidRequestError(f"metadata is not valid JSON: {error.msg} at position {error.pos}.") from None
    except ValueError as error:
        raise InvalidRequestError(f"metadata is not valid JSON: {error}.") from None
    except RecursionError:
        raise InvalidRequestError("metadata is nested too deeply.") from None
    if not isinstance(value, dict):
        raise InvalidRequestError(f"metadata must be a JSON object, not {type(value).__name__}.")
    try:
        # Escaped lone surrogates ("\ud800") parse, but the response could not encode them as UTF-8.
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequestError("metadata holds characters that are not valid Unicode text.") from None
    except RecursionError:
        raise InvalidRequestError("metadata is nested too deeply.") from None
    return value


_LABEL_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def check_label(field_name: str, value: str | None) -> str | None:
    """A person_id / camera_id: printable text (no control characters, e.g. from binary sent as a label)."""
    if value is not None and _LABEL_CONTROL_CHARACTERS.search(value):
        raise InvalidRequestError(f"{field_name} must be printable text without control characters.")
    return value


def parse_time(field_name: str, text: str | None) -> datetime | None:
    """An ISO 8601 date-time field as an aware UTC datetime (no offset: UTC); InvalidRequestError (422) if not."""
    if text is None:
        return None
    candidate = text.strip()
    # datetime.fromisoformat reads a trailing "Z" only from Python 3.11; the service supports 3.10.
    if candidate[-1:] in ("Z", "z"):
        candidate = candidate[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(candidate)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        # Also checks that the time is representable in UTC (0001-01-01T00:00+01:00 is not).
        return moment.astimezone(timezone.utc)
    except (ValueError, OverflowError):
        raise InvalidRequestError(f"{field_name} is not an ISO 8601 date-time (e.g. 2026-05-01T08:00:00Z).") from None


def parse_time_window(start_text: str | None, end_text: str | None) -> tuple[datetime | None, datetime | None]:
    """The start_time and end_time fields; InvalidRequestError (422) if unparseable or the end is before the start."""
    start, end = parse_time("start_time", start_text), parse_time("end_time", end_text)
    if start is not None and end is not None and end < start:
        raise InvalidRequestError(f"end_time ({end.isoformat()}) is before start_time ({start.isoformat()}).")
    return start, end
