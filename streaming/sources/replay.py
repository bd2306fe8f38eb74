"""Saved recordings replayed as live streams, and players that publish them.

:class:`ReplaySource` reads anything :func:`~neurocast.streaming.io.read_recording` reads
(FIF, EDF/BDF, BrainVision, EEGLAB, CTF, BTi/4D, KIT, FieldTrip MAT, ...) and releases it
chunk by chunk at real speed times ``spec.speed``, looping if asked, with the file's
annotations and stim-channel events as markers. :class:`LSLPlayer` and
:class:`FieldTripPlayer` publish such a replay as an LSL outlet (plus a marker outlet) or into
a FieldTrip buffer (``neurocast replay``).

Honest timestamps
-----------------
Sample ``i`` (counted from the start of the replay, across loops) is due at local time
``t0 + i / (sfreq * speed)``, where ``t0`` is :func:`~.base.local_clock` when the source
was opened. A chunk is released only once its last sample is due, never earlier, so no sample
is ever delivered before its time. The source clock runs at recording speed,
``timestamp = t0 + i / sfreq`` (so windows and gap checks see the file's true sampling rate),
and each chunk's ``clock_offset`` maps its last sample onto the local clock: 0 at real speed.
The players stamp every sample with its own due time on the local clock, as a live device
would; nothing is stamped ahead (MNE-LSL's ``PlayerLSL`` stamps up to a chunk ahead).
"""

from __future__ import annotations

import logging
import math
import threading
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path

import mne
import numpy as np
import pylsl
from numpy.typing import NDArray

from neurocast.streaming.io import edf_size_problem, is_simulated, read_recording
from neurocast.streaming.sources.base import (
    Chunk,
    Marker,
    SourceError,
    SourceStatus,
    StreamInfo,
    local_clock,
    require_open,
)
from neurocast.streaming.sources.fieldtrip.writer import FieldTripWriter
from neurocast.streaming.sources.lsl.channels import lsl_stream_info
from neurocast.streaming.sources.specs import ReplaySpec

logger = logging.getLogger(__name__)

_BLOCK_S = 1.0  # samples are read from the file in blocks of this many seconds
_MAX_CHUNK_S = 1.0  # a late reader catches up in chunks of at most this many seconds
OUTLET_BUFFER_S = 10
"""Seconds of samples an LSL outlet holds at most for a slow inlet."""


def open_recording(path: str | Path, verb: str = "replay") -> mne.io.BaseRaw:
    """Open a recording, with a :class:`~.base.SourceError` saying why not.

    Parameters
    ----------
    path : str | Path
        The recording.
    verb : str
        What the caller does with it (``replay``, ``decode``), for the message.

    Raises
    ------
    SourceError
        If the file is missing, MNE cannot read it, an EDF/BDF is shorter than its header
        says, or it holds no samples. The message names the file as the caller gave it (the
        service shows its clients paths relative to its data root, see
        :func:`neurocast.server.continuity.public_text`).
    """
    path = Path(path)
    name = repr(str(path))
    problem = edf_size_problem(path)
    if problem is not None:
        raise SourceError(f"Cannot {verb} {name}: MNE cannot read it as it is: {problem}.")
    try:
        with warnings.catch_warnings():
            # readers warn about file naming and odd header fields; replay does not care
            warnings.simplefilter("ignore", RuntimeWarning)
            with mne.utils.use_log_level("error"):
                raw = read_recording(path)
    except ValueError as exc:
        raise SourceError(f"Cannot {verb} {name}: {exc}") from exc
    if raw.n_times < 1:
        raise SourceError(f"Cannot {verb} {name}: the recording holds no samples.")
    return raw


