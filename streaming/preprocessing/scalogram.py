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

Every wavelet becomes a causal filter of ``2 K' + 1`` taps (``W_f`` delayed by ``K' - K_f``,
with ``K <= K' < K + B`` chosen so that the taps fill whole partitions); its real and imaginary
parts are two real filters, applied by uniformly partitioned overlap-save convolution: the
filters are cut into ``P`` partitions of ``B`` taps (``B``, the block, is the number of samples
per update), each block of input is transformed once (real FFT of ``2 B - 1`` points) and kept
in a frequency-domain delay line, and the new ``B`` output samples of every channel × filter
are

1. one matrix product per FFT bin between the filters' partition spectra and the delay line
   (frequencies grouped by wavelet length, so a short wavelet only multiplies the partitions
   that hold its taps), then
2. one real matrix product (the inverse DFT restricted to the ``B`` valid samples of each
   block, and to the decimated columns when ``decim > 1``).

Morlet wavelets are conjugate-symmetric about their centre (``W(-t) = conj(W(t))``, the
zero-mean offset included), so partition ``P - 1 - p`` is the mirror image of partition ``p``
and its spectrum is a fixed phase times the conjugate of partition ``p``'s. Step 1 therefore
multiplies sums and differences of paired delay-line spectra by real weights, which halves it.
Per block this costs about ``4 (2 K' + 1) + 4 B²`` real multiply-adds per channel × frequency,
against ``2 B (2 K + 1)`` for direct dot products with the wavelets (for ``K = 397``,
``B = 25``: 5,800 against 39,750), all in float64 BLAS matrix products. The result is the exact
linear convolution (float64 rounding only) and equals MNE's to float32 rounding of the output;
the only rate reduction is ``decim`` (MNE's own ``decim``: columns at multiples of ``decim``
samples, exact at those columns).

Lower frequencies are not computed at a lower rate. MNE truncates each wavelet's Gaussian
envelope at 5 standard deviations, where it is still ``exp(-12.5) = 3.7e-6`` of its peak, so
the wavelets' spectra have tails far outside their bands. Measured on white noise at 1 kHz, even
ideal band-limited (FFT) interpolation of the demodulated coefficients from a 5 to 50 times
lower rate errs by 4e-5 to 5e-4 of their RMS amplitude (2 Hz and 10 Hz, 1 and 7 cycles), and
60 % to 90 % of the power values then miss a relative tolerance of 1e-5. Exactness was kept
instead.

Output columns are aligned with input samples: column ``t`` describes the signal around sample
``t`` (``t`` a multiple of ``decim``). Before the first sample the signal is taken as zero, so
the first ``K`` columns equal MNE's zero-padded edge too; columns near the newest sample wait
for the data they need (MNE pads the future with zeros instead, so they differ from MNE's last
``K_f`` columns only). Non-finite input makes the columns that depend on it non-finite and is
forgotten once it leaves the longest wavelet: nothing is recursive.

This module is on the serving path: numpy, scipy and MNE only, never torch.
"""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np
from mne.time_frequency import morlet
from numpy.typing import ArrayLike, NDArray
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from scipy import fft as sp_fft
from threadpoolctl import ThreadpoolController

if TYPE_CHECKING:
    # only an annotation: the engine imports preprocessing, not the other way round
    from neurocast.streaming.engine.pipeline import OnlinePreprocessor

# Consecutive frequencies share one matrix product per FFT bin while the shorter wavelet spans
# at least this fraction of the group's partitions (the rest are multiplications by zero).
_GROUP_FILL = 0.75
# Channels per chunk of work: the products of a chunk stay in the processor's cache.
_CHUNK_CHANNELS = 128


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
    """Frequencies whose wavelets occupy nearly the same partitions, multiplied together.

    ``weights[s]`` holds, per FFT bin, the weights applied to stack ``s`` of paired spectra
    (see :meth:`StreamingMorlet._columns`); rows are the group's wavelets' real parts
    then imaginary parts, columns ``(pair, 2)`` for pairs ``first`` up to the middle one.
    """

    def __init__(self, index: NDArray[np.intp], first: int, weights: NDArray[np.float64]) -> None:
        self.index = index
        self.first = first
        self.weights = weights
        # a run of consecutive frequencies is written through a slice (no gather)
        contiguous = bool((np.diff(index) == 1).all())
        self.where: slice | NDArray[np.intp] = (
            slice(int(index[0]), int(index[-1]) + 1) if contiguous else index
        )


class StreamingMorlet:
    """Incremental Morlet wavelet power of a multichannel signal.

    Parameters
    ----------
    spec : ScalogramSpec
        Rate, frequencies, cycles, ``zero_mean`` and ``decim``.
    n_channels : int
        Channels of every pushed array.
    block : int | None
        Samples per update, odd. Columns are emitted a whole block at a time, so pushes of a
        multiple of ``block`` samples add no delay. The output does not depend on it (within
        float64 rounding); the cost per sample is lowest for blocks near ``sqrt(2 K)``
        samples (``K``: half the longest wavelet). Default: the odd number of samples nearest
        at or below 25 ms.
    n_threads : int
        Threads sharing the channels of each block (each runs single-threaded BLAS).

    Notes
    -----
    See the module docstring for the algorithm. Columns are emitted :attr:`latency_samples`
    after their time: half the longest wavelet plus fewer than ``block`` samples that centre
    the wavelets on the partition grid. Memory: about ``48 * n_channels * (2 K' + 1)`` bytes
    for the delay line, ``16 * n_freqs * (2 K' + 1)`` for the wavelets' spectra and
    ``16 * block * n_freqs`` per channel of a chunk (at most 128 channels) and thread for
    intermediate products, ``K'`` being :attr:`latency_samples`.
    """

    def __init__(
        self,
        spec: ScalogramSpec,
        n_channels: int,
        *,
        block: int | None = None,
        n_threads: int = 1,
    ) -> None:
        if n_channels < 1:
            raise ValueError(f"n_channels must be at least 1, got {n_channels}.")
        if block is None:
            block = max(1, round(0.025 * spec.sfreq_hz))
            block -= 1 - block % 2
        if block < 1 or block % 2 == 0:
            raise ValueError(
                f"block must be an odd number of samples (at least 1), got {block}: the "
                "wavelets' mirror symmetry pairs partitions of an odd length."
            )
        if n_threads < 1:
            raise ValueError(f"n_threads must be at least 1, got {n_threads}.")
        self.spec = spec
        self.n_channels = int(n_channels)
        self.block = b = int(block)
        wavelets = spec.wavelets()
        half = np.array([(w.size - 1) // 2 for w in wavelets])
        k = int(half.max())
        # centre every causal filter so that its 2 k' + 1 taps fill whole partitions: then
        # partition p and partition P - 1 - p are mirror images of each other
        delay = next(d for d in range(b) if (2 * (k + d) + 1) % b == 0)
        self.latency_samples = k + delay
        self._n_fft = 2 * b - 1
        n_bins = self._n_fft // 2 + 1
        self._n_parts = (2 * self.latency_samples + 1) // b
        self._n_pairs = (self._n_parts + 1) // 2
        # a mirrored partition's spectrum is this phase times the conjugate of its partner's
        phase = np.exp(-2j * np.pi * np.arange(n_bins) * (b - 1) / self._n_fft)
        self._mirror_phase = phase[:, None, None]
        self._groups = self._make_groups(wavelets, half)
        # stage-2 matrices over rows (stack, bin): the wavelets' real parts take their real
        # products from stack 0 and imaginary ones from stack 1, their imaginary parts the
        # other way round
        idft = self._inverse_dft_rows()
        self._idft = (
            np.concatenate([idft[:, :, 0], idft[:, :, 1]], axis=1),
            np.concatenate([idft[:, :, 1], idft[:, :, 0]], axis=1),
        )
        # delay line of input spectra, newest first from _head; stored twice so that any
        # P consecutive partitions are one contiguous slice
        self._spectra = np.zeros((n_bins, 2 * self._n_parts, self.n_channels), np.complex128)
        self._stacks = np.empty((2, n_bins, self._n_pairs, 2, self.n_channels))
        self._tail = np.zeros((self.n_channels, self._n_fft), dtype=np.float64)
        # channel chunks small enough for the products to stay in cache, one or more per thread
        n_chunks = max(n_threads, -(-self.n_channels // _CHUNK_CHANNELS))
        n_chunks = min(self.n_channels, -(-n_chunks // n_threads) * n_threads)
        edges = np.linspace(0, self.n_channels, n_chunks + 1).round().astype(int)
        self._chunks = [slice(int(a), int(z)) for a, z in itertools.pairwise(edges)]
        widest = max(c.stop - c.start for c in self._chunks)
        n_prod = max(g.index.size for g in self._groups)
        self._buffers = [
            np.empty((2, n_bins, 2 * n_prod * widest)) for _ in range(min(n_threads, n_chunks))
        ]
        self._pool = ThreadPoolExecutor(n_threads) if n_threads > 1 else None
        self._blas = ThreadpoolController()
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

    def close(self) -> None:
        """Stop the worker threads (only needed with ``n_threads > 1``)."""
        if self._pool is not None:
            self._pool.shutdown()

    def _make_groups(
        self, wavelets: list[NDArray[np.complex128]], half: NDArray[np.int_]
    ) -> list[_Group]:
        k, b, n_pairs = self.latency_samples, self.block, self._n_pairs
        first = (k - half) // b  # first partition holding a tap of each wavelet
        order = np.argsort(first, kind="stable")
        groups = []
        start = 0
        while start < order.size:
            lead = int(first[order[start]])
            end = start + 1
            while end < order.size and n_pairs - first[order[end]] >= _GROUP_FILL * (
                n_pairs - lead
            ):
                end += 1
            index = np.sort(order[start:end])
            n = index.size
            # causal taps of the group's real filters (wavelets' real then imaginary parts)
            # over partitions lead .. P - 1 - lead, cut into partitions and transformed
            taps = np.zeros((2 * n, (self._n_parts - 2 * lead) * b))
            for j, f in enumerate(index):
                at = k - int(half[f]) - lead * b
                w = wavelets[f]
                taps[j, at : at + w.size] = w.real
                taps[n + j, at : at + w.size] = w.imag
            parts = sp_fft.rfft(taps.reshape(2 * n, -1, b), n=self._n_fft, axis=-1)
            parts = np.moveaxis(parts[:, : n_pairs - lead], -1, 0)  # (bins, filters, pairs)
            parts[:, :, -1] *= 0.5  # the middle partition pairs with itself
            alpha, beta = parts.real, parts.imag
            # stack 0 holds (sum.real, difference.imag) of each pair, stack 1 (sum.imag,
            # difference.real); with alpha + i beta a partition's spectrum, real-part (even)
            # filters give alpha S + i beta D, imaginary-part (odd) ones alpha D + i beta S
            weights = np.empty((2, parts.shape[0], 2 * n, n_pairs - lead, 2))
            weights[0, :, :n, :, 0], weights[0, :, :n, :, 1] = alpha[:, :n], -beta[:, :n]
            weights[0, :, n:, :, 0], weights[0, :, n:, :, 1] = beta[:, n:], alpha[:, n:]
            weights[1, :, :n, :, 0], weights[1, :, :n, :, 1] = alpha[:, :n], beta[:, :n]
            weights[1, :, n:, :, 0], weights[1, :, n:, :, 1] = -beta[:, n:], alpha[:, n:]
            groups.append(
                _Group(index.astype(np.intp), lead, weights.reshape(*weights.shape[:3], -1))
            )
            start = end
        return groups

    def _inverse_dft_rows(self) -> NDArray[np.float64]:
        """Real inverse DFT giving the ``block`` valid samples from the half spectrum.

        Element ``[j, bin, 0 | 1]`` weighs the real | imaginary part of ``bin`` in output
        ``block - 1 + j`` of the ``2 block - 1`` point circular convolution.
        """
        n, b = self._n_fft, self.block
        bins = np.arange(n // 2 + 1)
        weight = np.where(bins == 0, 1.0, 2.0) / n  # n is odd: no Nyquist bin
        phase = 2 * np.pi * np.outer(np.arange(b - 1, n), bins) / n
        return np.stack([weight * np.cos(phase), -weight * np.sin(phase)], axis=-1)

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
        spectrum = sp_fft.rfft(self._tail, axis=-1).T  # (n_bins, n_channels)
        self._head = (self._head - 1) % p
        self._spectra[:, self._head] = spectrum
        self._spectra[:, self._head + p] = spectrum
        self._tail[:, : self._n_fft - b] = self._tail[:, b:]
        self._n_pending = 0
        # columns whose last needed sample is in this block: t = first_col + j, j < b
        first_col = self._n_blocks * b - self.latency_samples
        self._n_blocks += 1
        cols = np.arange(max(first_col, 0), first_col + b)
        cols = cols[cols % self.spec.decim == 0]
        if cols.size == 0:
            return None
        rows = cols - first_col
        idft = (self._idft[0][rows], self._idft[1][rows])
        out = np.empty((rows.size, self.n_freqs, self.n_channels), dtype=np.float32)
        # one BLAS thread per worker: several threads per small product only wait on each
        # other, badly so on a busy machine
        with self._blas.limit(limits=1, user_api="blas"):
            if self._pool is None:
                self._run_chunks(self._chunks, idft, self._buffers[0], out)
            else:
                n_workers = len(self._buffers)
                futures = [
                    self._pool.submit(self._run_chunks, self._chunks[i::n_workers], idft, buf, out)
                    for i, buf in enumerate(self._buffers)
                ]
                for fut in futures:
                    fut.result()
        self._n_columns += rows.size
        return np.ascontiguousarray(out.transpose(2, 1, 0))

    def _run_chunks(
        self,
        chunks: list[slice],
        idft: tuple[NDArray[np.float64], NDArray[np.float64]],
        buf: NDArray[np.float64],
        out: NDArray[np.float32],
    ) -> None:
        for chunk in chunks:
            self._columns(chunk, idft, buf, out)

    def _columns(
        self,
        chunk: slice,
        idft: tuple[NDArray[np.float64], NDArray[np.float64]],
        buf: NDArray[np.float64],
        out: NDArray[np.float32],
    ) -> None:
        """Power of the block's columns for the channels in ``chunk``.

        Written to ``out``, of shape (n_columns, n_freqs, n_channels).
        """
        p, m = self._n_parts, self._n_pairs
        line = self._spectra[:, self._head : self._head + p, chunk]
        # partition q = P - 1 - i mirrors partition i, so X_i H_i + X_q H_q equals
        # X_i H_i +- (phase X_q) conj(H_i): only the sum S and the difference D of the newer
        # spectrum and the phase-shifted older one are multiplied, by real weights
        newer = line[:, :m]
        older = self._mirror_phase * line[:, p - m :][:, ::-1]
        stacks = self._stacks[..., chunk]
        np.add(newer.real, older.real, out=stacks[0, :, :, 0])  # sum, real part
        np.subtract(newer.imag, older.imag, out=stacks[0, :, :, 1])  # difference, imaginary
        np.add(newer.imag, older.imag, out=stacks[1, :, :, 0])  # sum, imaginary part
        np.subtract(newer.real, older.real, out=stacks[1, :, :, 1])  # difference, real
        n_bins, width, n_rows = line.shape[0], line.shape[2], idft[0].shape[0]
        for g in self._groups:
            n = g.index.size
            products = buf[:, :, : 2 * n * width].reshape(2, n_bins, 2 * n, width)
            for s in range(2):
                operand = stacks[s, :, g.first :].reshape(n_bins, -1, width)
                np.matmul(g.weights[s], operand, out=products[s])
            even = idft[0] @ products[:, :, :n].reshape(2 * n_bins, -1)
            odd = idft[1] @ products[:, :, n:].reshape(2 * n_bins, -1)
            np.multiply(even, even, out=even)
            np.multiply(odd, odd, out=odd)
            np.add(even, odd, out=even)
            out[:, g.where, chunk] = even.reshape(n_rows, n, width)


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
        Samples per update (odd; cost only); default 63.

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
    engine = StreamingMorlet(spec, signals.shape[0], block=63 if block is None else block)
    n_cols = -(-n_times // spec.decim)
    # the zeros after the data complete the last columns, as MNE's zero padding does
    flush = np.zeros((signals.shape[0], engine.latency_samples + engine.block))
    power = np.concatenate([engine.push(signals), engine.push(flush)], axis=-1)[..., :n_cols]
    return power.reshape(*lead, spec.n_freqs, n_cols)


class ScalogramPreprocessor:
    """Online preprocessing followed by the streaming scalogram, for scalogram models.

    Implements the ``OnlinePreprocessor`` protocol of :mod:`neurocast.streaming.engine.pipeline`:
    :meth:`push` runs ``base`` and then :class:`StreamingMorlet` on the new samples and returns
    the new power columns flattened to ``(n_channels * n_freqs, n_columns)`` rows, so the
    decode engine keeps them in its usual ring buffer; :meth:`finalize` gives the model its
    ``(n_channels, n_freqs, n_times)`` input. Scaling the power (log, z-score) belongs in the
    exported graph, so training and serving share it.

    Parameters
    ----------
    base : OnlinePreprocessor
        The signal preprocessing (channel picks, filters, resampling); its per-window steps
        are not used.
    spec : ScalogramSpec
        The wavelets; ``spec.sfreq_hz`` is ``base``'s output rate.
    center, scale : array, shape (n_channels,) | None
        Robust scaling applied to the continuous signal before the wavelets:
        ``(x - center) / scale``. MEG power in tesla² falls to 1e-40 and below, where float32
        loses its precision; scaled signals keep the power near 1.
    block : int | None
        Samples per scalogram update (odd); see :class:`StreamingMorlet`.
    n_threads : int
        Threads computing the scalogram.
    """

    def __init__(
        self,
        base: OnlinePreprocessor,
        spec: ScalogramSpec,
        *,
        center: ArrayLike | None = None,
        scale: ArrayLike | None = None,
        block: int | None = None,
        n_threads: int = 1,
    ) -> None:
        if abs(base.sfreq_out - spec.sfreq_hz) > 1e-4 * spec.sfreq_hz:
            raise ValueError(
                f"The scalogram is defined at {spec.sfreq_hz:g} Hz but the preprocessing "
                f"outputs {base.sfreq_out:g} Hz; set the preprocessing's resample_hz to "
                f"{spec.sfreq_hz:g}."
            )
        self.base = base
        n = base.n_channels_out
        self._center = np.zeros((n, 1)) if center is None else np.asarray(center, float)[:, None]
        self._scale = np.ones((n, 1)) if scale is None else np.asarray(scale, float)[:, None]
        if self._center.shape != (n, 1) or self._scale.shape != (n, 1):
            raise ValueError(
                f"center and scale need one value per channel ({n}), got "
                f"{self._center.shape[0]} and {self._scale.shape[0]}; refit them with "
                "fit_robust_scaler."
            )
        self.morlet = StreamingMorlet(spec, n, block=block, n_threads=n_threads)

    @property
    def sfreq_out(self) -> float:
        """Rate of the power columns in Hz."""
        return self.morlet.sfreq_out

    @property
    def n_channels_out(self) -> int:
        """Rows of :meth:`push`'s output: channels × frequencies."""
        return self.morlet.n_channels * self.morlet.n_freqs

    @property
    def latency_s(self) -> float:
        """Delay of the power columns behind the preprocessed signal, in seconds."""
        return self.morlet.latency_s

    def push(self, x: NDArray[np.floating]) -> NDArray[np.float32]:
        """Preprocess new samples and return the power columns they complete.

        Returns
        -------
        power : ndarray, shape (n_channels * n_freqs, n_new_columns), float32
            Channel-major rows: row ``c * n_freqs + f`` is channel ``c`` at frequency ``f``.
        """
        signal = (self.base.push(x) - self._center) / self._scale
        power = self.morlet.push(signal)
        return power.reshape(self.n_channels_out, power.shape[-1])

    def finalize(self, window: NDArray[np.floating]) -> NDArray[np.float32]:
        """The model input from consecutive rows of :meth:`push`.

        Parameters
        ----------
        window : array, shape (n_channels * n_freqs, n_times)
            Power columns.

        Returns
        -------
        x : ndarray, shape (n_channels, n_freqs, n_times), float32
            A new array.
        """
        arr = np.asarray(window)
        if arr.ndim != 2 or arr.shape[0] != self.n_channels_out:
            raise ValueError(
                f"finalize expects ({self.n_channels_out}, n_times), got shape {arr.shape}."
            )
        return np.array(
            arr.reshape(self.morlet.n_channels, self.morlet.n_freqs, -1), dtype=np.float32
        )

    def close(self) -> None:
        """Stop the scalogram's worker threads."""
        self.morlet.close()
