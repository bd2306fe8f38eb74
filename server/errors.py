"""Every error response of the service: ``{"code": ..., "detail": ...}`` with its HTTP status.

The managers raise :class:`~neurocast.server.exceptions.ServiceError` subclasses, which know
nothing of HTTP; the HTTP layer (authentication, request checks) raises :class:`ApiError`. One
handler turns both into responses, with the status of each service error class in
:data:`SERVICE_STATUS`; errors of the framework itself (unknown route, wrong method, body too
large) get the same body shape.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from neurocast.server.exceptions import (
    Busy,
    InvalidInput,
    LimitReached,
    NotFound,
    NotReady,
    ServiceError,
)

#: The HTTP status of each kind of service error.
SERVICE_STATUS: dict[type[ServiceError], int] = {
    NotFound: status.HTTP_404_NOT_FOUND,
    InvalidInput: status.HTTP_422_UNPROCESSABLE_CONTENT,
    LimitReached: status.HTTP_429_TOO_MANY_REQUESTS,
    NotReady: status.HTTP_409_CONFLICT,
}

# codes of the errors the framework raises on its own
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "upload_too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    429: "too_many_requests",
}


#: The most of a rejected value a validation error copies back (its JSON text, in characters).
MAX_ECHO_CHARS = 200


class ApiError(Exception):
    """An error of the HTTP layer, with its status, a stable code and what to do.

    Parameters
    ----------
    status_code : int
        HTTP status of the response.
    code : str
        Machine-readable error code (``ErrorResponse.code``).
    detail : str
        What went wrong and what to do about it.
    """

    def __init__(self, status_code: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.code = code
        self.detail = detail


def service_status(exc: ServiceError) -> int:
    """The HTTP status of a service error (its closest mapped base class)."""
    for cls in type(exc).__mro__:
        if cls in SERVICE_STATUS:
            return SERVICE_STATUS[cls]
    return status.HTTP_500_INTERNAL_SERVER_ERROR


def too_large_detail(max_upload_bytes: int) -> str:
    """The detail of a 413: the limit, and how to get around it."""
    mib = max_upload_bytes / 1024**2
    return (
        f"The request body exceeds this server's limit of {mib:.0f} MiB; decode the file by "
        f"path under the data root instead, or raise NEUROCAST_MAX_UPLOAD_MB."
    )


def error_response(
    status_code: int, code: str, detail: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The :class:`~neurocast.wire.schemas.ErrorResponse` body with its status."""
    if status_code == status.HTTP_401_UNAUTHORIZED:
        headers = {**(headers or {}), "WWW-Authenticate": "Bearer"}
    return JSONResponse({"code": code, "detail": detail}, status_code=status_code, headers=headers)


def install_error_handlers(app: FastAPI, max_upload_bytes: int) -> None:
    """Answer service, HTTP-layer and framework errors with an ``ErrorResponse`` body."""

    async def handled(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, Busy):
            headers = {"Retry-After": str(exc.retry_after_s)}
            return error_response(service_status(exc), exc.code, exc.detail, headers)
        if isinstance(exc, ServiceError):
            return error_response(service_status(exc), exc.code, exc.detail)
        assert isinstance(exc, ApiError)
        return error_response(exc.status_code, exc.code, exc.detail)

    app.add_exception_handler(ServiceError, handled)
    app.add_exception_handler(ApiError, handled)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own handler copies every rejected value back, a multi-megabyte body whole
        errors = [_bounded(e) for e in jsonable_encoder(exc.errors())]
        return JSONResponse({"detail": errors}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)

    @app.exception_handler(StarletteHTTPException)
    async def framework_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = str(exc.detail)
        if exc.status_code == status.HTTP_413_CONTENT_TOO_LARGE:
            detail = too_large_detail(max_upload_bytes)
        elif exc.status_code == status.HTTP_404_NOT_FOUND and detail == "Not Found":
            detail = f"No route {request.url.path}; see /docs for the API."
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, detail, getattr(exc, "headers", None))


def _bounded(error: dict[str, Any]) -> dict[str, Any]:
    """A validation error whose ``input`` (and each ``ctx`` value) holds at most
    :data:`MAX_ECHO_CHARS` characters of JSON."""
    out = dict(error)
    if "input" in out:
        out["input"] = _clip(out["input"])
    if isinstance(out.get("ctx"), dict):
        out["ctx"] = {k: _clip(v) for k, v in out["ctx"].items()}
    return out


def _clip(value: Any) -> Any:
    text = json.dumps(value, default=str)
    if len(text) <= MAX_ECHO_CHARS:
        return value
    return f"{text[:MAX_ECHO_CHARS]}... ({len(text)} characters in all)"
