"""Pydantic models of every request, response and WebSocket message of the service.

They define the OpenAPI schema and are shared with the Python client, so this module imports
nothing beyond pydantic, the source specs and the vocabularies the streaming engine defines
(result kinds, session states).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeAlias, get_args

from pydantic import BaseModel, ConfigDict, Field

from neurocast.streaming.engine.results import ResultKind
from neurocast.streaming.sources.base import SourceStatus
from neurocast.streaming.sources.specs import SourceSpec

# a session's state is its source's state, as the decode loop reports it
SessionState: TypeAlias = SourceStatus
JobState = Literal["queued", "running", "done", "failed", "cancelled"]
FINISHED_JOB_STATES: tuple[JobState, ...] = ("done", "failed", "cancelled")
OutputName: TypeAlias = ResultKind | Literal["events", "status"]
ResultFormat = Literal["json", "npz", "parquet"]
# the raw-signal output is opt-in: it is the heaviest and only displays need it
ALL_OUTPUTS: tuple[OutputName, ...] = (
    *(k for k in get_args(ResultKind) if k != "signal"),
    "events",
    "status",
)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorResponse(_Model):
    """Every non-validation error: a machine-readable code and a sentence saying what to do."""

    code: str = Field(description="Stable error code, e.g. `unknown_model`, `unauthorized`.")
    detail: str = Field(description="What went wrong and what to do about it.")


# ---------------------------------------------------------------------------------------------
# models


class ModelInput(_Model):
    """What a model expects of the stream."""

    ch_names: list[str] = Field(description="Channels the model reads, in its order.")
    sfreq_hz: float | None = Field(None, description="Sampling rate the model runs at, in Hz.")
    window_s: float = Field(description="Window length in seconds.")
    context_s: float = Field(0.0, description="Extra history before the window, in seconds.")


class ModelInfo(_Model):
    """An installed model artifact."""

    id: str = Field(description="Identifier to use in sessions and batch jobs.")
    name: str
    version: str
    task: str = Field(description="`classification`, `retrieval`, `translation` or `embedding`.")
    kind: ResultKind = Field(description="Kind of result each window produces.")
    input: ModelInput
    packaged: bool = Field(description="True for models shipped with the package.")
    simulated_training: bool | None = Field(
        None, description="True when the model was trained on simulated data only."
    )
    gallery: str | None = Field(None, description="Retrieval: the gallery searched.")
    sha256: str | None = Field(None, description="Content hash of the graph and weights.")
    provider: str | None = Field(
        None,
        description="ONNX Runtime execution provider in use (CUDA or CPU); null until the "
        "model is first loaded by a session or job.",
    )
    metadata: dict[str, Any] = Field(
        default_factory=dict, description="The artifact's full metadata."
    )


class ModelList(_Model):
    """All installed models."""

    models: list[ModelInfo]


# ---------------------------------------------------------------------------------------------
# sessions


class SessionCreate(_Model):
    """Start decoding a source with some models."""

    source: SourceSpec = Field(description="Where the stream comes from.")
    models: list[str] = Field(min_length=1, max_length=8, description="Model ids to run.")
    stride_s: float = Field(
        0.025, ge=0.005, le=10.0, description="Time between window ends, in seconds."
    )
    max_lag_ms: float = Field(
        250.0,
        gt=0,
        le=20_000.0,
        description="Latency budget in milliseconds: every due window is decoded, in order, "
        "unless it waited longer than this beyond its delivery by the device (then it is "
        "skipped and counted in `skipped_by_reason.over_budget`). Chunked delivery (LSL "
        "chunks, 1 s FieldTrip blocks) never causes skips; a decoder that cannot keep up does.",
    )
    name: str | None = Field(None, max_length=200, description="A label for humans.")
    record: bool = Field(
        False,
        description="Record the session from its start (raw stream, markers and every "
        "output) to XDF; see `POST /v1/sessions/{id}/recording`.",
    )


class Percentiles(_Model):
    """Latency percentiles of one stage, in milliseconds."""

    p50_ms: float
    p99_ms: float


class StreamSummary(_Model):
    """The stream a session decodes."""

    name: str
    source_id: str
    n_channels: int
    sfreq_hz: float
    simulated: bool


class ChannelModel(_Model):
    """One channel of a session's stream."""

    name: str
    type: str = Field(description="MNE channel type: `mag`, `grad`, `eeg`, `stim`, ...")
    pos_m: list[float] | None = Field(
        None,
        description="Sensor position (x, y, z) in metres, in the stream's own frame (head "
        "frame for EEG, device frame for MEG); None when the stream does not say.",
    )


