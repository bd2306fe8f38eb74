"""Typed source specifications shared by the command line and the REST API.

A spec is plain data (``{"kind": "lsl", "name": "MyEEG"}``);
:func:`~neurocast.streaming.sources.open.open_source` turns it into an unopened source. This
module imports no source, so that every source can import its own spec.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SimulatorSpec(_Spec):
    """The embedded physics-based simulator (see :mod:`.simulator`)."""

    kind: Literal["simulator"] = "simulator"
    seed: int = Field(0, description="Random seed: the same seed gives the same stream.")
    sfreq: float = Field(1000.0, gt=0, description="Sampling rate in Hz.")
    modality: Literal["eeg", "meg", "both"] = Field("both", description="Sensors to emit.")
    info_path: str | None = Field(
        None, description="A FIF file whose real sensor geometry to use instead of the default."
    )
    realtime: bool = Field(
        True, description="Pace chunks at real speed (False: as fast as possible)."
    )
    chunk_s: float = Field(0.025, gt=0, description="Chunk length in seconds.")
    duration_s: float | None = Field(None, gt=0, description="Stop after this long (None: never).")
    subject_seed: int = Field(
        0,
        description="Seed of the simulated subject: source orientations and the fixed map from "
        "image embeddings to evoked source patterns (decoders trained on one subject_seed "
        "decode streams of any seed with the same subject_seed).",
    )
    noise_cov_path: str | None = Field(
        None,
        description="A noise covariance file (e.g. sample_audvis-cov.fif) to draw sensor noise "
        "from instead of white noise; its channel names must cover the simulated ones.",
    )
    embeddings_path: str | None = Field(
        None,
        description="An .npz file with 'embeddings' (n_images, dim) and 'ids' or 'image_ids' "
        "(n_images,) of the images shown, e.g. a gallery file (None: 100 seeded random unit "
        "embeddings, ids img000...).",
    )
    eeg_channels: list[str] | None = Field(
        None, description="10-05 electrode names for the default geometry (None: 64 of 10-10)."
    )
    classes: list[str] | None = Field(
        None, description="Classes of ongoing activity to cycle through (None: all)."
    )
    block_s: float = Field(4.0, ge=1.0, description="Mean class block length in seconds.")
    image_duration_s: float = Field(
        0.5, gt=0, le=5.0, description="How long each image is shown, in seconds."
    )


class LSLStreamSelector(_Spec):
    """Which LSL stream to open: every field given must match (at least one is required)."""

    name: str | None = Field(default=None, description='The stream\'s name, e.g. "BioSemi".')
    type: str | None = Field(default=None, description='The stream\'s content type, e.g. "EEG".')
    source_id: str | None = Field(
        default=None,
        description="The outlet's source id (survives outlet restarts; the safest choice).",
    )

    @model_validator(mode="after")
    def _needs_a_field(self) -> Self:
        if self.name is None and self.type is None and self.source_id is None:
            raise ValueError("Select the LSL stream by at least one of name, type or source_id.")
        return self


class LSLSpec(LSLStreamSelector):
    """A Lab Streaming Layer outlet, resolved by name, type or source id (see :mod:`.lsl`)."""

    kind: Literal["lsl"] = "lsl"
    merge_with: list[LSLStreamSelector] = Field(
        default_factory=list,
        description="Further streams (same sampling rate, e.g. MEG and EEG from two devices) "
        "whose channels are appended, aligned on LSL time to this stream's samples.",
    )
    marker_stream: str | None = Field(
        default=None,
        description="Name of an LSL marker stream (string or integer) to attach as events.",
    )
    resolve_timeout_s: float = Field(
        default=5.0, gt=0, description="How long to look for each stream."
    )
    buffer_s: int = Field(
        default=1,
        ge=1,
        le=360,
        description="Inlet buffer in whole seconds (LSL max_buflen): when the reader falls "
        "behind, older samples are dropped so it never decodes stale data.",
    )
    stall_after_s: float = Field(
        default=1.0,
        gt=0,
        description="Report the source as stalled after this long without samples.",
    )


class FieldTripSpec(_Spec):
    """A FieldTrip realtime buffer server (see :mod:`.fieldtrip`)."""

    kind: Literal["fieldtrip"] = "fieldtrip"
    host: str = Field("127.0.0.1", description="Address of the buffer server.")
    port: int = Field(1972, ge=1, le=65535, description="Port of the buffer server.")
    open_timeout_s: float = Field(
        10.0, gt=0, description="How long open() waits for the server and its header."
    )
    reply_timeout_s: float = Field(
        5.0, gt=0, description="How long a reply may take before the server counts as gone."
    )
    stall_after_s: float = Field(
        1.0, gt=0, description="Report the source as stalled after this long without samples."
    )


class ReplaySpec(_Spec):
    """A saved recording (anything ``mne.io.read_raw`` reads) replayed as a live stream."""

    kind: Literal["replay"] = "replay"
    path: str = Field(
        description="The recording (FIF, EDF/BDF, BrainVision, EEGLAB, FieldTrip MAT, ...)."
    )
    speed: float = Field(default=1.0, gt=0, description="1 = real time; larger is faster.")
    loop: bool = Field(
        default=False, description="Start again from the beginning at the end of the file."
    )
    chunk_s: float = Field(
        default=0.01,
        gt=0,
        le=1.0,
        description="Samples are released in chunks of this many seconds.",
    )


SourceSpec = Annotated[
    SimulatorSpec | LSLSpec | FieldTripSpec | ReplaySpec, Field(discriminator="kind")
]
