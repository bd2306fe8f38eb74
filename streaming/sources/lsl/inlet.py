"""One LSL inlet: resolution, pulling into a preallocated buffer, stall and loss.

Every chunk keeps the outlet's own LSL time stamps, unchanged, and the offset that maps them
onto this machine's clock (``Chunk.clock_offset``, LSL's ``time_correction()``), plus the
local time of receipt. No LSL post-processing flag is set, deliberately:

- ``proc_clocksync`` would add the offset into the time stamps; we keep the offset separate
  so a re-estimated offset never bends the spacing of the samples themselves (which the ring
  buffer checks for gaps), and so the time stamps are exactly what the outlet sent.
- ``proc_dejitter`` fits a regression line through the time stamps: it hides real gaps and
  clock jumps, which the ring buffer must see to flag the windows they fall in.
- ``proc_monotonize`` clamps backward steps, again hiding a clock jump the ring must report.
- ``proc_threadsafe`` is not needed: one acquisition thread reads each inlet.

A chunk whose time stamps step backwards is split there, so the ring buffer sees (and
reports) the jump between two chunks instead of refusing the whole chunk.
"""

from __future__ import annotations

import contextlib
import logging
import time

import numpy as np
import pylsl
from numpy.typing import NDArray
from pylsl.util import LostError
from pylsl.util import TimeoutError as LSLTimeoutError

from neurocast.streaming.sources.base import Marker, SourceError, local_clock
from neurocast.streaming.sources.lsl.resolve import describe_selector, predicate, resolve_stream
from neurocast.streaming.sources.specs import LSLSpec, LSLStreamSelector

logger = logging.getLogger(__name__)

_OFFSET_REFRESH_S = 1.0  # how often the clock offset estimate is read again
_RECONNECT_TIMEOUT_S = 0.5  # how long a stream that is found again may take to answer


