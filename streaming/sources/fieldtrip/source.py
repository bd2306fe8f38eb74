"""A FieldTrip buffer as a live source: WAIT_DAT for anything new, then GET_EVT and GET_DAT."""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from typing import NoReturn

import numpy as np
from numpy.typing import NDArray

from neurocast.streaming.sources.base import (
    Chunk,
    SourceError,
    SourceStatus,
    StreamInfo,
    local_clock,
    require_open,
)
from neurocast.streaming.sources.fieldtrip.client import BlockingConnection
from neurocast.streaming.sources.fieldtrip.events import Event
from neurocast.streaming.sources.fieldtrip.header import Header
from neurocast.streaming.sources.fieldtrip.metadata import event_to_marker, stream_info_from_header
from neurocast.streaming.sources.fieldtrip.operations import (
    op_get_data,
    op_get_events,
    op_get_header,
    op_wait_data,
)
from neurocast.streaming.sources.fieldtrip.protocol import (
    FieldTripConnectionError,
    FieldTripProtocolError,
    FieldTripRequestError,
)
from neurocast.streaming.sources.specs import FieldTripSpec

logger = logging.getLogger(__name__)


class _SampleClock:
    """Local-clock time of buffer sample indices.

    The buffer carries no timestamps, so sample ``i`` is given time ``origin + i / sfreq``,
    with ``origin`` chosen at the first chunk so that its newest sample falls on its local
    receipt time. A later chunk that arrives earlier than this predicts (the first one was
    late, or the device clock runs faster than ours) moves ``origin`` back at once, so no
    sample is ever stamped later than its receipt; a move of more than a sample period makes
    the timestamps step back once, which the ring buffer reports as a backward clock jump.
    """

    def __init__(self, sfreq: float) -> None:
        self.period = 1.0 / sfreq
        self.origin: float | None = None

    def restart(self) -> None:
        """Sample indices restart at 0 (the buffer was reset): anchor again."""
        self.origin = None

    def time_of(self, index: int) -> float:
        """Time of sample ``index`` in seconds (the clock must be anchored)."""
        assert self.origin is not None
        return self.origin + index * self.period

    def stamp(self, first: int, n: int, receipt: float) -> NDArray[np.float64]:
        """Timestamps of samples ``first`` to ``first + n - 1`` received at ``receipt``."""
        estimate = receipt - (first + n - 1) * self.period
        if self.origin is None or estimate < self.origin:
            self.origin = estimate
        return self.origin + (first + np.arange(n, dtype=np.float64)) * self.period


#: After a buffer reset or a reconnection, at most this much backlog is read (seconds).
MAX_BACKLOG_S = 10.0
HEADER_CHECK_S = 1.0
"""How often the header is read again while samples flow, in seconds: a new header whose
samples overtake the reader's position is otherwise invisible (the sample count never drops),
and its data would be read with the old rate or channel names."""


