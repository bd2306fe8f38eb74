"""Preallocated per-stream ring buffer with per-sample timestamps.

One writer thread appends chunks; any number of reader threads take the newest window.
Nothing is reallocated after construction: writes and reads wrap around the same arrays.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

IssueKind = Literal["gap", "clock_jump_forward", "clock_jump_backward", "non_finite"]


def first_backstep(timestamps: NDArray[np.float64]) -> int | None:
    """Index of the first sample whose timestamp is not after the previous one, or None.

    :meth:`RingBuffer.write` refuses such a chunk whole; sources whose clock may jump back
    split the chunk here and write the parts separately, so the jump is reported instead.
    """
    if timestamps.size > 1:
        back = np.flatnonzero(np.diff(timestamps) <= 0)
        if back.size:
            return int(back[0]) + 1
    return None


class NotEnoughDataError(LookupError):
    """A window was requested before enough samples exist (or after they were overwritten)."""


@dataclass(frozen=True)
class TimestampIssue:
    """A discontinuity found in the timestamps (or values) of written samples.

    Attributes
    ----------
    kind : str
        ``"gap"`` (samples missing: the step exceeds ``gap_factor`` sample periods),
        ``"clock_jump_forward"`` (the step exceeds ``jump_s`` seconds),
        ``"clock_jump_backward"`` (time went backwards between chunks) or
        ``"non_finite"`` (NaN or inf values in the chunk).
    index : int
        Absolute index (samples since the stream started) of the first sample after the issue.
    t_before, t_after : float
        Timestamps (source clock, seconds) around the issue.
    n_samples : int
        For ``"non_finite"``, the span from the first to the last sample holding NaN/inf;
        otherwise 0.
    """

    kind: IssueKind
    index: int
    t_before: float
    t_after: float
    n_samples: int = 0

    @property
    def step_s(self) -> float:
        """Time step across the issue in seconds (negative for a backward jump)."""
        return self.t_after - self.t_before


@dataclass(frozen=True)
class Window:
    """A contiguous block of samples read from a :class:`RingBuffer`.

    Attributes
    ----------
    data : ndarray, shape (n_channels, n_samples), float32
        A copy of the samples, in the stream's unit (volts or tesla for MEG/EEG): the
        transposed view of a time-major copy (Fortran-ordered).
    timestamps : ndarray, shape (n_samples,), float64
        Source-clock time of each sample in seconds.
    start : int
        Absolute index of the first sample.
    issues : tuple of TimestampIssue
        Discontinuities inside the window. A window with any issue is not ``valid``.
    """

    data: NDArray[np.float32]
    timestamps: NDArray[np.float64]
    start: int
    issues: tuple[TimestampIssue, ...] = field(default=())

    @property
    def stop(self) -> int:
        """Absolute index one past the last sample."""
        return self.start + self.data.shape[1]

    @property
    def t_end(self) -> float:
        """Timestamp of the last sample (source clock, seconds)."""
        return float(self.timestamps[-1])

    @property
    def valid(self) -> bool:
        """True when the samples are finite and evenly spaced in time."""
        return not self.issues


class RingBuffer:
    """Fixed-capacity buffer of float32 samples, stored time-major.

    Parameters
    ----------
    n_channels : int
        Number of channels every chunk must have.
    capacity : int
        Number of samples held; older samples are overwritten.
    sfreq : float
        Nominal sampling rate in Hz, used to detect gaps in timestamps.
    gap_factor : float
        A step between consecutive timestamps larger than ``gap_factor / sfreq`` is a gap.
    jump_s : float
        A forward step larger than this (seconds) is a clock jump rather than lost samples.
    max_issues : int
        How many recent issues are remembered (older ones are forgotten, never reallocated).

    Notes
    -----
    Layout: samples are stored ``(capacity, n_channels)``, as devices deliver them, so a write
    and a window read are one or two contiguous copies; a window 25 ms after the previous one
    reads a few contiguous cache lines per sample instead of one strided row per channel,
    which is what makes a paced read (cold caches) cheap. Windows are handed out as
    ``(n_channels, n_samples)`` views of that copy.

    Thread safety: one writer and many readers. The writer announces how far it is about to
    write before touching the arrays and publishes the new sample count only after the samples
    are in place; a reader copies, then checks against the announced count that the writer did
    not overwrite what it copied meanwhile (a sequence lock, so readers never block the
    writer). :meth:`latest` then retries on the newer data; :meth:`read` of a fixed range
    raises :class:`NotEnoughDataError`.
    """

    def __init__(
        self,
        n_channels: int,
        capacity: int,
        sfreq: float,
        *,
        gap_factor: float = 1.5,
        jump_s: float = 1.0,
        max_issues: int = 1024,
    ) -> None:
        if n_channels < 1:
            raise ValueError(f"n_channels must be at least 1, got {n_channels}.")
        if capacity < 2:
            raise ValueError(f"capacity must be at least 2 samples, got {capacity}.")
        if not sfreq > 0:
            raise ValueError(f"sfreq must be positive (Hz), got {sfreq}.")
        self.n_channels = int(n_channels)
        self.capacity = int(capacity)
        self.sfreq = float(sfreq)
        self._gap_s = gap_factor / self.sfreq
        self._jump_s = float(jump_s)
        self._data = np.zeros((self.capacity, self.n_channels), dtype=np.float32)
        self._times = np.zeros(self.capacity, dtype=np.float64)
        self._n_written = 0  # published total; only the writer changes it
        self._n_reserved = 0  # total once the write in progress is done (>= _n_written)
        # (n_written, first index after the latest backward clock jump), published together
        self._segment: tuple[int, int] = (0, 0)
        self._issues: deque[TimestampIssue] = deque(maxlen=max_issues)
        self._issue_lock = threading.Lock()
        self._cond = threading.Condition()
        # Writers notify only when a waiter's target is reached, so a decode thread waiting
        # for the next window is not woken by every 1-sample chunk.
        self._n_waiters = 0
        self._wake_at = float("inf")

    @property
    def n_written(self) -> int:
        """Total number of samples written since construction."""
        return self._n_written

    @property
    def last_timestamp(self) -> float | None:
        """Timestamp of the newest sample, or None before the first write."""
        n = self._n_written
        return None if n == 0 else float(self._times[(n - 1) % self.capacity])

    @property
    def issues(self) -> list[TimestampIssue]:
        """Recent discontinuities, oldest first."""
        with self._issue_lock:
            return list(self._issues)

    def write(self, chunk: ArrayLike, timestamps: ArrayLike) -> list[TimestampIssue]:
        """Append a chunk of samples.

        Parameters
        ----------
        chunk : array, shape (n_samples, n_channels)
            Samples in sample-major order, as LSL and FieldTrip deliver them.
        timestamps : array, shape (n_samples,)
            Source-clock time of each sample in seconds, finite and strictly increasing within
            the chunk.

        Returns
        -------
        issues : list of TimestampIssue
            Gaps, clock jumps and non-finite values found in this chunk (also kept in
            :attr:`issues` and attached to windows that span them).

        Raises
        ------
        ValueError
            If the channel count differs from the buffer's, the timestamp count differs from
            the sample count, or timestamps are not finite or not strictly increasing within
            the chunk.
            Nothing is written in that case.
        """
        arr = np.asarray(chunk)
        if arr.ndim == 1:
            arr = arr[np.newaxis, :] if arr.shape[0] == self.n_channels else arr[:, np.newaxis]
        if arr.ndim != 2 or arr.shape[1] != self.n_channels:
            raise ValueError(
                f"Chunk has shape {arr.shape}, expected (n_samples, {self.n_channels}): the "
                f"stream was opened with {self.n_channels} channels. If the device's channel "
                "count changed, restart the stream so the buffer is rebuilt."
            )
        ts = np.asarray(timestamps, dtype=np.float64).reshape(-1)
        n = arr.shape[0]
        if ts.shape[0] != n:
            raise ValueError(f"Got {n} samples but {ts.shape[0]} timestamps; they must match.")
        if n == 0:
            return []
        if not np.isfinite(ts).all():
            bad = int(np.argmin(np.isfinite(ts)))
            raise ValueError(
                f"Timestamps must be finite; sample {bad} of the chunk has t={ts[bad]} s. "
                "Nothing was written. Check the source's clock."
            )
        if n > 1:
            steps = np.diff(ts)
            if not np.all(steps > 0):
                bad = int(np.argmax(steps <= 0))
                raise ValueError(
                    "Timestamps within a chunk must be strictly increasing; sample "
                    f"{bad + 1} has t={ts[bad + 1]:.6f} s after t={ts[bad]:.6f} s. Nothing was "
                    "written. Check the source's clock or resample its timestamps."
                )
        found, segment_start = self._find_issues(arr, ts, steps if n > 1 else None)
        if n > self.capacity:  # only the newest samples fit
            arr, ts = arr[-self.capacity :], ts[-self.capacity :]
            skip = n - self.capacity
        else:
            skip = 0
        start = (self._n_written + skip) % self.capacity
        self._n_reserved = self._n_written + n  # before any sample is overwritten
        m = arr.shape[0]
        first = min(m, self.capacity - start)
        self._data[start : start + first] = arr[:first]
        self._times[start : start + first] = ts[:first]
        if first < m:
            self._data[: m - first] = arr[first:]
            self._times[: m - first] = ts[first:]
        with self._cond:
            self._n_written += n
            self._segment = (self._n_written, segment_start)
            if self._n_written >= self._wake_at:
                self._cond.notify_all()
        return found

    def _find_issues(
        self, arr: NDArray, ts: NDArray[np.float64], steps: NDArray[np.float64] | None
    ) -> tuple[list[TimestampIssue], int]:
        """Issues in a chunk about to be written, and the segment start after it."""
        found: list[TimestampIssue] = []
        base = self._n_written
        segment_start = self._segment[1]
        last = self.last_timestamp
        if last is not None:
            step = ts[0] - last
            if step <= 0:
                found.append(TimestampIssue("clock_jump_backward", base, last, float(ts[0])))
                segment_start = base
            elif step > self._jump_s:
                found.append(TimestampIssue("clock_jump_forward", base, last, float(ts[0])))
            elif step > self._gap_s:
                found.append(TimestampIssue("gap", base, last, float(ts[0])))
        if steps is not None:
            for i in np.flatnonzero(steps > self._gap_s):
                kind: IssueKind = "clock_jump_forward" if steps[i] > self._jump_s else "gap"
                found.append(
                    TimestampIssue(kind, base + int(i) + 1, float(ts[i]), float(ts[i + 1]))
                )
        if arr.dtype.kind == "f":
            finite = np.isfinite(arr).all(axis=1)
            if not finite.all():
                bad = np.flatnonzero(~finite)
                found.append(
                    TimestampIssue(
                        "non_finite",
                        base + int(bad[0]),
                        float(ts[bad[0]]),
                        float(ts[bad[-1]]),
                        n_samples=int(bad[-1] - bad[0] + 1),
                    )
                )
        if found:
            with self._issue_lock:
                self._issues.extend(found)
        return found, segment_start

    def wait_for(self, n_written: int, timeout: float | None = None) -> bool:
        """Block until at least ``n_written`` samples exist in total, or ``timeout`` seconds.

        Returns
        -------
        reached : bool
            True if the count was reached.
        """
        with self._cond:
            if self._n_written >= n_written:
                return True
            self._n_waiters += 1
            self._wake_at = min(self._wake_at, n_written)
            try:
                return self._cond.wait_for(lambda: self._n_written >= n_written, timeout)
            finally:
                self._n_waiters -= 1
                if self._n_waiters == 0:
                    self._wake_at = float("inf")

    def wake(self) -> None:
        """Wake every thread blocked in :meth:`wait_for` (used when a stream stops)."""
        with self._cond:
            self._cond.notify_all()

    def index_at(self, t: float) -> int:
        """Absolute index one past the newest sample with timestamp at or before ``t``.

        Searches the samples held since the latest backward clock jump.

        Raises
        ------
        NotEnoughDataError
            If no held sample is at or before ``t``.
        """
        while True:
            n, segment_start = self._segment
            lo = max(self._n_reserved - self.capacity, segment_start)
            if n == 0:
                raise NotEnoughDataError("The buffer holds no samples yet.")
            if n <= lo:
                continue  # a chunk longer than the buffer is being written: wait for it
            stop = lo + self._search_wrapped(lo, n, t)
            if self._n_reserved - self.capacity <= lo:
                break  # no timestamp searched was overwritten meanwhile
        if stop == lo:
            raise NotEnoughDataError(
                f"No sample at or before t={t:.6f} s is still held (oldest held: "
                f"{self._times[lo % self.capacity]:.6f} s)."
            )
        return stop

    def _search_wrapped(self, lo: int, hi: int, t: float) -> int:
        a, b = lo % self.capacity, hi % self.capacity
        if a < b:
            return int(np.searchsorted(self._times[a:b], t, side="right"))
        head = self._times[a:]
        k = int(np.searchsorted(head, t, side="right"))
        if k < head.shape[0]:
            return k
        return head.shape[0] + int(np.searchsorted(self._times[:b], t, side="right"))

    def latest(self, n_samples: int, t: float | None = None) -> Window:
        """Read the newest ``n_samples`` samples ending at or before time ``t``.

        Parameters
        ----------
        n_samples : int
            Window length in samples.
        t : float | None
            Source-clock time in seconds; None means the newest sample.

        Returns
        -------
        window : Window
            A copy of the samples, their timestamps and any issue inside them.

        Raises
        ------
        NotEnoughDataError
            If fewer than ``n_samples`` samples exist up to ``t``, or they were overwritten.
        """
        while True:
            held_from = self._n_reserved - self.capacity
            stop = self._n_written if t is None else self.index_at(t)
            start = stop - n_samples
            try:
                return self.read(start, stop)
            except NotEnoughDataError:
                if start < 0 or (t is not None and start < held_from):
                    raise  # the data did not exist (or was gone) before this read began
                # the writer lapped this read: read again (the newest window moved on)

    def read(self, start: int, stop: int) -> Window:
        """Read samples ``start`` to ``stop`` (absolute indices, ``stop`` exclusive).

        Raises
        ------
        NotEnoughDataError
            If the range is not (or no longer) held.
        """
        n = stop - start
        if n < 1:
            raise ValueError(f"A window needs at least one sample, got start={start}, stop={stop}.")
        if n > self.capacity:
            raise ValueError(
                f"A window of {n} samples does not fit a buffer of {self.capacity} samples; "
                "create the buffer with a larger capacity."
            )
        written = self._n_written
        if start < 0 or stop > written:
            raise NotEnoughDataError(
                f"Samples {start}..{stop} requested but only {written} have been written "
                f"({n} samples = {n / self.sfreq * 1e3:.1f} ms are needed); wait for more data."
            )
        data = np.empty((n, self.n_channels), dtype=np.float32)
        times = np.empty(n, dtype=np.float64)
        a = start % self.capacity
        first = min(n, self.capacity - a)
        data[:first] = self._data[a : a + first]
        times[:first] = self._times[a : a + first]
        if first < n:
            data[first:] = self._data[: n - first]
            times[first:] = self._times[: n - first]
        # The writer may have lapped us while we copied: anything older than
        # n_reserved - capacity may have been (or be being) overwritten.
        if self._n_reserved - self.capacity > start:
            raise NotEnoughDataError(
                f"Samples from index {start} were overwritten while being read; the buffer "
                f"({self.capacity} samples) is too small for this reader's pace."
            )
        return Window(data.T, times, start, self.issues_between(start, stop))

    def timestamp(self, index: int) -> float:
        """Timestamp in seconds of the sample at absolute ``index`` (must still be held).

        Reads the timestamp alone (no copy of the sample's channels): the decode engine asks
        for several per window.

        Raises
        ------
        NotEnoughDataError
            If the sample is not (or no longer) held.
        """
        written = self._n_written
        if index < 0 or index >= written:
            raise NotEnoughDataError(
                f"Sample {index} requested but only {written} have been written; wait for more "
                "data."
            )
        t = float(self._times[index % self.capacity])
        # the same sequence-lock check as read(): the writer may have lapped this sample
        if self._n_reserved - self.capacity > index:
            raise NotEnoughDataError(
                f"Sample {index} was overwritten while being read; the buffer "
                f"({self.capacity} samples) is too small for this reader's pace."
            )
        return t

    def issues_between(self, start: int, stop: int) -> tuple[TimestampIssue, ...]:
        """Issues affecting samples ``start`` to ``stop`` (absolute indices, exclusive)."""
        if not self._issues:
            return ()
        with self._issue_lock:
            hits = []
            for issue in reversed(self._issues):
                if issue.kind == "non_finite":
                    # the issue covers the chunk from its first non-finite sample on
                    if issue.index < stop and issue.index + issue.n_samples > start:
                        hits.append(issue)
                elif start < issue.index < stop:
                    hits.append(issue)
                if issue.index + 4 * self.capacity < start:
                    break
            return tuple(reversed(hits))
