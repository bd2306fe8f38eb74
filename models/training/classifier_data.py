"""Labelled scalogram windows of the scalogram transfer classifier, cut as the stream cuts them.

Recordings are preprocessed in batch mode exactly as the decode engine preprocesses a live
stream (:func:`preprocess_recording`, :func:`recording_power`); windows are cut around trial
onsets (:func:`trial_windows`) and split into training and validation windows by whole trials
(:func:`split_windows`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from neurocast.models.serving.schema import InputSpec
from neurocast.streaming.preprocessing.filters import (
    PreprocessSpec,
    fit_robust_scaler,
    preprocess_array,
)
from neurocast.streaming.preprocessing.scalogram import morlet_power
from neurocast.streaming.sources.base import StreamInfo


@dataclass
class ScalogramWindows:
    """Labelled windows cut lazily from continuous scalograms.

    Parameters
    ----------
    power : list of array, shape (n_channels, n_freqs, n_columns)
        One continuous scalogram (power) per recording.
    recording : array of int, shape (n_windows,)
        Which entry of ``power`` each window comes from.
    start : array of int, shape (n_windows,)
        Column of each window's first time sample.
    labels : array of int, shape (n_windows,)
        Class index of each window.
    groups : array of int, shape (n_windows,)
        Trial of each window; validation splits keep whole trials together so that
        overlapping windows of one trial never sit on both sides.
    n_times : int
        Time samples per window.
    """

    power: list[NDArray[np.float32]]
    recording: NDArray[np.int64]
    start: NDArray[np.int64]
    labels: NDArray[np.int64]
    groups: NDArray[np.int64]
    n_times: int

    def __post_init__(self) -> None:
        n = len(self.start)
        if not (len(self.recording) == len(self.labels) == len(self.groups) == n):
            raise ValueError("recording, start, labels and groups must have one entry per window.")
        for r, s in zip(self.recording, self.start, strict=True):
            if s < 0 or s + self.n_times > self.power[r].shape[-1]:
                raise ValueError(
                    f"Window at column {s} of recording {r} runs outside its scalogram "
                    f"({self.power[r].shape[-1]} columns, windows of {self.n_times})."
                )

    def __len__(self) -> int:
        return len(self.start)

    def batch(self, index: NDArray[np.int64]) -> NDArray[np.float32]:
        """Windows ``index`` stacked as (len(index), n_channels, n_freqs, n_times)."""
        return np.stack(
            [
                self.power[r][..., s : s + self.n_times]
                for r, s in zip(self.recording[index], self.start[index], strict=True)
            ]
        )

    def subset(self, index: NDArray[np.int64]) -> ScalogramWindows:
        """The windows ``index`` (sharing the same scalograms)."""
        return ScalogramWindows(
            self.power,
            self.recording[index],
            self.start[index],
            self.labels[index],
            self.groups[index],
            self.n_times,
        )


def preprocess_recording(
    data: NDArray[np.floating], stream: StreamInfo, spec: InputSpec
) -> NDArray[np.float32]:
    """The model's continuous online preprocessing of a whole recording, in batch mode.

    :func:`~neurocast.streaming.preprocessing.filters.preprocess_array` with the model's channels:
    the
    same causal filters and resampling as live decoding.

    Parameters
    ----------
    data : array, shape (n_channels, n_samples)
        The recording, channels in the order of ``stream``.
    stream : StreamInfo
        Its channel names and rate.
    spec : InputSpec
        The model's input.

    Returns
    -------
    signal : ndarray, shape (n_model_channels, n_samples_out), float32
        At ``spec.model_sfreq_hz``.
    """
    pre = spec.preprocess.model_copy(update={"picks": spec.ch_names})
    return preprocess_array(pre, data, stream)


def with_signal_scaling(spec: InputSpec, signals: list[NDArray[np.float32]]) -> InputSpec:
    """``spec`` with robust scaling (median/IQR per channel) fitted on training signals.

    For scalogram models the scaling applies to the continuous signal before the wavelets, so
    MEG power (tesla²) stays far from float32's limits.
    """
    center, scale = fit_robust_scaler(np.concatenate(signals, axis=1))
    pre = spec.preprocess.model_copy(
        update={"robust_center": center.tolist(), "robust_scale": scale.tolist()}
    )
    return spec.model_copy(update={"preprocess": PreprocessSpec.model_validate(pre.model_dump())})


def recording_power(signal: NDArray[np.float32], spec: InputSpec) -> NDArray[np.float32]:
    """Wavelet power of a preprocessed recording exactly as the stream computes it.

    Applies the spec's robust scaling and then
    :func:`~neurocast.streaming.preprocessing.scalogram.morlet_power`,
    as :class:`~neurocast.streaming.preprocessing.scalogram.ScalogramPreprocessor` does live, so
    training
    windows equal the windows the decode engine cuts.

    Parameters
    ----------
    signal : array, shape (n_model_channels, n_samples)
        Output of :func:`preprocess_recording`.
    spec : InputSpec
        The model's input (``scalogram`` must be set).

    Returns
    -------
    power : ndarray, shape (n_model_channels, n_freqs, n_columns), float32
        Column ``j`` describes the signal at ``j / spec.scalogram.sfreq_out_hz`` seconds.
    """
    if spec.scalogram is None:
        raise ValueError("The input spec has no scalogram: this model reads wavelet power.")
    pre = spec.preprocess
    x = np.asarray(signal, dtype=np.float64)
    if pre.robust_center is not None and pre.robust_scale is not None:
        x = (x - np.asarray(pre.robust_center)[:, None]) / np.asarray(pre.robust_scale)[:, None]
    return morlet_power(x, spec.scalogram)


def trial_windows(
    power: list[NDArray[np.float32]],
    onsets_s: list[NDArray[np.floating]],
    labels: list[NDArray[np.int64]],
    spec: InputSpec,
    *,
    tmin_s: float,
    tmax_s: float,
    stride_s: float,
) -> ScalogramWindows:
    """Windows whose last column lies between ``tmin_s`` and ``tmax_s`` after each trial onset.

    Parameters
    ----------
    power : list of array, shape (n_channels, n_freqs, n_columns)
        Continuous scalograms (:func:`recording_power`), one per recording.
    onsets_s : list of array
        Trial onsets in seconds since each recording's first sample.
    labels : list of array of int
        Trial classes.
    spec : InputSpec
        The model's input (window length and scalogram rate).
    tmin_s, tmax_s : float
        Range of window ends relative to the onset, in seconds.
    stride_s : float
        Step between window ends, in seconds.

    Returns
    -------
    windows : ScalogramWindows
        Groups number trials across all recordings (0, 1, ...), in order.
    """
    if spec.scalogram is None:
        raise ValueError("The input spec has no scalogram: this model reads wavelet power.")
    if not tmax_s > tmin_s or not stride_s > 0:
        raise ValueError(
            f"Need tmin_s < tmax_s and a positive stride, got {tmin_s}, {tmax_s}, {stride_s}."
        )
    rate = spec.scalogram.sfreq_out_hz
    n_times = spec.n_times
    rec, start, lab, grp = [], [], [], []
    offsets = np.arange(
        round(tmin_s * rate), round(tmax_s * rate) + 1, max(1, round(stride_s * rate))
    )
    trial = 0
    for r, (p, on, y) in enumerate(zip(power, onsets_s, labels, strict=True)):
        for onset, label in zip(np.round(np.asarray(on) * rate).astype(np.int64), y, strict=True):
            ends = onset + offsets
            ends = ends[(ends >= n_times) & (ends <= p.shape[-1])]
            rec += [r] * len(ends)
            start += (ends - n_times).tolist()
            lab += [int(label)] * len(ends)
            grp += [trial] * len(ends)
            trial += 1
    as_int = lambda v: np.asarray(v, dtype=np.int64)  # noqa: E731
    return ScalogramWindows(
        list(power), as_int(rec), as_int(start), as_int(lab), as_int(grp), n_times
    )


def split_by_group(
    labels: NDArray[np.int64], groups: NDArray[np.int64], val_fraction: float, seed: int
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Split windows into training and validation indices by whole trials, per class.

    Parameters
    ----------
    labels, groups : array of int, shape (n_windows,)
        Class and trial of each window (a trial has one class).
    val_fraction : float
        Fraction of each class's trials held out (at least one trial per class).
    seed : int
        Seed of the shuffle.

    Returns
    -------
    train, val : array of int
        Window indices.
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}.")
    rng = np.random.default_rng(seed)
    val_groups: list[int] = []
    for c in np.unique(labels):
        trials = np.unique(groups[labels == c])
        if len(trials) < 2:
            raise ValueError(
                f"Class {c} has {len(trials)} trial(s): a validation split needs at least 2 per "
                "class. Give more labelled data."
            )
        n_val = min(len(trials) - 1, max(1, round(val_fraction * len(trials))))
        val_groups += rng.permutation(trials)[:n_val].tolist()
    is_val = np.isin(groups, val_groups)
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def split_windows(
    windows: ScalogramWindows, val_fraction: float, seed: int
) -> tuple[ScalogramWindows, ScalogramWindows]:
    """Training and validation windows, split by whole trials per class (:func:`split_by_group`).

    Parameters
    ----------
    windows : ScalogramWindows
        Windows of the training recordings.
    val_fraction : float
        Fraction of each class's trials held out for validation.
    seed : int
        Seed of the shuffle.

    Returns
    -------
    train, val : ScalogramWindows
        The two subsets.
    """
    tr, va = split_by_group(windows.labels, windows.groups, val_fraction, seed)
    return windows.subset(tr), windows.subset(va)


def export_check_inputs(
    windows: ScalogramWindows, seed: int, n_max: int = 64
) -> NDArray[np.float32]:
    """A seeded random sample of held-out windows, in order, for the ONNX-versus-torch check.

    Parameters
    ----------
    windows : ScalogramWindows
        Held-out windows (test, or validation when there is no test data).
    seed : int
        Seed of the draw.
    n_max : int
        Most windows drawn (all of them when there are fewer).

    Returns
    -------
    inputs : array, shape (n, n_channels, n_freqs, n_times)
        The model inputs of the drawn windows.
    """
    rng = np.random.default_rng(seed)
    return windows.batch(np.sort(rng.choice(len(windows), min(n_max, len(windows)), replace=False)))