def recording_events(raw: mne.io.BaseRaw) -> tuple[NDArray[np.int64], list[str]]:
    """Events of a recording: its annotations and the events of its stim channel.

    Returns
    -------
    samples : ndarray of int
        Sample index of each event, counted from the first sample of the data.
    values : list of str
        Annotation descriptions as they are; stim events as their integer code.
    """
    sfreq = raw.info["sfreq"]
    ann = raw.annotations
    pos = np.round((ann.onset - raw.first_time) * sfreq).astype(np.int64)
    values = [str(d) for d in ann.description]
    if len(mne.pick_types(raw.info, meg=False, stim=True, exclude=[])):
        try:
            with mne.utils.use_log_level("error"):
                ev = mne.find_events(raw, shortest_event=1, initial_event=True, consecutive=True)
        except ValueError as exc:  # e.g. a stim channel that does not hold events
            logger.warning("No stim events read from %s: %s", raw.filenames, exc)
        else:
            pos = np.concatenate([pos, ev[:, 0] - raw.first_samp])
            values += [str(int(v)) for v in ev[:, 2]]
    keep = (pos >= 0) & (pos < raw.n_times)
    order = np.argsort(pos[keep], kind="stable")
    kept = [v for v, k in zip(values, keep, strict=True) if k]
    return pos[keep][order], [kept[i] for i in order]


class ReplaySource:
    """A recording replayed as a live :class:`~neurocast.streaming.sources.base.Source`.

    Parameters
    ----------
    spec : ReplaySpec
        The file, the speed (1 = real time), whether to loop, and the chunk length.

    Notes
    -----
    See the module docstring for timestamps. A reader that falls behind gets the samples it
    missed in chunks of at most one second, immediately: a replay never drops samples, so
    streaming a file gives the same samples as reading it. At the end of the file (without
    ``loop``) the status becomes ``"stopped"`` and ``read`` returns None.
    """

    def __init__(self, spec: ReplaySpec) -> None:
        self.spec = spec
        self._raw: mne.io.BaseRaw | None = None
        self._info: StreamInfo | None = None
        self._status: SourceStatus = "starting"
        self.start_time = 0.0
        self._next = 0  # samples released so far
        self._block_start = 0
        self._block: NDArray[np.float64] = np.empty((0, 0))
        self._ev_pos: NDArray[np.int64] = np.empty(0, dtype=np.int64)
        self._ev_val: list[str] = []

    @property
    def stream_info(self) -> StreamInfo:
        """The recording's metadata (after :meth:`open`)."""
        return require_open(self._info, "replay")

    @property
    def status(self) -> SourceStatus:
        """``"running"`` while samples remain, ``"stopped"`` at the end or after close."""
        return self._status

    @property
    def n_released(self) -> int:
        """Samples released since the replay started."""
        return self._next

    def open(self) -> StreamInfo:
        """Read the recording's header and events, and start the replay clock.

        Raises
        ------
        SourceError
            If the file is missing or MNE cannot read it; the message names the file and why.
        """
        path = Path(self.spec.path)
        try:
            raw = open_recording(path)
            self._ev_pos, self._ev_val = recording_events(raw)
        except Exception:
            self._status = "failed"
            raise
        self._raw = raw
        self._info = StreamInfo(
            name=path.name,
            info=raw.info.copy(),
            simulated=is_simulated(raw.info),
            source_id=f"replay:{path.resolve()}",
        )
        self._next = 0
        self._block_start, self._block = 0, np.empty((0, len(raw.ch_names)))
        self.start_time = local_clock()
        self._status = "running"
        return self._info

    def rewind(self) -> None:
        """Start the replay again from the first sample, with its clock starting now."""
        require_open(self._info, "replay")
        self._next = 0
        self._status = "running"
        self.start_time = local_clock()

    def due_time(self, index: int) -> float:
        """Local-clock time in seconds at which sample ``index`` (since the start) is due."""
        return self.start_time + index / (self.stream_info.sfreq * self.spec.speed)

    def on_local_clock(self, chunk: Chunk) -> Chunk:
        """The chunk with its timestamps and markers moved onto the local clock.

        Each sample is stamped with the local time it was due (see the module docstring).
        """

        def local(t: NDArray[np.float64]) -> NDArray[np.float64]:
            return self.start_time + (t - self.start_time) / self.spec.speed

        times = local(np.array([m.timestamp for m in chunk.markers]))
        markers = [Marker(float(t), m.value) for t, m in zip(times, chunk.markers, strict=True)]
        return Chunk(chunk.data, local(chunk.timestamps), chunk.receipt_time, 0.0, markers)

    def read(self, timeout: float) -> Chunk | None:
        """The next chunk once its last sample is due, or None after ``timeout`` seconds."""
        if self._status != "running":
            if self._status == "stopped" and self._raw is not None:
                time.sleep(timeout)  # the end of the file: nothing will come
                return None
            raise SourceError(f"The replay source is {self._status}; open() it before reading.")
        assert self._raw is not None
        sfreq = self.stream_info.sfreq
        n_total = self._raw.n_times
        step = max(1, round(self.spec.chunk_s * sfreq))
        stop = self._next + step
        if not self.spec.loop:
            stop = min(stop, n_total)
        release = self.due_time(stop - 1)
        now = local_clock()
        if release > now:
            if release - now > timeout:
                time.sleep(timeout)
                return None
            while (now := local_clock()) < release:
                time.sleep(release - now)
        due = int((now - self.start_time) * sfreq * self.spec.speed) + 1  # samples due now
        stop = max(stop, min(due, self._next + max(step, round(_MAX_CHUNK_S * sfreq))))
        if not self.spec.loop:
            stop = min(stop, n_total)
        start, self._next = self._next, stop
        data = np.concatenate(
            [self._file_samples(a, a + n) for _, a, n in self._segments(start, stop)]
        )
        ts = self.start_time + np.arange(start, stop) / sfreq
        offset = self.due_time(stop - 1) - float(ts[-1])
        if not self.spec.loop and stop >= n_total:
            self._status = "stopped"
        return Chunk(data, ts, local_clock(), offset, self._markers(start, stop))

    def _segments(self, start: int, stop: int) -> Iterator[tuple[int, int, int]]:
        """Pieces ``(lap, first file sample, n_samples)`` of replay samples start..stop."""
        assert self._raw is not None
        n_total = self._raw.n_times
        i = start
        while i < stop:
            lap, a = divmod(i, n_total)
            n = min(stop - i, n_total - a)
            yield lap, a, n
            i += n

    def _file_samples(self, a: int, b: int) -> NDArray[np.float64]:
        assert self._raw is not None
        held = self._block.shape[0]
        if not (self._block_start <= a and b <= self._block_start + held):
            n = max(b - a, round(_BLOCK_S * self.stream_info.sfreq))
            end = min(self._raw.n_times, a + n)
            self._block = self._raw.get_data(start=a, stop=end).T
            self._block_start = a
        return self._block[a - self._block_start : b - self._block_start]

    def _markers(self, start: int, stop: int) -> list[Marker]:
        if not self._ev_val:
            return []
        assert self._raw is not None
        n_total, sfreq = self._raw.n_times, self.stream_info.sfreq
        out = []
        for lap, a, n in self._segments(start, stop):
            lo, hi = np.searchsorted(self._ev_pos, [a, a + n], side="left")
            for k in range(lo, hi):
                index = lap * n_total + int(self._ev_pos[k])
                out.append(Marker(self.start_time + index / sfreq, self._ev_val[k]))
        return out

    def close(self) -> None:
        """Stop the replay and release the file; safe to call twice."""
        if self._raw is not None:
            self._raw.close()
        self._status = "stopped"


