"""The FastAPI application: `create_app(settings)` with a lifespan that loads the model and the gallery.

Run it with ``python -m service`` or ``uvicorn service.app:app`` (the module attribute ``app`` is built on
first access, from the REID_ environment, and exits with a one-line reason when the model or gallery
cannot be loaded); ``uvicorn --factory service.app:create_app`` works too. With uvicorn, add
``--http service.http_protocol:GuardedH11Protocol`` for the header timeout and the connection cap
(`python -m service` uses it by itself).
"""

from __future__ import annotations

import inspect
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from service import __version__
from service.auth import KeyChecker
from service.config import Settings, get_settings
from service.errors import StartupError
from service.framing import FramingMiddleware
from service.handlers import install_error_handlers
from service.metrics import ServiceMetrics
from service.middleware import (
    AdmissionMiddleware,
    ApiKeyMiddleware,
    RequestBodyGuardMiddleware,
    RequestContextMiddleware,
    admission_controlled_routes,
)
from service.routes import footage, health, media, model, query, tracklets, ui
from service.state import ServiceState, load_state

log = logging.getLogger(__name__)

DESCRIPTION = """
Video person re-identification on MG-RAFA. Enroll tracklets (a video, image frames or an archive of frames)
into a persistent gallery and rank the gallery for a query tracklet by squared l2 distance between
embeddings of the exported ONNX model.

When REID_API_KEY is set, every endpoint except /healthz needs `Authorization: Bearer <key>` or `X-API-Key`
(401 otherwise; the docs too unless REID_DOCS_PUBLIC is set).
Errors always have the shape `{"error": {"code", "message", "request_id"}}`; the request id is also in the
X-Request-ID header and in the server's log line for that request.

Media: images in PNG, JPEG, GIF, BMP, WebP or TIFF; videos in MP4/MOV, MKV/WebM, AVI or MPEG-TS; .zip or
.tar(.gz/.bz2/.xz) archives of images, not nested. Each is recognised by its first bytes; anything else is 422.

Limits (settings, see /model for the model's own): request body REID_MAX_UPLOAD_BYTES (64 MiB; 413), sent
within REID_BODY_TIMEOUT_S (60 s; 408); REID_MAX_FRAMES frames (2000; 413), each at most
REID_MAX_FRAME_DIMENSION pixels a side (4096; 413, read from the header before decoding); at most
REID_MAX_DECODED_PIXELS decoded per request (413); archives of at most REID_MAX_ARCHIVE_ENTRIES entries (2000)
and REID_MAX_ARCHIVE_BYTES read out of them, headers included (128 MiB), no links, devices or paths outside
the archive (413/422); a request with both Content-Length and Transfer-Encoding, or a multipart body without
its closing boundary, is 400; person_id and camera_id at most 256 characters without control
characters, tracklet_id at most 128 of `A-Za-z0-9._:@-`, metadata a JSON object of at most
REID_MAX_METADATA_BYTES (16 KiB; 422). Text fields that are not valid UTF-8 are read as Latin-1 (one
character per byte). Backpressure: more than REID_MAX_CONCURRENT_UPLOADS enrolls/queries in progress (32), or
a full embedding queue, is 503 with Retry-After. A full disk is 507 and a read-only or failing one 503, with
nothing stored; queries keep working.
"""


