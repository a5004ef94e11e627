"""Request framing checks at the ASGI level, so they hold however the service is launched.

- A request carrying both Content-Length and Transfer-Encoding is refused with 400 and its connection
  closed (RFC 9112 section 6.1): a proxy in front may frame the body by one header and this server by the
  other, which is how a second request is smuggled inside the first one's body. ``Connection: close`` on
  the answer makes uvicorn close the connection after it, so nothing after the body is ever read as a
  request. A proxy in front should refuse such requests as well.
- A multipart/form-data body that ends without its closing boundary is refused with 400: the multipart
  parser would otherwise drop the unfinished last part silently and the upload would be stored short.
"""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.middleware import send_json_error

_BOUNDARY = re.compile(rb"""boundary=(?:"([^"]{1,200})"|([^\s;,"]{1,200}))""", re.IGNORECASE)


def _headers(scope: Scope, name: bytes) -> list[bytes]:
    return [value for key, value in scope.get("headers", []) if key.lower() == name]


class _TruncatedMultipart(Exception):
    """Raised into the app's body reading when the body ended before its closing boundary."""


class FramingMiddleware:
    """Refuses ambiguous framing (Content-Length with Transfer-Encoding) and truncated multipart bodies."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if _headers(scope, b"transfer-encoding") and _headers(scope, b"content-length"):
            await send_json_error(
                send, scope, 400, "bad_request",
                "The request has both Content-Length and Transfer-Encoding; such a request is refused and its "
                "connection closed (RFC 9112, section 6.1).",
                {"Connection": "close"},
            )
            return
        content_type = b"".join(_headers(scope, b"content-type"))
        match = _BOUNDARY.search(content_type) if content_type.lower().startswith(b"multipart/") else None
        if match is None:
            await self.app(scope, receive, send)
            return
        await self._checked_multipart(scope, receive, send, b"--" + (match.group(1) or match.group(2)) + b"--")

    async def _checked_multipart(self, scope: Scope, receive: Receive, send: Send, closing: bytes) -> None:
        # The close delimiter counts only where the parser sees one: at a line start (after CRLF, or as the
        # body's first bytes). The same bytes inside a part's data are data.
        seen_closing = False
        tail = b"\r\n"  # so a body that starts with the close delimiter matches too
        truncated = False
        replaced = False
        delimiter = b"\r\n" + closing

        async def checked_receive() -> Message:
            nonlocal seen_closing, tail, truncated
            message = await receive()
            if message["type"] != "http.request" or seen_closing:
                return message
            window = tail + message.get("body", b"")
            seen_closing = delimiter in window
            tail = window[-(len(delimiter) - 1):]
            if not message.get("more_body", False) and not seen_closing:
                truncated = True
                raise _TruncatedMultipart
            return message

        async def refuse() -> None:
            nonlocal replaced
            replaced = True
            await send_json_error(
                send, scope, 400, "bad_request",
                "The multipart body ends without its closing boundary: the upload is truncated.",
            )

        async def checked_send(message: Message) -> None:
            if not truncated:
                await send(message)
            elif not replaced:
                await refuse()

        try:
            await self.app(scope, checked_receive, checked_send)
        except _TruncatedMultipart:
            pass
        except Exception:
            if not truncated:
                raise
        if truncated and not replaced:
            await refuse()