class Inlet:
    """One LSL inlet: resolution, pulling into a preallocated buffer, stall and loss."""

    def __init__(self, sel: LSLStreamSelector, spec: LSLSpec) -> None:
        self.sel = sel
        self.spec = spec
        self.inlet: pylsl.StreamInlet | None = None
        self.info: pylsl.StreamInfo | None = None
        self.offset = 0.0
        self.last_data = 0.0
        self.lost = False
        self._next_offset = 0.0
        self._resolver: pylsl.ContinuousResolver | None = None
        self._buf: NDArray | None = None
        self._scale: NDArray[np.float64] | None = None

    def open(self, timeout_s: float) -> pylsl.StreamInfo:
        found = resolve_stream(self.sel, timeout_s)
        try:
            self._connect(found, timeout_s)
        except (LSLTimeoutError, LostError) as exc:
            raise SourceError(
                f"LSL stream {found.name()!r} (source_id={found.source_id()!r}) was found but "
                f"did not answer within {timeout_s:g} s ({exc}); check that the outlet is alive."
            ) from exc
        assert self.info is not None
        return self.info

    def _connect(
        self, found: pylsl.StreamInfo, timeout_s: float, *, reconnect: bool = False
    ) -> None:
        # recover=True: liblsl silently reconnects to an outlet with the same source id.
        # max_buflen is in seconds (x100 samples for irregular streams).
        inlet = pylsl.StreamInlet(
            found, max_buflen=self.spec.buffer_s, recover=True, processing_flags=pylsl.proc_none
        )
        info = inlet.info(timeout=timeout_s)
        inlet.open_stream(timeout=timeout_s)
        try:
            # the first estimate takes a few probes (~0.6 s); on a reconnection the
            # periodic refresh picks it up instead of holding up the samples
            offset = inlet.time_correction(timeout=0.0 if reconnect else timeout_s)
        except LSLTimeoutError:
            if not reconnect:
                raise
            offset = self.offset
        if self.info is not None and (
            info.channel_count() != self.info.channel_count()
            or info.channel_format() != self.info.channel_format()
        ):
            raise SourceError(
                f"LSL stream {info.name()!r} came back with {info.channel_count()} channels "
                f"(format {info.channel_format()}) instead of {self.info.channel_count()} "
                f"(format {self.info.channel_format()}); restart the source to rebuild its buffer."
            )
        self.inlet, self.info, self.offset, self.lost = inlet, info, offset, False
        now = local_clock()
        self.last_data = now
        self._next_offset = now + _OFFSET_REFRESH_S
        if info.channel_format() != pylsl.cf_string and self._buf is None:
            rate = info.nominal_srate() or 100.0  # irregular streams: buffer counts x100 samples
            n = max(1, int(np.ceil(rate * self.spec.buffer_s)))
            dtype = inlet.np_dtype
            self._buf = np.empty((n, info.channel_count()), dtype=dtype)

    def set_scale(self, scale: NDArray[np.float64]) -> None:
        self._scale = None if np.all(scale == 1.0) else scale

    def stalled(self, now: float) -> bool:
        return self.lost or now - self.last_data > self.spec.stall_after_s

    def _pulled(self, now: float) -> None:
        self.last_data = now
        if now >= self._next_offset:
            self._next_offset = now + _OFFSET_REFRESH_S
            assert self.inlet is not None
            # instantaneous after the first estimate (updated in the background); on failure
            # the last estimate stays
            with contextlib.suppress(LSLTimeoutError, LostError):
                self.offset = self.inlet.time_correction(timeout=0.0)

    def _retry(self, timeout_s: float) -> bool:
        """Look for a lost, non-recoverable stream again; True when it is back.

        A continuous resolver searches in the background, so this never blocks for long;
        without a match it waits ``timeout_s`` like an empty pull would.
        """
        if self._resolver is None:
            self._resolver = pylsl.ContinuousResolver(pred=predicate(self.sel))
        found = self._resolver.results()
        if not found:
            time.sleep(timeout_s)
            return False
        try:
            self._connect(found[0], _RECONNECT_TIMEOUT_S, reconnect=True)
        except (LSLTimeoutError, LostError):
            return False
        self._resolver = None
        logger.info("LSL stream %s is back.", describe_selector(self.sel))
        return True

    def pull(self, timeout_s: float) -> tuple[NDArray, NDArray[np.float64]] | None:
        """Samples (n, channels) in SI units and their LSL time stamps, or None."""
        if self.lost and not self._retry(timeout_s):
            return None
        assert self.inlet is not None and self._buf is not None
        try:
            _, ts = self.inlet.pull_chunk(
                timeout=timeout_s,
                max_samples=self._buf.shape[0],
                dest_obj=self._buf,
                min_samples=1,
                as_numpy=True,
            )
        except LostError:
            # only outlets without a source id get here; the others recover in liblsl
            logger.warning(
                "LSL stream %s was lost (it has no source id, so liblsl cannot recover it); "
                "looking for it again.",
                describe_selector(self.sel),
            )
            self.lost = True
            return None
        n = len(ts)
        if n == 0:
            return None
        self._pulled(local_clock())
        raw = self._buf[:n]
        if self._scale is not None:
            data = raw * self._scale  # a new array: the buffer is reused by the next pull
        elif raw.dtype.kind == "f":
            data = raw.copy()
        else:
            data = raw.astype(np.float32)
        return data, ts

    def pull_markers(self) -> list[Marker]:
        """Events available now, on this inlet's clock."""
        if self.lost and not self._retry(0.0):
            return []
        assert self.inlet is not None and self.info is not None
        try:
            if self.info.channel_format() == pylsl.cf_string:
                values, ts = self.inlet.pull_chunk(timeout=0.0, max_samples=1024)
                texts = ["/".join(v) for v in values]
            else:
                arr, ts = self.inlet.pull_chunk(timeout=0.0, max_samples=1024, as_numpy=True)
                fmt = str if arr.dtype.kind in "iu" else repr
                texts = ["/".join(fmt(x) for x in row.tolist()) for row in arr]
        except LostError:
            self.lost = True
            return []
        if len(ts):
            self._pulled(local_clock())
        return [Marker(float(t), v) for t, v in zip(ts, texts, strict=True)]

    def close(self) -> None:
        if self.inlet is not None:
            self.inlet.close_stream()
        self.inlet = self._resolver = None
