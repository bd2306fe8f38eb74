"""Lab Streaming Layer outlets as a neurocast source, one or several merged on LSL time.

Several streams
---------------
``LSLSpec.merge_with`` appends the channels of further streams of the same nominal rate to
the first one's. Alignment rule: each stream's time stamps are mapped onto the local clock
with its own ``time_correction()``; every sample of the first stream takes, from each other
stream, the sample nearest in time within half a sample period, or NaN when there is none
(the ring buffer then flags the windows as non-finite). A sample of the first stream is
released once every other stream has delivered a sample at least as late as it minus half a
period (no closer partner can still arrive) or has stalled; the first stream's time stamps
and clock offset are the merged stream's. Samples of the other streams that no sample of the
first takes are dropped.
"""

from __future__ import annotations

import threading

import numpy as np
import pylsl
from numpy.typing import NDArray

from neurocast.streaming.engine.ring import first_backstep
from neurocast.streaming.sources.base import (
    Chunk,
    Marker,
    SourceError,
    SourceStatus,
    StreamInfo,
    local_clock,
    require_open,
)
from neurocast.streaming.sources.lsl.channels import ChannelDesc, build_info, describe_channels
from neurocast.streaming.sources.lsl.inlet import Inlet
from neurocast.streaming.sources.specs import LSLSpec, LSLStreamSelector

_MERGE_POLL_S = 0.005  # longest wait on one inlet while another has samples pending


class _Aligner:
    """Merges streams of one nominal rate onto the first stream's samples (the alignment
    rule is in the module docstring); times are on the local clock."""

    def __init__(self, widths: list[int], sfreq: float, keep: int, dtype: np.dtype) -> None:
        self.tol = 0.5 / sfreq
        self.keep = keep
        self.dtype = dtype
        self.cols = np.cumsum([0, *widths])
        self.src = np.empty(0)  # primary source time stamps
        self.times = [np.empty(0) for _ in widths]  # local-clock times per stream
        self.data = [np.empty((0, w), dtype=dtype) for w in widths]

    def add(self, k: int, data: NDArray, ts: NDArray[np.float64], offset: float) -> None:
        self.times[k] = np.concatenate([self.times[k], ts + offset])[-self.keep :]
        self.data[k] = np.concatenate([self.data[k], data.astype(self.dtype, copy=False)])[
            -self.keep :
        ]
        if k == 0:
            self.src = np.concatenate([self.src, ts])[-self.keep :]

    def take(self, stalled: list[bool]) -> tuple[NDArray, NDArray[np.float64]] | None:
        p_t = self.times[0]
        if not p_t.size:
            return None
        limit = np.inf
        for k in range(1, len(self.times)):
            if stalled[k]:
                continue
            if not self.times[k].size:
                return None
            limit = min(limit, self.times[k][-1] + self.tol)
        n = int(np.searchsorted(p_t, limit, side="right"))
        if n == 0:
            return None
        t = p_t[:n]
        out = np.full((n, self.cols[-1]), np.nan, dtype=self.dtype)
        out[:, : self.cols[1]] = self.data[0][:n]
        for k in range(1, len(self.times)):
            s_t = self.times[k]
            if s_t.size:
                j = np.searchsorted(s_t, t)
                left = np.clip(j - 1, 0, s_t.size - 1)
                right = np.clip(j, 0, s_t.size - 1)
                pick = np.where(np.abs(s_t[left] - t) <= np.abs(s_t[right] - t), left, right)
                ok = np.abs(s_t[pick] - t) <= self.tol
                out[ok, self.cols[k] : self.cols[k + 1]] = self.data[k][pick[ok]]
                rest = int(np.searchsorted(s_t, t[-1] + self.tol, side="right"))
                self.times[k], self.data[k] = s_t[rest:], self.data[k][rest:]
        src = self.src[:n]
        self.times[0], self.data[0], self.src = p_t[n:], self.data[0][n:], self.src[n:]
        return out, src


def _split_at_backstep(
    data: NDArray, ts: NDArray[np.float64]
) -> tuple[tuple[NDArray, NDArray[np.float64]], tuple[NDArray, NDArray[np.float64]] | None]:
    k = first_backstep(ts)
    if k is None:
        return (data, ts), None
    return (data[:k], ts[:k]), (data[k:], ts[k:])


