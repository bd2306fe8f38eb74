"""``/v1/sessions/{session_id}/stream``: a session's results over WebSocket."""

from __future__ import annotations

import asyncio
import contextlib

from fastapi import APIRouter, WebSocket, WebSocketDisconnect, status
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from neurocast.server.deps import token_ok, websocket_token, ws_state
from neurocast.server.errors import service_status
from neurocast.server.exceptions import NotFound
from neurocast.server.hub import Hub, Outgoing, Subscriber
from neurocast.wire.schemas import (
    ErrorMessage,
    ErrorResponse,
    StatusMessage,
    Subscribe,
    Subscribed,
)

router = APIRouter()


async def _deny(websocket: WebSocket, status_code: int, code: str, detail: str) -> None:
    """Refuse the handshake with an HTTP error carrying an :class:`ErrorResponse` body."""
    problem = ErrorResponse(code=code, detail=detail)
    try:
        await websocket.send_denial_response(
            JSONResponse(problem.model_dump(), status_code=status_code)
        )
    except RuntimeError:  # the server lacks the denial extension: a policy close instead
        await websocket.close(code=1008, reason=detail[:120])


@router.websocket("/sessions/{session_id}/stream")
async def stream(websocket: WebSocket, session_id: str) -> None:
    """Stream a session's results (see the README for the protocol and binary frames).

    Authenticate with ``Authorization: Bearer <token>`` or ``?token=<token>``. Send a
    ``subscribe`` message first; the server answers ``subscribed`` and then sends the chosen
    outputs as they come, ``dropped`` when this client's queue overflowed, ``status``
    periodically. Close codes: 1000 when the session is deleted and 1012 when the server
    shuts down (both after a last ``status``), 1008 for a bad first message, no subscription
    within ``NEUROCAST_WS_SUBSCRIBE_TIMEOUT_S``, or a client that accepted nothing for
    ``NEUROCAST_WS_IDLE_TIMEOUT_S``.
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
    try:
        session = state.sessions.get(session_id)
    except NotFound as exc:
        await _deny(websocket, service_status(exc), exc.code, exc.detail)
        return
    await websocket.accept()
    hub = session.hub
    try:
        first = await asyncio.wait_for(
            _receive_subscribe(websocket), state.settings.ws_subscribe_timeout_s
        )
    except TimeoutError:
        await _close_with_error(
            websocket,
            "subscribe_timeout",
            f"No subscribe message within {state.settings.ws_subscribe_timeout_s:g} s; send "
            '{"type": "subscribe", "outputs": [...]} first.',
        )
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
    await _serve(websocket, hub, sub, session.simulated)


async def _serve(websocket: WebSocket, hub: Hub, sub: Subscriber, simulated: bool) -> None:
    """Send the subscriber's queue and apply its re-subscriptions until either side ends."""
    pump = asyncio.create_task(hub.pump(websocket, sub))
    listen = asyncio.create_task(_listen(websocket, hub, sub, simulated))
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