def configure_logging(level: str) -> None:
    """Plain one-line log records to stderr, unless the host process already configured logging."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    root.setLevel(level.upper())
    # The multipart parser warns about every malformed body; the request's own log line already says so.
    logging.getLogger("python_multipart").setLevel(max(logging.ERROR, root.level))


def create_app(settings: Settings | None = None, state: ServiceState | None = None) -> FastAPI:
    """The app. ``state`` is an already loaded `ServiceState` (the CLI loads it first, to fail fast);
    without it the lifespan loads one from ``settings``."""
    settings = settings or get_settings()
    metrics = state.metrics if state is not None else ServiceMetrics()
    if not logging.getLogger().handlers:
        # `uvicorn --factory service.app:create_app` configures only uvicorn's own loggers.
        configure_logging(settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service_state = state if state is not None else await run_in_threadpool(load_state, settings, metrics)
        app.state.service = service_state
        try:
            yield
        finally:
            app.state.service = None
            await run_in_threadpool(service_state.close)

    extra = {}
    # FastAPI >= 0.13x lets the multipart parser accept as many files as a tracklet may have frames.
    if "form_limits" in inspect.signature(FastAPI).parameters:
        extra["form_limits"] = {"max_files": settings.max_frames + len(("video", "archive"))}
    app = FastAPI(
        title="MG-RAFA video reID service",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs" if settings.docs_enabled else None,
        redoc_url="/redoc" if settings.docs_enabled else None,
        openapi_url="/openapi.json" if settings.docs_enabled else None,
        **extra,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.service = None
    app.state.key_checker = KeyChecker(settings.api_keys)
    install_error_handlers(app)

    def embed_queue_is_full() -> bool:
        service_state = app.state.service
        return service_state is not None and service_state.batcher.queue_is_full

    public_paths = {"/healthz", *ui.PUBLIC_PATHS}
    if settings.docs_enabled and settings.docs_public:
        public_paths |= {"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
    # Added last = outermost. The request context wraps everything, so every refusal carries a request id
    # and is logged; keys are checked, then admission, then the body limits, all before the body is read.
    app.add_middleware(
        RequestBodyGuardMiddleware, max_bytes=settings.max_upload_bytes, timeout_s=settings.body_timeout_s,
        route_limits={("POST", "/footage"): (settings.max_footage_bytes, settings.footage_body_timeout_s)},
    )
    routers = (health.router, tracklets.router, media.router, query.router, footage.footage_router,
               footage.jobs_router, model.router, ui.router)
    # The routes themselves say which requests admission control bounds (`admission_controlled`).
    app.state.admission_routes = admission_controlled_routes(route for router in routers for route in router.routes)
    app.add_middleware(
        AdmissionMiddleware, routes=app.state.admission_routes, max_concurrent=settings.max_concurrent_uploads,
        embed_queue_is_full=embed_queue_is_full,
    )
    app.add_middleware(ApiKeyMiddleware, checker=app.state.key_checker, public_paths=frozenset(public_paths),
                       public_prefixes=(ui.PUBLIC_PREFIX,))
    # Framing first: a request with both Content-Length and Transfer-Encoding is refused before any other
    # middleware reads (or drains) its body.
    app.add_middleware(FramingMiddleware)
    app.add_middleware(RequestContextMiddleware, metrics=metrics)
    for router in routers:
        app.include_router(router)
    # The web page (static files; the API key is asked for by the page itself, for its API calls).
    app.mount("/ui", ui.page_files(), name="ui")
    generate_openapi = app.openapi

    def openapi_with_file_fields() -> dict[str, Any]:
        if app.openapi_schema is None:
            mark_file_fields(generate_openapi())
        return app.openapi_schema

    app.openapi = openapi_with_file_fields
    return app


def _is_file_schema(schema: Any) -> bool:
    if not isinstance(schema, dict):
        return False
    if schema.get("type") == "array":
        return _is_file_schema(schema.get("items"))
    return schema.get("type") == "string" and schema.get("contentMediaType") == "application/octet-stream"


def mark_file_fields(node: Any) -> None:
    """Makes the upload fields of an OpenAPI 3.1 schema say plainly that they are files (in place).

    FastAPI describes an optional UploadFile as ``anyOf: [{string, contentMediaType}, {null}]``. A multipart
    field cannot be null (leaving it out is how a client sends none), and clients and schema-driven tools
    look for ``format: binary`` on the field itself to send it as a file part; without both they send the
    field as text. So the null branch is dropped and ``format: binary`` added.
    """
    if isinstance(node, dict):
        branches = node.get("anyOf")
        if isinstance(branches, list) and len(branches) == 2 and {"type": "null"} in branches:
            (other,) = [branch for branch in branches if branch != {"type": "null"}]
            if _is_file_schema(other):
                del node["anyOf"]
                node.update(other)
        if node.get("type") == "string" and node.get("contentMediaType") == "application/octet-stream":
            node.setdefault("format", "binary")
        for value in node.values():
            mark_file_fields(value)
    elif isinstance(node, list):
        for value in node:
            mark_file_fields(value)


def load_or_exit(settings: Settings) -> ServiceState:
    """Loads the model and gallery, or ends the process with a one-line reason and status 2."""
    try:
        return load_state(settings)
    except StartupError as error:
        sys.stderr.write(f"reid service cannot start: {error}\n")
        raise SystemExit(2) from None


def settings_or_exit() -> Settings:
    try:
        return get_settings()
    except ValidationError as error:
        problems = "; ".join(
            f"REID_{'_'.join(str(part) for part in item['loc']).upper()}: {item['msg']}" for item in error.errors()
        )
        sys.stderr.write(f"reid service cannot start: invalid settings: {problems}\n")
        raise SystemExit(2) from None


def _build_default_app() -> FastAPI:
    settings = settings_or_exit()
    configure_logging(settings.log_level)
    return create_app(settings, load_or_exit(settings))


def __getattr__(name: str) -> FastAPI:
    # `uvicorn service.app:app` reads this attribute; building on access keeps imports free of side effects.
    if name == "app":
        application = _build_default_app()
        globals()["app"] = application
        return application
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
