"""The latency budget of live decoding: which due windows are too old to be worth decoding.

A window is skipped only when the decoder could not keep up, never because the data came in
chunks. Its age is therefore measured from the moment its last sample reached us *as a
device delivers it*, not from the moment the sample was measured:

- the offset between the source clock and the local clock is estimated from the chunks
  themselves (the smallest ``receipt_time - last timestamp`` over the last seconds, as NTP
  filters its samples), so a source clock running seconds ahead of or behind the local clock,
  or an LSL outlet that stamps chunks ahead of time, changes nothing;
- the span of the chunks the source usually delivers (the median of the recent ones) is
  allowed on top of the budget: with 1 s FieldTrip blocks the first window of a block is 1 s
  old when it arrives, which is the device's latency, not the decoder's;
- a burst of backlog after a stall arrives late beyond its chunking, so its older windows are
  over the budget and skipped, and nothing queues.
"""

from __future__ import annotations

import threading
from collections import deque

import numpy as np


class LatencyBudget:
    """Age of samples relative to their delivery, and the budget they are judged against.

    Parameters
    ----------
    max_lag_s : float
        Longest time, in seconds, that a window may wait beyond its delivery before it is
        skipped.
    horizon_s : float
        How long, in seconds, the chunks used to estimate the clock offset and the usual chunk
        span are remembered (local clock). It bounds how long a drifting clock takes to be
        followed. The last ``keep`` chunks are remembered however old, so that after a stall
        the burst is still judged against the stream's usual delivery.
    keep : int
        Chunks remembered regardless of ``horizon_s``.
    """

    def __init__(self, max_lag_s: float, *, horizon_s: float = 10.0, keep: int = 64) -> None:
        if not max_lag_s > 0:
            raise ValueError(f"max_lag_s must be positive, got {max_lag_s}.")
        self.max_lag_s = float(max_lag_s)
        self.horizon_s = float(horizon_s)
        self.keep = int(keep)
        # (receipt time, receipt - last timestamp, chunk span) of recent chunks
        self._chunks: deque[tuple[float, float, float]] = deque(maxlen=4096)
        self._last_t = -np.inf
        self._lock = threading.Lock()

    def observe(
        self, first_t: float, last_t: float, n_samples: int, sfreq: float, receipt: float
    ) -> None:
        """Record a chunk: source-clock times of its first and last sample, local receipt time."""
        span = last_t - first_t + 1.0 / sfreq if n_samples > 1 else 1.0 / sfreq
        with self._lock:
            if first_t < self._last_t:
                # the source clock stepped back: the old offsets say nothing about the new clock
                self._chunks.clear()
            self._last_t = last_t
            self._chunks.append((receipt, receipt - last_t, span))
            while len(self._chunks) > self.keep and self._chunks[0][0] < receipt - self.horizon_s:
                self._chunks.popleft()

    def oldest_in_budget(self, now: float) -> float:
        """Source-clock time of the oldest sample still within the budget, in seconds.

        Windows whose last sample is older than this are skipped. Before any chunk is seen,
        every sample is within the budget (``-inf``).

        Parameters
        ----------
        now : float
            Local clock, in seconds.
        """
        with self._lock:
            if not self._chunks:
                return -np.inf
            offset = min(c[1] for c in self._chunks)
            allowance = float(np.median([c[2] for c in self._chunks]))
        return now - offset - allowance - self.max_lag_s
