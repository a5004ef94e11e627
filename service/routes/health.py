"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from service.deps import APIKeyDep, StateDep
from service.errors import NotReadyError
from service.metrics import CONTENT_TYPE
from service.schemas import ERROR_RESPONSES, HealthOut, ReadyOut

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthOut, summary="Process alive (never needs an API key)")
async def healthz() -> HealthOut:
    return HealthOut(status="ok")


@router.get(
    "/readyz", response_model=ReadyOut, dependencies=[APIKeyDep], responses=ERROR_RESPONSES,
    summary="Model loaded and gallery open and reachable; device in use and gallery size",
    description="503 (`not_ready`, with the reason) while the model or gallery is loading, or while the gallery's "
    "storage cannot answer (e.g. REID_GALLERY_BACKEND=milvus and Milvus is unreachable); /healthz still "
    "answers 200 then, since the process itself is alive.",
)
async def readyz(state: StateDep) -> ReadyOut:
    ok, reason = await run_in_threadpool(state.gallery.health)
    if not ok:
        raise NotReadyError(f"The gallery is not ready: {reason}", headers={"Retry-After": "5"})
    embedder = state.embedder
    return ReadyOut(
        status="ready",
        model_version=embedder.card.model_version,
        model_name=embedder.card.name,
        device=embedder.device,
        precision=embedder.card.precision,
        providers=embedder.providers,
        index_device=state.gallery.index_device,
        gallery_size=await run_in_threadpool(state.gallery.count),
        embed_queue_depth=state.batcher.queue_depth,
    )


@router.get(
    "/metrics", dependencies=[APIKeyDep],
    # Declared by hand rather than with response_class=PlainTextResponse, which would also label the JSON
    # error answers text/plain in the schema.
    responses={200: {"description": "Prometheus text exposition format.",
                     "content": {"text/plain": {"schema": {"type": "string"}}}}, **ERROR_RESPONSES},
    summary="Prometheus metrics: requests and latencies by route and status, stage times, batch sizes, gallery size",
)
async def metrics(request: Request) -> Response:
    # In a worker thread: the gauges read the gallery, which may wait for a write's fsync.
    body = await run_in_threadpool(request.app.state.metrics.render)
    return Response(body, media_type=CONTENT_TYPE)
