"""``GET /health`` (always open) and ``GET /metrics`` (Prometheus text format)."""

from __future__ import annotations

import time
from importlib.metadata import PackageNotFoundError, version

from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST

from neurocast.server.deps import StateDep, require_token
from neurocast.server.routers.common import AUTH
from neurocast.wire.schemas import Health

router = APIRouter(tags=["health"])


def _version() -> str:
    try:
        return version("neurocast")
    except PackageNotFoundError:
        return "unknown"


@router.get("/health", response_model=Health, summary="Liveness; needs no token")
def health(state: StateDep) -> Health:
    """Report that the process is up, with counts of sessions and models."""
    return Health(
        version=_version(),
        uptime_s=time.monotonic() - state.started_at,
        sessions=len(state.sessions),
        models=len(state.registry.ids()),
        auth=state.settings.effective_token is not None,
    )


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    dependencies=[Depends(require_token)],
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
        **AUTH,
    },
)
def metrics(state: StateDep) -> Response:
    """Decode rate, stage latencies, skipped windows and queue drops per session and model."""
    return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
