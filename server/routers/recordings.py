"""Session recordings: ``/v1/sessions/{id}/recording`` and ``/v1/recordings``."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Body, status
from fastapi.responses import FileResponse

from neurocast.server.deps import StateDep
from neurocast.server.routers.common import error
from neurocast.wire.recordings import RecordingCreate, RecordingList, RecordingStatus

router = APIRouter(tags=["recordings"])


@router.post(
    "/sessions/{session_id}/recording",
    response_model=RecordingStatus,
    status_code=status.HTTP_201_CREATED,
    summary="Start recording a session",
    responses={
        **error(404, "No session with this id."),
        **error(409, "The session is being recorded already."),
        **error(422, "The recording file cannot be created."),
    },
)
def start_recording(
    session_id: str, state: StateDep, body: Annotated[RecordingCreate | None, Body()] = None
) -> RecordingStatus:
    """Record the session's raw stream, markers and decoded outputs to an XDF file."""
    session = state.sessions.get(session_id)
    options = body or RecordingCreate()
    return state.recordings.start(session.id, session.recording, options, session.request.models)


@router.delete(
    "/sessions/{session_id}/recording",
    response_model=RecordingStatus,
    summary="Stop recording a session",
    responses=error(404, "No session with this id, or it is not being recorded."),
)
async def stop_recording(session_id: str, state: StateDep) -> RecordingStatus:
    """Stop the recording: the footers are written and the file is closed."""
    state.sessions.get(session_id)
    return await asyncio.to_thread(state.recordings.stop, session_id)


@router.get("/recordings", response_model=RecordingList, summary="List recordings")
def list_recordings(state: StateDep) -> RecordingList:
    """Every recording kept by this server (also those of earlier runs)."""
    return RecordingList(recordings=state.recordings.statuses())


@router.get(
    "/recordings/{recording_id}",
    response_class=FileResponse,
    summary="Download a recording",
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "The XDF file."},
        **error(404, "No recording with this id."),
    },
)
def download_recording(recording_id: str, state: StateDep) -> FileResponse:
    """The XDF file (a recording still running is readable up to its last flush)."""
    path = state.recordings.file(recording_id)
    return FileResponse(path, media_type="application/octet-stream", filename=path.name)


@router.get(
    "/recordings/{recording_id}/status",
    response_model=RecordingStatus,
    summary="A recording's status",
    responses=error(404, "No recording with this id."),
)
def recording_status(recording_id: str, state: StateDep) -> RecordingStatus:
    """State, size and how much of it is safely on disk."""
    return state.recordings.status(recording_id)
