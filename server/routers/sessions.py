"""``/v1/sessions``: live decoding sessions (their result streams are in ``stream``)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response, status

from neurocast.server.data_root import resolve_source
from neurocast.server.deps import StateDep
from neurocast.server.exceptions import NotFound
from neurocast.server.routers.common import error
from neurocast.wire.recordings import RecordingCreate
from neurocast.wire.schemas import SessionChannels, SessionCreate, SessionList, SessionStatus

_NOT_FOUND = error(404, "No session with this id.")

router = APIRouter(prefix="/sessions", tags=["sessions"])


@router.get("", response_model=SessionList, summary="List sessions")
def list_sessions(state: StateDep) -> SessionList:
    """Every session, running or not, with its status."""
    return SessionList(sessions=state.sessions.statuses())


@router.post(
    "",
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
    source = resolve_source(state.settings.data_root, body.source)
    session = await state.sessions.create(body, source)
    if body.record:
        state.recordings.start(session.id, session.recording, RecordingCreate(), body.models)
    response.headers["Location"] = f"/v1/sessions/{session.id}"
    return session.status()


@router.get(
    "/{session_id}",
    response_model=SessionStatus,
    summary="A session's status",
    responses=_NOT_FOUND,
)
def get_session(session_id: str, state: StateDep) -> SessionStatus:
    """State, decode rate, skipped windows and latency percentiles per stage."""
    return state.sessions.get(session_id).status()


@router.get(
    "/{session_id}/channels",
    response_model=SessionChannels,
    summary="The channels of a session's stream, with sensor positions",
    responses=error(404, "No session with this id, or its source is not open yet."),
)
def get_channels(session_id: str, state: StateDep) -> SessionChannels:
    """Channel names, MNE types and positions (metres) of the stream, for sensor-layout views
    such as the dashboard's topomap."""
    channels = state.sessions.get(session_id).channels()
    if channels is None:
        raise NotFound(
            "source_not_open",
            "The session's source is not open yet; retry when its status is `running`.",
        )
    return channels


@router.delete(
    "/{session_id}",
    response_model=SessionStatus,
    summary="Stop a session",
    responses=_NOT_FOUND,
)
async def delete_session(session_id: str, state: StateDep) -> SessionStatus:
    """Stop decoding, close the source and the subscribers' connections, forget the session.

    Returns the final status. Of concurrent deletes of one session exactly one succeeds; the
    others get 404.
    """
    state.sessions.get(session_id)
    # the recording's footers are written while the session still runs
    await asyncio.to_thread(state.recordings.stop_if_recording, session_id)
    return await state.sessions.delete(session_id)
