"""Sliding windows on the stream's own sample clock.

Windows end at multiples of the stride counted in samples since the stream started, so live
decoding and batch decoding of the same recording cut exactly the same windows.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WindowSpec:
    """Window length, stride and extra history, in seconds.

    Parameters
    ----------
    window_s : float
        Length of the window the decoder sees (default 0.1 s).
    stride_s : float
        Time between the ends of consecutive windows (default 0.025 s).
    context_s : float
        Extra history before the window that a filter or wavelet needs (default 0).
    """

    window_s: float = 0.1
    stride_s: float = 0.025
    context_s: float = 0.0

    def __post_init__(self) -> None:
        if not self.window_s > 0 or not self.stride_s > 0 or self.context_s < 0:
            raise ValueError(
                f"window_s and stride_s must be positive and context_s non-negative, got "
                f"window_s={self.window_s}, stride_s={self.stride_s}, context_s={self.context_s}."
            )

    def in_samples(self, sfreq: float) -> WindowSamples:
        """Convert to whole samples at ``sfreq`` Hz (each rounded, at least one sample)."""
        return WindowSamples(
            window=max(1, round(self.window_s * sfreq)),
            stride=max(1, round(self.stride_s * sfreq)),
            context=round(self.context_s * sfreq),
            sfreq=float(sfreq),
        )


@dataclass(frozen=True)
class WindowSamples:
    """A :class:`WindowSpec` in samples at a given rate."""

    window: int
    stride: int
    context: int
    sfreq: float

    @property
    def total(self) -> int:
        """Samples a decoder reads per window: context plus window."""
        return self.window + self.context

    @property
    def first_end(self) -> int:
        """Smallest window end (exclusive sample index) with enough history before it."""
        return -(-self.total // self.stride) * self.stride

    def ends(self, n_samples: int) -> range:
        """All window ends available once ``n_samples`` samples exist, oldest first."""
        return range(self.first_end, n_samples + 1, self.stride)


class DecodeClock:
    """Chooses the next window to decode and counts the ones skipped, with the reason.

    Two policies: :meth:`take_oldest` decodes every due window in order and skips only the ones
    the caller says are too old (live decoding within a latency budget); :meth:`take` decodes
    only the newest due window and skips the others.
    """

    def __init__(self, samples: WindowSamples) -> None:
        self.samples = samples
        self.last_end: int | None = None
        self.n_decoded = 0
        self.n_skipped = 0
        self.skipped_by_reason: dict[str, int] = {}

    def _advance(self, end: int, skipped: int, reason: str) -> tuple[int, int]:
        self.last_end = end
        self.n_decoded += 1
        if skipped:
            self.n_skipped += skipped
            self.skipped_by_reason[reason] = self.skipped_by_reason.get(reason, 0) + skipped
        return end, skipped

    def newest_due(self, n_written: int) -> int | None:
        """The newest window end due once ``n_written`` samples exist (None: nothing due)."""
        nxt = self.next_end
        if n_written < nxt:
            return None
        return nxt + (n_written - nxt) // self.samples.stride * self.samples.stride

    def take_oldest(
        self, n_written: int, *, not_before: int = 0, reason: str = "over_budget"
    ) -> tuple[int, int] | None:
        """Take the oldest due window end that ends at or after ``not_before``.

        Parameters
        ----------
        n_written : int
            Samples written to the stream so far.
        not_before : int
            Due window ends below this (exclusive sample index) are skipped; the newest due
            window is always taken, so decoding moves on even when it is over the budget.
        reason : str
            Counted in :attr:`skipped_by_reason` for the skipped windows.

        Returns
        -------
        due : tuple of (int, int) | None
            ``(end, skipped)``, or None when no window is due yet.
        """
        newest = self.newest_due(n_written)
        if newest is None:
            return None
        nxt, stride = self.next_end, self.samples.stride
        end = nxt + max(0, -(-(not_before - nxt) // stride)) * stride
        end = min(end, newest)
        return self._advance(end, (end - nxt) // stride, reason)

    @property
    def next_end(self) -> int:
        """The earliest window end not decoded yet."""
        if self.last_end is None:
            return self.samples.first_end
        return self.last_end + self.samples.stride

    def take(self, n_written: int) -> tuple[int, int] | None:
        """Take the newest due window end.

        Parameters
        ----------
        n_written : int
            Samples written to the stream so far.

        Returns
        -------
        due : tuple of (int, int) | None
            ``(end, skipped)``: the window end to decode now and how many due windows before it
            are skipped; None when no window is due yet.
        """
        end = self.newest_due(n_written)
        if end is None:
            return None
        return self._advance(end, (end - self.next_end) // self.samples.stride, "newest_only")
