"""What the routers share: the token-protected router and the documented error responses."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from neurocast.server.deps import require_token
from neurocast.server.schemas import ErrorResponse

Responses = dict[int | str, dict[str, Any]]


def error(status_code: int, description: str) -> Responses:
    """An error response documented with the :class:`ErrorResponse` model."""
    return {status_code: {"model": ErrorResponse, "description": description}}


AUTH: Responses = error(401, "Missing or wrong bearer token.")


def protected_router(tag: str) -> APIRouter:
    """A router whose every route needs the bearer token and documents the 401 answer.

    Parameters
    ----------
    tag : str
        The OpenAPI tag grouping the router's routes.

    Returns
    -------
    router : APIRouter
        Routes added to it refuse a request without ``Authorization: Bearer <token>``.
    """
    return APIRouter(tags=[tag], dependencies=[Depends(require_token)], responses=AUTH)
