"""``/v1/sessions``: live decoding sessions and their WebSocket result streams."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from fastapi import APIRouter, Response, WebSocket, WebSocketDisconnect, status
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from neurocast.server.deps import StateDep, token_ok, websocket_token, ws_state
from neurocast.server.hub import Hub, Outgoing, Subscriber
from neurocast.server.routers.common import error, protected_router
from neurocast.server.schemas import (
    ErrorMessage,
    ErrorResponse,
    SessionCreate,
    SessionList,
    SessionStatus,
    StatusMessage,
    Subscribe,
    Subscribed,
)

logger = logging.getLogger(__name__)

_NOT_FOUND = error(404, "No session with this id.")
SUBSCRIBE_TIMEOUT_S = 30.0

router = protected_router("sessions")
ws_router = APIRouter()


@router.get("/v1/sessions", response_model=SessionList, summary="List sessions")
def list_sessions(state: StateDep) -> SessionList:
    """Every session, running or not, with its status."""
    return SessionList(sessions=state.sessions.statuses())


@router.post(
    "/v1/sessions",
    response_model=SessionStatus,
    status_code=status.HTTP_201_CREATED,
    summary="Start a session",
    responses={
        201: {
            "description": "Created. The server waited up to `session_open_wait_s` for the "
            "source: `status` is `running`, still `starting`, or `failed` with `error` "
            "saying why (e.g. an LSL stream that cannot be found)."
        },
        **error(403, "A file path outside the data root."),
        **error(404, "A file path that does not exist."),
        422: {"description": "Invalid request or unknown model id."},
        **error(429, "Too many sessions."),
    },
)
async def create_session(body: SessionCreate, state: StateDep, response: Response) -> SessionStatus:
    """Open a source and decode it with the given models, every ``stride_s`` seconds."""
    session = await state.sessions.create(body)
    response.headers["Location"] = f"/v1/sessions/{session.id}"
    return session.status()


@router.get(
    "/v1/sessions/{session_id}",
    response_model=SessionStatus,
    summary="A session's status",
    responses=_NOT_FOUND,
)
def get_session(session_id: str, state: StateDep) -> SessionStatus:
    """State, decode rate, skipped windows and latency percentiles per stage."""
    return state.sessions.get(session_id).status()


@router.delete(
    "/v1/sessions/{session_id}",
    response_model=SessionStatus,
    summary="Stop a session",
    responses=_NOT_FOUND,
)
async def delete_session(session_id: str, state: StateDep) -> SessionStatus:
    """Stop decoding, close the source and the subscribers' connections, forget the session.

    Returns the final status. Of concurrent deletes of one session exactly one succeeds; the
    others get 404.
    """
    return await state.sessions.delete(session_id)


async def _deny(websocket: WebSocket, status_code: int, code: str, detail: str) -> None:
    """Refuse the handshake with an HTTP error carrying an :class:`ErrorResponse` body."""
    problem = ErrorResponse(code=code, detail=detail)
    try:
        await websocket.send_denial_response(
            JSONResponse(problem.model_dump(), status_code=status_code)
        )
    except RuntimeError:  # the server lacks the denial extension: a policy close instead
        await websocket.close(code=1008, reason=detail[:120])


@ws_router.websocket("/v1/sessions/{session_id}/stream")
async def stream(websocket: WebSocket, session_id: str) -> None:
    """Stream a session's results (see the README for the protocol and binary frames).

    Authenticate with ``Authorization: Bearer <token>`` or ``?token=<token>``. Send a
    ``subscribe`` message first; the server answers ``subscribed`` and then sends the chosen
    outputs as they come, ``dropped`` when this client's queue overflowed, ``status``
    periodically, and closes with code 1000 when the session is deleted.
    """
    state = ws_state(websocket)
    if not token_ok(state.settings, websocket_token(websocket)):
        await _deny(
            websocket,
            status.HTTP_401_UNAUTHORIZED,
            "unauthorized",
            "Missing or wrong token: send 'Authorization: Bearer <token>' or ?token=<token>.",
        )
        return
    session = state.sessions.sessions.get(session_id)
    if session is None:
        await _deny(
            websocket,
            status.HTTP_404_NOT_FOUND,
            "unknown_session",
            f"No session with id {session_id!r}; list them with GET /v1/sessions.",
        )
        return
    await websocket.accept()
    hub = session.hub
    try:
        first = await asyncio.wait_for(_receive_subscribe(websocket), SUBSCRIBE_TIMEOUT_S)
    except TimeoutError:
        await _close_with_error(websocket, "subscribe_timeout", "Send a subscribe message first.")
        return
    except WebSocketDisconnect:
        return
    if isinstance(first, ErrorMessage):
        await _close_with_error(websocket, first.code, first.detail)
        return
    if hub.closed:
        await websocket.send_text(StatusMessage(session=session.status()).model_dump_json())
        await websocket.close(code=1000)
        return
    sub = hub.add(first)
    _acknowledge(hub, sub, session.simulated)
    if sub.wants("status"):
        sub.offer(Outgoing(StatusMessage(session=session.status()).model_dump_json()))
    pump = asyncio.create_task(hub.pump(websocket, sub))
    listen = asyncio.create_task(_listen(websocket, hub, sub, session.simulated))
    try:
        await asyncio.wait({pump, listen}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        hub.remove(sub)
        for task in (pump, listen):
            task.cancel()
        for task in (pump, listen):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def _receive_subscribe(websocket: WebSocket) -> Subscribe | ErrorMessage:
    message = await websocket.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    return _parse(message.get("text"))


def _parse(text: str | None) -> Subscribe | ErrorMessage:
    if text is None:
        return ErrorMessage(
            code="bad_message", detail="Send subscribe messages as JSON text, not binary."
        )
    try:
        return Subscribe.model_validate_json(text)
    except ValidationError as exc:
        errors = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'message'}: {e['msg']}" for e in exc.errors()
        )
        return ErrorMessage(
            code="bad_message",
            detail=f"Not a valid subscribe message ({errors}). Expected e.g. "
            '{"type": "subscribe", "outputs": ["probabilities", "status"], "decimate": 1}.',
        )


def _acknowledge(hub: Hub, sub: Subscriber, simulated: bool) -> None:
    req = sub.subscription
    ack = Subscribed(
        session_id=hub.session_id,
        outputs=req.outputs,
        decimate=req.decimate,
        models=req.models or [],
        queue_size=sub.maxsize,
        simulated=simulated,
    )
    sub.offer(Outgoing(ack.model_dump_json()))


async def _listen(websocket: WebSocket, hub: Hub, sub: Subscriber, simulated: bool) -> None:
    """Apply re-subscriptions; a bad message gets an error message, not a disconnect."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        parsed = _parse(message.get("text"))
        if isinstance(parsed, ErrorMessage):
            sub.offer(Outgoing(parsed.model_dump_json()))
        else:
            sub.update(parsed)
            _acknowledge(hub, sub, simulated)


async def _close_with_error(websocket: WebSocket, code: str, detail: str) -> None:
    """Send an error message, then close with 1008 (policy violation)."""
    with contextlib.suppress(Exception):  # the client may already be gone
        await websocket.send_text(ErrorMessage(code=code, detail=detail).model_dump_json())
        await websocket.close(code=1008)
