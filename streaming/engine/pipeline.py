"""The decode engine: ring buffer → per-model online preprocessing → model → results.

:class:`DecodeEngine` is synchronous and shared by the live loop (:mod:`.loop`) and by batch
decoding of saved files, so both cut the same windows, feed preprocessing the same samples and
produce the same outputs for the same window.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from neurocast.streaming.engine.budget import LatencyBudget
from neurocast.streaming.engine.results import Latency, Result, ResultKind
from neurocast.streaming.engine.ring import NotEnoughDataError, RingBuffer, first_backstep
from neurocast.streaming.engine.windows import DecodeClock, WindowSamples, WindowSpec
from neurocast.streaming.preprocessing.filters import hold_last_finite
from neurocast.streaming.sources.base import Chunk, Marker, StreamInfo, local_clock


class OnlinePreprocessor(Protocol):
    """Stateful, causal preprocessing for one model (see :mod:`.preprocess`).

    ``push`` takes every new sample of the stream (channels × samples, stream rate) and returns
    the preprocessed samples it can emit (model channels × samples at ``sfreq_out``); the state
    carries over between calls, so pushing a recording in any chunking gives the same output.
    ``finalize`` applies the per-window steps (baseline, robust scaling, clipping) and returns
    the model input: channels × samples, or channels × frequencies × samples when the rows are
    wavelet power (:class:`neurocast.streaming.preprocessing.scalogram.ScalogramPreprocessor`).
    """

    @property
    def sfreq_out(self) -> float: ...

    @property
    def n_channels_out(self) -> int: ...

    def push(self, x: NDArray[np.float32]) -> NDArray[np.float32]: ...

    def finalize(self, window: NDArray[np.float32]) -> NDArray[np.float32]: ...

    def reset(self) -> None: ...


class WindowModel(Protocol):
    """What the engine needs of a decoder (an ONNX artifact wrapped by :mod:`neurocast.models`).

    ``window`` is the model's input span (window and context; its stride is ignored: the
    session's stride applies). ``preprocessor`` checks that the stream fits the model (channel
    names, rate) and raises ``ValueError`` saying what to do when it does not. ``run`` takes the
    finalized window (channels × samples, or channels × frequencies × samples; float32) and
    returns the kind-specific payload.
    """

    @property
    def name(self) -> str: ...

    @property
    def kind(self) -> ResultKind: ...

    @property
    def window(self) -> WindowSpec: ...

    def preprocessor(self, stream: StreamInfo) -> OnlinePreprocessor: ...

    def run(self, x: NDArray[np.float32]) -> dict[str, Any]: ...


_HISTORY_BYTES = 64 << 20


class _ModelState:
    """One model's preprocessing state and the history of its preprocessed samples."""

    def __init__(self, model: WindowModel, stream: StreamInfo) -> None:
        self.model = model
        self.pre = model.preprocessor(stream)
        self.samples: WindowSamples = model.window.in_samples(self.pre.sfreq_out)
        rate = self.pre.sfreq_out
        rows = self.pre.n_channels_out
        # four windows, and 5 s when that fits in _HISTORY_BYTES (scalogram inputs have
        # channels × frequencies rows)
        seconds = min(int(5 * rate), _HISTORY_BYTES // (4 * rows))
        self.history = RingBuffer(rows, max(4 * self.samples.total, seconds), rate)
        # source samples that one model window spans, to find issues in the raw stream
        self.source_span = int(np.ceil(self.samples.total * stream.sfreq / rate))

    def push(self, x: NDArray[np.float32]) -> None:
        y = self.pre.push(x)
        if y.shape[1]:
            n = self.history.n_written
            t = (n + np.arange(y.shape[1])) / self.history.sfreq
            self.history.write(y.T, t)


class DecodeEngine:
    """Synchronous decoding of one stream by several models on a shared window clock.

    Parameters
    ----------
    stream : StreamInfo
        The stream's metadata; each model checks that it fits.
    models : sequence of WindowModel
        Decoders to run on every window.
    stride_s : float
        Time between window ends in seconds (default 0.025).
    capacity_s : float
        How much raw history the ring buffer keeps, in seconds.
    live : bool
        True when chunks arrive from a live source: acquisition latency is then measured
        from each window's last sample to decoding. False for batch decoding, where it is 0.
    max_lag_s : float | None
        Live decoding's latency budget in seconds (see :mod:`.budget`): :meth:`decode_next`
        skips the due windows that waited longer than this beyond their delivery. None
        decodes every window however late.
    """

    CLOCK_AHEAD_TOLERANCE_MS = 1.0
    """A window whose last sample is stamped later than this after the local clock at decode
    time carries the ``clock_ahead`` issue: the source clock (after LSL's clock correction)
    runs ahead of ours, and the acquisition latency is negative by that much."""

    def __init__(
        self,
        stream: StreamInfo,
        models: Sequence[WindowModel],
        *,
        stride_s: float = 0.025,
        capacity_s: float = 30.0,
        live: bool = True,
        max_lag_s: float | None = None,
    ) -> None:
        if not models:
            raise ValueError("A decode engine needs at least one model.")
        self.stream = stream
        self.states = [_ModelState(m, stream) for m in models]
        longest = max(s.source_span for s in self.states)
        spec = WindowSpec(window_s=longest / stream.sfreq, stride_s=stride_s)
        self.clock = DecodeClock(spec.in_samples(stream.sfreq))
        self.ring = RingBuffer(
            stream.n_channels, max(int(capacity_s * stream.sfreq), 4 * longest), stream.sfreq
        )
        self._markers: deque[Marker] = deque(maxlen=4096)
        self._fed = 0  # raw samples already pushed through preprocessing
        self._last_finite = np.zeros(stream.n_channels, dtype=np.float32)
        self.clock_offset = 0.0
        self.live = live
        if max_lag_s is not None and max_lag_s >= self.ring.capacity / stream.sfreq:
            raise ValueError(
                f"max_lag_s={max_lag_s} s is longer than the {self.ring.capacity / stream.sfreq} "
                "s of history the ring buffer holds; choose a shorter budget or a larger "
                "capacity_s."
            )
        self.budget = LatencyBudget(max_lag_s) if max_lag_s is not None else None

    def write(self, chunk: Chunk) -> None:
        """Store a chunk from the source (validated by the ring buffer)."""
        self.ring.write(chunk.data, chunk.timestamps)
        self.clock_offset = chunk.clock_offset
        self._markers.extend(chunk.markers)
        if self.budget is not None and len(chunk.timestamps):
            ts = chunk.timestamps
            self.budget.observe(
                float(ts[0]), float(ts[-1]), len(ts), self.stream.sfreq, chunk.receipt_time
            )

    def decode_next(self) -> list[Result] | None:
        """Decode the oldest due window within the latency budget (live decoding).

        Due windows older than the budget are skipped and counted (reason ``over_budget``);
        the newest due window is always decoded, so decoding moves on even when one window
        takes longer than the budget.

        Returns
        -------
        results : list of Result | None
            One per model for the decoded window (empty while a model's first window is not
            complete), or None when no window is due.
        """
        n = self.ring.n_written
        newest = self.clock.newest_due(n)
        if newest is None:
            return None
        not_before = 0
        if self.budget is not None:
            t_min = self.budget.oldest_in_budget(local_clock())
            not_before = self._first_end_from(t_min, self.clock.next_end, newest)
        due = self.clock.take_oldest(n, not_before=not_before)
        assert due is not None
        return self._decode(*due)

    def _first_end_from(self, t_min: float, lo: int, hi: int) -> int:
        """Smallest window end in ``lo..hi`` (stride steps) whose last sample is at ``t_min``
        or later; ``hi`` when none is."""
        stride = self.clock.samples.stride
        oldest_held = self.ring.n_written - self.ring.capacity + 1
        if lo - 1 >= oldest_held and self.ring.timestamp(lo - 1) >= t_min:
            return lo  # the usual case: the oldest due window is within the budget
        a, b = 0, (hi - lo) // stride
        while a < b:
            m = (a + b) // 2
            end = lo + m * stride
            if end - 1 >= oldest_held and self.ring.timestamp(end - 1) >= t_min:
                b = m
            else:
                a = m + 1
        return lo + a * stride

    def decode_due(self, *, newest_only: bool = True) -> list[Result]:
        """Decode the due window(s).

        Parameters
        ----------
        newest_only : bool
            Live mode (True): decode only the newest due window and count the others as
            skipped. Batch mode (False): decode every due window in order.

        Returns
        -------
        results : list of Result
            One per model per decoded window.
        """
        out: list[Result] = []
        while True:
            n = self.ring.n_written
            if newest_only:
                due = self.clock.take(n)
            else:
                due = self.clock.take(min(n, self.clock.next_end))
            if due is None:
                return out
            out.extend(self._decode(*due))
            if newest_only:
                return out

    def _decode(self, end: int, skipped: int) -> list[Result]:
        t_start = local_clock()
        self._feed_until(end)
        t_fed = local_clock()
        t_end = self.ring.timestamp(end - 1)
        # never clamped: a negative value is a source clock running ahead of ours
        acquisition_ms = (t_start - (t_end + self.clock_offset)) * 1e3 if self.live else 0.0
        clock_ahead = acquisition_ms < -self.CLOCK_AHEAD_TOLERANCE_MS
        results = []
        for state in self.states:
            t0 = time.perf_counter()
            raw_issues = self._issues(end - state.source_span, end)
            try:
                window = state.history.latest(state.samples.total)
            except NotEnoughDataError:
                continue  # resampling delay: this model's first window is not complete yet
            x = state.pre.finalize(window.data)
            t1 = time.perf_counter()
            payload = state.model.run(x)
            t2 = time.perf_counter()
            # each kind once per window, in order of appearance
            issues = list(dict.fromkeys(raw_issues + [i.kind for i in window.issues]))
            valid = not issues
            if clock_ahead:
                issues.append("clock_ahead")  # a timing note: the samples themselves are fine
            results.append(
                Result(
                    kind=state.model.kind,
                    model=state.model.name,
                    window_end=end,
                    t_window_end=t_end,
                    payload=payload,
                    valid=valid,
                    issues=issues,
                    skipped=skipped,
                    simulated=self.stream.simulated,
                    latency=Latency(
                        acquisition_ms=acquisition_ms,
                        preprocessing_ms=(t_fed - t_start + t1 - t0) * 1e3,
                        inference_ms=(t2 - t1) * 1e3,
                    ),
                    markers=self._markers_between(end - state.source_span, end, t_end),
                    ready_time=local_clock(),
                    clock_offset=self.clock_offset,
                )
            )
        return results

    def _feed_until(self, end: int) -> None:
        start = self._fed
        if start >= end:
            return
        oldest = self.ring.n_written - self.ring.capacity
        if start < oldest:
            # fell further behind than the ring holds: the filters' state no longer matches
            # the samples that follow, so restart them on what is left
            start = oldest
            for state in self.states:
                state.pre.reset()
        x = self.ring.read(start, end).data
        if not np.isfinite(x).all():
            # NaN/inf would poison filter state forever; the window is flagged instead, and
            # holding the last finite value (not zero) spares later windows a filter transient
            x = hold_last_finite(x, self._last_finite)
        self._last_finite[:] = x[:, -1]
        for state in self.states:
            state.push(x)
        self._fed = end

    def _issues(self, start: int, stop: int) -> list[str]:
        return [i.kind for i in self.ring.issues_between(max(start, 0), stop)]

    def _markers_between(self, start: int, stop: int, t_end: float) -> list[Marker]:
        if not self._markers:
            return []
        t_start = self.ring.timestamp(max(start, 0))
        # the source thread appends while this (decode) thread reads: tuple() copies the deque
        # in one step under the GIL, where iterating it could meet an append and raise
        return [m for m in tuple(self._markers) if t_start <= m.timestamp <= t_end]


def decode_array(
    data: NDArray[np.floating],
    timestamps: NDArray[np.float64],
    stream: StreamInfo,
    models: Sequence[WindowModel],
    *,
    stride_s: float = 0.025,
    markers: Sequence[Marker] = (),
    chunk_s: float = 1.0,
) -> Iterator[Result]:
    """Batch-decode a recording with exactly the windows and preprocessing of live decoding.

    Parameters
    ----------
    data : array, shape (n_channels, n_samples)
        The recording in SI units.
    timestamps : array, shape (n_samples,)
        Time of each sample in seconds.
    stream : StreamInfo
        Its metadata.
    models : sequence of WindowModel
        Decoders to run.
    stride_s : float
        Time between window ends in seconds.
    markers : sequence of Marker
        Events to attach to the windows they fall in.
    chunk_s : float
        Samples are written in chunks of this many seconds (bounds memory; does not change
        results).

    Yields
    ------
    result : Result
        One per model per window, in time order.
    """
    engine = DecodeEngine(
        stream, models, stride_s=stride_s, capacity_s=max(4 * chunk_s, 10.0), live=False
    )
    step = max(1, int(chunk_s * stream.sfreq))
    pending = sorted(markers, key=lambda m: m.timestamp)
    k = 0
    for a in range(0, data.shape[1], step):
        block, ts = data[:, a : a + step].T, timestamps[a : a + step]
        while ts.size:
            # a clock that steps back is written in parts, so the jump is reported, not refused
            cut = first_backstep(ts) or ts.size
            j = k
            while j < len(pending) and pending[j].timestamp <= ts[cut - 1]:
                j += 1
            engine.write(Chunk(block[:cut], ts[:cut], local_clock(), markers=pending[k:j]))
            k = j
            block, ts = block[cut:], ts[cut:]
        yield from engine.decode_due(newest_only=False)
