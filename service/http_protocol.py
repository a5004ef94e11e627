"""uvicorn's h11 protocol with two bounds uvicorn does not have: a deadline for request headers, and a cap
on open connections. No proxy is needed for either.

- Header timeout: a connection must deliver a request's complete headers within REID_HEADER_TIMEOUT_S of
  its opening, or of the end of its previous response; otherwise it is answered 408 and closed. uvicorn's
  keep-alive timeout stops counting at the first byte of a request, so without this a client sending one
  header byte per second holds its connection forever. (The body has its own deadline,
  REID_BODY_TIMEOUT_S, in `service.middleware.RequestBodyGuardMiddleware`.)
- Connection cap: beyond REID_MAX_CONNECTIONS open connections, a new one is answered 503 and closed at
  once, so slow clients cannot exhaust file descriptors or memory. (uvicorn's --limit-concurrency answers
  503 only once a request's headers are complete, which a slow client never reaches.)

`python -m service` uses it. Launched by uvicorn, pass it by import path:
``uvicorn service.app:app --http service.http_protocol:GuardedH11Protocol`` (with ``--factory`` too); it
then reads its two settings from the REID_ environment. Hand-written because uvicorn offers neither bound
and its protocol classes are its documented extension point (``--http`` takes a class).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from service.config import get_settings

log = logging.getLogger(__name__)


def _raw_response(status: int, reason: str, code: str, message: str) -> bytes:
    body = json.dumps({"error": {"code": code, "message": message, "request_id": None}}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n")
    return head.encode("latin-1") + body


class GuardedH11Protocol(H11Protocol):
    """H11Protocol plus the header deadline and the connection cap (class attributes; None: from Settings)."""

    header_timeout_s: float | None = None
    max_connections: int | None = None

    @classmethod
    def configured(cls, header_timeout_s: float, max_connections: int) -> type[GuardedH11Protocol]:
        """A subclass with the two bounds fixed (what `python -m service` passes to uvicorn)."""
        return type(cls.__name__, (cls,), {"header_timeout_s": header_timeout_s, "max_connections": max_connections})

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if self.header_timeout_s is None or self.max_connections is None:
            settings = get_settings()
            self.header_timeout_s = settings.header_timeout_s
            self.max_connections = settings.max_connections
        self._header_deadline: asyncio.TimerHandle | None = None
        self._headers_of: object = None  # the request cycle whose headers have arrived

    # -- header deadline -----------------------------------------------------------------------------------
    def _arm_header_deadline(self) -> None:
        self._disarm_header_deadline()
        self._header_deadline = self.loop.call_later(self.header_timeout_s, self._header_deadline_passed)

    def _disarm_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _header_deadline_passed(self) -> None:
        self._header_deadline = None
        if self.transport.is_closing() or self.cycle is not self._headers_of:
            return
        log.warning("closing a connection from %s: no complete request headers within %gs",
                    f"{self.client[0]}:{self.client[1]}" if self.client else "?", self.header_timeout_s)
        self.transport.write(_raw_response(
            408, "Request Timeout", "request_timeout",
            f"The request headers did not arrive within {self.header_timeout_s:g} seconds; the connection is closed.",
        ))
        self.transport.close()

    def _note_new_request(self) -> None:
        if self.cycle is not self._headers_of:  # a new request's headers are complete
            self._headers_of = self.cycle
            self._disarm_header_deadline()

    # -- uvicorn hooks -------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            log.warning("refusing a connection: %d open, the limit is %d", len(self.connections) - 1,
                        self.max_connections)
            transport.write(_raw_response(
                503, "Service Unavailable", "busy",
                f"The service has its limit of {self.max_connections} connections open; retry shortly.",
            ))
            transport.close()
            return
        self._arm_header_deadline()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._note_new_request()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._note_new_request()  # a pipelined request may have started within
        if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
            self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_deadline()
        super().connection_lost(exc)
