"""FastAPI dependencies, declared once as Annotated aliases for the routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from service.auth import KeyChecker, api_key_from_headers
from service.config import Settings
from service.errors import NotReadyError, UnauthorizedError
from service.gallery import GalleryStore
from service.state import ServiceState

bearer_scheme = HTTPBearer(
    auto_error=False, description="An accepted API key as a bearer token (needed when REID_API_KEY is set)."
)
api_key_header_scheme = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="An accepted API key (alternative to the bearer token)."
)


def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_state(request: Request) -> ServiceState:
    state = getattr(request.app.state, "service", None)
    if state is None:
        raise NotReadyError("The service is still loading its model and gallery.", headers={"Retry-After": "1"})
    return state


def get_gallery(state: Annotated[ServiceState, Depends(get_state)]) -> GalleryStore:
    return state.gallery


def require_api_key(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    header_key: Annotated[str | None, Depends(api_key_header_scheme)],
) -> None:
    """Passes when authentication is off or the request carries one of the accepted keys.

    `service.middleware.ApiKeyMiddleware` already refused such requests before their body was read; this
    dependency declares the schemes in the OpenAPI schema and checks again, so a route is never open by
    a middleware ordering mistake. ``bearer`` and ``header_key`` are only there for the schema.
    """
    checker: KeyChecker = request.app.state.key_checker
    if not checker.enabled:
        return
    supplied = api_key_from_headers(request.scope.get("headers", []))
    if supplied is None:
        raise UnauthorizedError("This endpoint needs an API key: send 'Authorization: Bearer <key>' or 'X-API-Key'.")
    if not checker.accepts(supplied):
        raise UnauthorizedError("The API key is not valid.")


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
StateDep = Annotated[ServiceState, Depends(get_state)]
GalleryDep = Annotated[GalleryStore, Depends(get_gallery)]
APIKeyDep = Depends(require_api_key)
