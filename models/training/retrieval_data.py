"""Windows of retrieval decoders, cut and preprocessed exactly as the decode engine does.

Preprocessing is the study's, expressed as the model's
:class:`~neurocast.streaming.preprocessing.filters.PreprocessSpec` so that training and
streaming (:mod:`neurocast.streaming.engine.pipeline`) see the same input: resample to 120 Hz,
subtract the mean of a baseline span (the ``context_s`` seconds before each window; before
image onset in the study's epochs), robust scaling (per-channel median and interquartile range
fitted on the training windows) and clipping at ±20. Windows are cut from the continuously
preprocessed signal and finalised by
:meth:`~neurocast.streaming.preprocessing.filters.OnlinePreprocessor.finalize`, the very code
that finalises streamed windows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import mne
import numpy as np
from numpy.typing import ArrayLike, NDArray

from neurocast.streaming.preprocessing.filters import (
    OnlinePreprocessor,
    PreprocessSpec,
    fit_robust_scaler,
    preprocess_array,
)
from neurocast.streaming.sources.base import StreamInfo

RETRIEVAL_SFREQ_HZ = 120.0
CLIP_AT = 20.0


def retrieval_spec(
    picks: Sequence[str],
    *,
    context_s: float = 0.2,
    sfreq_hz: float = RETRIEVAL_SFREQ_HZ,
    robust: tuple[ArrayLike, ArrayLike] | None = None,
    clip: float | None = CLIP_AT,
    l_freq_hz: float | None = None,
    h_freq_hz: float | None = None,
    line_freq_hz: float | None = None,
) -> PreprocessSpec:
    """The study's preprocessing as a model's preprocessing spec.

    Parameters
    ----------
    picks : sequence of str
        Channels the model reads, in its order.
    context_s : float
        Seconds before each window whose mean is subtracted (the baseline); the model's input
        spans ``context_s + window_s``.
    sfreq_hz : float
        Rate the model runs at (120 Hz in the study).
    robust : tuple of (array, array) | None
        Per-channel median and interquartile range (:func:`fit_robust_windows`); None before
        they are fitted.
    clip : float | None
        Clip scaled values to ``[-clip, clip]`` (20 in the study).
    l_freq_hz, h_freq_hz, line_freq_hz : float | None
        Optional causal band-pass and line-noise notch (none in the study).
    """
    if not context_s > 0:
        raise ValueError(
            f"context_s must be positive: the baseline is the mean of the context before each "
            f"window, got {context_s}."
        )
    center, scale = (None, None) if robust is None else robust
    return PreprocessSpec(
        picks=list(picks),
        resample_hz=sfreq_hz,
        baseline_s=(0.0, context_s),
        robust_center=None if center is None else np.asarray(center, dtype=float).tolist(),
        robust_scale=None if scale is None else np.asarray(scale, dtype=float).tolist(),
        clip=clip if robust is not None else None,
        l_freq_hz=l_freq_hz,
        h_freq_hz=h_freq_hz,
        line_freq_hz=line_freq_hz,
    )


@dataclass
class EpochSet:
    """Continuously preprocessed epochs (before the per-window steps) with their images.

    Attributes
    ----------
    data : ndarray, shape (n_epochs, n_channels, n_times), float32
        Output of the continuous preprocessing (resampled, filtered) around each onset.
    times : ndarray, shape (n_times,)
        Seconds relative to image onset of each sample (of the preprocessed signal, which lags
        the input by :attr:`delay_s`).
    image_rows : ndarray of int, shape (n_epochs,)
        Row of the gallery (or target matrix) of the image seen.
    subjects : ndarray of int, shape (n_epochs,)
        Subject index (selects the brain module's per-subject layer).
    groups : ndarray of int, shape (n_epochs,)
        Recording, session or fold of each epoch (for splits).
    sfreq : float
        Rate of ``data`` in Hz.
    ch_names : list of str
        Channels, in the order of ``data``.
    delay_s : float
        Group delay of the resampling filter in seconds.
    simulated : bool
        True when the epochs come from the simulator.
    """

    data: NDArray[np.float32]
    times: NDArray[np.float64]
    image_rows: NDArray[np.int64]
    subjects: NDArray[np.int64]
    groups: NDArray[np.int64]
    sfreq: float
    ch_names: list[str]
    delay_s: float = 0.0
    simulated: bool = False

    def __len__(self) -> int:
        return int(self.data.shape[0])

    def subset(self, index: ArrayLike) -> EpochSet:
        """The epochs ``index`` (a copy of their rows)."""
        idx = np.asarray(index, dtype=np.intp)
        return replace(
            self,
            data=self.data[idx],
            image_rows=self.image_rows[idx],
            subjects=self.subjects[idx],
            groups=self.groups[idx],
        )

    @staticmethod
    def concatenate(sets: Sequence[EpochSet]) -> EpochSet:
        """Epochs of several sets with the same channels, rate and times."""
        first = sets[0]
        for s in sets[1:]:
            if (
                s.ch_names != first.ch_names
                or s.sfreq != first.sfreq
                or len(s.times) != len(first.times)
            ):
                raise ValueError(
                    "Epoch sets to concatenate need the same channels, rate and times."
                )
        return replace(
            first,
            data=np.concatenate([s.data for s in sets]),
            image_rows=np.concatenate([s.image_rows for s in sets]),
            subjects=np.concatenate([s.subjects for s in sets]),
            groups=np.concatenate([s.groups for s in sets]),
            simulated=any(s.simulated for s in sets),
        )


def preprocess_epochs(
    data: ArrayLike,
    stream: StreamInfo,
    spec: PreprocessSpec,
    tmin: float,
    image_rows: ArrayLike,
    *,
    subjects: ArrayLike | None = None,
    groups: ArrayLike | None = None,
) -> EpochSet:
    """Run epochs (cut from a stream with enough lead-in) through the continuous steps.

    Each epoch goes through a fresh online preprocessor, as a stream would from its start;
    keep ``tmin`` early enough (a few tenths of a second before the first window's context)
    for the resampler and any filter to settle.

    Parameters
    ----------
    data : array, shape (n_epochs, n_channels, n_times)
        Raw epochs in SI units, channels in the order of ``stream``.
    stream : StreamInfo
        Channel names and rate of the raw data.
    spec : PreprocessSpec
        The model's preprocessing (only its continuous steps are applied here).
    tmin : float
        Time of the first raw sample relative to image onset, in seconds.
    image_rows : array of int, shape (n_epochs,)
        Image seen in each epoch.
    subjects, groups : array of int | None
        Subject and group of each epoch (zeros when None).
    """
    x = np.asarray(data, dtype=np.float32)
    if x.ndim != 3 or x.shape[1] != stream.n_channels:
        raise ValueError(
            f"Epochs must be (n_epochs, {stream.n_channels} channels, n_times), got {x.shape}."
        )
    pre = OnlinePreprocessor(spec, stream)
    if spec.picks is not None:
        index = {c: i for i, c in enumerate(stream.ch_names)}
        x = x[:, [index[c] for c in spec.picks]]
    n, n_ch, _ = x.shape
    # the continuous steps act on each channel alone, so a block of epochs is run as one
    # stream whose channels are all the epochs' channels: same output, one call per block
    block = max(1, 16384 // n_ch)
    flat = spec.model_copy(update={"picks": None})
    pieces = []
    for a in range(0, n, block):
        xb = x[a : a + block]
        info = mne.create_info(xb.shape[0] * n_ch, stream.sfreq, "misc")
        yb = preprocess_array(flat, xb.reshape(-1, xb.shape[-1]), StreamInfo("epochs", info))
        pieces.append(yb.reshape(xb.shape[0], n_ch, -1))
    out = np.concatenate(pieces)
    return EpochSet(
        data=out.astype(np.float32, copy=False),
        times=tmin + np.arange(out.shape[-1]) / pre.sfreq_out,
        image_rows=np.asarray(image_rows, dtype=np.int64),
        subjects=np.zeros(n, np.int64) if subjects is None else np.asarray(subjects, np.int64),
        groups=np.zeros(n, np.int64) if groups is None else np.asarray(groups, np.int64),
        sfreq=pre.sfreq_out,
        ch_names=pre.ch_names,
        delay_s=pre.resample_delay_s,
        simulated=stream.simulated,
    )


def epochs_from_recording(
    data: ArrayLike,
    stream: StreamInfo,
    spec: PreprocessSpec,
    onsets: ArrayLike,
    image_rows: ArrayLike,
    tmin: float,
    tmax: float,
    *,
    subject: int = 0,
    group: int = 0,
) -> EpochSet:
    """Preprocess a whole recording as a stream, then cut epochs around image onsets.

    Parameters
    ----------
    data : array, shape (n_channels, n_samples)
        The recording in SI units, channels in the order of ``stream``.
    stream : StreamInfo
        Its channel names and rate.
    spec : PreprocessSpec
        The model's preprocessing (continuous steps applied here).
    onsets : array of int, shape (n_trials,)
        Image onsets in samples of the recording.
    image_rows : array of int, shape (n_trials,)
        Image seen at each onset.
    tmin, tmax : float
        Epoch span in seconds relative to onset; trials whose span leaves the recording are
        dropped.
    subject, group : int
        Subject and group of every epoch.
    """
    y = preprocess_array(spec, data, stream)
    pre = OnlinePreprocessor(spec, stream)
    rate = pre.sfreq_out
    first = int(np.floor(tmin * rate))
    n_times = int(np.floor(tmax * rate)) - first + 1
    starts = np.round(np.asarray(onsets) * rate / stream.sfreq).astype(np.int64) + first
    keep = (starts >= 0) & (starts + n_times <= y.shape[1])
    if not keep.any():
        raise ValueError(f"No trial fits in the recording with tmin={tmin} s and tmax={tmax} s.")
    rows = np.asarray(image_rows, dtype=np.int64)[keep]
    epochs = np.stack([y[:, s : s + n_times] for s in starts[keep]])
    n = len(rows)
    return EpochSet(
        data=epochs,
        times=(first + np.arange(n_times)) / rate,
        image_rows=rows,
        subjects=np.full(n, subject, np.int64),
        groups=np.full(n, group, np.int64),
        sfreq=rate,
        ch_names=pre.ch_names,
        delay_s=pre.resample_delay_s,
        simulated=stream.simulated,
    )


@dataclass(frozen=True)
class WindowGeometry:
    """A decoder's window in samples of the model rate.

    Attributes
    ----------
    n_context : int
        Samples before the window (baseline only; dropped by the model).
    n_window : int
        Samples the model reads.
    sfreq : float
        Model rate in Hz.
    """

    n_context: int
    n_window: int
    sfreq: float

    @classmethod
    def from_seconds(cls, window_s: float, context_s: float, sfreq: float) -> WindowGeometry:
        """Round ``window_s`` and ``context_s`` to whole samples at ``sfreq`` Hz."""
        return cls(max(1, round(context_s * sfreq)), max(1, round(window_s * sfreq)), sfreq)

    @property
    def total(self) -> int:
        """Samples per model input (context and window)."""
        return self.n_context + self.n_window


class WindowSampler:
    """Finalised windows cut from an :class:`EpochSet`, exactly as the decode engine cuts them.

    Parameters
    ----------
    epochs : EpochSet
        Continuously preprocessed epochs.
    spec : PreprocessSpec
        The model's preprocessing; its per-window steps (baseline, robust scaling, clipping)
        are applied by :meth:`OnlinePreprocessor.finalize`.
    geometry : WindowGeometry
        Context and window lengths.
    """

    def __init__(self, epochs: EpochSet, spec: PreprocessSpec, geometry: WindowGeometry) -> None:
        self.epochs = epochs
        self.geometry = geometry
        info = mne.create_info(epochs.ch_names, epochs.sfreq, "misc")
        self._pre = OnlinePreprocessor(spec, StreamInfo("windows", info))

    def end_index(self, t_end: float) -> int:
        """Index (exclusive) of the window whose last sample is nearest ``t_end`` seconds."""
        i = int(np.argmin(np.abs(self.epochs.times - t_end))) + 1
        if i - self.geometry.total < 0:
            raise ValueError(
                f"A window ending at {t_end:.3f} s needs {self.geometry.total} samples but the "
                f"epochs start at {self.epochs.times[0]:.3f} s; use earlier epochs (tmin)."
            )
        return i

    def end_times(self, ends: ArrayLike) -> NDArray[np.float64]:
        """Time (s after onset) of the last sample of windows ending at ``ends``."""
        return self.epochs.times[np.asarray(ends) - 1]

    def windows(self, epoch_index: ArrayLike, ends: ArrayLike) -> NDArray[np.float32]:
        """Finalised inputs (n, n_channels, n_context + n_window) of epochs at window ends."""
        idx = np.asarray(epoch_index, dtype=np.intp)
        end = np.broadcast_to(np.asarray(ends, dtype=np.intp), idx.shape)
        total = self.geometry.total
        out = np.empty((len(idx), len(self.epochs.ch_names), total), dtype=np.float32)
        for k, (i, e) in enumerate(zip(idx, end, strict=True)):
            out[k] = self._pre.finalize(self.epochs.data[i, :, e - total : e])
        return out


def fit_robust_windows(
    epochs: EpochSet,
    spec: PreprocessSpec,
    geometry: WindowGeometry,
    ends: Sequence[int],
    *,
    max_windows: int = 4000,
    seed: int = 0,
) -> PreprocessSpec:
    """Fit robust scaling on baseline-corrected training windows; returns the full spec.

    Parameters
    ----------
    epochs : EpochSet
        Training epochs only (never test data).
    spec : PreprocessSpec
        The spec without robust scaling (:func:`retrieval_spec` with ``robust=None``).
    geometry : WindowGeometry
        Context and window lengths.
    ends : sequence of int
        Window ends (indices into ``epochs.times``) the model is trained on.
    max_windows : int
        Fit on at most this many windows drawn at random.
    seed : int
        Seed of the draw.
    """
    rng = np.random.default_rng(seed)
    pairs = np.array([(i, e) for i in range(len(epochs)) for e in ends])
    if len(pairs) > max_windows:
        pairs = pairs[rng.choice(len(pairs), max_windows, replace=False)]
    x = WindowSampler(epochs, spec, geometry).windows(pairs[:, 0], pairs[:, 1])
    center, scale = fit_robust_scaler(x[:, :, geometry.n_context :])
    clip = spec.clip if spec.clip is not None else CLIP_AT
    return spec.model_copy(
        update={"robust_center": center.tolist(), "robust_scale": scale.tolist(), "clip": clip}
    )
