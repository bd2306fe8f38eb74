"""Online preprocessing: channel picking, resampling, causal filters and per-window scaling.

:class:`OnlinePreprocessor` turns the raw samples of a stream into what one model expects.
Everything it carries between calls (filter states, resampler history and phase) lives in the
object, so pushing a recording in any chunking gives the same output as pushing it whole
(within float32 rounding); :func:`preprocess_array` is that whole-array push, used by training
and batch code. The order of the continuous steps is:

1. pick and reorder channels by name;
2. hold the last finite value of a channel over NaN/inf samples (so one bad sample cannot
   poison the filter states; the decode engine flags the windows that span it);
3. resample by a rational factor with a causal polyphase FIR (anti-aliasing included);
4. notch the line frequency and its harmonics, then band-pass, with causal IIR filters
   (second-order sections, :func:`scipy.signal.sosfilt` with carried state).

Filtering after resampling runs the IIR filters at the lower rate when downsampling, which is
where most of the cost is saved; line harmonics above the output Nyquist frequency are removed
by the anti-aliasing filter. The per-window steps of :meth:`OnlinePreprocessor.finalize` are
baseline correction, robust scaling (median/IQR fitted offline with :func:`fit_robust_scaler`)
and clipping.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from scipy import signal

from neurocast.streaming.sources.base import StreamInfo

try:
    # The compiled kernel behind scipy.signal.sosfilt. On a hop of 306 channels × 6 samples the
    # public wrapper's argument handling and state copies cost ~10x the filtering itself
    # (~200 µs against ~20 µs with cold caches), so the state is kept in the kernel's layout
    # and the kernel is called directly.
    from scipy.signal._sosfilt import _sosfilt as _sosfilt_kernel
except ImportError:  # a SciPy that moved it: the public function does the same, slower
    _sosfilt_kernel = None


class PreprocessSpec(BaseModel):
    """What a model expects of its input, stored with the model (JSON-serialisable).

    Parameters
    ----------
    picks : list of str | None
        Channel names in the order the model expects them; None keeps every channel of the
        stream in its order. Extra channels in the stream are ignored.
    reference : {"average"} | None
        ``"average"``: subtract, at every sample, the mean of the picked channels (EEG common
        average reference, as ``raw.set_eeg_reference("average")``); every picked channel
        must be EEG. None keeps the recording's reference.
    line_freq_hz : float | None
        Power-line frequency in Hz (50 or 60); a notch is placed at it and at each harmonic
        below the Nyquist frequency of the rate the filters run at. None for no notch.
    notch_q : float
        Quality factor of each notch (centre frequency / -3 dB bandwidth).
    l_freq_hz, h_freq_hz : float | None
        Band-pass edges in Hz (Butterworth). Only ``l_freq_hz`` gives a high-pass, only
        ``h_freq_hz`` a low-pass, neither no band-pass.
    filter_order : int
        Butterworth order of each band edge.
    resample_hz : float | None
        Output rate in Hz; None keeps the stream's rate. The ratio to the stream's rate is
        approximated by a fraction ``up / down`` within a relative error of 1e-5, and the exact
        achieved rate is :attr:`OnlinePreprocessor.sfreq_out`.
    resample_half_width : int
        Half-length of the anti-aliasing FIR in zero crossings of its sinc at the lower of the
        two rates. Its group delay is ``resample_half_width / min(sfreq_in, resample_hz)``
        seconds (20 ms for 1 kHz → 250 Hz with the default 5); larger is sharper but later.
    baseline_s : tuple of (float, float) | None
        ``(start, stop)`` in seconds relative to the first sample of a window; the mean over
        that span is subtracted from each channel of every window. None for no baseline.
    robust_center, robust_scale : list of float | None
        Per-channel median and interquartile range (in the order of ``picks``), fitted offline
        with :func:`fit_robust_scaler`; each window becomes ``(x - center) / scale``.
    clip : float | None
        After scaling, values are clipped to ``[-clip, clip]``. None for no clipping.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    picks: list[str] | None = None
    reference: Literal["average"] | None = None
    line_freq_hz: float | None = Field(None, gt=0)
    notch_q: float = Field(30.0, gt=0)
    l_freq_hz: float | None = Field(None, gt=0)
    h_freq_hz: float | None = Field(None, gt=0)
    filter_order: int = Field(4, ge=1, le=16)
    resample_hz: float | None = Field(None, gt=0)
    resample_half_width: int = Field(5, ge=1, le=64)
    baseline_s: tuple[float, float] | None = None
    robust_center: list[float] | None = None
    robust_scale: list[float] | None = None
    clip: float | None = Field(None, gt=0)

    @field_validator("robust_center", "robust_scale", mode="before")
    @classmethod
    def _array_to_list(cls, value: Any) -> Any:
        return value.tolist() if isinstance(value, np.ndarray) else value

    @model_validator(mode="after")
    def _check(self) -> PreprocessSpec:
        if self.picks is not None:
            if not self.picks:
                raise ValueError("picks is empty: give channel names, or None for all channels.")
            dupes = sorted({c for c in self.picks if self.picks.count(c) > 1})
            if dupes:
                raise ValueError(f"picks names channels more than once: {dupes}.")
        if (
            self.l_freq_hz is not None
            and self.h_freq_hz is not None
            and not self.l_freq_hz < self.h_freq_hz
        ):
            raise ValueError(
                f"l_freq_hz ({self.l_freq_hz}) must be below h_freq_hz ({self.h_freq_hz})."
            )
        if self.baseline_s is not None and not 0 <= self.baseline_s[0] < self.baseline_s[1]:
            raise ValueError(
                f"baseline_s must be (start, stop) with 0 <= start < stop, got {self.baseline_s}."
            )
        if (self.robust_center is None) != (self.robust_scale is None):
            raise ValueError("robust_center and robust_scale must be given together.")
        if self.robust_center is not None and self.robust_scale is not None:
            if len(self.robust_center) != len(self.robust_scale):
                raise ValueError(
                    f"robust_center has {len(self.robust_center)} values but robust_scale has "
                    f"{len(self.robust_scale)}; both need one per channel."
                )
            scale = np.asarray(self.robust_scale, dtype=np.float64)
            if not (np.isfinite(scale).all() and (scale > 0).all()):
                raise ValueError("robust_scale must be finite and positive for every channel.")
            if not np.isfinite(self.robust_center).all():
                raise ValueError("robust_center must be finite for every channel.")
            if self.picks is not None and len(self.picks) != len(self.robust_center):
                raise ValueError(
                    f"robust_center/robust_scale have {len(self.robust_center)} values but picks "
                    f"names {len(self.picks)} channels."
                )
        return self


