"""The FastAPI application: ``create_app(settings)`` builds one service instance."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from pydantic import TypeAdapter
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from neurocast.server.config import Settings
from neurocast.server.deps import AppState
from neurocast.server.errors import ApiError
from neurocast.server.jobs import JobManager
from neurocast.server.metrics import Metrics
from neurocast.server.registry import ModelRegistry
from neurocast.server.routers import decode, health, models, sessions
from neurocast.server.schemas import ServerMessage, Subscribe
from neurocast.server.sessions import SessionManager

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).with_name("static")

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


def create_app(settings: Settings | None = None, registry: ModelRegistry | None = None) -> FastAPI:
    """Build the service.

    Parameters
    ----------
    settings : Settings | None
        Configuration (default: from ``NEUROCAST_*`` environment variables).
    registry : ModelRegistry | None
        The models to offer (default: found in ``settings.models_dir`` and the package).

    Returns
    -------
    app : FastAPI
        Ready to run under uvicorn; sessions and jobs stop when it shuts down.
    """
    settings = settings or Settings.from_env()
    registry = registry or ModelRegistry.from_settings(settings)
    manager: SessionManager

    metrics = Metrics(lambda: manager.statuses())
    manager = SessionManager(settings, registry, metrics)
    jobs = JobManager(settings.job_workers, settings.max_jobs, metrics)
    state = AppState(settings, registry, metrics, manager, jobs)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.token_generated:
            logger.warning(
                "No NEUROCAST_TOKEN set; this run's token is %s", settings.effective_token
            )
        yield
        await manager.shutdown()
        await asyncio.to_thread(jobs.shutdown)

    app = FastAPI(
        title="neurocast",
        summary="Real-time MEG/EEG decoding: live sessions over WebSocket, batch jobs over REST.",
        version="1",
        lifespan=lifespan,
    )
    app.state.neurocast = state
    app.add_middleware(_BodySizeLimit, settings=settings)
    if settings.cors_origins:  # outermost, so that refusals carry the CORS headers too
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    _install_error_handlers(app, settings)
    for router in (health.router, models.router, sessions.router, decode.router):
        app.include_router(router)
    app.include_router(sessions.ws_router)
    app.mount("/dashboard", StaticFiles(directory=STATIC_DIR, html=True), name="dashboard")

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/dashboard/")

    app.openapi = lambda: _openapi_with_stream_messages(app)  # type: ignore[method-assign]
    return app


def _openapi_with_stream_messages(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document, plus the WebSocket messages (OpenAPI cannot describe the socket).

    ``Subscribe`` is what a client sends on ``/v1/sessions/{session_id}/stream``;
    ``ServerMessage`` is every JSON message the server sends there (binary frames are
    described in :mod:`neurocast.server.frames`).
    """
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, summary=app.summary, routes=app.routes
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        template = "#/components/schemas/{model}"
        for name, adapter in (
            ("Subscribe", TypeAdapter(Subscribe)),
            ("ServerMessage", TypeAdapter(ServerMessage)),
        ):
            definition = adapter.json_schema(ref_template=template)
            components.update(definition.pop("$defs", {}))
            components[name] = definition
        app.openapi_schema = schema
    return app.openapi_schema


def _too_large(settings: Settings) -> str:
    mib = settings.max_upload_bytes / 1024**2
    return (
        f"The request body exceeds this server's limit of {mib:.0f} MiB; decode the file by "
        f"path under the data root instead, or raise NEUROCAST_MAX_UPLOAD_MB."
    )


class _BodyTooLarge(StarletteHTTPException):
    def __init__(self) -> None:
        super().__init__(status.HTTP_413_CONTENT_TOO_LARGE)


class _BodySizeLimit:
    """Refuse request bodies above the upload limit, without reading more than the limit.

    A declared Content-Length above the limit is refused at once; a body without one
    (chunked) is counted as it streams in and cut off when it passes the limit.
    """

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.limit = settings.max_upload_bytes
        self.detail = _too_large(settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = Headers(scope=scope).get("content-length", "")
        if length.isdigit() and int(length) > self.limit:
            await self._refuse(scope, receive, send)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if started:
                raise
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = JSONResponse(
            {"code": "upload_too_large", "detail": self.detail},
            status_code=status.HTTP_413_CONTENT_TOO_LARGE,
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)


def _install_error_handlers(app: FastAPI, settings: Settings) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
        return JSONResponse(
            {"code": exc.code, "detail": exc.detail}, status_code=exc.status_code, headers=headers
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        detail = str(exc.detail)
        if exc.status_code == status.HTTP_413_CONTENT_TOO_LARGE:
            detail = _too_large(settings)
        elif exc.status_code == status.HTTP_404_NOT_FOUND and detail == "Not Found":
            detail = f"No route {request.url.path}; see /docs for the API."
        return JSONResponse(
            {"code": code, "detail": detail},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )
