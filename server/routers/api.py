"""The versioned API: every resource router under ``/v1``, behind the bearer token."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from neurocast.server.deps import require_token
from neurocast.server.routers import (
    decode,
    galleries,
    jobs,
    models,
    recordings,
    sessions,
    stream,
)
from neurocast.server.routers.common import AUTH

router = APIRouter(prefix="/v1")
for resource in (
    models.router,
    galleries.router,
    sessions.router,
    recordings.router,
    decode.router,
    jobs.router,
):
    router.include_router(resource, dependencies=[Depends(require_token)], responses=AUTH)
# a WebSocket handshake carries its token in a header or the query; the route checks it
router.include_router(stream.router)
