"""Pure ASGI middleware, outermost first: request context (ids, one log line per request, metrics),
API keys, admission (backpressure) and the request-body guard (size limit and upload deadline).

All of them answer before the route reads the body where they can, so a request without a key, one that
arrives while the service is saturated, or one over the size limit never costs a multipart parse.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable, Sequence

from starlette.datastructures import MutableHeaders
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.auth import KeyChecker, credentials_from_headers
from service.errors import error_body
from service.metrics import ServiceMetrics

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_METHODS_WITH_BODY = {"POST", "PUT", "PATCH"}
# After a 413, up to this much of the rest of the body is read and dropped (never stored) so that clients
# which send the whole body before reading the answer still get the 413 rather than a reset connection.
_DRAIN_LIMIT_BYTES = 64 * 1024 * 1024
# Error bodies are small JSON objects; only this much is kept to name the failure in the log line.
_ERROR_BODY_CAPTURE_BYTES = 4096
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_ADMISSION_ATTRIBUTE = "admission_controlled"


def admission_controlled(endpoint: Callable) -> Callable:
    """Marks a route's endpoint as one that takes media and feeds the embedder: `AdmissionMiddleware`
    bounds how many such requests are in progress. Put it under the ``@router.post(...)`` decorator."""
    setattr(endpoint, _ADMISSION_ATTRIBUTE, True)
    return endpoint


def admission_controlled_routes(routes: Iterable[BaseRoute]) -> list[BaseRoute]:
    """The routes among ``routes`` whose endpoint is marked with `admission_controlled`."""
    return [route for route in routes if getattr(getattr(route, "endpoint", None), _ADMISSION_ATTRIBUTE, False)]


def is_admission_controlled(routes: Sequence[BaseRoute], scope: Scope) -> bool:
    """Whether this request goes to one of ``routes`` (method and path match)."""
    return any(route.matches(scope)[0] is Match.FULL for route in routes)


def request_id_of(scope: Scope) -> str | None:
    return scope.get("state", {}).get("request_id")


def loggable(text: str, limit: int = 300) -> str:
    """Client-controlled text made safe for a one-line log record: no control characters, bounded length."""
    text = _CONTROL_CHARACTERS.sub(lambda match: f"\\x{ord(match.group()):02x}", text)
    return text if len(text) <= limit else text[:limit] + "..."


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


def _describe_error_body(body: bytes) -> str:
    """'code: message' of an error response body in the service's shape, else a short excerpt."""
    try:
        error = json.loads(body)["error"]
        return f"{error['code']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        return body[:200].decode("utf-8", "replace")


class RequestContextMiddleware:
    """Gives every request an id (a sane client X-Request-ID is kept) and returns it in the X-Request-ID
    header; records request metrics; turns an unhandled exception into a 500 in the error shape (the
    traceback goes to the log, never to the client); and logs exactly one line per request with its id.
    For a failure that line also names the error code and message (and carries the traceback of an
    unhandled exception), at WARNING for 4xx and ERROR for 5xx."""

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
        error_body_bytes = bytearray()
        capture_error_body = False
        unhandled: BaseException | None = None
        cancelled = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started, capture_error_body
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                capture_error_body = status >= 400
                MutableHeaders(scope=message).append(REQUEST_ID_HEADER, request_id)
            elif message["type"] == "http.response.body" and capture_error_body:
                room = _ERROR_BODY_CAPTURE_BYTES - len(error_body_bytes)
                error_body_bytes.extend(message.get("body", b"")[: max(room, 0)])
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as error:
            unhandled = error
            if response_started:
                raise
            await send_json_error(
                send_with_id, scope, 500, "internal_error",
                "The server failed to handle this request; it has been logged under this request id.",
            )
        except asyncio.CancelledError:
            # uvicorn cancels requests still running when the graceful-shutdown timeout ends.
            cancelled = True
            raise
        finally:
            elapsed = time.perf_counter() - started_at
            route = route_label(scope)
            # A request cancelled before any answer has no status; "cancelled" keeps it apart from real 5xx.
            status_label = "cancelled" if cancelled and not response_started else str(status)
            self.metrics.observe_request(scope["method"], route, status_label, elapsed)
            line = (f"{scope['method']} {loggable(scope['path'], 200)} {status_label} {elapsed * 1000:.1f}ms "
                    f"id={request_id}")
            if cancelled and not response_started:
                log.warning("%s failed: cancelled before an answer (shutdown timeout or server stopping)", line)
            elif unhandled is not None:
                log.error("%s failed: unhandled %s", line, type(unhandled).__name__,
                          exc_info=(type(unhandled), unhandled, unhandled.__traceback__))
            elif status >= 400:
                level = logging.ERROR if status >= 500 else logging.WARNING
                log.log(level, "%s failed: %s", line, loggable(_describe_error_body(bytes(error_body_bytes))))
            else:
                log.info("%s", line)


async def _drain(receive: Receive, already: int, limit: int) -> None:
    """Reads and drops the rest of a request body, up to ``limit`` bytes in all."""
    drained = already
    while drained < limit:
        message = await receive()
        if message["type"] != "http.request":
            return
        drained += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


