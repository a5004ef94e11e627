"""Rank the gallery against one query tracklet."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Form, Response

from service import pipeline
from service.deps import APIKeyDep, StateDep
from service.middleware import admission_controlled
from service.pipeline import StageTimer, read_upload
from service.routes.fields import (
    LABEL_MAX_LENGTH,
    ArchiveField,
    ExcludeSameCameraField,
    FramesField,
    TopKField,
    VideoField,
    check_label,
)
from service.routes.filters import (
    AfterForm,
    BeforeForm,
    CamerasForm,
    ExcludeCamerasForm,
    MetadataFilterForm,
    PersonForm,
    build_filter,
)
from service.schemas import ERROR_RESPONSES, UPLOAD_ERROR_RESPONSES, ErrorOut, QueryOut

router = APIRouter(tags=["query"], dependencies=[APIKeyDep], responses=ERROR_RESPONSES)


@router.post(
    "/query",
    response_model=QueryOut,
    operation_id="query_gallery",
    responses={404: {"model": ErrorOut, "description": "tracklet_id is not enrolled."}, **UPLOAD_ERROR_RESPONSES},
    summary="Rank the gallery for a query tracklet",
    description="The query is either media (video, frames or archive: decoded and embedded like an enroll, "
    "not stored) or the tracklet_id of an enrolled tracklet (its stored embedding; it ranks itself first "
    "unless exclude_query=true or a filter leaves it out). Matches come by ascending squared l2 distance. "
    "Filters (cameras, exclude_cameras, "
    "after/before, person_id, metadata_filter, exclude_same_camera; all must hold) are applied inside the index "
    "search: top_k is exactly the full ranking restricted to the tracklets that pass. group_by=person gives one "
    "match per person; rerank=true re-ranks k-reciprocally. A malformed filter is 422 naming the field. The "
    "Server-Timing header gives the time spent decoding, embedding and searching.",
)
@admission_controlled
async def query_gallery(
    state: StateDep,
    response: Response,
    video: VideoField = None,
    frames: FramesField = None,
    archive: ArchiveField = None,
    tracklet_id: Annotated[
        str | None, Form(max_length=128, description="Use this enrolled tracklet as the query instead of media.")
    ] = None,
    top_k: TopKField = 10,
    exclude_same_camera: ExcludeSameCameraField = False,
    camera_id: Annotated[
        str | None,
        Form(max_length=LABEL_MAX_LENGTH, description="The query's camera (defaults to the enrolled tracklet's)."),
    ] = None,
    cameras: CamerasForm = None,
    exclude_cameras: ExcludeCamerasForm = None,
    after: AfterForm = None,
    before: BeforeForm = None,
    person_id: PersonForm = None,
    metadata_filter: MetadataFilterForm = None,
    group_by: Annotated[
        Literal["person"] | None,
        Form(description="person: one match per person_id (its best-ranked tracklet, with person_matches, the "
             "number of its tracklets passing the filters), top_k persons; a tracklet without person_id stands "
             "for itself."),
    ] = None,
    exclude_query: Annotated[
        bool,
        Form(description="With tracklet_id: leave the query tracklet itself out of the matches (the next match "
             "takes its place; with group_by=person, its person is represented by their next best tracklet). "
             "Not with both group_by=person and rerank=true."),
    ] = False,
    rerank: Annotated[
        bool,
        Form(description="Re-rank with k-reciprocal encoding (Zhong et al., CVPR 2017; REID_RERANK_*) on the "
             "query's nearest tracklets and their own neighbours, as `python -m training evaluate --rerank`."),
    ] = False,
) -> QueryOut:
    timer = StageTimer(state.metrics)
    check_label("camera_id", camera_id)
    tracklet_filter = build_filter(cameras=cameras, exclude_cameras=exclude_cameras, after=after, before=before,
                                   person_id=person_id, metadata_filter=metadata_filter)
    media = await read_upload(video, frames, archive)
    result = await pipeline.query(state, timer, media=media, tracklet_id=tracklet_id, top_k=top_k,
                                  exclude_same_camera=exclude_same_camera, camera_id=camera_id,
                                  tracklet_filter=tracklet_filter, group_by_person=group_by == "person",
                                  rerank=rerank, exclude_query=exclude_query)
    response.headers["Server-Timing"] = timer.server_timing()
    return result
