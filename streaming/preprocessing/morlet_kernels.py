"""Streaming Morlet scalogram kernels: wavelet power of many channels, a few columns at a time.

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

Memory layout: the delay line is stored bins × channels × partitions, and the paired sums and
differences of step 1 are formed once per block for all channels. Channels are then processed
in chunks of :data:`_CHUNK_CHANNELS`, small enough for a chunk's products to stay in cache:
step 1 gives per (stack, bin) a ``(channels, frequencies)`` product, and step 2 multiplies their
transpose by the inverse DFT, so that its rows come out in the ``(channel, frequency, column)``
order of the output, with no transposing copy. Everything is float64: float32 products would
err by about 1e-7 of the typical coefficient, which, on the smallest power values (a random
signal has some 1e4 times below the mean), exceeds a relative tolerance of 1e-5.

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

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import fft as sp_fft
from threadpoolctl import ThreadpoolController

from neurocast.streaming.preprocessing.scalogram_spec import ScalogramSpec

# Consecutive frequencies share one matrix product per FFT bin while the shorter wavelet spans
# at least this fraction of the group's partitions (the rest are multiplications by zero).
_GROUP_FILL = 0.75
# Channels per chunk of work: the products of a chunk stay in the processor's cache.
_CHUNK_CHANNELS = 32


class _Group:
    """Frequencies whose wavelets occupy nearly the same partitions, multiplied together.

    ``weights[f]`` holds, per stack ``s`` of paired spectra (see :meth:`StreamingMorlet._pair`)
    and FFT bin, the real weights giving the group's wavelets' real parts (``f = 0``) or
    imaginary parts (``f = 1``): shape (2 * n_bins, 2 * n_pairs_used, n_freqs_in_group), first
    axis ``(stack, bin)``, rows ``(pair, 2)`` for pairs ``first`` up to the middle one.
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
    ``32 * block * n_freqs`` per channel of a chunk (at most 64 channels) and thread for
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
        # stage-2 matrices over columns (stack, bin): the wavelets' real parts take their real
        # products from stack 0 and imaginary ones from stack 1, their imaginary parts the
        # other way round
        idft = self._inverse_dft_rows()
        self._idft = (
            np.concatenate([idft[:, :, 0], idft[:, :, 1]], axis=1),
            np.concatenate([idft[:, :, 1], idft[:, :, 0]], axis=1),
        )
        # delay line of input spectra, channel-major so that a chunk of channels is one
        # block of memory; the newest is at _head, and every spectrum is stored twice so that
        # any P consecutive partitions are one slice
        self._spectra = np.zeros((n_bins, self.n_channels, 2 * self._n_parts), np.complex128)
        self._tail = np.zeros((self.n_channels, self._n_fft), dtype=np.float64)
        self._chunks = _channel_chunks(self.n_channels, n_threads)
        widest = max(c.stop - c.start for c in self._chunks)
        n_prod = max(g.index.size for g in self._groups)
        # paired spectra of every channel (see _pair), as complex numbers and as real pairs
        self._stacks_complex = np.empty((2, n_bins, self.n_channels, self._n_pairs), complex)
        self._stacks = self._stacks_complex.view(np.float64).reshape(
            2, n_bins, self.n_channels, self._n_pairs, 2
        )
        # per worker: the products of a chunk
        self._buffers = [
            np.empty(4 * n_bins * widest * n_prod) for _ in range(min(n_threads, len(self._chunks)))
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
            groups.append(
                _Group(index.astype(np.intp), lead, self._weights(wavelets, half, index, lead))
            )
            start = end
        return groups

    def _weights(
        self,
        wavelets: list[NDArray[np.complex128]],
        half: NDArray[np.int_],
        index: NDArray[np.intp],
        lead: int,
    ) -> NDArray[np.float64]:
        """Real weights of a group's filters on the paired spectra, see :class:`_Group`."""
        k, b, n_pairs, n = self.latency_samples, self.block, self._n_pairs, index.size
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
        weights = np.empty((2, 2, parts.shape[0], n_pairs - lead, 2, n))
        re, im = slice(None, n), slice(n, None)
        weights[0, 0, ..., 0, :], weights[0, 0, ..., 1, :] = _t(alpha[:, re]), _t(-beta[:, re])
        weights[1, 0, ..., 0, :], weights[1, 0, ..., 1, :] = _t(alpha[:, re]), _t(beta[:, re])
        weights[0, 1, ..., 0, :], weights[0, 1, ..., 1, :] = _t(beta[:, im]), _t(alpha[:, im])
        weights[1, 1, ..., 0, :], weights[1, 1, ..., 1, :] = _t(-beta[:, im]), _t(alpha[:, im])
        # stack 1 is stored as -i times (sum.imag, difference.real), i.e. as the pair
        # (difference.real, -sum.imag), which two complex operations give (see _pair)
        weights[1] = np.stack([weights[1, ..., 1, :], -weights[1, ..., 0, :]], axis=-2)
        # (stack, filter kind) -> (filter kind, stack): stage 2 reads one kind's products as
        # one matrix over (stack, bin)
        return np.ascontiguousarray(weights.swapaxes(0, 1).reshape(2, 2 * parts.shape[0], -1, n))

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
        spectrum = sp_fft.rfft(self._tail, axis=-1)  # (n_channels, n_bins)
        self._head = (self._head - 1) % p
        self._spectra[:, :, self._head] = spectrum.T
        self._spectra[:, :, self._head + p] = spectrum.T
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
        self._pair()
        # transposed, so that stage 2 writes (channel, frequency, column) rows directly
        idft = (self._idft[0][rows].T, self._idft[1][rows].T)
        out = np.empty((self.n_channels, self.n_freqs, rows.size), dtype=np.float32)
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
        return out

    def _pair(self) -> None:
        """Sums and differences of mirrored partitions' spectra, for every channel.

        Partition ``q = P - 1 - i`` mirrors partition ``i``, so ``X_i H_i + X_q H_q`` equals
        ``X_i H_i +- (phase X_q) conj(H_i)``: only the sum ``S`` and the difference ``D`` of
        the newer spectrum and the phase-shifted older one are multiplied, by real weights.
        Stack 0 holds ``(S.real, D.imag)`` per pair, i.e. ``newer + conj(older)``; stack 1
        holds ``(D.real, -S.imag)``, i.e. ``conj(newer - conj(older))``.
        """
        p, m = self._n_parts, self._n_pairs
        line = self._spectra[:, :, self._head : self._head + p]  # (bins, channels, P)
        newer = line[..., :m]
        older = self._mirror_phase * line[..., p - m :][..., ::-1]
        np.conjugate(older, out=older)
        stacks = self._stacks_complex
        np.add(newer, older, out=stacks[0])
        np.subtract(newer, older, out=stacks[1])
        np.conjugate(stacks[1], out=stacks[1])

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

        Written to ``out``, of shape (n_channels, n_freqs, n_columns).
        """
        stacks = self._stacks[:, :, chunk]  # (2, bins, width, pairs, 2)
        n_bins, width = stacks.shape[1], stacks.shape[2]
        for g in self._groups:
            n = g.index.size
            # products[kind, (stack, bin)] = paired spectra (width, pairs) @ weights (pairs, n)
            products = buf[: 4 * n_bins * width * n].reshape(2, 2 * n_bins, width, n)
            operand = stacks[:, :, :, g.first :].reshape(2 * n_bins, width, -1)
            for kind in range(2):
                np.matmul(operand, g.weights[kind], out=products[kind])
            # stage 2 as (width * n, 2 bins) @ (2 bins, columns): rows come out in the
            # (channel, frequency) order of the output
            even = products[0].reshape(2 * n_bins, -1).T @ idft[0]
            odd = products[1].reshape(2 * n_bins, -1).T @ idft[1]
            np.multiply(even, even, out=even)
            np.multiply(odd, odd, out=odd)
            np.add(even, odd, out=even)
            out[chunk, g.where] = even.reshape(width, n, -1)


def _t(a: NDArray[np.float64]) -> NDArray[np.float64]:
    """(bins, filters, pairs) -> (bins, pairs, filters)."""
    return a.swapaxes(1, 2)


def _channel_chunks(n_channels: int, n_threads: int) -> list[slice]:
    """Channel chunks small enough for the products to stay in cache, one or more per thread."""
    n_chunks = max(n_threads, -(-n_channels // _CHUNK_CHANNELS))
    n_chunks = min(n_channels, -(-n_chunks // n_threads) * n_threads)
    edges = np.linspace(0, n_channels, n_chunks + 1).round().astype(int)
    return [slice(int(a), int(z)) for a, z in itertools.pairwise(edges)]


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