class SessionChannels(_Model):
    """The channels of a session's stream, with their positions (for sensor-layout views)."""

    session_id: str
    sfreq_hz: float
    simulated: bool
    channels: list[ChannelModel]


class SessionStatus(_Model):
    """State and figures of a session."""

    id: str
    name: str | None
    status: SessionState = Field(
        description="`starting` (opening the source), `running`, `stalled` (source silent), "
        "`stopped` (deleted or source ended) or `failed` (see `error`)."
    )
    error: str | None = Field(None, description="Why the session failed, when it did.")
    source: SourceSpec
    models: list[str]
    simulated: bool = Field(description="True when the stream comes from the simulator.")
    stream: StreamSummary | None = Field(None, description="Known once the source is open.")
    created_at: float = Field(description="Creation time, Unix seconds.")
    stride_s: float
    max_lag_ms: float = Field(250.0, description="The session's latency budget, milliseconds.")
    n_decoded: int = Field(description="Windows decoded so far.")
    n_skipped: int = Field(
        description="Windows skipped because decoding could not keep up (older than the "
        "latency budget)."
    )
    skipped_by_reason: dict[str, int] = Field(
        default_factory=dict, description="`n_skipped` by reason (`over_budget`)."
    )
    clock_ahead_ms: float = Field(
        0.0,
        description="How far the source clock (after LSL's clock correction) runs ahead of the "
        "server's over the recent windows, in milliseconds; 0 when it does not. Results then "
        "carry the `clock_ahead` issue and a negative acquisition latency.",
    )
    decode_rate_hz: float = Field(description="Windows decoded per second since start.")
    latency: dict[str, Percentiles] = Field(
        default_factory=dict,
        description="Per stage (`acquisition`, `preprocessing`, `inference`, `delivery`, "
        "`total`) and `end_to_end` (from the window's last sample, source clock corrected by "
        "the clock offset, to the message being written to a WebSocket): p50 and p99 in "
        "milliseconds over the recent windows. Acquisition (and end to end) are negative "
        "when the source clock runs ahead.",
    )
    subscribers: int = Field(description="WebSocket clients connected now.")
    dropped_messages: int = Field(description="Messages dropped for slow clients so far.")


class SessionList(_Model):
    """All sessions."""

    sessions: list[SessionStatus]


# ---------------------------------------------------------------------------------------------
# WebSocket messages


class Subscribe(_Model):
    """Client → server: choose what to receive (may be sent again to change it)."""

    type: Literal["subscribe"] = "subscribe"
    outputs: list[OutputName] = Field(
        default_factory=lambda: list(ALL_OUTPUTS),
        description="Result kinds, `events` and `status` (default all of these); `signal` "
        "(opt-in) adds the incoming stream, resampled to 150 Hz and band-passed 1-40 Hz as the "
        "translators' input is, as binary frames of kind `signal`.",
    )
    decimate: int = Field(1, ge=1, le=10_000, description="Send every n-th result per model.")
    models: list[str] | None = Field(None, description="Only these models (default all).")


class LatencyModel(_Model):
    """Time spent in each stage for one window, in milliseconds."""

    acquisition_ms: float
    preprocessing_ms: float
    inference_ms: float
    delivery_ms: float = 0.0