class FieldTripSource:
    """A FieldTrip buffer as a live :class:`~neurocast.streaming.sources.base.Source`.

    ``open()`` reads the header: channel names from the channel-names chunk, the exact
    ``mne.Info`` from a Neuromag header chunk when present (see :func:`stream_info_from_header`),
    and starts at the newest sample. Each ``read()`` sends WAIT_DAT for anything newer, then
    GET_EVT and GET_DAT for what arrived. Samples are returned as written (float types as they
    are, integer types as float64); a resolutions chunk is not applied.

    Timestamps: the buffer has none. Sample ``i`` is stamped ``origin + i / fsample`` on the
    local clock (``clock_offset`` is 0), where ``origin`` is anchored at the local receipt
    time of the newest sample of the first chunk, and moved earlier, never later, when a
    chunk arrives earlier than predicted (see :class:`_SampleClock`): no sample is stamped
    later than its receipt. Latencies computed from these timestamps therefore count from the
    fastest delivery observed, not from acquisition, and the device's clock drift is followed
    only when it runs faster than the local clock.
    Events become :class:`~.base.Marker` objects (``"type/value"``) at their sample's time
    and are attached to the next chunk of samples.

    Faults: when the server goes away (or has no header) the status is ``"stalled"`` and
    ``read`` returns None; the source reconnects by itself. When the sample count goes down
    (a new header was put, the data were flushed, or the server restarted) the header is read
    again: with the same channels and rate, reading goes on from the new data (at most
    :data:`MAX_BACKLOG_S` of backlog, on a clock anchored again, so windows spanning the reset
    are flagged as a gap or clock jump); with a different channel count, channel names or
    rate, ``read`` raises
    :class:`~.base.SourceError` and the status is ``"failed"``: the pipeline was built for
    the old layout, so the session must be restarted. The header is also read again every
    :data:`HEADER_CHECK_S` while samples flow, so a new layout whose samples overtook the
    reader's position is refused within that time. A restart that the reader misses
    entirely (the server came back and received more samples than this reader had read
    before it reconnected) cannot be told apart from a dropped connection.

    Parameters
    ----------
    spec : FieldTripSpec
        Host, port and timeouts.
    """

    def __init__(self, spec: FieldTripSpec) -> None:
        self.spec = spec
        self.source_id = f"fieldtrip://{spec.host}:{spec.port}"
        self._conn = BlockingConnection(spec.host, spec.port, spec.reply_timeout_s)
        self._status: SourceStatus = "starting"
        self._stream: StreamInfo | None = None
        self._header: Header | None = None
        self._clock: _SampleClock | None = None
        self._next_sample = 0
        self._next_event = 0
        self._pending: deque[Event] = deque(maxlen=4096)  # events waiting for samples
        self._last_data = 0.0
        self._resync = False
        self._header_checked_at = 0.0
        self._closed = False
        self._failure: str | None = None

    @property
    def stream_info(self) -> StreamInfo:
        """The stream's metadata (after :meth:`open`)."""
        return require_open(self._stream, "FieldTrip")

    @property
    def status(self) -> SourceStatus:
        """``starting``, ``running``, ``stalled`` (server gone, no header or no samples for
        ``spec.stall_after_s``), ``stopped`` or ``failed``."""
        if self._status == "running" and local_clock() - self._last_data > self.spec.stall_after_s:
            return "stalled"
        return self._status

    def open(self) -> StreamInfo:
        """Connect and read the header, waiting up to ``spec.open_timeout_s`` for both.

        Raises
        ------
        SourceError
            If no server answers or no header is put in time.
        """
        deadline = local_clock() + self.spec.open_timeout_s
        while True:
            try:
                header = self._conn.run(op_get_header())
                break
            except (FieldTripConnectionError, FieldTripRequestError) as exc:
                if local_clock() >= deadline:
                    self._status = "failed"
                    raise SourceError(
                        f"No FieldTrip buffer header at {self.spec.host}:{self.spec.port} after "
                        f"{self.spec.open_timeout_s:g} s: {exc} Start the buffer and its writer "
                        "(e.g. `neurocast replay FILE --to fieldtrip`), or check host and port."
                    ) from exc
                time.sleep(0.05)
            except FieldTripProtocolError as exc:
                self._status = "failed"
                raise SourceError(
                    f"{self.spec.host}:{self.spec.port} does not speak the FieldTrip buffer "
                    f"protocol: {exc}"
                ) from exc
        self._stream = stream_info_from_header(header, source_id=self.source_id)
        self._header = header
        self._clock = _SampleClock(header.fsample)
        self._next_sample, self._next_event = header.nsamples, header.nevents
        self._status, self._last_data = "running", local_clock()
        return self._stream

    def close(self) -> None:
        """Close the connection (wakes a concurrent :meth:`read`); safe to call twice."""
        self._closed = True
        self._status = "stopped"
        self._conn.close()

    def read(self, timeout: float) -> Chunk | None:
        """The samples (and events) that arrived, or None if none arrived within ``timeout``
        seconds or the server is unreachable (then the status is ``"stalled"``).

        Raises
        ------
        SourceError
            If the header changed its channel count, names or rate, or the peer broke the
            protocol.
        """
        if self._closed:
            return None
        if self._failure is not None:
            raise SourceError(self._failure)
        require_open(self._stream, "FieldTrip")
        started = local_clock()
        try:
            chunk = self._read(timeout)
        except (FieldTripConnectionError, FieldTripRequestError) as exc:
            if self._closed:
                return None
            if self._status != "stalled":
                logger.warning("FieldTrip source %s stalled: %s", self.source_id, exc)
            self._status, self._resync = "stalled", True
            time.sleep(max(0.0, min(timeout, 0.25) - (local_clock() - started)))
            return None
        except FieldTripProtocolError as exc:
            self._fail(f"The FieldTrip buffer at {self.source_id} broke the protocol: {exc}")
        if self._status == "stalled" and not self._resync:
            logger.info("FieldTrip source %s running again", self.source_id)
            self._status = "running"
        return chunk

    def _fail(self, message: str) -> NoReturn:
        self._failure, self._status = message, "failed"
        raise SourceError(message)

    def _read(self, timeout: float) -> Chunk | None:
        if self._resync or local_clock() - self._header_checked_at > HEADER_CHECK_S:
            self._reread_header(self._conn.run(op_get_header()))
            self._resync = False
            self._header_checked_at = local_clock()
        first = self._next_sample
        # GET_DAT up to the newest sample travels with WAIT_DAT: the server answers it as soon
        # as the wait ends, without a second round trip (refused when nothing new arrived)
        wait = op_wait_data(first, self._next_event, max(0, round(timeout * 1000)))
        replies = self._conn.run_pipelined([wait, op_get_data(first, None)])
        counts, block = replies
        if isinstance(counts, FieldTripRequestError):
            raise counts
        receipt = local_clock()
        if counts.nsamples < first or counts.nevents < self._next_event:
            self._reread_header(self._conn.run(op_get_header()))
            return None
        if counts.nevents > self._next_event:
            self._pending.extend(self._events_until(counts.nevents))
        if isinstance(block, FieldTripRequestError):
            if counts.nsamples > first:
                # the server's ring dropped them before we asked (we fell far behind): skip
                # ahead, the timestamps show the gap
                logger.warning(
                    "FieldTrip samples %d..%d were dropped by the server before they could be "
                    "read.",
                    first,
                    counts.nsamples - 1,
                )
                self._next_sample = counts.nsamples
            return None
        assert self._clock is not None and self._header is not None
        if block.shape[1] != self._header.nchans:
            # a new header was put and filled past our position before we noticed the reset
            self._reread_header(self._conn.run(op_get_header()))
            self._fail(
                f"The FieldTrip buffer at {self.source_id} now sends {block.shape[1]} channels "
                f"instead of {self._header.nchans}. Restart the session to decode the new stream."
            )
        ts = self._clock.stamp(first, block.shape[0], receipt)
        self._next_sample = first + block.shape[0]
        self._last_data = receipt
        markers = [
            event_to_marker(e, self._clock.time_of(e.sample if e.sample >= 0 else first))
            for e in self._pending
        ]
        self._pending.clear()
        data = block if block.dtype.kind == "f" else block.astype(np.float64)
        return Chunk(data, ts, receipt, 0.0, markers)

    def _events_until(self, nevents: int) -> list[Event]:
        try:
            events = self._conn.run(op_get_events(self._next_event, nevents - 1))
        except FieldTripRequestError:
            logger.warning(
                "FieldTrip events %d..%d were dropped by the server before they could be read.",
                self._next_event,
                nevents - 1,
            )
            events = []
        self._next_event = nevents
        return events

    def _reread_header(self, header: Header) -> None:
        old = self._header
        assert old is not None and self._clock is not None
        was = (old.nchans, old.channel_names, old.fsample)
        now = (header.nchans, header.channel_names, header.fsample)
        if was != now:
            self._fail(
                f"The FieldTrip buffer at {self.source_id} got a new header: "
                f"{old.nchans} -> {header.nchans} channels, {old.fsample:g} -> "
                f"{header.fsample:g} Hz{'' if was[1] == now[1] else ', other channel names'}. "
                "The pipeline was built for the old layout; restart the session to decode the "
                "new stream."
            )
        if header.nsamples < self._next_sample:
            logger.warning(
                "FieldTrip buffer at %s was reset (new header, flush or restart); reading on "
                "from the new samples.",
                self.source_id,
            )
            self._clock.restart()
            backlog = math.ceil(MAX_BACKLOG_S * header.fsample)
            self._next_sample = max(0, header.nsamples - backlog)
            self._pending.clear()  # their sample numbers belong to the old data
        if header.nevents < self._next_event:
            self._next_event = 0
        self._header = header