class LSLSource:
    """A live source reading one LSL outlet, or several merged on LSL time.

    Parameters
    ----------
    spec : LSLSpec
        Which stream(s) to resolve (name, type and/or source id; ``merge_with`` for further
        streams of the same rate; ``marker_stream`` for events) and how (resolve timeout,
        inlet buffer length, stall threshold).

    Notes
    -----
    The inlet buffer is ``spec.buffer_s`` seconds (LSL ``max_buflen``): a reader that pauses
    longer gets only the newest samples, never a backlog of stale ones. When an outlet
    vanishes the source reports ``"stalled"`` (after ``spec.stall_after_s`` without samples)
    and picks up again by itself when an outlet with the same source id comes back (liblsl's
    recovery; outlets without a source id are looked for again by the original selector).
    Marker time stamps are mapped onto the clock of the first data stream.
    """

    def __init__(self, spec: LSLSpec) -> None:
        self.spec = spec
        self._streams = [Inlet(spec, spec), *(Inlet(s, spec) for s in spec.merge_with)]
        self._markers: Inlet | None = None
        if spec.marker_stream is not None:
            self._markers = Inlet(LSLStreamSelector(name=spec.marker_stream), spec)
        self._aligner: _Aligner | None = None
        self._info: StreamInfo | None = None
        self._status: SourceStatus = "starting"
        self._carry: tuple[NDArray, NDArray[np.float64]] | None = None
        self._pending_markers: list[Marker] = []
        self._lock = threading.Lock()

    @property
    def stream_info(self) -> StreamInfo:
        """The stream's metadata (after :meth:`open`)."""
        return require_open(self._info, "LSL")

    @property
    def status(self) -> SourceStatus:
        """``"running"``, or ``"stalled"`` while any stream delivers nothing."""
        if self._status == "running":
            now = local_clock()
            if any(s.stalled(now) for s in self._streams):
                return "stalled"
        return self._status

    def open(self) -> StreamInfo:
        """Resolve the stream(s), read their descriptions and subscribe.

        Raises
        ------
        SourceError
            If a stream is not found (the message lists the visible ones), does not answer,
            has an irregular rate, or the merged streams' rates differ.
        """
        timeout = self.spec.resolve_timeout_s
        try:
            if self._markers is not None:  # subscribed first: no event precedes the data
                self._markers.open(timeout)
            channels: list[ChannelDesc] = []
            simulated = False
            rates = []
            infos = []
            for s in self._streams:
                info = s.open(timeout)
                infos.append(info)
                rate = info.nominal_srate()
                if rate <= 0:
                    raise SourceError(
                        f"LSL stream {info.name()!r} has an irregular sampling rate; neurocast "
                        "cuts windows on a regular sample clock. For events, pass it as "
                        "marker_stream instead."
                    )
                rates.append(rate)
                descs, sim = describe_channels(info.as_xml())
                s.set_scale(np.array([d.scale for d in descs]))
                channels.extend(descs)
                simulated |= sim
            if any(abs(r - rates[0]) > 1e-6 * rates[0] for r in rates):
                raise SourceError(
                    f"Streams to merge must share one sampling rate, got {rates} Hz; resample "
                    "at the outlet or decode them as separate sources."
                )
        except Exception:
            self.close()
            self._status = "failed"
            raise
        if len(self._streams) > 1:
            single = all(i.channel_format() == pylsl.cf_float32 for i in infos)
            dtype = np.dtype(np.float32 if single else np.float64)
            keep = max(2, int(rates[0] * self.spec.buffer_s) * 2)
            self._aligner = _Aligner([i.channel_count() for i in infos], rates[0], keep, dtype)
        self._info = StreamInfo(
            name="+".join(i.name() for i in infos),
            info=build_info(channels, rates[0]),
            simulated=simulated,
            source_id="+".join(i.source_id() or f"{i.hostname()}/{i.name()}" for i in infos),
        )
        self._status = "running"
        return self._info

    def read(self, timeout: float) -> Chunk | None:
        """The next chunk, or None if nothing arrived within ``timeout`` seconds."""
        with self._lock:
            if self._status != "running":
                raise SourceError(f"The LSL source is {self._status}; open() it before reading.")
            if self._carry is not None:
                got: tuple[NDArray, NDArray[np.float64]] | None = self._carry
                self._carry = None
            elif self._aligner is None:
                got = self._streams[0].pull(timeout)
            else:
                got = self._read_merged(timeout)
            if self._markers is not None:
                offset = self._markers.offset - self._streams[0].offset
                self._pending_markers.extend(
                    Marker(m.timestamp + offset, m.value) for m in self._markers.pull_markers()
                )
            if got is None:
                return None
            (data, ts), self._carry = _split_at_backstep(*got)
            markers, self._pending_markers = self._pending_markers, []
            return Chunk(data, ts, local_clock(), self._streams[0].offset, markers)

    def _read_merged(self, timeout: float) -> tuple[NDArray, NDArray[np.float64]] | None:
        assert self._aligner is not None
        deadline = local_clock() + timeout
        while True:
            for k, s in enumerate(self._streams):
                wait = min(_MERGE_POLL_S, max(0.0, deadline - local_clock())) if k == 0 else 0.0
                got = s.pull(wait)
                if got is not None:
                    self._aligner.add(k, got[0], got[1], s.offset)
            now = local_clock()
            out = self._aligner.take([s.stalled(now) for s in self._streams])
            if out is not None or now >= deadline:
                return out

    def close(self) -> None:
        """Unsubscribe from every stream; safe to call twice."""
        with self._lock:
            for s in [*self._streams, *([self._markers] if self._markers else [])]:
                s.close()
            self._status = "stopped"