class EventModel(_Model):
    """A marker on the source clock."""

    timestamp: float = Field(description="Source-clock time in seconds.")
    value: str


class ResultRecord(_Model):
    """One model's output for one window (batch results and the body of result messages)."""

    kind: ResultKind
    model: str
    window_end: int = Field(description="Exclusive sample index of the window end.")
    t_window_end: float = Field(description="Source-clock time of the last sample, seconds.")
    valid: bool
    issues: list[str]
    skipped: int
    simulated: bool
    latency: LatencyModel
    markers: list[EventModel]
    payload: dict[str, Any] = Field(
        description="Kind-specific: `classes`+`probabilities`; `topk` of {image_id, label, "
        "score, thumbnail_url}; `embedding`; for translation in JSON, `ch_names`, "
        "`sfreq_hz` and `signal` (channels × samples)."
    )


class Subscribed(_Model):
    """Server → client: the subscription in force."""

    type: Literal["subscribed"] = "subscribed"
    session_id: str
    outputs: list[OutputName]
    decimate: int
    models: list[str]
    queue_size: int = Field(description="Messages buffered for this client before dropping.")
    simulated: bool
    frame_format: Literal["NCF1"] = "NCF1"


class ResultMessage(ResultRecord):
    """Server → client: a decoded window (signal payloads come as binary frames instead)."""

    type: Literal["result"] = "result"
    session_id: str
    ready_time: float = Field(description="Server monotonic clock when the result was ready, s.")


class EventsMessage(_Model):
    """Server → client: new markers from the stream."""

    type: Literal["events"] = "events"
    session_id: str
    simulated: bool
    events: list[EventModel]


class StatusMessage(_Model):
    """Server → client: the session's status (periodic and on every change)."""

    type: Literal["status"] = "status"
    session: SessionStatus


class DroppedMessage(_Model):
    """Server → client: messages were dropped because this client read too slowly."""

    type: Literal["dropped"] = "dropped"
    dropped: int = Field(description="Messages lost since the previous report.")
    total_dropped: int = Field(description="Messages lost since the client connected.")


class ErrorMessage(_Model):
    """Server → client: a bad client message or a session that ended; says what to do."""

    type: Literal["error"] = "error"
    code: str
    detail: str


ServerMessage = Annotated[
    Subscribed | ResultMessage | EventsMessage | StatusMessage | DroppedMessage | ErrorMessage,
    Field(discriminator="type"),
]


# ---------------------------------------------------------------------------------------------
# batch jobs


class JobStatus(_Model):
    """A batch decoding job."""

    id: str
    status: JobState
    progress: float = Field(ge=0, le=1, description="Fraction of windows decoded.")
    n_windows_done: int
    n_windows_total: int = Field(description="Windows in the file (an estimate until done).")
    n_results: int = Field(description="Results once done: one per model per window.")
    models: list[str]
    input: str = Field(description="The uploaded file name or the path under the data root.")
    stride_s: float
    simulated: bool
    error: str | None = None
    created_at: float = Field(description="Unix seconds.")
    finished_at: float | None = None
    windows_per_s: float | None = Field(None, description="Decoding speed once finished.")
    results: dict[ResultFormat, str] = Field(
        default_factory=dict, description="URLs of the results in each format, once done."
    )


class JobList(_Model):
    """All jobs kept."""

    jobs: list[JobStatus]


class JobResults(_Model):
    """Results of a finished job in JSON."""

    job_id: str
    simulated: bool
    results: list[ResultRecord]


# ---------------------------------------------------------------------------------------------
# health


class Health(_Model):
    """Liveness and what the process runs on."""

    status: Literal["ok"] = "ok"
    version: str
    uptime_s: float
    sessions: int
    models: int
    auth: bool = Field(description="True when requests need a bearer token.")
