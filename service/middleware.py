"""Pure ASGI middleware: request ids, one log line and metrics per request, and the upload size limit."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import error_body
from service.metrics import ServiceMetrics

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_METHODS_WITH_BODY = {"POST", "PUT", "PATCH"}
# After a 413, up to this much of the rest of the body is read and dropped (never stored) so that clients
# which send the whole body before reading the answer still get the 413 rather than a reset connection.
_DRAIN_LIMIT_BYTES = 64 * 1024 * 1024


def request_id_of(scope: Scope) -> str | None:
    return scope.get("state", {}).get("request_id")


async def send_json_error(
    send: Send, scope: Scope, status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> None:
    """Sends a complete JSON error response in the service's one error shape."""
    request_id = request_id_of(scope)
    body = json.dumps(error_body(code, message, request_id)).encode()
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    for name, value in (headers or {}).items():
        raw_headers.append((name.lower().encode(), value.encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def route_label(scope: Scope) -> str:
    """The matched route's template (bounded label set for metrics), or 'unmatched'."""
    route = scope.get("route")
    return getattr(route, "path", None) or "unmatched"


class RequestContextMiddleware:
    """Gives every request an id (a sane client X-Request-ID is kept), returns it in the X-Request-ID
    header, logs one line per request, records request metrics, and turns an unhandled exception into a
    500 in the error shape (the traceback goes to the log, never to the client)."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        supplied = _header(scope, b"x-request-id")
        request_id = supplied if supplied and _SANE_REQUEST_ID.match(supplied) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        started_at = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                MutableHeaders(scope=message).append(REQUEST_ID_HEADER, request_id)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error in %s %s (request %s)", scope["method"], scope["path"], request_id)
            if response_started:
                raise
            await send_json_error(
                send_with_id, scope, 500, "internal_error",
                "The server failed to handle this request; it has been logged under this request id.",
            )
        finally:
            elapsed = time.perf_counter() - started_at
            route = route_label(scope)
            self.metrics.requests.inc(method=scope["method"], route=route, status=str(status))
            self.metrics.request_seconds.observe(elapsed, method=scope["method"], route=route)
            log.info("%s %s %d %.1fms id=%s", scope["method"], scope["path"], status, elapsed * 1000, request_id)


class UploadLimitMiddleware:
    """Rejects request bodies over ``max_bytes`` with 413, counting while the body streams in.

    A declared Content-Length over the limit is refused before the app runs. Otherwise the body is
    counted chunk by chunk; once past the limit, reading stops (the app's parser sees an error) and
    whatever the app answers is replaced by the 413. Nothing over the limit is ever buffered.
    """

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    def _message(self) -> str:
        return f"The upload is larger than the limit of {self.max_bytes} bytes."

    async def _drain(self, receive: Receive, already: int) -> None:
        drained = already
        while drained < _DRAIN_LIMIT_BYTES:
            message = await receive()
            if message["type"] != "http.request":
                return
            drained += len(message.get("body", b""))
            if not message.get("more_body", False):
                return

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _METHODS_WITH_BODY:
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await send_json_error(send, scope, 413, "upload_too_large", self._message())
            await self._drain(receive, 0)
            return

        received = 0
        exceeded = False
        body_complete = False
        replacement_sent = False

        async def counting_receive() -> Message:
            nonlocal received, exceeded, body_complete
            if exceeded:
                raise _UploadTooLarge
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_complete = not message.get("more_body", False)
                if received > self.max_bytes:
                    exceeded = True
                    raise _UploadTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal replacement_sent
            if not exceeded:
                await send(message)
            elif not replacement_sent:
                replacement_sent = True
                await send_json_error(send, scope, 413, "upload_too_large", self._message())

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not exceeded:
                raise
        if exceeded:
            if not replacement_sent:
                replacement_sent = True
                await send_json_error(send, scope, 413, "upload_too_large", self._message())
            if not body_complete:
                await self._drain(receive, received)


class _UploadTooLarge(Exception):
    """Raised inside the app's body reading once the limit is passed."""
