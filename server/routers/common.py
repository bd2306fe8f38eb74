"""What the routers share: the documented error responses."""

from __future__ import annotations

from typing import Any

from neurocast.wire.schemas import ErrorResponse

Responses = dict[int | str, dict[str, Any]]


def error(status_code: int, description: str) -> Responses:
    """An error response documented with the :class:`ErrorResponse` model."""
    return {status_code: {"model": ErrorResponse, "description": description}}


AUTH: Responses = error(401, "Missing or wrong bearer token.")
