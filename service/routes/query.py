"""Rank the gallery against one query tracklet."""

from __future__ import annotations

from typing import Annotated

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
    "unless excluded). Matches come by ascending squared l2 distance. The Server-Timing header gives the time "
    "spent decoding, embedding and searching.",
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
) -> QueryOut:
    timer = StageTimer(state.metrics)
    check_label("camera_id", camera_id)
    media = await read_upload(video, frames, archive)
    result = await pipeline.query(state, timer, media=media, tracklet_id=tracklet_id, top_k=top_k,
                                  exclude_same_camera=exclude_same_camera, camera_id=camera_id)
    response.headers["Server-Timing"] = timer.server_timing()
    return result
