"""The FastAPI application: ``create_app(settings)`` builds one service instance."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from pydantic import TypeAdapter

from neurocast.server.body_limit import BodySizeLimit
from neurocast.server.config import Settings
from neurocast.server.data_root import resolve_source
from neurocast.server.deps import AppState, require_token
from neurocast.server.errors import install_error_handlers
from neurocast.server.jobs import ClusterJob, JobManager
from neurocast.server.logs import redact_logs
from neurocast.server.metrics import Metrics
from neurocast.server.recordings import RecordingManager
from neurocast.server.registry import ModelRegistry
from neurocast.server.routers import api, health
from neurocast.server.sessions import SessionManager
from neurocast.server.store import StateStore
from neurocast.wire.schemas import ServerMessage, Subscribe

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).with_name("static")


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
    settings = settings or Settings()
    settings.export_cache_dir()
    registry = registry or ModelRegistry.discover(
        settings.models_dir, packaged=settings.packaged_models, threads=settings.threads
    )
    manager: SessionManager

    redact_logs(settings.effective_token)
    store = StateStore(settings.state_dir)
    metrics = Metrics(lambda: manager.statuses())
    manager = SessionManager(settings, registry, metrics, store)
    jobs = JobManager(
        settings.job_workers,
        settings.max_jobs,
        registry,
        metrics,
        store,
        max_queued=settings.max_queued_jobs,
        cluster=ClusterJob(settings.models_dir) if settings.ray else None,
    )
    recordings = RecordingManager(settings.state_dir)
    state = AppState(settings, registry, metrics, manager, jobs, recordings)

    app = FastAPI(
        title="neurocast",
        summary="Real-time MEG/EEG decoding: live sessions over WebSocket, batch jobs over REST.",
        version="1",
        lifespan=_lifespan(state),
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.neurocast = state
    app.add_middleware(BodySizeLimit, max_upload_bytes=settings.max_upload_bytes)
    if settings.cors_origins:  # outermost, so that refusals carry the CORS headers too
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    install_error_handlers(app, settings.max_upload_bytes)
    app.include_router(health.router)
    app.include_router(api.router)
    app.mount("/dashboard", StaticFiles(directory=STATIC_DIR, html=True), name="dashboard")

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/dashboard/")

    app.openapi = lambda: _openapi_with_stream_messages(app)  # type: ignore[method-assign]
    _install_docs(app, settings)
    return app


def _lifespan(state: AppState) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """The app's lifespan: restore sessions on startup, stop everything on shutdown."""
    settings, manager = state.settings, state.sessions

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.token_generated:
            # the token itself never goes to a log; neurocast serve prints it on the terminal
            logger.warning("No NEUROCAST_TOKEN set; a token was generated for this run")
        if settings.restore_sessions:
            await manager.restore(lambda spec: resolve_source(settings.data_root, spec))
        yield
        # footers first, while the sessions still feed the recorders
        await asyncio.to_thread(state.recordings.shutdown)
        await manager.shutdown()
        await asyncio.to_thread(state.jobs.shutdown)

    return lifespan


def _install_docs(app: FastAPI, settings: Settings) -> None:
    """Serve ``/openapi.json``, ``/docs`` and ``/redoc`` as ``settings.docs`` says.

    ``auth``: they need the token whenever the API does (the schema maps every route, which
    is for clients, not for whoever finds the port); ``public``: open; ``off``: not served.
    """
    if settings.docs == "off":
        return
    guard = [Depends(require_token)] if settings.docs == "auth" else []

    @app.get("/openapi.json", include_in_schema=False, dependencies=guard)
    def openapi_document() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=guard)
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} API")

    @app.get("/redoc", include_in_schema=False, dependencies=guard)
    def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url="/openapi.json", title=f"{app.title} API")


def _openapi_with_stream_messages(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document, plus the WebSocket messages (OpenAPI cannot describe the socket).

    ``Subscribe`` is what a client sends on ``/v1/sessions/{session_id}/stream``;
    ``ServerMessage`` is every JSON message the server sends there (binary frames are
    described in :mod:`neurocast.wire.frames`).
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
