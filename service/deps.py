"""FastAPI dependencies, declared once as Annotated aliases for the routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from service.auth import KeyChecker, credentials_from_headers
from service.errors import InvalidRequestError, NotReadyError, UnauthorizedError
from service.gallery import Gallery
from service.state import ServiceState

bearer_scheme = HTTPBearer(
    auto_error=False, description="An accepted API key as a bearer token (needed when REID_API_KEY is set)."
)
api_key_header_scheme = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="An accepted API key (alternative to the bearer token)."
)


def get_state(request: Request) -> ServiceState:
    state = getattr(request.app.state, "service", None)
    if state is None:
        raise NotReadyError("The service is still loading its model and gallery.", headers={"Retry-After": "1"})
    return state


def get_gallery(state: Annotated[ServiceState, Depends(get_state)]) -> Gallery:
    return state.gallery


def reject_repeated_query_parameters(request: Request) -> None:
    """Every query parameter of this API takes one value; a repeated one is refused, not half-read."""
    for name in set(request.query_params.keys()):
        count = len(request.query_params.getlist(name))
        if count > 1:
            raise InvalidRequestError(f"The query parameter '{name}' is given {count} times; give it once.")


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
    refusal = checker.check(credentials_from_headers(request.scope.get("headers", [])))
    if refusal is not None:
        raise UnauthorizedError(refusal)


StateDep = Annotated[ServiceState, Depends(get_state)]
GalleryDep = Annotated[Gallery, Depends(get_gallery)]
APIKeyDep = Depends(require_api_key)
SingleValuedQueryDep = Depends(reject_repeated_query_parameters)
