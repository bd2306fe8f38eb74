"""Streaming Morlet scalogram: wavelet power of many channels, a few new columns at a time.

:class:`StreamingMorlet` computes the same complex Morlet wavelet power as
``mne.time_frequency.tfr_array_morlet(..., output="power")`` (MNE's own wavelets, from
:func:`mne.time_frequency.morlet`), but incrementally: each pushed block of samples yields only
the new time columns, at a cost that does not grow with the history.

Algorithm
---------
Column ``t`` of frequency ``f`` is the convolution of the signal with MNE's centred wavelet
``W_f`` (``2 K_f + 1`` taps), so it can be computed once sample ``t + K_f`` has arrived. All
frequencies are emitted together, ``K = max K_f`` samples after the column's time: that is the
scalogram's latency, half the longest wavelet (:attr:`ScalogramSpec.latency_s`).

Every wavelet becomes a causal filter of ``2 K + 1`` taps (``W_f`` delayed by ``K - K_f``); its
real and imaginary parts are two real filters, applied by uniformly partitioned overlap-save
convolution: the filters are cut into partitions of ``B`` taps (``B``, the block, is the number
of samples per update), each block of input is transformed once (real FFT of ``2 B - 1``
points) and kept in a frequency-domain delay line, and the new ``B`` output samples of every
channel × filter are

1. one matrix product per FFT bin between the filters' partition spectra and the delay line
   (frequencies grouped by wavelet length, so a short wavelet only multiplies the partitions
   that hold its taps), then
2. one real matrix product (the inverse DFT restricted to the ``B`` valid samples of each
   block, and to the decimated columns when ``decim > 1``).

Per block this costs about ``8 (2 K + 1)`` real multiply-adds per channel × frequency, against
``2 B (2 K + 1)`` for direct dot products with the wavelets, with everything in float64 BLAS
matrix products. The result is the exact linear convolution (float64 rounding only), so it
equals MNE's to about 1e-12 relative; the only rate reduction is ``decim`` (MNE's own
``decim``: columns at multiples of ``decim`` samples, exact at those columns).

Lower frequencies are not computed at a lower rate. MNE truncates each wavelet's Gaussian
envelope at 5 standard deviations, where it is still ``exp(-12.5) = 3.7e-6`` of its peak; that
edge gives every wavelet's spectrum a tail decaying only as ``1 / frequency``, about 1e-7 of
the peak tens of hertz away from the wavelet's band. Interpolating a low frequency's
coefficients from a decimated rate therefore errs by about 1e-7 of their RMS amplitude, which
exceeds a relative tolerance of 1e-5 on the power wherever the power is below about 1e-3 of its
mean (roughly one column in a thousand). Exactness was kept instead.

Output columns are aligned with input samples: column ``t`` describes the signal around sample
``t`` (``t`` a multiple of ``decim``). Before the first sample the signal is taken as zero, so
the first ``K`` columns equal MNE's zero-padded edge too; columns near the newest sample wait
for the data they need (MNE pads the future with zeros instead, so they differ from MNE's last
``K_f`` columns only). Non-finite input makes the columns that depend on it non-finite and is
forgotten once it leaves the longest wavelet: nothing is recursive.

This module is on the serving path: numpy, scipy and MNE only, never torch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from mne.time_frequency import morlet
from numpy.typing import ArrayLike, NDArray
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from scipy import fft as sp_fft

# Consecutive frequencies share one matrix product per FFT bin while the shorter wavelet spans
# at least this fraction of the group's partitions (the rest are multiplications by zero).
_GROUP_FILL = 0.75


class ScalogramSpec(BaseModel):
    """Morlet wavelet power a model expects as input (stored in the model's metadata).

    Parameters
    ----------
    sfreq_hz : float
        Rate in Hz of the signal the wavelets are applied to (the preprocessing output rate).
    freqs_hz : list of float
        Wavelet frequencies in Hz, each below the Nyquist frequency.
    n_cycles : float | list of float
        Cycles per wavelet, one value or one per frequency (as for ``tfr_array_morlet``).
    zero_mean : bool
        Subtract each wavelet's mean (``tfr_array_morlet``'s default, True), so that a DC
        offset gives no power.
    decim : int
        Keep every ``decim``-th column (MNE's ``decim``): the output rate is
        ``sfreq_hz / decim``.
    latency_s : float | None
        Half the longest wavelet in seconds: how long after a column's time its value is
        available. Computed from the other fields when omitted; a stored value must match.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    sfreq_hz: float = Field(gt=0)
    freqs_hz: list[float] = Field(min_length=1)
    n_cycles: float | list[float] = 7.0
    zero_mean: bool = True
    decim: int = Field(1, ge=1)
    latency_s: float | None = None

    @field_validator("freqs_hz", "n_cycles", mode="before")
    @classmethod
    def _array_to_list(cls, value: Any) -> Any:
        if isinstance(value, np.ndarray):
            return value.tolist()
        return value

    @model_validator(mode="after")
    def _check(self) -> ScalogramSpec:
        freqs = np.asarray(self.freqs_hz, dtype=np.float64)
        if not (np.isfinite(freqs).all() and (freqs > 0).all()):
            raise ValueError(f"freqs_hz must be positive and finite, got {self.freqs_hz}.")
        if freqs.max() >= self.sfreq_hz / 2:
            raise ValueError(
                f"freqs_hz reach {freqs.max():g} Hz, at or above the Nyquist frequency "
                f"({self.sfreq_hz / 2:g} Hz) of {self.sfreq_hz:g} Hz; lower the frequencies or "
                "raise the preprocessing rate (resample_hz)."
            )
        cycles = np.atleast_1d(np.asarray(self.n_cycles, dtype=np.float64))
        if cycles.size not in (1, freqs.size):
            raise ValueError(
                f"n_cycles has {cycles.size} values for {freqs.size} frequencies; give one "
                "value or one per frequency."
            )
        if not (np.isfinite(cycles).all() and (cycles > 0).all()):
            raise ValueError(f"n_cycles must be positive and finite, got {self.n_cycles}.")
        latency = self.latency_samples / self.sfreq_hz
        if self.latency_s is None:
            object.__setattr__(self, "latency_s", latency)
        elif not np.isclose(self.latency_s, latency, rtol=1e-9, atol=0.0):
            raise ValueError(
                f"latency_s={self.latency_s} does not match these wavelets (half the longest is "
                f"{latency} s); the metadata is inconsistent: re-export the model."
            )
        return self

    @property
    def sfreq_out_hz(self) -> float:
        """Rate of the output columns in Hz."""
        return self.sfreq_hz / self.decim

    @property
    def n_freqs(self) -> int:
        """Number of frequencies."""
        return len(self.freqs_hz)

    @property
    def latency_samples(self) -> int:
        """Half the longest wavelet, in samples at :attr:`sfreq_hz`."""
        return (max(w.size for w in self.wavelets()) - 1) // 2

    def wavelets(self) -> list[NDArray[np.complex128]]:
        """MNE's wavelets for these frequencies (:func:`mne.time_frequency.morlet`)."""
        ws = morlet(
            self.sfreq_hz,
            np.asarray(self.freqs_hz, dtype=np.float64),
            n_cycles=self.n_cycles,
            zero_mean=self.zero_mean,
        )
        return [np.asarray(w, dtype=np.complex128) for w in ws]


class _Group:
    """Frequencies whose wavelets occupy nearly the same partitions, multiplied together."""

    def __init__(
        self,
        index: NDArray[np.intp],
        first: int,
        stop: int,
        spectra: NDArray[np.float64],
    ) -> None:
        self.index = index  # positions of these frequencies in the output
        self.first, self.stop = first, stop  # partitions [first, stop) of the delay line
        self.spectra = spectra  # (n_bins, 4 n, 2 (stop - first))


class StreamingMorlet:
    """Incremental Morlet wavelet power of a multichannel signal.

    Parameters
    ----------
    spec : ScalogramSpec
        Rate, frequencies, cycles, ``zero_mean`` and ``decim``.
    n_channels : int
        Channels of every pushed array.
    block : int | None
        Samples per update. Columns are emitted a whole block at a time, so pushes of a
        multiple of ``block`` samples add no delay. The output does not depend on it (within
        float64 rounding); larger blocks cost less per sample. Default: 25 ms of samples.

    Notes
    -----
    See the module docstring for the algorithm. Memory is about
    ``16 * n_channels * (2 K + 1) * (1 + 1 / block)`` bytes for the delay line plus the filter
    spectra, ``K`` being :attr:`latency_samples`.
    """

    def __init__(self, spec: ScalogramSpec, n_channels: int, *, block: int | None = None) -> None:
        if n_channels < 1:
            raise ValueError(f"n_channels must be at least 1, got {n_channels}.")
        if block is None:
            block = max(1, round(0.025 * spec.sfreq_hz))
        if block < 1:
            raise ValueError(f"block must be at least one sample, got {block}.")
        self.spec = spec
        self.n_channels = int(n_channels)
        self.block = int(block)
        wavelets = spec.wavelets()
        half = np.array([(w.size - 1) // 2 for w in wavelets])
        self.latency_samples = int(half.max())
        b = self.block
        self._n_fft = 2 * b - 1
        n_bins = self._n_fft // 2 + 1
        n_parts = -(-(2 * self.latency_samples + 1) // b)
        self._n_parts = n_parts
        self._groups = self._make_groups(wavelets, half)
        self._idft = self._inverse_dft_rows()
        # delay line of input spectra, newest first from _head; stored twice so that any P
        # consecutive partitions are one contiguous slice
        self._spectra = np.zeros((n_bins, 2 * n_parts, 2, self.n_channels))
        self._tail = np.zeros((self.n_channels, self._n_fft), dtype=np.float64)
        self.reset()

    @property
    def n_freqs(self) -> int:
        """Number of frequencies."""
        return self.spec.n_freqs

    @property
    def sfreq_out(self) -> float:
        """Rate of the output columns in Hz."""
        return self.spec.sfreq_out_hz

    @property
    def latency_s(self) -> float:
        """Seconds between a column's time and the input sample that completes it."""
        return self.latency_samples / self.spec.sfreq_hz

    @property
    def n_columns(self) -> int:
        """Columns emitted so far; the next one describes sample ``n_columns * decim``."""
        return self._n_columns

    def reset(self) -> None:
        """Forget every sample pushed so far (the signal before the next one is zero)."""
        self._spectra[:] = 0.0
        self._tail[:] = 0.0
        self._head = 0
        self._n_pending = 0  # samples of the current block received so far
        self._n_blocks = 0
        self._n_columns = 0

    def _make_groups(
        self, wavelets: list[NDArray[np.complex128]], half: NDArray[np.int_]
    ) -> list[_Group]:
        k, b, n_fft = self.latency_samples, self.block, self._n_fft
        first = (k - half) // b
        stop = (k + half) // b + 1
        order = np.argsort(-half, kind="stable")
        groups = []
        start = 0
        while start < order.size:
            lead = order[start]
            span = stop[lead] - first[lead]
            end = start + 1
            while end < order.size and stop[order[end]] - first[order[end]] >= _GROUP_FILL * span:
                end += 1
            index = order[start:end]
            p0, p1 = int(first[lead]), int(stop[lead])
            # causal taps of each real filter (real then imaginary part of every wavelet),
            # cut into partitions p0..p1-1 of b taps and transformed
            taps = np.zeros((2 * index.size, (p1 - p0) * b))
            for j, f in enumerate(index):
                at = k - int(half[f]) - p0 * b
                w = wavelets[f]
                taps[j, at : at + w.size] = w.real
                taps[index.size + j, at : at + w.size] = w.imag
            parts = sp_fft.rfft(taps.reshape(2 * index.size, p1 - p0, b), n=n_fft, axis=-1)
            alpha = np.moveaxis(parts.real, -1, 0)  # (n_bins, filters, partitions)
            beta = np.moveaxis(parts.imag, -1, 0)
            n_bins = alpha.shape[0]
            # rows: real parts of the products, then imaginary parts; columns: each
            # partition's real then imaginary input spectrum
            spectra = np.empty((n_bins, 2, 2 * index.size, p1 - p0, 2))
            spectra[:, 0, :, :, 0] = alpha
            spectra[:, 0, :, :, 1] = -beta
            spectra[:, 1, :, :, 0] = beta
            spectra[:, 1, :, :, 1] = alpha
            groups.append(
                _Group(
                    index.astype(np.intp),
                    p0,
                    p1,
                    np.ascontiguousarray(spectra.reshape(n_bins, 4 * index.size, 2 * (p1 - p0))),
                )
            )
            start = end
        return groups

    def _inverse_dft_rows(self) -> NDArray[np.float64]:
        """Real inverse DFT giving the ``block`` valid samples from the half spectrum.

        Row ``j`` gives output ``block - 1 + j`` of the ``2 block - 1`` point circular
        convolution; columns are ``(bin, real/imaginary)`` pairs.
        """
        n, b = self._n_fft, self.block
        bins = np.arange(n // 2 + 1)
        weight = np.where(bins == 0, 1.0, 2.0) / n  # n is odd: no Nyquist bin
        phase = 2 * np.pi * np.outer(np.arange(b - 1, n), bins) / n
        rows = np.empty((b, bins.size, 2))
        rows[:, :, 0] = weight * np.cos(phase)
        rows[:, :, 1] = -weight * np.sin(phase)
        return rows.reshape(b, 2 * bins.size)

    def push(self, x: ArrayLike) -> NDArray[np.float32]:
        """Add samples and return the columns they complete.

        Parameters
        ----------
        x : array, shape (n_channels, n_samples)
            The next samples, at ``spec.sfreq_hz``.

        Returns
        -------
        power : ndarray, shape (n_channels, n_freqs, n_new_columns), float32
            Wavelet power of the new columns, oldest first (possibly none).
        """
        arr = np.asarray(x)
        if arr.ndim != 2 or arr.shape[0] != self.n_channels:
            raise ValueError(
                f"push expects (n_channels, n_samples) = ({self.n_channels}, n), got shape "
                f"{arr.shape}."
            )
        b = self.block
        out: list[NDArray[np.float32]] = []
        pos = 0
        n = arr.shape[1]
        while pos < n:
            take = min(b - self._n_pending, n - pos)
            a = self._n_fft - b + self._n_pending
            self._tail[:, a : a + take] = arr[:, pos : pos + take]
            self._n_pending += take
            pos += take
            if self._n_pending == b:
                cols = self._process_block()
                if cols is not None:
                    out.append(cols)
        if not out:
            return np.empty((self.n_channels, self.n_freqs, 0), dtype=np.float32)
        return out[0] if len(out) == 1 else np.concatenate(out, axis=-1)

    def _process_block(self) -> NDArray[np.float32] | None:
        b, p = self.block, self._n_parts
        spectrum = sp_fft.rfft(self._tail, axis=-1)  # (n_channels, n_bins)
        self._head = (self._head - 1) % p
        for at in (self._head, self._head + p):
            self._spectra[:, at, 0] = spectrum.real.T
            self._spectra[:, at, 1] = spectrum.imag.T
        self._tail[:, : self._n_fft - b] = self._tail[:, b:]
        self._n_pending = 0
        # columns whose last needed sample is in this block: t = first_col + j, j < b
        first_col = self._n_blocks * b - self.latency_samples
        self._n_blocks += 1
        decim = self.spec.decim
        cols = np.arange(max(first_col, 0), first_col + b)
        cols = cols[cols % decim == 0]
        if cols.size == 0:
            return None
        idft = self._idft[cols - first_col]
        n_bins = self._spectra.shape[0]
        power = np.empty((cols.size, self.n_freqs, self.n_channels))
        for g in self._groups:
            delay = self._spectra[:, self._head + g.first : self._head + g.stop]
            stacked = np.matmul(g.spectra, delay.reshape(n_bins, -1, self.n_channels))
            y = idft @ stacked.reshape(2 * n_bins, -1)
            y = y.reshape(cols.size, 2, g.index.size, self.n_channels)
            power[:, g.index] = y[:, 0] ** 2 + y[:, 1] ** 2
        self._n_columns += cols.size
        return power.transpose(2, 1, 0).astype(np.float32)


def morlet_power(
    data: ArrayLike, spec: ScalogramSpec, *, block: int | None = None
) -> NDArray[np.float32]:
    """Morlet wavelet power of whole arrays, as the stream computes it.

    Equals ``mne.time_frequency.tfr_array_morlet(data, spec.sfreq_hz, spec.freqs_hz,
    spec.n_cycles, zero_mean=spec.zero_mean, decim=spec.decim, output="power")`` (both edges
    zero-padded), and :class:`StreamingMorlet` gives the same columns once the samples they
    need have arrived.

    Parameters
    ----------
    data : array, shape (..., n_channels, n_times)
        Signals at ``spec.sfreq_hz`` (any leading dimensions, e.g. epochs).
    spec : ScalogramSpec
        The wavelets.
    block : int | None
        Samples per update (cost only); default 64.

    Returns
    -------
    power : ndarray, shape (..., n_channels, n_freqs, n_columns), float32
        ``n_columns = ceil(n_times / decim)``.
    """
    arr = np.asarray(data)
    if arr.ndim < 2:
        raise ValueError(f"data must be (..., n_channels, n_times), got shape {arr.shape}.")
    lead, n_times = arr.shape[:-1], arr.shape[-1]
    signals = arr.reshape(-1, n_times)
    engine = StreamingMorlet(spec, signals.shape[0], block=64 if block is None else block)
    n_cols = -(-n_times // spec.decim)
    # the zeros after the data complete the last columns, as MNE's zero padding does
    flush = np.zeros((signals.shape[0], engine.latency_samples + engine.block))
    power = np.concatenate([engine.push(signals), engine.push(flush)], axis=-1)[..., :n_cols]
    return power.reshape(*lead, spec.n_freqs, n_cols)
