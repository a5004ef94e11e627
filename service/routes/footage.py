"""Footage in, jobs out: POST /footage and the /jobs resource."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import PlainTextResponse
from starlette.concurrency import run_in_threadpool

from service.deps import APIKeyDep, SingleValuedQueryDep, StateDep
from service.errors import ConflictError, InvalidRequestError, NotFoundError
from service.footage.jobs import Job, JobMode, JobProgress, JobStatus
from service.footage.schemas import JobOut, JobPage, job_out
from service.footage.upload import receive_footage_form
from service.routes.fields import LABEL_MAX_LENGTH, check_label
from service.schemas import ERROR_RESPONSES, STORAGE_FULL_RESPONSES, UPLOAD_ERROR_RESPONSES, ErrorOut

footage_router = APIRouter(tags=["footage"], dependencies=[APIKeyDep], responses=ERROR_RESPONSES)
jobs_router = APIRouter(
    prefix="/jobs", tags=["jobs"], dependencies=[APIKeyDep, SingleValuedQueryDep], responses=ERROR_RESPONSES
)
JobIdPath = Annotated[str, Path(description="Id of a footage job (from POST /footage).")]
_NOT_FOUND = {404: {"model": ErrorOut, "description": "No job with this id."}}

FOOTAGE_FORM_SCHEMA = {
    "type": "object",
    "required": ["video", "camera_id"],
    "properties": {
        "video": {"type": "string", "format": "binary", "contentMediaType": "application/octet-stream",
                  "description": "The footage: a video file OpenCV/FFmpeg decodes (mp4, avi, mkv, ...)."},
        "camera_id": {"type": "string", "minLength": 1, "maxLength": LABEL_MAX_LENGTH,
                      "description": "The camera that filmed it; every tracklet carries it."},
        "start_time": {"type": "string", "description": "ISO 8601 wall-clock time of the first frame (UTC "
                       "when no offset is given). Without it, tracklet times are seconds from the footage start."},
        "mode": {"type": "string", "enum": ["enroll", "query"], "default": "enroll",
                 "description": "enroll: each tracklet goes into the gallery; query: each is searched."},
        "top_k": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 10,
                  "description": "Matches per tracklet in query mode (1-1000)."},
    },
}  # fmt: skip


def parse_start_time(text: str | None) -> float | None:
    """ISO 8601 -> seconds since the Unix epoch (a time without an offset is UTC); 422 when unparseable."""
    if text is None or not text.strip():
        return None
    try:
        moment = datetime.fromisoformat(text.strip().replace("z", "Z"))
    except ValueError:
        raise InvalidRequestError(
            f"start_time '{text[:64]}' is not an ISO 8601 time (e.g. 2026-12-01T08:00:00Z)."
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def _parse_fields(fields: dict[str, str]) -> dict[str, Any]:
    camera_id = fields.get("camera_id")
    if camera_id is None or not camera_id.strip():
        raise InvalidRequestError("camera_id: Field required (the camera that filmed the footage).")
    if len(camera_id) > LABEL_MAX_LENGTH:
        raise InvalidRequestError(f"camera_id is longer than {LABEL_MAX_LENGTH} characters.")
    check_label("camera_id", camera_id)
    mode = fields.get("mode", "enroll") or "enroll"
    if mode not in ("enroll", "query"):
        raise InvalidRequestError(f"mode must be 'enroll' or 'query', not '{mode[:32]}'.")
    top_k_text = fields.get("top_k", "10") or "10"
    try:
        top_k = int(top_k_text)
    except ValueError:
        raise InvalidRequestError(f"top_k must be an integer, not '{top_k_text[:32]}'.") from None
    if not 1 <= top_k <= 1000:
        raise InvalidRequestError("top_k must be between 1 and 1000.")
    return {
        "camera_id": camera_id,
        "mode": JobMode(mode),
        "top_k": top_k,
        "start_time": parse_start_time(fields.get("start_time")),
    }


@footage_router.post(
    "/footage",
    status_code=202,
    response_model=JobOut,
    operation_id="submit_footage",
    openapi_extra={
        "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": FOOTAGE_FORM_SCHEMA}}}
    },
    responses={
        202: {"headers": {"Location": {"description": "The job's URL.", "schema": {"type": "string"}}}},
        415: {"model": ErrorOut, "description": "The body is not multipart/form-data."},
        **UPLOAD_ERROR_RESPONSES,
        **STORAGE_FULL_RESPONSES,
    },
    summary="Upload camera footage: detect, track, cut into tracklets, then enroll or search them",
    description="Streams the video to disk (never whole into memory; at most REID_MAX_FOOTAGE_BYTES, 413 while "
    "streaming), checks it is a video with frames at most REID_MAX_FRAME_DIMENSION pixels a side (from its "
    "header, before decoding: 413), then queues a job and answers 202 with it and a Location header. Poll GET "
    "/jobs/{job_id}. Past REID_FOOTAGE_WORKERS running plus REID_FOOTAGE_QUEUE_SIZE queued jobs: 503 with "
    "Retry-After, before the body is read.",
)
async def submit_footage(request: Request, state: StateDep, response: Response) -> JobOut:
    footage = state.footage
    await run_in_threadpool(footage.runner.admit)
    job_id = uuid.uuid4().hex
    video_path = footage.folders.video(job_id)
    form = await receive_footage_form(request, video_path)
    try:
        fields = _parse_fields(form.fields)
        if form.video_name is None:
            raise InvalidRequestError("Send the footage as the file field 'video' (e.g. curl -F video=@clip.mp4).")
        if form.video_bytes == 0:
            raise InvalidRequestError("The video file is empty.", code="invalid_media")
        info = await run_in_threadpool(footage.probe, video_path, form.video_name)
        job = Job(
            id=job_id, status=JobStatus.queued, video_name=form.video_name, video_bytes=form.video_bytes,
            created_at=datetime.now(timezone.utc).timestamp(),
            progress=JobProgress(frames_total=info.frame_count or None), **fields,
        )  # fmt: skip
        await run_in_threadpool(footage.spool.put, job_id)
        await run_in_threadpool(footage.store.create, job)
    except BaseException:
        footage.spool.remove(job_id)
        raise
    try:
        await run_in_threadpool(footage.runner.submit, job_id)
    except BaseException:
        footage.spool.remove(job_id)  # the job was failed with the reason
        raise
    response.headers["Location"] = f"/jobs/{job_id}"
    return job_out(job)


@jobs_router.get("", response_model=JobPage, operation_id="list_jobs", summary="Recent footage jobs, newest first")
async def list_jobs(
    state: StateDep,
    status: Annotated[JobStatus | None, Query(description="Only jobs with this status.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Page size (1-1000).")] = 20,
    offset: Annotated[int, Query(ge=0, le=2**63 - 1, description="How many jobs to skip.")] = 0,
) -> JobPage:
    jobs, total = await run_in_threadpool(state.footage.store.list, status, offset, limit)
    return JobPage(items=[job_out(job) for job in jobs], total=total, limit=limit, offset=offset)


async def _job_or_404(state: Any, job_id: str) -> Job:
    job = await run_in_threadpool(state.footage.store.get, job_id)
    if job is None:
        raise NotFoundError(f"No footage job with id '{job_id}'.")
    return job


@jobs_router.get(
    "/{job_id}",
    response_model=JobOut,
    operation_id="get_job",
    responses=_NOT_FOUND,
    summary="A footage job: status, progress, error, result",
)
async def get_job(state: StateDep, job_id: JobIdPath) -> JobOut:
    return job_out(await _job_or_404(state, job_id))


@jobs_router.get(
    "/{job_id}/tracks",
    operation_id="get_job_tracks",
    responses={
        **_NOT_FOUND,
        409: {"model": ErrorOut, "description": "The job has not finished yet."},
        200: {"content": {"text/plain": {}}, "description": "JSON, or MOTChallenge text with format=mot."},
    },
    summary="Every track's per-frame boxes",
    description="JSON: per track, its boxes by frame (0-based frames, pixels: left, top, width, height, and the "
    "detector's confidence). format=mot: MOTChallenge text, one line per box, "
    "`frame,id,left,top,width,height,conf,-1,-1,-1` with 1-based frames, for standard scoring tools. Available "
    "once the job is done or cancelled (a cancelled job's tracks stop where it stopped).",
)
async def get_job_tracks(
    state: StateDep,
    job_id: JobIdPath,
    format: Annotated[Literal["json", "mot"], Query(description="json (default) or mot.")] = "json",  # noqa: A002
) -> Any:
    job = await _job_or_404(state, job_id)
    if not job.status.finished:
        raise ConflictError(f"Job '{job_id}' is {job.status.value}; its tracks are written when it ends.")
    text = await run_in_threadpool(state.footage.read_tracks, job_id)
    if text is None:
        raise NotFoundError(f"Job '{job_id}' ended ({job.status.value}) without tracks: {job.error or 'none saved'}")
    if format == "mot":
        return PlainTextResponse(text)
    tracks: dict[int, list[dict[str, float]]] = {}
    for line in text.splitlines():
        frame, track_id, left, top, width, height, confidence = line.split(",")[:7]
        tracks.setdefault(int(track_id), []).append({
            "frame": int(frame) - 1, "left": float(left), "top": float(top), "width": float(width),
            "height": float(height), "confidence": float(confidence),
        })  # fmt: skip
    return {
        "job_id": job_id,
        "frames": job.progress.frames_processed,
        "tracks": [{"track_id": track_id, "boxes": boxes} for track_id, boxes in sorted(tracks.items())],
    }


@jobs_router.delete(
    "/{job_id}",
    response_model=JobOut,
    operation_id="cancel_job",
    responses={**_NOT_FOUND, 409: {"model": ErrorOut, "description": "The job has already finished."}},
    summary="Cancel a queued or running job",
    description="A running job stops at its next frame; the tracklets it already enrolled stay in the gallery and "
    "are listed in its result. Answers with the job once it has stopped (or after 10 s, still running).",
)
async def cancel_job(state: StateDep, job_id: JobIdPath) -> JobOut:
    job = await _job_or_404(state, job_id)
    if job.status.finished:
        raise ConflictError(f"Job '{job_id}' has already finished ({job.status.value}); there is nothing to cancel.")
    if not await run_in_threadpool(state.footage.runner.cancel, job_id):
        job = await _job_or_404(state, job_id)
        if job.status.finished:
            raise ConflictError(f"Job '{job_id}' finished ({job.status.value}) before it could be cancelled.")
    return job_out(await _job_or_404(state, job_id))
