"""Wire schemas of session recordings (``/v1/sessions/{id}/recording``, ``/v1/recordings``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from neurocast.streaming.engine.results import ResultKind

RecordingState = Literal["recording", "stopped", "failed"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RecordingCreate(_Model):
    """What a session's recording holds."""

    raw: bool = Field(
        True,
        description="Record the raw stream (original timestamps, channel metadata) and "
        "its markers.",
    )
    outputs: list[ResultKind] | None = Field(
        None,
        description="Result kinds to record, one irregular stream per model and kind; "
        "null records every kind.",
    )


class RecordingStatus(_Model):
    """A recording: where it stands and how much of it is safely on disk."""

    id: str
    session_id: str
    state: RecordingState = Field(
        description="`recording`, `stopped` (footers written) or `failed` (see `reason`; the "
        "file is readable up to the last flush)."
    )
    reason: str | None = Field(None, description="Why it failed or ended early.")
    started_at: float = Field(description="Start time, Unix seconds.")
    stopped_at: float | None = Field(None, description="Stop time, Unix seconds.")
    raw: bool
    outputs: list[ResultKind] | None
    bytes_written: int = Field(description="Bytes in the file so far.")
    n_samples: int = Field(description="Raw samples handed to the recorder.")
    n_samples_durable: int = Field(description="Raw samples flushed to disk (survive a crash).")
    n_results: int = Field(description="Decoded results handed to the recorder.")
    download: str = Field(description="Where to GET the XDF file.")


class RecordingList(_Model):
    """Every recording kept by this server."""

    recordings: list[RecordingStatus]
