"""The FastAPI application: ``create_app(settings)`` builds one service instance."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles
from pydantic import TypeAdapter

from neurocast.server.body_limit import BodySizeLimit
from neurocast.server.config import Settings
from neurocast.server.deps import AppState
from neurocast.server.errors import install_error_handlers
from neurocast.server.jobs import JobManager
from neurocast.server.metrics import Metrics
from neurocast.server.registry import ModelRegistry
from neurocast.server.routers import api, health
from neurocast.server.sessions import SessionManager
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

    metrics = Metrics(lambda: manager.statuses())
    manager = SessionManager(settings, registry, metrics)
    jobs = JobManager(settings.job_workers, settings.max_jobs, registry, metrics)
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
    return app


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
