"""The simulator as a live source, paced in real time or as fast as it is read."""

from __future__ import annotations

import threading
import time
from typing import Any

from neurocast.streaming.sources.base import (
    Chunk,
    SourceError,
    SourceStatus,
    StreamInfo,
    local_clock,
    require_open,
)
from neurocast.streaming.sources.simulator.simulator import Simulator
from neurocast.streaming.sources.specs import SimulatorSpec


class SimulatorSource:
    """The simulator as a :class:`~neurocast.streaming.sources.base.Source`.

    Parameters
    ----------
    spec : SimulatorSpec
        Simulator settings, pacing (``realtime``), ``chunk_s`` and ``duration_s``.

    Notes
    -----
    Timestamps are :func:`~neurocast.streaming.sources.base.local_clock` seconds: sample 0 is
    stamped at the time :meth:`open` returned. With ``realtime`` a chunk is delivered when its
    last sample is due (due times are computed from sample 0, so pacing does not drift); a
    reader that falls behind gets the samples due since, up to one second per read. Without
    ``realtime`` chunks come as fast as they are read.
    """

    def __init__(self, spec: SimulatorSpec, **simulator_kwargs: Any) -> None:
        self.spec = spec
        self._kwargs = simulator_kwargs
        self._sim: Simulator | None = None
        self._status: SourceStatus = "starting"
        self._lock = threading.Lock()
        self._chunk = max(1, round(spec.chunk_s * spec.sfreq))
        self._end: int | None = (
            None if spec.duration_s is None else max(1, round(spec.duration_s * spec.sfreq))
        )

    @property
    def simulator(self) -> Simulator:
        """The underlying :class:`~.simulator.Simulator` (after :meth:`open`)."""
        return require_open(self._sim, "simulator")

    @property
    def stream_info(self) -> StreamInfo:
        """Channels and rate of the simulated stream (after :meth:`open`)."""
        return self.simulator.stream_info

    @property
    def status(self) -> SourceStatus:
        """``"starting"``, ``"running"``, or ``"stopped"`` once closed or past ``duration_s``."""
        return self._status

    def open(self) -> StreamInfo:
        """Build the simulator (forward model from cache when possible) and start the clock.

        Opening a closed source resumes the stream: its next sample is due at once (or when
        it was due, if the stream ran ahead of the clock), so the timestamps show any pause
        as a gap and never go backwards.
        """
        with self._lock:
            if self._sim is None:
                try:
                    self._sim = Simulator(self.spec, **self._kwargs)
                except (ValueError, OSError, RuntimeError) as exc:
                    self._status = "failed"
                    raise SourceError(f"Cannot start the simulator: {exc}") from exc
            sim = self._sim
            if self._status == "starting":
                sim.start_time = local_clock()
            elif self._status != "running":
                # never backwards: a stream that ran ahead of the clock keeps its times
                resume = local_clock() - sim.n_generated / sim.sfreq
                sim.start_time = max(sim.start_time, resume)
            self._status = "running"
            return sim.stream_info

    def read(self, timeout: float) -> Chunk | None:
        """The next chunk, or None if none is due within ``timeout`` seconds or it has ended."""
        with self._lock:
            sim = self._sim
            if sim is None or self._status != "running":
                return None
            start = sim.n_generated
            n = self._chunk
            if self._end is not None:
                n = min(n, self._end - start)
                if n <= 0:
                    self._status = "stopped"
                    return None
            if self.spec.realtime:
                due = sim.start_time + (start + n - 1) / sim.sfreq
                wait = due - local_clock()
                if wait > timeout:
                    time.sleep(max(0.0, timeout))
                    return None
                if wait > 0:
                    time.sleep(wait)
                if self._status != "running":  # closed meanwhile
                    return None
                # catch up on everything that fell due meanwhile, in whole chunks
                behind = int((local_clock() - sim.start_time) * sim.sfreq) + 1 - start
                n = max(
                    n, min(behind // self._chunk, round(sim.sfreq) // self._chunk) * self._chunk
                )
                if self._end is not None:
                    n = min(n, self._end - start)
            data, markers = sim.generate(n)
            return Chunk(
                data=data.T,
                timestamps=sim.sample_times(start, n),
                receipt_time=local_clock(),
                clock_offset=0.0,
                markers=markers,
            )

    def close(self) -> None:
        """Stop the stream; later reads return None. Safe to call more than once."""
        self._status = "stopped"
