"""The search filter fields, shared by POST /query (form fields) and GET /tracklets (query parameters).

They become one `TrackletFilter` (service/gallery/base.py), whose semantics every backend implements
inside its index search. A bad filter is a 422 saying which field and why, before anything is searched.
"""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import Form, Query
from pydantic import ValidationError

from service.errors import InvalidRequestError
from service.gallery import TrackletFilter
from service.gallery.base import to_epoch_seconds
from service.routes.fields import check_label, parse_time

CAMERAS = "Only tracklets of these cameras: camera_ids, comma-separated (e.g. cam3,cam7)."
EXCLUDE_CAMERAS = "No tracklet of these cameras: camera_ids, comma-separated."
AFTER = (
    "ISO 8601 date-time (e.g. 2026-05-01T14:00:00Z; no offset: UTC). Only tracklets whose [start_time, end_time] "
    "reaches this time or later (they overlap the window). With after or before, tracklets without times are "
    "left out."
)
BEFORE = "ISO 8601 date-time. Only tracklets whose [start_time, end_time] begins at this time or earlier."
PERSON = "Only tracklets of this person_id."
METADATA = (
    'A JSON object of key to value (string, number, true/false or null), e.g. {"site": "gate 3"}: only tracklets '
    "whose metadata holds every key with exactly that value."
)
#: Longest filter text accepted (a list of cameras or a metadata object).
FILTER_MAX_LENGTH = 4096

CamerasForm = Annotated[str | None, Form(max_length=FILTER_MAX_LENGTH, description=CAMERAS)]
ExcludeCamerasForm = Annotated[str | None, Form(max_length=FILTER_MAX_LENGTH, description=EXCLUDE_CAMERAS)]
AfterForm = Annotated[str | None, Form(max_length=64, description=AFTER)]
BeforeForm = Annotated[str | None, Form(max_length=64, description=BEFORE)]
PersonForm = Annotated[str | None, Form(max_length=256, description=PERSON)]
MetadataFilterForm = Annotated[str | None, Form(max_length=FILTER_MAX_LENGTH, description=METADATA)]

CamerasQuery = Annotated[str | None, Query(max_length=FILTER_MAX_LENGTH, description=CAMERAS)]
ExcludeCamerasQuery = Annotated[str | None, Query(max_length=FILTER_MAX_LENGTH, description=EXCLUDE_CAMERAS)]
AfterQuery = Annotated[str | None, Query(max_length=64, description=AFTER)]
BeforeQuery = Annotated[str | None, Query(max_length=64, description=BEFORE)]
PersonQuery = Annotated[str | None, Query(max_length=256, description=PERSON)]
MetadataFilterQuery = Annotated[str | None, Query(max_length=FILTER_MAX_LENGTH, description=METADATA)]


def _camera_list(field_name: str, text: str | None) -> list[str] | None:
    if text is None:
        return None
    cameras = [camera.strip() for camera in text.split(",") if camera.strip()]
    if not cameras:
        raise InvalidRequestError(f"{field_name} names no camera: send camera_ids separated by commas.")
    for camera in cameras:
        check_label(field_name, camera)
    return list(dict.fromkeys(cameras))


def _not_json(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _metadata(text: str | None) -> dict | None:
    if text is None:
        return None
    try:
        value = json.loads(text, parse_constant=_not_json)
    except (ValueError, RecursionError):
        raise InvalidRequestError('metadata_filter is not JSON: send an object such as {"site": "gate 3"}.') from None
    if not isinstance(value, dict):
        raise InvalidRequestError('metadata_filter must be a JSON object of key to value, e.g. {"site": "gate 3"}.')
    for key, expected in value.items():
        if isinstance(expected, (dict, list)):
            raise InvalidRequestError(
                f"metadata_filter compares each key to one value (string, number, true, false or null); "
                f"{key!r} holds an {'object' if isinstance(expected, dict) else 'array'}."
            )
    return value


def build_filter(
    *,
    cameras: str | None = None,
    exclude_cameras: str | None = None,
    after: str | None = None,
    before: str | None = None,
    person_id: str | None = None,
    metadata_filter: str | None = None,
) -> TrackletFilter | None:
    """The filter of these fields (None when none is given); InvalidRequestError (422) naming a bad field."""
    check_label("person_id", person_id)
    after_time, before_time = parse_time("after", after), parse_time("before", before)
    if after_time is not None and before_time is not None and after_time > before_time:
        raise InvalidRequestError(
            f"after ({after_time.isoformat()}) is later than before ({before_time.isoformat()}): the window is empty."
        )
    try:
        tracklet_filter = TrackletFilter(
            cameras=_camera_list("cameras", cameras),
            exclude_cameras=_camera_list("exclude_cameras", exclude_cameras),
            after=to_epoch_seconds(after_time),
            before=to_epoch_seconds(before_time),
            person_id=person_id,
            metadata=_metadata(metadata_filter),
        )
    except ValidationError as error:
        reason = "; ".join(detail["msg"] for detail in error.errors())
        raise InvalidRequestError(f"metadata_filter is not usable: {reason}.") from None
    return None if tracklet_filter.is_empty() else tracklet_filter

