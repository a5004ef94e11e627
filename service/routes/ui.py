"""The web page: static files from service/ui at /ui (no build step, nothing fetched from elsewhere), and
GET / sending browsers there. The files need no API key (they hold no data); every API call the page
makes does. Left out of the OpenAPI schema: these are not API operations."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import RedirectResponse
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

UI_DIR = Path(__file__).resolve().parent.parent / "ui"
#: Paths served without an API key.
PUBLIC_PATHS = frozenset({"/", "/ui"})
PUBLIC_PREFIX = "/ui/"
# The page loads only its own files; images come from the API as blobs.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)

router = APIRouter(include_in_schema=False)


@router.get("/")
async def root() -> RedirectResponse:
    return RedirectResponse("/ui/", status_code=307)


@router.get("/ui")
async def ui_without_slash() -> RedirectResponse:
    return RedirectResponse("/ui/", status_code=307)


class PageFiles(StaticFiles):
    """service/ui with index.html at /ui/, revalidated on each load (an upgrade shows at once) and a strict
    Content-Security-Policy."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
                            (b"cache-control", b"no-cache"), (b"x-content-type-options", b"nosniff")]  # fmt: skip
                message = {**message, "headers": headers}
            await send(message)

        await super().__call__(scope, receive, send_with_headers)


def page_files() -> PageFiles:
    return PageFiles(directory=UI_DIR, html=True)