class Player(ABC):
    """Publishes a recording as live streams, each sample no earlier than its time."""

    def run(
        self, stop: threading.Event | None = None, started: threading.Event | None = None
    ) -> int:
        """Replay to the end of the recording or until ``stop`` is set.

        Parameters
        ----------
        stop : threading.Event | None
            Set it to end the replay.
        started : threading.Event | None
            Set once the outlets exist and the replay clock starts.

        Returns
        -------
        n_samples : int
            Samples published.
        """
        return self._play(stop or threading.Event(), started or threading.Event())

    @abstractmethod
    def _play(self, stop: threading.Event, started: threading.Event) -> int:
        """Publish until the end or until ``stop`` is set; set ``started`` as the clock starts."""


def wait_for_inlets(
    outlets: Sequence[pylsl.StreamOutlet], stop: threading.Event, timeout_s: float = math.inf
) -> None:
    """Return once every outlet has an inlet, ``stop`` is set, or ``timeout_s`` have passed.

    A replay that starts its clock only then gives the inlets its first samples.
    """
    deadline = local_clock() + timeout_s
    for outlet in outlets:
        # short polls, so that ``stop`` and the deadline are seen promptly
        while not stop.is_set() and not outlet.wait_for_consumers(0.05):
            if local_clock() > deadline:
                return


