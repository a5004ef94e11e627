"""Enroll, read, list and delete gallery tracklets."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Form, Path, Query, Response
from starlette.concurrency import run_in_threadpool

from service import pipeline
from service.deps import APIKeyDep, GalleryDep, SingleValuedQueryDep, StateDep
from service.errors import InvalidRequestError, NotFoundError
from service.gallery import TrackletFilter, TrackletRecord
from service.middleware import admission_controlled
from service.pipeline import StageTimer, read_upload
from service.routes.fields import (
    LABEL_MAX_LENGTH,
    TRACKLET_ID_PATTERN,
    ArchiveField,
    EndTimeField,
    FramesField,
    MetadataField,
    PersonIdField,
    ReplaceField,
    StartTimeField,
    VideoField,
    check_label,
    parse_metadata,
    parse_time_window,
)
from service.routes.filters import (
    AfterQuery,
    BeforeQuery,
    CamerasQuery,
    ExcludeCamerasQuery,
    MetadataFilterQuery,
    PersonQuery,
    build_filter,
)
from service.schemas import (
    ERROR_RESPONSES,
    STORAGE_FULL_RESPONSES,
    UPLOAD_ERROR_RESPONSES,
    ErrorOut,
    TrackletPage,
)

router = APIRouter(
    prefix="/tracklets", tags=["tracklets"], dependencies=[APIKeyDep, SingleValuedQueryDep], responses=ERROR_RESPONSES
)

SQLITE_MAX_INTEGER = 2**63 - 1
# No pattern here: an id that could never have been enrolled is simply not found (404).
TrackletIdPath = Annotated[str, Path(description="Id of an enrolled tracklet.")]


@router.post(
    "",
    status_code=201,
    response_model=TrackletRecord,
    operation_id="enroll_tracklet",
    responses={
        201: {"links": {
            "GetTracklet": {"operationId": "get_tracklet", "parameters": {"tracklet_id": "$response.body#/id"}},
            "DeleteTracklet": {"operationId": "delete_tracklet",
                               "parameters": {"tracklet_id": "$response.body#/id"}},
        }},
        409: {"model": ErrorOut, "description": "tracklet_id already enrolled and replace is false."},
        **UPLOAD_ERROR_RESPONSES,
        **STORAGE_FULL_RESPONSES,
    },
    summary="Enroll one tracklet",
    description="Decodes the media, samples the model's T frames (centre of T uniform chunks), embeds them and "
    "stores the record. Answered only after the record is durably committed. The Server-Timing header gives "
    "the time spent decoding, embedding and storing.",
)
@admission_controlled
async def enroll_tracklet(
    state: StateDep,
    response: Response,
    video: VideoField = None,
    frames: FramesField = None,
    archive: ArchiveField = None,
    person_id: PersonIdField = None,
    camera_id: Annotated[
        str | None, Form(max_length=LABEL_MAX_LENGTH, description="Label of the camera that saw the tracklet.")
    ] = None,
    metadata: MetadataField = None,
    tracklet_id: Annotated[
        str | None,
        Form(pattern=TRACKLET_ID_PATTERN, description="Client-chosen id (letters, digits, . _ : @ -; at most 128); "
             "generated when absent. Enrolling an existing id is 409 unless replace=true."),
    ] = None,
    replace: ReplaceField = False,
    start_time: StartTimeField = None,
    end_time: EndTimeField = None,
) -> TrackletRecord:
    timer = StageTimer(state.metrics)
    person_id, camera_id = check_label("person_id", person_id), check_label("camera_id", camera_id)
    metadata_object = parse_metadata(metadata, state.settings.max_metadata_bytes)
    start, end = parse_time_window(start_time, end_time)
    record = TrackletRecord(id=tracklet_id or uuid.uuid4().hex, person_id=person_id, camera_id=camera_id,
                            metadata=metadata_object, start_time=start, end_time=end)
    media = await read_upload(video, frames, archive)
    if media is None:
        raise InvalidRequestError("Send the tracklet as exactly one of the fields video, frames or archive.")
    record = await pipeline.enroll(state, media, record, replace, timer)
    response.headers["Location"] = f"/tracklets/{record.id}"
    response.headers["Server-Timing"] = timer.server_timing()
    return record


@router.get(
    "",
    response_model=TrackletPage,
    operation_id="list_tracklets",
    summary="List enrolled tracklets",
    description="Pages through the gallery in enrollment order, optionally only the tracklets passing the same "
    "filters as POST /query (cameras, exclude_cameras, after/before, person_id, metadata_filter; all must hold). "
    "A malformed filter is 422 naming the field.",
)
async def list_tracklets(
    gallery: GalleryDep,
    person_id: PersonQuery = None,
    camera_id: Annotated[str | None, Query(description="Only tracklets of this camera_id (one camera).")] = None,
    cameras: CamerasQuery = None,
    exclude_cameras: ExcludeCamerasQuery = None,
    after: AfterQuery = None,
    before: BeforeQuery = None,
    metadata_filter: MetadataFilterQuery = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Page size (1-1000).")] = 100,
    offset: Annotated[
        int, Query(ge=0, le=SQLITE_MAX_INTEGER, description="How many matching tracklets to skip.")
    ] = 0,
) -> TrackletPage:
    tracklet_filter = build_filter(cameras=cameras, exclude_cameras=exclude_cameras, after=after, before=before,
                                   person_id=person_id, metadata_filter=metadata_filter)
    if camera_id is not None:
        check_label("camera_id", camera_id)
        if tracklet_filter is not None and tracklet_filter.cameras is not None:
            # Both given: the tracklet's camera must be camera_id and among cameras.
            kept = [camera_id] if camera_id in tracklet_filter.cameras else []
            tracklet_filter = tracklet_filter.model_copy(update={"cameras": kept})
        else:
            tracklet_filter = (tracklet_filter or TrackletFilter()).model_copy(update={"cameras": [camera_id]})
    records, total = await run_in_threadpool(gallery.list, tracklet_filter, offset, limit)
    return TrackletPage(items=records, total=total, limit=limit, offset=offset)


@router.get(
    "/{tracklet_id}",
    response_model=TrackletRecord,
    operation_id="get_tracklet",
    responses={404: {"model": ErrorOut, "description": "No tracklet with this id."}},
    summary="One enrolled tracklet",
)
async def get_tracklet(gallery: GalleryDep, tracklet_id: TrackletIdPath) -> TrackletRecord:
    record = await run_in_threadpool(gallery.get, tracklet_id)
    if record is None:
        raise NotFoundError(f"No tracklet with id '{tracklet_id}' is enrolled.")
    return record


@router.delete(
    "/{tracklet_id}",
    status_code=204,
    response_class=Response,
    operation_id="delete_tracklet",
    responses={404: {"model": ErrorOut, "description": "No tracklet with this id."}, **STORAGE_FULL_RESPONSES},
    summary="Delete a tracklet",
    description="Removes the record, its embedding and its media (thumbnail, frames, attention overlays); it is "
    "out of every search once this answers.",
)
async def delete_tracklet(state: StateDep, tracklet_id: TrackletIdPath) -> Response:
    if not await run_in_threadpool(pipeline.delete_record, state.gallery, state.media, tracklet_id):
        raise NotFoundError(f"No tracklet with id '{tracklet_id}' is enrolled.")
    return Response(status_code=204)


@router.get(
    "/{tracklet_id}/thumbnail",
    response_class=Response,
    operation_id="get_tracklet_thumbnail",
    responses={
        200: {"content": {"image/jpeg": {}}, "description": "A small JPEG of the tracklet."},
        404: {"model": ErrorOut, "description": "No tracklet with this id, or it has no thumbnail."},
    },
    summary="A tracklet's thumbnail (a picture of the person)",
    description="The best crop of a footage tracklet, or the middle sampled frame of an upload, at most 128 "
    "pixels tall. Tracklets enrolled with REID_STORE_THUMBNAILS=false have none (404).",
)
async def get_tracklet_thumbnail(state: StateDep, tracklet_id: TrackletIdPath) -> Response:
    record = await run_in_threadpool(state.gallery.get, tracklet_id)
    if record is None:
        raise NotFoundError(f"No tracklet with id '{tracklet_id}' is enrolled.")
    data = await run_in_threadpool(state.media.read, tracklet_id) if record.has_thumbnail else None
    if data is None:
        raise NotFoundError(f"Tracklet '{tracklet_id}' has no thumbnail.")
    return Response(data, media_type="image/jpeg")
