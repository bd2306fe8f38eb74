"""Typed source specifications shared by the command line and the REST API.

A spec is plain data (``{"kind": "lsl", "name": "MyEEG"}``); :func:`open_source` turns it into
an unopened :class:`~neurocast.streaming.source.Source`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from .source import Source


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SimulatorSpec(_Spec):
    """The embedded physics-based simulator (see :mod:`.simulate`)."""

    kind: Literal["simulator"] = "simulator"
    seed: int = Field(0, description="Random seed: the same seed gives the same stream.")
    sfreq: float = Field(1000.0, gt=0, description="Sampling rate in Hz.")
    modality: Literal["eeg", "meg", "both"] = Field("both", description="Sensors to emit.")
    info_path: str | None = Field(
        None, description="A FIF file whose real sensor geometry to use instead of the default."
    )
    realtime: bool = Field(True, description="Pace chunks at real speed (False: as fast as possible).")
    chunk_s: float = Field(0.025, gt=0, description="Chunk length in seconds.")
    duration_s: float | None = Field(None, gt=0, description="Stop after this long (None: never).")


class LSLSpec(_Spec):
    """A Lab Streaming Layer outlet, resolved by name, type or source id."""

    kind: Literal["lsl"] = "lsl"
    name: str | None = None
    type: str | None = None
    source_id: str | None = None
    marker_stream: str | None = Field(None, description="Name of an LSL marker stream to attach.")
    resolve_timeout_s: float = Field(5.0, gt=0)


class FieldTripSpec(_Spec):
    """A FieldTrip realtime buffer server."""

    kind: Literal["fieldtrip"] = "fieldtrip"
    host: str = "127.0.0.1"
    port: int = Field(1972, ge=1, le=65535)


class ReplaySpec(_Spec):
    """A saved recording (anything ``mne.io.read_raw`` reads) replayed as a live stream."""

    kind: Literal["replay"] = "replay"
    path: str
    speed: float = Field(1.0, gt=0, description="1 = real time; larger is faster.")
    loop: bool = False


SourceSpec = Annotated[
    SimulatorSpec | LSLSpec | FieldTripSpec | ReplaySpec, Field(discriminator="kind")
]


def open_source(spec: SourceSpec) -> Source:
    """Build the (unopened) source a spec describes."""
    if isinstance(spec, SimulatorSpec):
        from .simulate import SimulatorSource

        return SimulatorSource(spec)
    if isinstance(spec, LSLSpec):
        from .lsl import LSLSource

        return LSLSource(spec)
    if isinstance(spec, FieldTripSpec):
        from .fieldtrip import FieldTripSource

        return FieldTripSource(spec)
    from .replay import ReplaySource

    return ReplaySource(spec)
