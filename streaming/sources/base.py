"""What every source (simulator, LSL inlet, FieldTrip buffer, file replay) gives the pipeline.

A source is opened, then read chunk by chunk from one acquisition thread, then closed. It
describes its stream with :class:`StreamInfo` (an MNE ``Info`` plus where it came from) and
delivers :class:`Chunk` objects: samples × channels, one source-clock timestamp per sample, the
local time of receipt, and any markers that arrived with them.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypeVar, _ProtocolMeta, runtime_checkable

import mne
import numpy as np
from numpy.typing import NDArray

SourceStatus = Literal["starting", "running", "stalled", "stopped", "failed"]

#: Opens ``info["description"]`` of every simulated recording and names every simulated
#: stream; a replayed recording whose description starts with it is flagged simulated.
SIMULATED_TAG = "SIMULATED"

T = TypeVar("T")


def local_clock() -> float:
    """Local monotonic time in seconds.

    On Linux this is the same clock as ``pylsl.local_clock()`` (both read CLOCK_MONOTONIC), so
    LSL timestamps corrected with ``time_correction()`` compare with it directly.
    """
    return time.monotonic()


@dataclass(frozen=True)
class Marker:
    """An event on the source clock (stimulus onset, class label, image id, ...).

    Attributes
    ----------
    timestamp : float
        Source-clock time in seconds.
    value : str
        The marker text, e.g. ``"image/42"`` or ``"class/speech"``.
    """

    timestamp: float
    value: str


@dataclass(frozen=True)
class Chunk:
    """Samples read from a source in one go.

    Attributes
    ----------
    data : ndarray, shape (n_samples, n_channels)
        Samples in sample-major order, in SI units (volts, tesla, tesla/metre).
    timestamps : ndarray, shape (n_samples,)
        Source-clock time of each sample in seconds.
    receipt_time : float
        :func:`local_clock` when the chunk was received.
    clock_offset : float
        Add to a source timestamp to get :func:`local_clock` time (LSL's ``time_correction``;
        0 when the source already stamps with the local clock).
    markers : list of Marker
        Events that arrived with (or since) the previous chunk.
    """

    data: NDArray[np.floating]
    timestamps: NDArray[np.float64]
    receipt_time: float
    clock_offset: float = 0.0
    markers: list[Marker] = field(default_factory=list)


@dataclass(frozen=True)
class StreamInfo:
    """Metadata of a stream: its MNE ``Info`` (channels, types, rate, positions) and origin.

    Attributes
    ----------
    name : str
        Human-readable stream name.
    info : mne.Info
        Channel names, types, sampling rate in Hz and, when known, sensor positions.
    simulated : bool
        True for the simulator and anything replayed from a simulated recording. Every output
        derived from a simulated stream says so.
    source_id : str
        Identifier stable across reconnections (LSL source id, FieldTrip host:port, file path).
    """

    name: str
    info: mne.Info
    simulated: bool = False
    source_id: str = ""

    @property
    def ch_names(self) -> list[str]:
        """Channel names, in the order of the data columns."""
        return list(self.info["ch_names"])

    @property
    def sfreq(self) -> float:
        """Nominal sampling rate in Hz."""
        return float(self.info["sfreq"])

    @property
    def n_channels(self) -> int:
        """Number of channels."""
        return len(self.info["ch_names"])


class SourceError(RuntimeError):
    """A source cannot be opened or has failed; the message says why and what to do."""


def require_open(state: T | None, source: str) -> T:
    """Return state that a source fills in when it is opened, or say that it is not open.

    Parameters
    ----------
    state : object | None
        The state (stream description, reader, ...); None until ``open()`` has run.
    source : str
        What kind of source it is, for the message (e.g. ``"LSL"``).

    Returns
    -------
    state : object
        ``state`` itself.

    Raises
    ------
    SourceError
        If ``state`` is None.
    """
    if state is None:
        raise SourceError(f"The {source} source is not open yet; call open() first.")
    return state


_ABSENT = object()


class _StaticProtocolMeta(_ProtocolMeta):
    """Runtime protocol checks that look members up without running them.

    Python 3.11 checks each member with ``hasattr``, which runs properties: ``stream_info`` of
    a source that is not open raises SourceError, so ``isinstance`` would raise instead of
    answering. Looking members up statically is what Python 3.12 and later do.
    """

    def __instancecheck__(cls, instance: object) -> bool:
        members = (name for name in vars(cls) if not name.startswith("_"))
        return all(inspect.getattr_static(instance, m, _ABSENT) is not _ABSENT for m in members)


@runtime_checkable
class Source(Protocol, metaclass=_StaticProtocolMeta):
    """The contract between a source and the acquisition thread.

    ``open()`` connects and fills ``stream_info``; ``read(timeout)`` returns the next chunk or
    None if nothing arrived within ``timeout`` seconds; ``close()`` releases everything and is
    safe to call twice. ``status`` is ``"stalled"`` while a live source is waiting for its
    device to come back (a source reconnects by itself when it can).
    """

    @property
    def stream_info(self) -> StreamInfo: ...

    @property
    def status(self) -> SourceStatus: ...

    def open(self) -> StreamInfo: ...

    def read(self, timeout: float) -> Chunk | None: ...

    def close(self) -> None: ...
