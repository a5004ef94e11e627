"""Exception handlers: every error a route or FastAPI raises becomes the one JSON error shape."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from service.errors import ServiceError, error_body

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "upload_too_large",
    415: "unsupported_media_type",
}


def _request_id(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path (Starlette's own 405 names only the first route's).

    Each method is tried against the routes through their public ``matches``: FastAPI wraps included
    routers in objects that expose no ``methods`` of their own, so reading that attribute would find none.
    """
    allowed = []
    for method in _METHODS:
        probe = {**request.scope, "method": method}
        if any(route.matches(probe)[0] == Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return allowed


def _describe_validation_error(error: dict) -> str:
    location = [str(part) for part in error.get("loc", ()) if part not in ("body", "query", "path", "header")]
    field = ".".join(location) or "request"
    return f"{field}: {error.get('msg', 'invalid value')}"


async def service_error_handler(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, ServiceError)
    return JSONResponse(
        error_body(error.code, error.message, _request_id(request)),
        status_code=error.status_code,
        headers=error.headers,
    )


async def validation_error_handler(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    # Messages name the field and the rule; the rejected values are not echoed (they can be whole files).
    problems = "; ".join(_describe_validation_error(item) for item in error.errors()[:5])
    return JSONResponse(
        error_body("invalid_request", f"The request has invalid fields: {problems}.", _request_id(request)),
        status_code=422,
    )


async def http_error_handler(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)
    status = error.status_code
    headers = dict(getattr(error, "headers", None) or {})
    if status == 404 and error.detail == "Not Found":
        message = f"No endpoint at {request.method} {request.url.path}."
    elif status == 405:
        methods = allowed_methods(request)
        headers["Allow"] = ", ".join(methods)
        message = f"{request.method} is not allowed on {request.url.path}; allowed: {', '.join(methods)}."
    elif status == 400 and str(error.detail).startswith("Too many files"):
        # The multipart parser stops at REID_MAX_FRAMES (+ the other file fields) files: a frame-count limit.
        settings = request.app.state.settings
        return JSONResponse(
            error_body("too_many_frames", f"The upload has more files than the limit of {settings.max_frames} "
                       "frames per tracklet.", _request_id(request)),
            status_code=413,
        )
    elif status == 400 and "parsing the body" in str(error.detail):
        message = (
            "The request body could not be parsed as multipart/form-data "
            "(malformed, too many parts, or a text field over the size limit)."
        )
    else:
        message = str(error.detail)
    return JSONResponse(
        error_body(_HTTP_CODES.get(status, "http_error"), message, _request_id(request)),
        status_code=status,
        headers=headers or None,
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, service_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