class ApiKeyMiddleware:
    """Refuses every request without an accepted API key with 401, before its body is read.

    Exempt: /healthz (liveness probes carry no secrets), the docs when ``public_paths`` holds them, and the
    web page's static files (``public_prefixes``: they hold no data; the page's API calls carry the key).
    The key is never logged and is compared in constant time against every accepted key (`KeyChecker`).
    """

    def __init__(self, app: ASGIApp, checker: KeyChecker, public_paths: frozenset[str],
                 public_prefixes: tuple[str, ...] = ()):
        self.app = app
        self.checker = checker
        self.public_paths = public_paths
        self.public_prefixes = public_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (scope["type"] != "http" or not self.checker.enabled or path in self.public_paths
                or path.startswith(self.public_prefixes)):
            await self.app(scope, receive, send)
            return
        message = self.checker.check(credentials_from_headers(scope.get("headers", [])))
        if message is None:
            await self.app(scope, receive, send)
            return
        await send_json_error(send, scope, 401, "unauthorized", message, {"WWW-Authenticate": "Bearer"})


class AdmissionMiddleware:
    """Backpressure: at most ``max_concurrent`` enroll/query requests (those to ``routes``, the routes
    marked `admission_controlled`) in progress at once, and none admitted while the embedding
    queue is full. Others get 503 with Retry-After at once, before their body is read, instead of piling
    up uploads in memory behind the embedder."""

    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute], max_concurrent: int,
                 embed_queue_is_full: Callable[[], bool], retry_after_s: int = 1):
        self.app = app
        self.routes = routes
        self.max_concurrent = max_concurrent
        self.embed_queue_is_full = embed_queue_is_full
        self.retry_after_s = retry_after_s
        self.in_progress = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_admission_controlled(self.routes, scope):
            await self.app(scope, receive, send)
            return
        if self.in_progress >= self.max_concurrent:
            reason = f"The service is handling its limit of {self.max_concurrent} uploads at once; retry shortly."
        elif self.embed_queue_is_full():
            reason = "The embedding queue is full; retry shortly."
        else:
            # One event loop thread: the check above and this increment cannot interleave with another request.
            self.in_progress += 1
            try:
                await self.app(scope, receive, send)
            finally:
                self.in_progress -= 1
            return
        await send_json_error(send, scope, 503, "busy", reason, {"Retry-After": str(self.retry_after_s)})


class RequestBodyGuardMiddleware:
    """Bounds every request body in size (413) and in time (408).

    Size: a declared Content-Length over ``max_bytes`` is refused before the app runs; otherwise the body
    is counted chunk by chunk and, once past the limit, reading stops (the app's parser sees an error) and
    whatever the app answers is replaced by the 413. Nothing over the limit is ever buffered.

    Time: the whole body must arrive within ``timeout_s`` of the request's start. A client that trickles
    (one byte per second, or stalls) gets 408 and ``Connection: close``, so the server drops the
    connection instead of holding a worker and a buffer for it.

    ``route_limits`` gives some routes, keyed by (method, path), their own (max_bytes, timeout_s): footage
    uploads are gigabytes streamed to disk, not tracklets held in memory.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float,
                 route_limits: dict[tuple[str, str], tuple[int, float]] | None = None):
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.route_limits = route_limits or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _METHODS_WITH_BODY:
            await self.app(scope, receive, send)
            return
        max_bytes, timeout_s = self.route_limits.get(
            (scope["method"], scope["path"].rstrip("/") or "/"), (self.max_bytes, self.timeout_s)
        )
        too_large_message = f"The upload is larger than the limit of {max_bytes} bytes."
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            await send_json_error(send, scope, 413, "upload_too_large", too_large_message)
            await _drain(receive, 0, _DRAIN_LIMIT_BYTES)
            return

        deadline = asyncio.get_running_loop().time() + timeout_s
        received = 0
        rejected: str | None = None  # "size" or "time" once the body is refused
        body_complete = False
        replacement_sent = False

        async def guarded_receive() -> Message:
            nonlocal received, rejected, body_complete
            if rejected is not None:
                raise _BodyRefused
            if body_complete:
                return await receive()  # after the body: waiting for a disconnect has no deadline
            remaining = deadline - asyncio.get_running_loop().time()
            try:
                # asyncio.wait_for rather than asyncio.timeout_at: the service supports Python 3.10.
                message = await asyncio.wait_for(receive(), timeout=max(remaining, 0.0))
            except asyncio.TimeoutError:
                rejected = "time"
                raise _BodyRefused from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_complete = not message.get("more_body", False)
                if received > max_bytes:
                    rejected = "size"
                    raise _BodyRefused
            return message

        async def send_replacement() -> None:
            nonlocal replacement_sent
            replacement_sent = True
            if rejected == "size":
                await send_json_error(send, scope, 413, "upload_too_large", too_large_message)
            else:
                await send_json_error(
                    send, scope, 408, "request_timeout",
                    f"The request body did not arrive within {timeout_s:g} seconds; the connection is closed.",
                    {"Connection": "close"},
                )

        async def guarded_send(message: Message) -> None:
            if rejected is None:
                await send(message)
            elif not replacement_sent:
                await send_replacement()

        try:
            await self.app(scope, guarded_receive, guarded_send)
        except Exception:
            if rejected is None:
                raise
        if rejected is not None:
            if not replacement_sent:
                await send_replacement()
            if rejected == "size" and not body_complete:
                await _drain(receive, received, _DRAIN_LIMIT_BYTES)


class _BodyRefused(Exception):
    """Raised inside the app's body reading once the body is over the size limit or past its deadline."""