def _due_chunks(source: ReplaySource, stop: threading.Event) -> Iterator[Chunk]:
    """The replay's chunks as they fall due, until the file ends or ``stop`` is set."""
    while not stop.is_set():
        chunk = source.read(0.1)  # short, so that ``stop`` is seen promptly
        if chunk is not None:
            yield chunk
        elif source.status == "stopped":
            return


class LSLPlayer(Player):
    """Publish a recording as a live LSL stream, with its events on a marker stream.

    Parameters
    ----------
    spec : ReplaySpec
        The file, speed, looping and chunk length.
    name : str | None
        Stream name (default: the file name without extension). The marker stream is called
        ``"<name>-markers"`` (type ``Markers``, strings).
    source_id : str | None
        LSL source id (default ``"neurocast-replay:<name>"``): a player restarted with the
        same id is picked up again by inlets that lost it.
    wait_for_consumer : bool
        Start the replay clock only once an inlet has connected, so it gets the first sample.

    Notes
    -----
    :meth:`run` raises :class:`~.base.SourceError` if the file cannot be read; with
    ``spec.loop`` it runs until ``stop`` is set.
    """

    def __init__(
        self,
        spec: ReplaySpec,
        *,
        name: str | None = None,
        source_id: str | None = None,
        wait_for_consumer: bool = False,
    ) -> None:
        self.spec = spec
        self.name = name or Path(spec.path).name.split(".")[0]
        self.source_id = source_id or f"neurocast-replay:{self.name}"
        self.wait_for_consumer = wait_for_consumer
        self.source = ReplaySource(spec)

    def _play(self, stop: threading.Event, started: threading.Event) -> int:
        stream = self.source.open()
        try:
            outlet = pylsl.StreamOutlet(
                lsl_stream_info(stream, self.name, self.source_id), max_buffered=OUTLET_BUFFER_S
            )
            markers = pylsl.StreamOutlet(
                pylsl.StreamInfo(
                    f"{self.name}-markers",
                    "Markers",
                    1,
                    pylsl.IRREGULAR_RATE,
                    "string",
                    f"{self.source_id}-markers",
                )
            )
            if self.wait_for_consumer:
                wait_for_inlets([outlet], stop)
            self.source.rewind()
            started.set()
            for chunk in _due_chunks(self.source, stop):
                local = self.source.on_local_clock(chunk)
                outlet.push_chunk(
                    np.ascontiguousarray(local.data, dtype=np.float32), local.timestamps.tolist()
                )
                for m in local.markers:
                    markers.push_sample([m.value], m.timestamp)
            return self.source.n_released
        finally:
            self.source.close()


class FieldTripPlayer(Player):
    """Write a recording into a FieldTrip buffer at real speed, events included.

    Parameters
    ----------
    spec : ReplaySpec
        The file, speed, looping and chunk length.
    host, port : str, int
        The buffer server (e.g. ``neurocast``'s own :class:`~.fieldtrip.FieldTripServer`).

    Notes
    -----
    :meth:`run` puts the header first (the buffer drops what it held), then samples and
    events as they fall due; with ``spec.loop`` it runs until ``stop`` is set. It raises
    :class:`~.base.SourceError` if the file cannot be read and
    :class:`~.fieldtrip.protocol.FieldTripConnectionError` if the buffer server cannot be
    reached.
    """

    def __init__(self, spec: ReplaySpec, *, host: str = "127.0.0.1", port: int = 1972) -> None:
        self.spec = spec
        self.host, self.port = host, port
        self.source = ReplaySource(spec)

    def _play(self, stop: threading.Event, started: threading.Event) -> int:
        stream = self.source.open()
        try:
            with FieldTripWriter(self.host, self.port) as writer:
                writer.put_header(stream)
                self.source.rewind()
                started.set()
                for chunk in _due_chunks(self.source, stop):
                    writer.put_data(chunk.data, chunk.timestamps)
                    writer.put_events(chunk.markers)
            return self.source.n_released
        finally:
            self.source.close()
