"""Errors the service reports to clients, as plain exceptions usable without FastAPI.

Each carries an HTTP status, a stable machine-readable ``code`` and a human sentence; the handlers in
`service.handlers` turn them into the one JSON error shape
``{"error": {"code": ..., "message": ..., "request_id": ...}}``.
"""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """Base of every error a client can cause or should be told about."""

    status_code: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.headers = headers or {}


class InvalidRequestError(ServiceError):
    """A field is missing, combined wrongly or malformed (not the media itself)."""

    status_code = 422
    code = "invalid_request"


class InvalidMediaError(ServiceError):
    """The upload is not a tracklet OpenCV can decode."""

    status_code = 422
    code = "invalid_media"


class UnsafeArchiveError(InvalidMediaError):
    """An archive entry would escape its folder, or is a link or device file."""

    code = "unsafe_archive_entry"


class LimitExceededError(ServiceError):
    """The upload is over one of the configured size limits."""

    status_code = 413
    code = "limit_exceeded"


class UnauthorizedError(ServiceError):
    status_code = 401
    code = "unauthorized"

    def __init__(self, message: str):
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class NotFoundError(ServiceError):
    status_code = 404
    code = "not_found"


class ConflictError(ServiceError):
    status_code = 409
    code = "conflict"


class ServiceBusyError(ServiceError):
    """The embedder's queue is full; the client should retry shortly."""

    status_code = 503
    code = "busy"

    def __init__(self, message: str, retry_after_s: int = 1):
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class StorageFullError(ServiceError):
    """The gallery's disk is full: nothing was stored; the client may retry once space is freed."""

    status_code = 507
    code = "storage_full"


class StorageUnavailableError(ServiceError):
    """The gallery cannot be written or read right now (read-only or failing disk, database busy)."""

    status_code = 503
    code = "storage_unavailable"

    def __init__(self, message: str, retry_after_s: int = 5):
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class NotReadyError(ServiceError):
    """The model or gallery is not loaded yet."""

    status_code = 503
    code = "not_ready"


class StartupError(Exception):
    """The service cannot start; the message is the one line shown to the operator."""


def error_body(code: str, message: str, request_id: str | None) -> dict[str, Any]:
    """The JSON body of every 4xx/5xx response."""
    return {"error": {"code": code, "message": message, "request_id": request_id}}