def fit_robust_scaler(data: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Fit per-channel robust scaling (median and interquartile range).

    Fit on training data that went through the same continuous preprocessing (and baseline)
    as the model's input, then store the result in ``PreprocessSpec(robust_center=...,
    robust_scale=...)``.

    Parameters
    ----------
    data : array, shape (n_channels, n_times) or (n_epochs, n_channels, n_times)
        Training data; NaN values are ignored.

    Returns
    -------
    center : ndarray, shape (n_channels,)
        Median of each channel.
    scale : ndarray, shape (n_channels,)
        Interquartile range of each channel; 1.0 for a flat channel (as scikit-learn's
        ``RobustScaler`` does), so it is only centred.
    """
    arr = np.asarray(data, dtype=np.float64)
    if arr.ndim not in (2, 3):
        raise ValueError(
            f"data must be (n_channels, n_times) or (n_epochs, n_channels, n_times), got shape "
            f"{arr.shape}."
        )
    per_channel = np.moveaxis(arr, -2, 0).reshape(arr.shape[-2], -1)
    q25, center, q75 = np.nanpercentile(per_channel, [25, 50, 75], axis=1)
    if not np.isfinite(center).all():
        raise ValueError("Some channels have no finite sample; drop them before fitting.")
    scale = q75 - q25
    scale[scale <= 0] = 1.0
    return center, scale


def hold_last_finite(x: NDArray[np.floating], last: NDArray[np.floating]) -> NDArray[np.float32]:
    """Replace NaN/inf samples by the last finite value of their channel.

    Holding the value (rather than substituting zero) keeps a channel with a DC offset free
    of the step that would make causal filters ring long after the bad samples.

    Parameters
    ----------
    x : array, shape (n_channels, n_samples)
        Samples that may hold NaN or inf.
    last : array, shape (n_channels,)
        Each channel's last finite value before ``x`` (used until ``x`` has a finite one).

    Returns
    -------
    held : ndarray, shape (n_channels, n_samples), float32
        A copy of ``x`` with every non-finite sample replaced.
    """
    idx = np.where(np.isfinite(x), np.arange(x.shape[1]), -1)
    np.maximum.accumulate(idx, axis=1, out=idx)
    held = np.take_along_axis(x, np.maximum(idx, 0), axis=1)
    return np.where(idx >= 0, held, np.asarray(last)[:, None]).astype(np.float32)


def _sosfilt_inplace(
    sos: NDArray[np.float64], x: NDArray[np.float64], zi: NDArray[np.float64]
) -> None:
    """:func:`scipy.signal.sosfilt` along the last axis, in place.

    Parameters
    ----------
    sos : ndarray, shape (n_sections, 6), float64, C-contiguous
        Second-order sections.
    x : ndarray, shape (n_signals, n_samples), float64, C-contiguous
        Signals, replaced by the filtered signals.
    zi : ndarray, shape (n_signals, n_sections, 2), float64, C-contiguous
        Filter state, replaced by the state after the last sample.
    """
    if _sosfilt_kernel is not None:
        _sosfilt_kernel(sos, x, zi)
        return
    y, zf = signal.sosfilt(sos, x, axis=-1, zi=zi.transpose(1, 0, 2))
    x[...] = y
    zi[...] = zf.transpose(1, 0, 2)


def _rational_ratio(sfreq_in: float, sfreq_out: float, rtol: float = 1e-5) -> Fraction:
    """The fraction ``up / down`` with the smallest denominator within ``rtol`` of the ratio."""
    ratio = sfreq_out / sfreq_in
    exact = Fraction(ratio)
    for max_den in (2**k for k in range(15)):
        approx = exact.limit_denominator(max_den)
        if approx > 0 and abs(float(approx) - ratio) <= rtol * ratio:
            return approx
    raise ValueError(
        f"Cannot resample {sfreq_in} Hz to {sfreq_out} Hz: no ratio up/down with down <= 16384 "
        f"is within {rtol:g} of {ratio}. Choose an output rate closer to a simple fraction."
    )


_BLOCK = 64  # outputs computed by one matrix product


class _PolyphaseResampler:
    """Causal rational resampling ``up / down`` with a windowed-sinc FIR and carried state.

    Output ``m`` is ``sum_i h[m * down - i * up] * x[i]`` (the causal ``upfirdn``), emitted as
    soon as its newest input sample ``x[(m * down) // up]`` has arrived. Before the first
    sample the input is taken as constant (equal to the first sample), so a DC offset causes
    no start-up transient. Samples are held channel-major in one preallocated float32 buffer
    that is compacted only when full.
    """

    def __init__(self, n_channels: int, up: int, down: int, half_width: int) -> None:
        self.up, self.down = up, down
        rate = max(up, down)
        half_len = half_width * rate
        h = signal.firwin(2 * half_len + 1, 1.0 / rate, window=("kaiser", 5.0)) * up
        self.n_taps = -(-h.size // up)  # taps per phase
        h = np.concatenate([h, np.zeros(self.n_taps * up - h.size)])
        # row p holds phase p, reversed so that it multiplies samples oldest first
        self._phases = np.ascontiguousarray(h.reshape(self.n_taps, up).T[:, ::-1], np.float32)
        self.delay_in_samples = half_len / up
        self._n_channels = n_channels
        self._buf = np.empty((n_channels, self.n_taps + 4096), dtype=np.float32)
        self._taps_cache: dict[tuple[int, int], NDArray[np.float32]] = {}
        self.reset()

    def reset(self) -> None:
        self._abs0 = 0  # absolute input index of buf[:, 0]
        self._pos = 0  # columns of buf in use
        self._n_in = 0  # input samples seen
        self._m_next = 0  # next output index

    def _append(self, n: int) -> NDArray[np.float32]:
        """Make room for ``n`` samples after the held ones and return that (writable) slice."""
        if self._pos + n > self._buf.shape[1]:
            first = self._keep_from()
            held = self._pos - first
            if held + n > self._buf.shape[1]:
                grown = np.empty((self._n_channels, held + n + 4096), dtype=np.float32)
                grown[:, :held] = self._buf[:, first : self._pos]
                self._buf = grown
            else:  # numpy copies overlapping ranges correctly
                self._buf[:, :held] = self._buf[:, first : self._pos]
            self._abs0 += first
            self._pos = held
        out = self._buf[:, self._pos : self._pos + n]
        self._pos += n
        return out

    def _keep_from(self) -> int:
        """Buffer column of the oldest sample the next output still needs."""
        newest = (self._m_next * self.down) // self.up
        return max(0, min(newest - self.n_taps + 1, self._n_in) - self._abs0)

    def push(self, x: NDArray[np.float32], pick: NDArray[np.intp] | None) -> NDArray[np.float32]:
        """Append ``x`` (channels × samples, rows ``pick`` of it) and return the new outputs."""
        n = x.shape[1]
        if self._n_in == 0:
            # constant extension before the first sample: n_taps - 1 copies of it
            self._buf[:, : self.n_taps - 1] = x[:, :1] if pick is None else x[pick, :1]
            self._abs0 = -(self.n_taps - 1)
            self._pos = self.n_taps - 1
        dest = self._append(n)
        if pick is None:
            dest[...] = x
        else:
            np.take(x, pick, axis=0, out=dest, mode="clip")
        self._n_in += n
        first = self._m_next
        stop = ((self._n_in - 1) * self.up) // self.down + 1  # outputs computable now
        self._m_next = stop
        out = np.empty((self._n_channels, stop - first), dtype=np.float32)
        for m0 in range(first, stop, _BLOCK):
            size = min(_BLOCK, stop - m0)
            j0 = m0 * self.down
            taps = self._taps(j0 % self.up, size)
            lo = j0 // self.up - self.n_taps + 1 - self._abs0  # buffer column of the first tap
            a = m0 - first
            np.matmul(self._buf[:, lo : lo + taps.shape[1]], taps.T, out=out[:, a : a + size])
        return out

    def _taps(self, phase0: int, size: int) -> NDArray[np.float32]:
        """Matrix taking the samples of ``size`` consecutive outputs to those outputs.

        Row ``k`` holds the taps of output ``k`` at the columns of its input samples, the
        first column being the oldest sample of output 0, whose phase is ``phase0``. It
        depends only on ``(phase0, size)``, so it is built once and reused.
        """
        key = (phase0, size)
        taps = self._taps_cache.get(key)
        if taps is None:
            j = phase0 + np.arange(size) * self.down
            newest = j // self.up  # newest input sample of each output, relative to output 0
            taps = np.zeros((size, int(newest[-1]) + self.n_taps), dtype=np.float32)
            cols = newest[:, None] + np.arange(self.n_taps)
            taps[np.arange(size)[:, None], cols] = self._phases[j % self.up]
            if len(self._taps_cache) >= 4096:
                self._taps_cache.clear()
            self._taps_cache[key] = taps
        return taps


class OnlinePreprocessor:
    """Stateful, causal preprocessing of one stream for one model.

    Implements the ``OnlinePreprocessor`` protocol of :mod:`neurocast.streaming.engine.pipeline`.

    Parameters
    ----------
    spec : PreprocessSpec
        What the model expects.
    stream_info : StreamInfo
        The stream's channel names and rate.

    Raises
    ------
    ValueError
        If a channel named in ``spec.picks`` is missing from the stream, the robust scaling
        does not have one value per channel, or a filter edge is not below the Nyquist
        frequency of the rate the filters run at.

    Notes
    -----
    The continuous output lags the input by the resampler's group delay
    (:attr:`resample_delay_s`) plus the frequency-dependent phase delay of the causal IIR
    filters; models trained on :func:`preprocess_array` output see the same lag.
    """

    def __init__(self, spec: PreprocessSpec, stream_info: StreamInfo) -> None:
        self.spec = spec
        self.stream_info = stream_info
        names = stream_info.ch_names
        if spec.picks is None:
            self.ch_names = list(names)
            self._pick: NDArray[np.intp] | None = None
        else:
            missing = [c for c in spec.picks if c not in names]
            if missing:
                raise ValueError(
                    f"The model needs channels {missing} that stream {stream_info.name!r} does "
                    f"not have. The stream has {len(names)} channels: {names}. Rename the "
                    "stream's channels (e.g. mne.rename_channels) or use a model trained on them."
                )
            self.ch_names = list(spec.picks)
            index = {c: i for i, c in enumerate(names)}
            pick = np.array([index[c] for c in spec.picks], dtype=np.intp)
            identity = pick.size == len(names) and (pick == np.arange(len(names))).all()
            self._pick = None if identity else pick
        if spec.reference == "average":
            types = stream_info.info.get_channel_types(picks=self.ch_names)
            other = sorted({t for t in types if t != "eeg"})
            if other:
                raise ValueError(
                    f"An average reference needs EEG channels only, but the picks include "
                    f"{other} channels; pick the EEG channels, or set reference=None."
                )
        n_out = len(self.ch_names)
        sfreq_in = stream_info.sfreq
        self._resampler: _PolyphaseResampler | None = None
        self._sfreq_out = sfreq_in
        if spec.resample_hz is not None:
            ratio = _rational_ratio(sfreq_in, spec.resample_hz)
            if ratio != 1:
                self._resampler = _PolyphaseResampler(
                    n_out, ratio.numerator, ratio.denominator, spec.resample_half_width
                )
                self._sfreq_out = sfreq_in * ratio.numerator / ratio.denominator
        self._sos = self._design_sos(spec, self._sfreq_out, min(sfreq_in, self._sfreq_out))
        # steady-state filter state for a unit step; scaled by the first sample at start
        self._zi_unit = signal.sosfilt_zi(self._sos) if self._sos.size else None
        self._zi: NDArray[np.float64] | None = None  # (n_channels_out, n_sections, 2)
        self._center: NDArray[np.float32] | None = None
        self._inv_scale: NDArray[np.float32] | None = None
        if spec.robust_center is not None and spec.robust_scale is not None:
            if len(spec.robust_center) != n_out:
                raise ValueError(
                    f"robust_center/robust_scale have {len(spec.robust_center)} values but the "
                    f"model input has {n_out} channels; refit them with fit_robust_scaler."
                )
            self._center = np.asarray(spec.robust_center, dtype=np.float32)[:, None]
            self._inv_scale = (1.0 / np.asarray(spec.robust_scale, dtype=np.float64)).astype(
                np.float32
            )[:, None]
        self._last_finite = np.zeros(stream_info.n_channels, dtype=np.float32)

    @staticmethod
    def _design_sos(spec: PreprocessSpec, sfreq: float, sfreq_signal: float) -> NDArray[np.float64]:
        """Notch and band-pass sections at ``sfreq`` Hz.

        ``sfreq_signal`` is the rate whose Nyquist frequency bounds the content (the lower of
        the input and output rates): notches above it would act on nothing.
        """
        nyquist = sfreq / 2
        sections = []
        if spec.line_freq_hz is not None:
            top = min(nyquist, sfreq_signal / 2)
            k = 1
            while k * spec.line_freq_hz < top:
                b, a = signal.iirnotch(k * spec.line_freq_hz, spec.notch_q, fs=sfreq)
                sections.append(signal.tf2sos(b, a))
                k += 1
        for name, edge in (("l_freq_hz", spec.l_freq_hz), ("h_freq_hz", spec.h_freq_hz)):
            if edge is not None and edge >= nyquist:
                raise ValueError(
                    f"{name}={edge} Hz is not below the Nyquist frequency ({nyquist:g} Hz) of the "
                    f"{sfreq:g} Hz rate the filters run at; lower it or raise resample_hz."
                )
        order = spec.filter_order
        if spec.l_freq_hz is not None and spec.h_freq_hz is not None:
            band = [spec.l_freq_hz, spec.h_freq_hz]
            sections.append(signal.butter(order, band, "bandpass", fs=sfreq, output="sos"))
        elif spec.l_freq_hz is not None:
            sections.append(
                signal.butter(order, spec.l_freq_hz, "highpass", fs=sfreq, output="sos")
            )
        elif spec.h_freq_hz is not None:
            sections.append(signal.butter(order, spec.h_freq_hz, "lowpass", fs=sfreq, output="sos"))
        if not sections:
            return np.zeros((0, 6))
        return np.ascontiguousarray(np.concatenate(sections), dtype=np.float64)

    @property
    def sfreq_out(self) -> float:
        """Output rate in Hz (the exact rate achieved by the rational resampling ratio)."""
        return self._sfreq_out

    @property
    def n_channels_out(self) -> int:
        """Number of output channels (the model's channels, in its order)."""
        return len(self.ch_names)

    @property
    def resample_delay_s(self) -> float:
        """Group delay of the anti-aliasing FIR in seconds (0 without resampling)."""
        if self._resampler is None:
            return 0.0
        return self._resampler.delay_in_samples / self.stream_info.sfreq

    def reset(self) -> None:
        """Forget all carried state, as if no sample had been pushed."""
        if self._resampler is not None:
            self._resampler.reset()
        self._zi = None
        self._last_finite[:] = 0.0

    def push(self, x: NDArray[np.floating]) -> NDArray[np.float32]:
        """Preprocess new samples.

        Parameters
        ----------
        x : array, shape (n_channels_in, n_samples)
            The next samples of every stream channel, in the stream's channel order and units.

        Returns
        -------
        y : ndarray, shape (n_channels_out, n_out), float32
            The output samples that became available (``n_out`` is about
            ``n_samples * sfreq_out / sfreq_in``; it varies by one between calls).
        """
        x = np.asarray(x, dtype=np.float32)
        n_in = self.stream_info.n_channels
        if x.ndim != 2 or x.shape[0] != n_in:
            raise ValueError(
                f"push expects (n_channels, n_samples) = ({n_in}, n) for stream "
                f"{self.stream_info.name!r}, got shape {x.shape}."
            )
        if x.shape[1] == 0:
            return np.empty((self.n_channels_out, 0), dtype=np.float32)
        if not np.isfinite(x).all():
            x = hold_last_finite(x, self._last_finite)
        self._last_finite[:] = x[:, -1]
        if self._resampler is not None:
            y = self._resampler.push(x, self._pick)
        elif self._pick is not None:
            y = x[self._pick]
        else:
            y = x.copy()
        if self.spec.reference == "average":
            # linear and the same for every channel, so it commutes with the resampler
            y -= y.mean(axis=0, keepdims=True)
        if not self._sos.size or y.shape[1] == 0:
            return y
        filtered = y.astype(np.float64, order="C")
        if self._zi is None:
            assert self._zi_unit is not None
            self._zi = self._zi_unit[None, :, :] * filtered[:, 0, None, None]
        _sosfilt_inplace(self._sos, filtered, self._zi)
        return filtered.astype(np.float32)

    def finalize(self, window: NDArray[np.floating]) -> NDArray[np.float32]:
        """Apply the per-window steps: baseline, robust scaling, clipping.

        Parameters
        ----------
        window : array, shape (n_channels_out, n_times)
            Consecutive output samples of :meth:`push` (the model's window and context).

        Returns
        -------
        x : ndarray, shape (n_channels_out, n_times), float32
            A new array; ``window`` is not modified.
        """
        out = np.array(window, dtype=np.float32, copy=True)
        if out.ndim != 2 or out.shape[0] != self.n_channels_out:
            raise ValueError(
                f"finalize expects ({self.n_channels_out}, n_times), got shape {out.shape}."
            )
        if self.spec.baseline_s is not None:
            a, b = (round(t * self._sfreq_out) for t in self.spec.baseline_s)
            if b > out.shape[1] or b <= a:
                raise ValueError(
                    f"baseline_s={self.spec.baseline_s} spans samples {a}..{b} but the window "
                    f"has {out.shape[1]} samples at {self._sfreq_out:g} Hz; shorten the baseline "
                    "or lengthen the model's window."
                )
            out -= out[:, a:b].mean(axis=1, keepdims=True)
        if self._center is not None and self._inv_scale is not None:
            out -= self._center
            out *= self._inv_scale
        if self.spec.clip is not None:
            np.clip(out, -self.spec.clip, self.spec.clip, out=out)
        return out


def preprocess_array(
    spec: PreprocessSpec, data: ArrayLike, stream_info: StreamInfo
) -> NDArray[np.float32]:
    """Run the continuous online steps on a whole recording at once.

    The result equals pushing ``data`` chunk by chunk through a fresh
    :class:`OnlinePreprocessor` (within float32 rounding). Per-window steps (baseline,
    scaling, clipping) are not applied: call :meth:`OnlinePreprocessor.finalize` on each window.

    Parameters
    ----------
    spec : PreprocessSpec
        What the model expects.
    data : array, shape (n_channels, n_times)
        The recording, channels in the order of ``stream_info``.
    stream_info : StreamInfo
        Its channel names and rate.

    Returns
    -------
    y : ndarray, shape (n_channels_out, n_times_out), float32
        Preprocessed samples at :attr:`OnlinePreprocessor.sfreq_out`.
    """
    pre = OnlinePreprocessor(spec, stream_info)
    arr = np.asarray(data)
    # blocks bound the resampler's buffer; the output does not depend on them
    block = 1 << 15
    return np.concatenate(
        [pre.push(arr[:, a : a + block]) for a in range(0, max(arr.shape[-1], 1), block)], axis=1
    )
