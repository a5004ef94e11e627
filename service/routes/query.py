"""Rank the gallery against one query tracklet."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Form, Response
from starlette.concurrency import run_in_threadpool

from service.deps import APIKeyDep, StateDep
from service.errors import InvalidRequestError, NotFoundError
from service.gallery import TrackletFilter
from service.routes.fields import (
    LABEL_MAX_LENGTH,
    ArchiveField,
    ExcludeSameCameraField,
    FramesField,
    TopKField,
    VideoField,
)
from service.schemas import ERROR_RESPONSES, UPLOAD_ERROR_RESPONSES, ErrorOut, QueryOut
from service.uploads import StageTimer, check_label, decode_media, read_media

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
) -> dict:
    started = time.perf_counter()
    timer = StageTimer(state.metrics)
    check_label("camera_id", camera_id)
    media = await read_media(video, frames, archive)
    if media is not None and tracklet_id is not None:
        raise InvalidRequestError("Send either media (video, frames or archive) or tracklet_id as the query, not both.")
    if media is None and tracklet_id is None:
        raise InvalidRequestError("Send the query as one of video, frames or archive, or as an enrolled tracklet_id.")

    frames_decoded = frames_used = None
    if tracklet_id is not None:
        record = await run_in_threadpool(state.gallery.get, tracklet_id)
        embedding = await run_in_threadpool(state.gallery.get_embedding, tracklet_id)
        if record is None or embedding is None:
            raise NotFoundError(f"No tracklet with id '{tracklet_id}' is enrolled.")
        if camera_id is None:
            camera_id = record.camera_id
    else:
        with timer.stage("decode"):
            decoded = await run_in_threadpool(decode_media, state.decoder, media)
        frames_decoded, frames_used = decoded.frames_decoded, decoded.frames_used
        with timer.stage("embed"):
            embedding = await state.batcher.embed(decoded.frames)

    if exclude_same_camera and camera_id is None:
        raise InvalidRequestError("exclude_same_camera needs the query's camera: send camera_id.")
    with timer.stage("search"):
        tracklet_filter = TrackletFilter(exclude_cameras=[camera_id]) if exclude_same_camera else None
        (hits,) = await run_in_threadpool(state.gallery.search, embedding, top_k, tracklet_filter)
        gallery_size = state.gallery.count()
    response.headers["Server-Timing"] = timer.server_timing()
    return {
        "matches": [
            {
                "rank": rank,
                "id": hit.record.id,
                "person_id": hit.record.person_id,
                "camera_id": hit.record.camera_id,
                "distance": hit.distance,
                "metadata": hit.record.metadata,
            }
            for rank, hit in enumerate(hits, start=1)
        ],
        "top_k": top_k,
        "query_tracklet_id": tracklet_id,
        "query_camera_id": camera_id,
        "frames_decoded": frames_decoded,
        "frames_used": frames_used,
        "gallery_size": gallery_size,
        "took_ms": (time.perf_counter() - started) * 1000.0,
        "model_version": state.embedder.card.model_version,
    }
