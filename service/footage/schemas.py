"""What the footage and job routes answer (pydantic response models) and how a stored job becomes one."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from service.footage.jobs import Job, JobMode, JobProgress, JobStatus
from service.footage.work import iso_time


class VideoOut(BaseModel):
    """The uploaded footage (deleted from the server once the job ends)."""

    name: str = Field(description="File name the client gave the upload.")
    bytes: int = Field(description="Size of the upload.")


class TrackletMatches(BaseModel):
    """Query mode: one tracklet of the footage and the gallery tracklets nearest to it."""

    track_id: int = Field(description="The track it was cut from (the id in GET /jobs/{id}/tracks).")
    frame_start: int = Field(description="First frame (0-based) of the tracklet in the footage.")
    frame_end: int = Field(description="Last frame (0-based, inclusive).")
    start_time: str | float = Field(
        description="When it starts: ISO 8601 when the job has a start_time, else seconds from the footage start."
    )
    end_time: str | float = Field(description="When it ends, in the same form as start_time.")
    num_frames: int = Field(description="Frames in the tracklet.")
    matches: list[dict[str, Any]] = Field(description="Nearest gallery tracklets, by ascending distance.")


class JobResult(BaseModel):
    tracklets: list[dict[str, Any]] | None = Field(
        None,
        description="Enroll mode: the tracklet records the job enrolled, so far (kept when it is cancelled "
        "or fails). Exactly what the gallery received from this job.",
    )
    queries: list[TrackletMatches] | None = Field(
        None, description="Query mode: per tracklet of each track, its top_k gallery matches, so far."
    )


class JobOut(BaseModel):
    """A footage job."""

    job_id: str = Field(description="The job's id.")
    status: JobStatus = Field(description="queued, running, done, failed or cancelled.")
    mode: JobMode = Field(description="enroll: tracklets go into the gallery; query: each is searched.")
    camera_id: str = Field(description="The camera the footage comes from (every tracklet carries it).")
    start_time: str | None = Field(None, description="Wall-clock time of the footage's first frame, if given.")
    top_k: int = Field(description="Matches per tracklet in query mode.")
    video: VideoOut = Field(description="The uploaded footage.")
    created_at: str = Field(description="When the upload was accepted, ISO 8601 UTC.")
    started_at: str | None = Field(None, description="When a worker started it.")
    finished_at: str | None = Field(None, description="When it reached done, failed or cancelled.")
    progress: JobProgress = Field(description="How far the job has got.")
    error: str | None = Field(None, description="Why it failed (status failed).")
    warnings: list[str] = Field(default_factory=list, description="E.g. a truncated video: what decoded was used.")
    result: JobResult = Field(description="What the job produced so far (enroll or query mode).")
    links: dict[str, str] = Field(description="URLs of the job and its tracks.")


class JobPage(BaseModel):
    items: list[JobOut] = Field(description="Jobs of this page, newest first.")
    total: int = Field(description="How many jobs match in all.")
    limit: int = Field(description="Page size asked for.")
    offset: int = Field(description="Index of this page's first job among all matches.")


def _times(item: dict[str, Any], absolute: bool) -> dict[str, Any]:
    if not absolute:
        return item
    return {**item, "start_time": iso_time(item["start_time"]), "end_time": iso_time(item["end_time"])}


def job_out(job: Job) -> JobOut:
    absolute = job.start_time is not None
    result = (
        JobResult(tracklets=job.enrolled)
        if job.mode is JobMode.enroll
        else JobResult(queries=[TrackletMatches(**_times(item, absolute)) for item in job.queries])
    )
    return JobOut(
        job_id=job.id, status=job.status, mode=job.mode, camera_id=job.camera_id,
        start_time=iso_time(job.start_time) if absolute else None, top_k=job.top_k,
        video=VideoOut(name=job.video_name, bytes=job.video_bytes), created_at=iso_time(job.created_at),
        started_at=iso_time(job.started_at) if job.started_at else None,
        finished_at=iso_time(job.finished_at) if job.finished_at else None,
        progress=job.progress, error=job.error, warnings=job.warnings, result=result,
        links={"self": f"/jobs/{job.id}", "tracks": f"/jobs/{job.id}/tracks",
               "tracks_mot": f"/jobs/{job.id}/tracks?format=mot"},
    )  # fmt: skip
