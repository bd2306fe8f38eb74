"""Shared state of the app and the dependencies routers use (state lookup, bearer auth)."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request, WebSocket, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from neurocast.server.config import Settings
from neurocast.server.errors import ApiError
from neurocast.server.jobs import JobManager
from neurocast.server.metrics import Metrics
from neurocast.server.recordings import RecordingManager
from neurocast.server.registry import ModelRegistry
from neurocast.server.sessions import SessionManager


@dataclass
class AppState:
    """Everything a request handler may need, created once per app."""

    settings: Settings
    registry: ModelRegistry
    metrics: Metrics
    sessions: SessionManager
    jobs: JobManager
    recordings: RecordingManager
    started_at: float = field(default_factory=time.monotonic)


def get_state(request: Request) -> AppState:
    """The app's shared state (REST handlers)."""
    state: AppState = request.app.state.neurocast
    return state


def ws_state(websocket: WebSocket) -> AppState:
    """The app's shared state (WebSocket handlers)."""
    state: AppState = websocket.app.state.neurocast
    return state


_bearer = HTTPBearer(auto_error=False, description="The service token (NEUROCAST_TOKEN).")


def token_ok(settings: Settings, token: str | None) -> bool:
    """True when auth is off or ``token`` matches the configured one (constant time)."""
    expected = settings.effective_token
    if expected is None:
        return True
    return token is not None and secrets.compare_digest(token.encode(), expected.encode())


def require_token(
    state: Annotated[AppState, Depends(get_state)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Refuse a request without the right ``Authorization: Bearer <token>`` header (401)."""
    token = credentials.credentials if credentials is not None else None
    if not token_ok(state.settings, token):
        raise ApiError(
            status.HTTP_401_UNAUTHORIZED,
            "unauthorized",
            "Missing or wrong bearer token: send 'Authorization: Bearer <token>' with the "
            "token the server was started with (NEUROCAST_TOKEN).",
        )


def websocket_token(websocket: WebSocket) -> str | None:
    """The token a WebSocket client sent: ``Authorization: Bearer`` header or ``?token=``.

    Browsers cannot set headers on WebSocket connections, hence the query parameter.
    """
    header = websocket.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value:
        return value.strip()
    return websocket.query_params.get("token")


StateDep = Annotated[AppState, Depends(get_state)]
