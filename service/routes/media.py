"""A tracklet's pictures: the frames it was embedded from and its attention overlays (the web page's
tracklet view). The thumbnail is served beside the record in `service.routes.tracklets`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from models.overlay import granularity_name
from service import pipeline
from service.deps import APIKeyDep, StateDep
from service.errors import NotFoundError
from service.routes.tracklets import TrackletIdPath
from service.schemas import ERROR_RESPONSES, ErrorOut

router = APIRouter(prefix="/tracklets", tags=["tracklets"], dependencies=[APIKeyDep], responses=ERROR_RESPONSES)
_NOT_FOUND = {404: {"model": ErrorOut, "description": "No tracklet with this id."}}


class FramesOut(BaseModel):
    """The frames kept of one tracklet."""

    count: int = Field(description="How many frames are kept (the model's T; 0 with REID_STORE_FRAMES=false).")
    urls: list[str] = Field(description="Where each is: GET /tracklets/{id}/frames/{index}, in time order.")


class Granularity(BaseModel):
    granularity: int = Field(description="1 for the coarsest (G-1st), up to the model's number of granularities.")
    name: str = Field(description="The paper's label: G-1st, G-2nd, ...")
    url: str = Field(description="The overlay PNG: GET /tracklets/{id}/attention/{granularity}.")


class AttentionOut(BaseModel):
    """The attention overlays one tracklet has."""

    granularities: list[Granularity] = Field(
        description="One per attention output of the model (empty when the model was exported without them, "
        "or no frames are kept of this tracklet)."
    )


async def _record_or_404(state, tracklet_id: str):
    record = await run_in_threadpool(state.gallery.get, tracklet_id)
    if record is None:
        raise NotFoundError(f"No tracklet with id '{tracklet_id}' is enrolled.")
    return record


@router.get("/{tracklet_id}/frames", response_model=FramesOut, operation_id="list_tracklet_frames",
            responses=_NOT_FOUND, summary="The frames kept of a tracklet",
            description="The T frames the model embedded, at its input size, as JPEGs (REID_STORE_FRAMES; these "
            "are pictures of people).")  # fmt: skip
async def list_tracklet_frames(state: StateDep, tracklet_id: TrackletIdPath) -> FramesOut:
    await _record_or_404(state, tracklet_id)
    count = await run_in_threadpool(state.media.frame_count, tracklet_id)
    return FramesOut(count=count, urls=[f"/tracklets/{tracklet_id}/frames/{index}" for index in range(count)])


@router.get(
    "/{tracklet_id}/frames/{index}", response_class=Response, operation_id="get_tracklet_frame",
    responses={200: {"content": {"image/jpeg": {}}, "description": "The frame as a JPEG."},
               404: {"model": ErrorOut, "description": "No tracklet with this id, or no frame of this index."}},
    summary="One frame of a tracklet",
)  # fmt: skip
async def get_tracklet_frame(
    state: StateDep, tracklet_id: TrackletIdPath,
    index: Annotated[int, Path(ge=0, le=100_000, description="0-based, in time order.")],
) -> Response:
    await _record_or_404(state, tracklet_id)
    data = await run_in_threadpool(state.media.read_frame, tracklet_id, index)
    if data is None:
        raise NotFoundError(f"Tracklet '{tracklet_id}' has no frame {index}.")
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


@router.get("/{tracklet_id}/attention", response_model=AttentionOut, operation_id="list_tracklet_attention",
            responses=_NOT_FOUND, summary="The attention overlays of a tracklet",
            description="One overlay per granularity of the model's attention (the card's attention_outputs).")
async def list_tracklet_attention(state: StateDep, tracklet_id: TrackletIdPath) -> AttentionOut:
    await _record_or_404(state, tracklet_id)
    has_frames = await run_in_threadpool(state.media.frame_count, tracklet_id) > 0
    names = state.embedder.attention_names if has_frames else []
    return AttentionOut(granularities=[
        Granularity(granularity=number, name=granularity_name(number - 1),
                    url=f"/tracklets/{tracklet_id}/attention/{number}")
        for number in range(1, len(names) + 1)
    ])  # fmt: skip


@router.get(
    "/{tracklet_id}/attention/{granularity}", response_class=Response, operation_id="get_tracklet_attention",
    responses={200: {"content": {"image/png": {}}, "description": "The overlays of the frames, left to right."},
               404: {"model": ErrorOut, "description": "No tracklet with this id, no frames kept, or no such "
                     "granularity."}},
    summary="One granularity's attention over a tracklet's frames (the paper's Figure 3)",
    description="The model's attention for this granularity (averaged over its channels), each frame's map "
    "rescaled to the frame and coloured black-red-yellow-white by weight (divided by its maximum over all "
    "frames) over the frame, the frames left to right. Rendered from the stored frames by onnxruntime on the "
    "first request, then kept beside them until the tracklet is deleted.",
)  # fmt: skip
async def get_tracklet_attention(
    state: StateDep, tracklet_id: TrackletIdPath,
    granularity: Annotated[int, Path(ge=1, le=64, description="1 for G-1st (coarsest).")],
) -> Response:
    png = await run_in_threadpool(pipeline.attention_png, state, tracklet_id, granularity)
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})
