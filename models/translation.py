"""EEG→MEG translation: simulated training data, training, the ridge baseline, evaluation.

Simultaneous EEG and MEG exist in public data only as seconds (``../shared/data/meg_eeg``):
enough to judge a translator, not to train one. Training data therefore come from the
physics-based simulator (:mod:`neurocast.streaming.simulate`): current dipoles projected
through MNE forward models onto the EEG electrodes and MEG coils at once, so both modalities
show the same sources at the same time. Two geometries are supported:

- **real**: the sensors, head digitisation and device-to-head transform of a recording
  (``sample_audvis_raw.fif``; the spherical conductor is fitted to its head shape by
  :func:`mne.make_sphere_model`) and sensor noise drawn from its measured noise covariance
  (``sample_audvis-cov.fif``);
- **default**: the simulator's built-in 10-05 cap and VectorView-like helmet with white
  sensor noise, for the embedded path that needs no files.

Several simulated subjects (``subject_seed``: source orientations and depths) are pooled, so
that the map learned is not that of one dipole configuration; held-out simulation uses
subjects never seen in training.

Both modalities go through the same continuous preprocessing as a live stream
(:func:`~neurocast.streaming.preprocess.preprocess_array`: resampling and a causal band-pass),
so phase delays are identical in EEG and MEG. The model's input is the EEG divided by one
common scale (so the average reference inside the models stays an average reference) and
clipped; its output is MEG in tesla and tesla/metre. The ridge baseline
(:class:`RidgeTranslator`) maps each sample's average-referenced EEG onto every MEG channel,
fitted on the samples of the same windows the network learns from.

Evaluation on real recordings (:func:`recording_segment`, :func:`evaluate_segment`) reads the
EEG channels the model needs by name (interpolating bad ones from their neighbours with
:meth:`mne.io.Raw.interpolate_bads`), scores only MEG channels present and not bad, applies
the recording's SSP projectors to translated and recorded MEG alike, and reports per-sensor
correlation and explained variance for magnetometers and gradiometers separately.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import mne
import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from tqdm.auto import tqdm

from neurocast.streaming.preprocess import (
    OnlinePreprocessor,
    PreprocessSpec,
    fit_robust_scaler,
    preprocess_array,
)
from neurocast.streaming.readers import read_recording
from neurocast.streaming.simulate import SIMULATED_TAG, Simulator
from neurocast.streaming.source import StreamInfo
from neurocast.streaming.spec import SimulatorSpec

from .artifact import (
    Artifact,
    ArtifactMetadata,
    InputSpec,
    Metrics,
    OutputSpec,
    Provenance,
    save_artifact,
)
from .export import check_onnx, export_onnx, git_commit
from .train import set_seed
from .translator import EEGToMEGUNet, LinearTranslator, ScaledTranslator, TranslatorConfig

logger = logging.getLogger(__name__)

MEG_TYPES = ("mag", "grad")
#: Model input is clipped at this many common-scale units (interquartile ranges).
CLIP_AT = 20.0


# --------------------------------------------------------------------------- windows


@dataclass(frozen=True)
class TranslationWindow:
    """Rate, band and window of a translator.

    Attributes
    ----------
    sfreq_hz : float
        Rate the translator runs at (the stream is resampled to it).
    l_freq_hz, h_freq_hz : float
        Causal Butterworth band-pass in Hz, applied to EEG and MEG alike.
    window_s : float
        Seconds of translated MEG per window (the newest part of the input).
    context_s : float
        Minimum seconds of EEG before the window that the network also reads; lengthened
        so that the input length is a multiple of ``multiple``.
    multiple : int
        The input length in samples is a multiple of this (``2 ** depth`` of the U-Net).
    settle_s : float
        Seconds dropped at the start of every continuous segment while the causal filters
        settle.
    """

    sfreq_hz: float = 150.0
    l_freq_hz: float = 1.0
    h_freq_hz: float = 40.0
    window_s: float = 0.1
    context_s: float = 0.2
    multiple: int = 4
    settle_s: float = 0.5

    def __post_init__(self) -> None:
        if not 0 < self.l_freq_hz < self.h_freq_hz < self.sfreq_hz / 2:
            raise ValueError(
                f"Need 0 < l_freq_hz < h_freq_hz < sfreq_hz / 2, got {self.l_freq_hz}, "
                f"{self.h_freq_hz} and {self.sfreq_hz} Hz."
            )
        if not self.window_s > 0 or self.context_s < 0 or self.multiple < 1:
            raise ValueError("window_s must be positive, context_s >= 0 and multiple >= 1.")
        if self.settle_s < 0:
            raise ValueError(f"settle_s must be >= 0, got {self.settle_s}.")

    @property
    def n_window(self) -> int:
        """Samples translated per window."""
        return max(1, round(self.window_s * self.sfreq_hz))

    @property
    def n_times(self) -> int:
        """Samples of EEG per model input (context and window)."""
        need = self.n_window + round(self.context_s * self.sfreq_hz)
        return -(-need // self.multiple) * self.multiple

    @property
    def n_context(self) -> int:
        """Samples of context before the window."""
        return self.n_times - self.n_window

    def continuous_spec(self, picks: Sequence[str]) -> PreprocessSpec:
        """The continuous steps (resample, band-pass) for channels ``picks``."""
        return PreprocessSpec(
            picks=list(picks),
            resample_hz=self.sfreq_hz,
            l_freq_hz=self.l_freq_hz,
            h_freq_hz=self.h_freq_hz,
        )

    def model_spec(self, eeg_names: Sequence[str], eeg_scale: float) -> PreprocessSpec:
        """The translator's full preprocessing: continuous steps, common scale, clipping."""
        n = len(eeg_names)
        return self.continuous_spec(eeg_names).model_copy(
            update={
                "robust_center": [0.0] * n,
                "robust_scale": [float(eeg_scale)] * n,
                "clip": CLIP_AT,
            }
        )


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class SimultaneousSegment:
    """Continuously preprocessed simultaneous EEG and MEG (one recording or simulated run).

    Attributes
    ----------
    eeg : ndarray, shape (n_eeg, n_samples), float32
        EEG in volts after the continuous steps.
    meg : ndarray, shape (n_meg, n_samples), float32
        MEG in tesla (magnetometers) and tesla/metre (gradiometers), same steps.
    eeg_names, meg_names : list of str
        Channel names in row order.
    meg_types : list of str
        ``"mag"`` or ``"grad"`` per MEG row.
    sfreq : float
        Rate of both arrays in Hz.
    simulated : bool
        True for simulator output.
    description : str
        Where the data came from (says SIMULATED for simulated data).
    meg_projector : ndarray, shape (n_meg, n_meg) | None
        SSP projector of the recording's MEG channels (already applied to ``meg``); apply it
        to translated MEG before comparing. None when no projector applies.
    """

    eeg: NDArray[np.float32]
    meg: NDArray[np.float32]
    eeg_names: list[str]
    meg_names: list[str]
    meg_types: list[str]
    sfreq: float
    simulated: bool
    description: str
    meg_projector: NDArray[np.float64] | None = None

    @property
    def n_samples(self) -> int:
        """Samples of the segment."""
        return int(self.eeg.shape[1])


def _channel_types(info: mne.Info) -> list[str]:
    return list(info.get_channel_types())


def simulator_spec(
    info_path: str | Path | None = None,
    noise_cov_path: str | Path | None = None,
    *,
    sfreq: float | None = None,
) -> SimulatorSpec:
    """The simulator settings for translation data.

    Parameters
    ----------
    info_path : path-like | None
        A FIF recording whose sensor geometry to use (None: the default geometry).
    noise_cov_path : path-like | None
        A measured noise covariance for the sensor noise (None: white noise).
    sfreq : float | None
        Simulation rate in Hz; None uses the recording's own rate (1000 Hz for the default
        geometry), so that the translator sees the anti-aliasing of the streams it will run on.
    """
    if sfreq is None:
        sfreq = (
            float(mne.io.read_info(info_path, verbose="error")["sfreq"])
            if info_path is not None
            else 1000.0
        )
    return SimulatorSpec(
        sfreq=float(sfreq),
        modality="both",
        info_path=None if info_path is None else str(info_path),
        noise_cov_path=None if noise_cov_path is None else str(noise_cov_path),
        realtime=False,
    )


def simulate_segments(
    spec: SimulatorSpec,
    window: TranslationWindow,
    subject_seeds: Sequence[int],
    seconds: float,
    *,
    cache_dir: str | Path | None = None,
    progress: bool = False,
) -> list[SimultaneousSegment]:
    """Simultaneous EEG and MEG of several simulated subjects, continuously preprocessed.

    Parameters
    ----------
    spec : SimulatorSpec
        Geometry, noise and rate (:func:`simulator_spec`); its seeds are replaced.
    window : TranslationWindow
        Rate and band of the translator.
    subject_seeds : sequence of int
        One segment per simulated subject; the stream seed equals the subject seed.
    seconds : float
        Length of each segment before the settling time is dropped.
    cache_dir : path-like | None
        Forward-solution cache (see :func:`neurocast.streaming.geometry.forward_gain`).
    progress : bool
        Show a progress bar.

    Returns
    -------
    segments : list of SimultaneousSegment
        Labelled simulated, one per subject seed.
    """
    if not subject_seeds:
        raise ValueError("Give at least one subject seed.")
    if not seconds > window.settle_s + window.n_times / window.sfreq_hz:
        raise ValueError(
            f"seconds={seconds} leaves no window after the {window.settle_s} s filter settling; "
            "simulate longer segments."
        )
    out = []
    for s in tqdm(list(subject_seeds), desc="simulating subjects", disable=not progress):
        sim = Simulator(spec, seed=int(s), subject_seed=int(s), cache_dir=cache_dir)
        data, _ = sim.generate(max(1, round(seconds * sim.sfreq)))
        types = _channel_types(sim.info)
        names = list(sim.info["ch_names"])
        eeg = [n for n, t in zip(names, types, strict=True) if t == "eeg"]
        meg = [n for n, t in zip(names, types, strict=True) if t in MEG_TYPES]
        if not eeg or not meg:
            raise ValueError("Translation data need a simulator with both EEG and MEG channels.")
        out.append(
            _segment(
                data,
                sim.stream_info,
                eeg,
                meg,
                [t for t in types if t in MEG_TYPES],
                window,
                description=sim.info["description"],
            )
        )
    return out


def _segment(
    data: NDArray[np.floating],
    stream: StreamInfo,
    eeg_names: Sequence[str],
    meg_names: Sequence[str],
    meg_types: Sequence[str],
    window: TranslationWindow,
    *,
    description: str,
    meg_projector: NDArray[np.float64] | None = None,
) -> SimultaneousSegment:
    """Run both modalities through the continuous steps and drop the settling time."""
    eeg = preprocess_array(window.continuous_spec(eeg_names), data, stream)
    meg = preprocess_array(window.continuous_spec(meg_names), data, stream)
    if meg_projector is not None:
        meg = (meg_projector @ meg).astype(np.float32)
    settle = round(window.settle_s * window.sfreq_hz)
    pre = OnlinePreprocessor(window.continuous_spec(eeg_names), stream)
    return SimultaneousSegment(
        eeg=np.ascontiguousarray(eeg[:, settle:]),
        meg=np.ascontiguousarray(meg[:, settle:]),
        eeg_names=list(eeg_names),
        meg_names=list(meg_names),
        meg_types=list(meg_types),
        sfreq=pre.sfreq_out,
        simulated=stream.simulated,
        description=description,
        meg_projector=meg_projector,
    )


def recording_segment(
    path: str | Path,
    eeg_names: Sequence[str],
    meg_names: Sequence[str],
    window: TranslationWindow,
    *,
    extra_bads: Sequence[str] = (),
    projs: Sequence[mne.Projection] | None = None,
) -> SimultaneousSegment:
    """A real simultaneous recording, prepared for scoring a translator.

    Parameters
    ----------
    path : path-like
        Any recording :func:`~neurocast.streaming.readers.read_recording` reads (FIF,
        FieldTrip MAT, ...) with the EEG channels the translator needs.
    eeg_names : sequence of str
        The translator's EEG inputs, in its order; all must be in the file. Bad ones are
        interpolated from the others (spherical splines on the file's electrode positions).
    meg_names : sequence of str
        The translator's MEG outputs; the segment keeps those in the file and not bad, in
        this order (see ``meg_names`` of the result).
    window : TranslationWindow
        Rate and band of the translator.
    extra_bads : sequence of str
        Channels to treat as bad besides the file's own marks (e.g. the marks of another
        file of the same session, for a file that carries none).
    projs : sequence of mne.Projection | None
        SSP projectors for the MEG; None uses the file's own MEG projectors. They are applied
        to the recorded MEG here and must be applied to the translation too
        (:attr:`SimultaneousSegment.meg_projector`; :func:`evaluate_segment` does).

    Returns
    -------
    segment : SimultaneousSegment
        Not simulated; ``meg_names`` lists the MEG channels that are scored.

    Raises
    ------
    ValueError
        If the file cannot be read, lacks EEG channels the translator needs, or shares no
        usable MEG channel with it.
    """
    raw = read_recording(path, preload=True)
    raw.load_data(verbose="error")
    missing = [n for n in eeg_names if n not in raw.ch_names]
    if missing:
        raise ValueError(
            f"{path}: the translator needs EEG channels {missing[:5]}"
            f"{'...' if len(missing) > 5 else ''} that the file lacks; use a translator trained "
            "on this recording's electrode set."
        )
    bads = sorted(set(raw.info["bads"]) | {b for b in extra_bads if b in raw.ch_names})
    bad_eeg = [n for n in eeg_names if n in bads]
    raw.info["bads"] = bad_eeg
    if bad_eeg:
        raw.interpolate_bads(reset_bads=True, verbose="error")
    types = dict(zip(raw.ch_names, raw.get_channel_types(), strict=True))
    used = [n for n in meg_names if n in types and types[n] in MEG_TYPES and n not in bads]
    if not used:
        raise ValueError(f"{path}: none of the translator's MEG channels is present and good.")
    if projs is None:
        projs = [p for p in raw.info["projs"] if _is_meg_projector(p)]
    projector = ssp_projector(projs, used) if projs else None
    info = raw.info.copy()
    with info._unlock():
        info["projs"] = []
    stream = StreamInfo(name=Path(path).name, info=info, simulated=False)
    return _segment(
        raw.get_data(),
        stream,
        list(eeg_names),
        used,
        [types[n] for n in used],
        window,
        description=f"{Path(path).name} (recording; bad channels {bads})",
        meg_projector=projector,
    )


def ssp_projector(
    projs: Sequence[mne.Projection], ch_names: Sequence[str]
) -> NDArray[np.float64] | None:
    """The SSP projection matrix of ``projs`` over channels ``ch_names``.

    As :meth:`mne.io.Raw.apply_proj` computes it: the projection vectors, restricted to the
    channels given (entries of absent channels are dropped), are normalised and
    orthogonalised, and their span is removed: ``P = I - U Uᵀ``.

    Returns
    -------
    projector : ndarray, shape (n_channels, n_channels) | None
        None when no vector touches the channels.
    """
    index = {n: i for i, n in enumerate(ch_names)}
    vectors = []
    for proj in projs:
        cols = [index.get(n) for n in proj["data"]["col_names"]]
        for row in np.atleast_2d(proj["data"]["data"]):
            v = np.zeros(len(ch_names))
            for c, value in zip(cols, row, strict=True):
                if c is not None:
                    v[c] = value
            norm = np.linalg.norm(v)
            if norm > 0:
                vectors.append(v / norm)
    if not vectors:
        return None
    u, s, _ = np.linalg.svd(np.array(vectors).T, full_matrices=False)
    u = u[:, s > s[0] * 1e-2]
    return np.eye(len(ch_names)) - u @ u.T


def _is_meg_projector(proj: mne.Projection) -> bool:
    names = proj["data"]["col_names"]
    return bool(names) and all(n.startswith("MEG") for n in names)


def meg_projectors(path: str | Path) -> list[mne.Projection]:
    """The MEG SSP projectors stored in a FIF file (e.g. to apply them to another file)."""
    info = mne.io.read_info(path, verbose="error")
    return [p for p in info["projs"] if _is_meg_projector(p)]


# --------------------------------------------------------------------------- scaling


@dataclass(frozen=True)
class TranslationScaling:
    """Scales fitted on training data only.

    Attributes
    ----------
    eeg_scale : float
        One scale in volts for every EEG channel (median over channels of the interquartile
        range), so that the average reference inside the models is a true average reference.
    meg_scale : ndarray, shape (n_meg,)
        Standard deviation of each MEG channel (tesla or tesla/metre): targets are divided
        by it and the exported model multiplies its output by it.
    """

    eeg_scale: float
    meg_scale: NDArray[np.float64]

    @classmethod
    def fit(cls, segments: Sequence[SimultaneousSegment]) -> TranslationScaling:
        """Fit on training segments."""
        eeg = np.concatenate([s.eeg for s in segments], axis=1)
        meg = np.concatenate([s.meg for s in segments], axis=1).astype(np.float64)
        _, iqr = fit_robust_scaler(eeg)
        scale = meg.std(axis=1)
        if not (np.isfinite(scale).all() and (scale > 0).all()):
            raise ValueError("Some MEG channels are flat or non-finite in the training data.")
        return cls(float(np.median(iqr)), scale)


def model_inputs(segment: SimultaneousSegment, spec: PreprocessSpec) -> NDArray[np.float32]:
    """The model's input (finalised EEG) over a whole segment.

    The EEG goes through :meth:`OnlinePreprocessor.finalize`, the code that finalises streamed
    windows (its per-window steps act per sample here: common scale and clipping).
    """
    info = mne.create_info(segment.eeg_names, segment.sfreq, "eeg")
    pre = OnlinePreprocessor(
        spec.model_copy(update={"resample_hz": None, "l_freq_hz": None, "h_freq_hz": None}),
        StreamInfo("segment", info, simulated=segment.simulated),
    )
    return pre.finalize(segment.eeg)


def standardized(
    segment: SimultaneousSegment, spec: PreprocessSpec, scaling: TranslationScaling
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Model input (:func:`model_inputs`) and standardised MEG targets of a whole segment."""
    if len(scaling.meg_scale) != len(segment.meg_names):
        raise ValueError(
            f"The scaling has {len(scaling.meg_scale)} MEG channels, the segment "
            f"{len(segment.meg_names)}."
        )
    y = (segment.meg / scaling.meg_scale[:, None]).astype(np.float32)
    return model_inputs(segment, spec), y


# --------------------------------------------------------------------------- ridge


class RidgeTranslator:
    """Linear EEG→MEG baseline: ridge regression from each sample's EEG to every MEG channel.

    The EEG is average-referenced first (as in the network); an intercept is fitted. The
    regularisation, one value for all MEG channels, is relative to the mean eigenvalue of the
    EEG covariance (so it does not depend on units) and is chosen on validation data from
    *other* recordings or simulated subjects: leave-one-out on the training samples would
    favour too little regularisation, neighbouring samples of a time series being alike.

    Parameters
    ----------
    alphas : sequence of float
        Candidate relative regularisation strengths.
    """

    def __init__(self, alphas: Sequence[float] = tuple(np.logspace(-6, 1, 15))) -> None:
        if not len(alphas) or min(alphas) < 0:
            raise ValueError("alphas must be a non-empty sequence of non-negative values.")
        self.alphas = tuple(float(a) for a in alphas)
        self.alpha: float | None = None
        self.weight: NDArray[np.float64] | None = None
        self.bias: NDArray[np.float64] | None = None
        self.val_mse: dict[float, float] = {}

    @staticmethod
    def _design(x: ArrayLike, name: str) -> NDArray[np.float64]:
        """(n_eeg, n_samples) → average-referenced, still (n_eeg, n_samples)."""
        arr = np.asarray(x, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[0] < 2:
            raise ValueError(f"{name} must be (n_eeg >= 2, n_samples), got shape {arr.shape}.")
        return arr - arr.mean(axis=0, keepdims=True)

    def fit(
        self,
        x: ArrayLike,
        y: ArrayLike,
        x_val: ArrayLike | None = None,
        y_val: ArrayLike | None = None,
    ) -> RidgeTranslator:
        """Fit on EEG ``x`` (n_eeg, n_samples) and MEG ``y`` (n_meg, n_samples).

        ``x_val`` and ``y_val`` (validation EEG and MEG) choose the regularisation; they are
        required when more than one candidate is given.
        """
        xa = np.asarray(x)
        ya = np.asarray(y)
        if xa.ndim != 2 or xa.shape[0] < 2:
            raise ValueError(f"x must be (n_eeg >= 2, n_samples), got shape {xa.shape}.")
        if ya.ndim != 2 or ya.shape[1] != xa.shape[1]:
            raise ValueError(
                f"y must be (n_meg, {xa.shape[1]}) like x's samples, got shape {ya.shape}."
            )
        # means, then cross-products accumulated over blocks: float64 sums without a float64
        # copy of the (large) MEG array
        mx = xa.mean(axis=1, dtype=np.float64)[:, None]
        mx -= mx.mean()  # the time mean of the average-referenced EEG
        my = ya.mean(axis=1, dtype=np.float64)[:, None]
        gram = np.zeros((xa.shape[0], xa.shape[0]))
        cross = np.zeros((ya.shape[0], xa.shape[0]))
        for a in range(0, xa.shape[1], 8192):
            xb = self._design(xa[:, a : a + 8192], "x") - mx
            yb = ya[:, a : a + 8192].astype(np.float64) - my
            gram += xb @ xb.T
            cross += yb @ xb.T
        unit = np.trace(gram) / len(gram)
        evals, evecs = np.linalg.eigh(gram)
        proj = cross @ evecs  # solutions for every alpha share the eigenbasis

        def solve(alpha: float) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
            w = (proj / (evals + alpha * unit)) @ evecs.T
            return w, (my - w @ mx).ravel()

        if x_val is None or y_val is None:
            if len(self.alphas) > 1:
                raise ValueError(
                    "Choosing among several alphas needs validation data (x_val, y_val)."
                )
            self.alpha = self.alphas[0]
        else:
            xv = self._design(x_val, "x_val")
            yv = np.asarray(y_val, dtype=np.float64)
            if yv.shape != (ya.shape[0], xv.shape[1]):
                raise ValueError(
                    f"y_val must be ({ya.shape[0]}, {xv.shape[1]}), got shape {yv.shape}."
                )
            for alpha in self.alphas:
                w, b = solve(alpha)
                self.val_mse[alpha] = float(np.mean((w @ xv + b[:, None] - yv) ** 2))
            self.alpha = min(self.val_mse, key=self.val_mse.__getitem__)
        self.weight, self.bias = solve(self.alpha)
        return self

    def predict(self, x: ArrayLike) -> NDArray[np.float32]:
        """MEG (n_meg, n_samples) for EEG ``x`` (n_eeg, n_samples), or batches of them."""
        if self.weight is None or self.bias is None:
            raise RuntimeError("Fit the ridge translator before predicting.")
        arr = np.asarray(x, dtype=np.float64)
        if arr.ndim < 2 or arr.shape[-2] != self.weight.shape[1]:
            raise ValueError(
                f"x must be (..., {self.weight.shape[1]} EEG channels, n_samples), got {arr.shape}."
            )
        arr = arr - arr.mean(axis=-2, keepdims=True)
        out = np.einsum("me,...et->...mt", self.weight, arr) + self.bias[:, None]
        return out.astype(np.float32)

    def module(self) -> LinearTranslator:
        """The fitted map as a torch module (for export)."""
        if self.weight is None or self.bias is None:
            raise RuntimeError("Fit the ridge translator before exporting it.")
        return LinearTranslator(self.weight, self.bias)


# --------------------------------------------------------------------------- training


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run torch on ``n`` intra-op threads inside the block, restoring the setting after."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass(frozen=True)
class TranslatorTrainConfig:
    """Hyper-parameters of translator training.

    Attributes
    ----------
    max_steps : int
        Upper bound on optimiser steps (each on a fresh batch of random windows).
    batch_size : int
        Windows per step.
    lr : float
        Adam learning rate.
    weight_decay : float
        Adam weight decay.
    eval_every : int
        Steps between validation losses.
    patience : int
        Stop after this many validations without a lower loss; the best weights are kept.
    n_val_windows : int
        Fixed validation windows (from the validation segments).
    max_ridge_samples : int
        At most this many samples (drawn from the training windows, and no more windows'
        worth than the training data hold) fit the ridge baseline.
    init_from_ridge : bool
        Start the network's linear path at the ridge solution.
    n_threads : int
        Torch threads while training; small networks train fastest on one thread, and more
        threads spin against each other on a busy machine.
    seed : int
        Seed of weights, window draws and dropout.
    """

    max_steps: int = 1500
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    eval_every: int = 100
    patience: int = 4
    n_val_windows: int = 256
    max_ridge_samples: int = 150_000
    init_from_ridge: bool = True
    n_threads: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_steps < 1 or self.batch_size < 1 or self.eval_every < 1:
            raise ValueError("max_steps, batch_size and eval_every must be positive.")
        if not self.lr > 0 or self.weight_decay < 0 or self.patience < 1:
            raise ValueError("lr must be positive, weight_decay >= 0 and patience >= 1.")
        if self.n_threads < 1:
            raise ValueError(f"n_threads must be >= 1, got {self.n_threads}.")


class WindowDraw:
    """Random windows of model input and targets from standardised segments.

    Parameters
    ----------
    inputs, targets : list of ndarray
        Per segment: finalised EEG (n_eeg, n) and standardised MEG (n_meg, n).
    n_times : int
        Samples per window.
    """

    def __init__(
        self,
        inputs: Sequence[NDArray[np.float32]],
        targets: Sequence[NDArray[np.float32]],
        n_times: int,
    ) -> None:
        self.inputs, self.targets, self.n_times = list(inputs), list(targets), n_times
        self._lengths = np.array([x.shape[1] - n_times + 1 for x in self.inputs])
        if (self._lengths < 1).any():
            raise ValueError(f"Every segment must hold at least one window of {n_times} samples.")

    @property
    def n_samples(self) -> int:
        """Samples in all segments."""
        return int(sum(x.shape[1] for x in self.inputs))

    def starts(self, n: int, rng: np.random.Generator) -> NDArray[np.int64]:
        """``n`` random (segment, start) pairs, segments weighted by their windows."""
        seg = rng.choice(len(self.inputs), size=n, p=self._lengths / self._lengths.sum())
        start = (rng.random(n) * self._lengths[seg]).astype(np.int64)
        return np.c_[seg, start]

    def batch(self, pairs: NDArray[np.int64]) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """Inputs (n, n_eeg, n_times) and targets (n, n_meg, n_times) at ``pairs``."""
        t = self.n_times
        x = np.stack([self.inputs[s][:, a : a + t] for s, a in pairs])
        y = np.stack([self.targets[s][:, a : a + t] for s, a in pairs])
        return x, y


@dataclass
class TranslationModel:
    """A trained network and its ridge baseline, with everything needed to use them.

    Attributes
    ----------
    net : EEGToMEGUNet
        The network (standardised units, evaluation mode).
    ridge : RidgeTranslator
        The baseline, fitted on the same training windows.
    window : TranslationWindow
        Rate, band and window.
    spec : PreprocessSpec
        The model's preprocessing (EEG picks, continuous steps, common scale, clipping).
    scaling : TranslationScaling
        Scales fitted on the training data.
    eeg_names, meg_names, meg_types : list of str
        Inputs and outputs.
    history : list of dict
        Validation loss per evaluation (``step``, ``train_loss``, ``val_loss``,
        ``val_loss_ridge``).
    trained_on : str
        What the training data were (says SIMULATED).
    """

    net: EEGToMEGUNet
    ridge: RidgeTranslator
    window: TranslationWindow
    spec: PreprocessSpec
    scaling: TranslationScaling
    eeg_names: list[str]
    meg_names: list[str]
    meg_types: list[str]
    history: list[dict[str, float]] = field(default_factory=list)
    trained_on: str = ""

    def scaled_module(self, which: str = "net") -> ScaledTranslator:
        """The network (``"net"``) or the ridge baseline (``"ridge"``) in SI units, cropped."""
        if which not in ("net", "ridge"):
            raise ValueError(f"which must be 'net' or 'ridge', got {which!r}.")
        inner = self.net if which == "net" else self.ridge.module()
        module = ScaledTranslator(
            copy.deepcopy(inner), self.scaling.meg_scale, self.window.n_window
        )
        return module.eval()

    def predictor(self, which: str = "net") -> Callable[[NDArray[np.float32]], NDArray[np.float32]]:
        """A function from model inputs (n, n_eeg, n_times) to MEG (n, n_meg, n_window), SI."""
        module = self.scaled_module(which)

        def run(x: NDArray[np.float32]) -> NDArray[np.float32]:
            with torch.no_grad():
                return module(torch.from_numpy(np.ascontiguousarray(x))).numpy()

        return run


def fit_translator(
    train: Sequence[SimultaneousSegment],
    val: Sequence[SimultaneousSegment],
    window: TranslationWindow,
    config: TranslatorConfig | None = None,
    train_config: TranslatorTrainConfig | None = None,
    *,
    progress: bool = False,
) -> TranslationModel:
    """Fit the ridge baseline and train the network (MSE loss, Adam) on simulated segments.

    Parameters
    ----------
    train, val : sequence of SimultaneousSegment
        Training segments and validation segments (other simulated subjects; never the
        data the model is tested on). All need the same channels.
    window : TranslationWindow
        Rate, band and window; ``window.multiple`` must equal ``2 ** config.depth``.
    config : TranslatorConfig | None
        Network sizes; None uses the defaults for these channel counts and window.
    train_config : TranslatorTrainConfig | None
        Optimisation settings (defaults when None).
    progress : bool
        Show a progress bar.

    Returns
    -------
    model : TranslationModel
        The network with the best validation loss, in evaluation mode, and the ridge.
    """
    if not train or not val:
        raise ValueError("Give at least one training and one validation segment.")
    first = train[0]
    for s in [*train, *val]:
        if s.eeg_names != first.eeg_names or s.meg_names != first.meg_names:
            raise ValueError("All segments must have the same EEG and MEG channels.")
    tc = train_config or TranslatorTrainConfig()
    cfg = config or TranslatorConfig(
        n_eeg=len(first.eeg_names), n_meg=len(first.meg_names), n_times=window.n_times
    )
    if cfg.n_times != window.n_times or 2**cfg.depth != window.multiple:
        raise ValueError(
            f"The network's n_times ({cfg.n_times}) and 2**depth ({2**cfg.depth}) must match the "
            f"window's n_times ({window.n_times}) and multiple ({window.multiple})."
        )
    with torch_threads(tc.n_threads):
        return _fit(train, val, window, cfg, tc, progress)


def _fit(
    train: Sequence[SimultaneousSegment],
    val: Sequence[SimultaneousSegment],
    window: TranslationWindow,
    cfg: TranslatorConfig,
    tc: TranslatorTrainConfig,
    progress: bool,
) -> TranslationModel:
    first = train[0]
    rng = set_seed(tc.seed)
    scaling = TranslationScaling.fit(train)
    spec = window.model_spec(first.eeg_names, scaling.eeg_scale)
    tr = [standardized(s, spec, scaling) for s in train]
    va = [standardized(s, spec, scaling) for s in val]
    draw = WindowDraw([x for x, _ in tr], [y for _, y in tr], window.n_times)
    val_draw = WindowDraw([x for x, _ in va], [y for _, y in va], window.n_times)
    val_x, val_y = val_draw.batch(val_draw.starts(tc.n_val_windows, rng))

    # the ridge sees the samples of training windows drawn the same way; the validation
    # subjects choose its regularisation
    n_fit = max(1, min(tc.max_ridge_samples, draw.n_samples) // window.n_times)
    rx, ry = draw.batch(draw.starts(n_fit, rng))
    ridge = RidgeTranslator().fit(
        np.concatenate(list(rx), axis=1),
        np.concatenate(list(ry), axis=1),
        np.concatenate(list(val_x), axis=1),
        np.concatenate(list(val_y), axis=1),
    )
    logger.info("ridge baseline: relative alpha %.3g", ridge.alpha)

    net = EEGToMEGUNet(cfg)
    if tc.init_from_ridge:
        assert ridge.weight is not None and ridge.bias is not None
        net.set_linear_map(ridge.weight, ridge.bias)
    opt = torch.optim.Adam(net.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    vx, vy = torch.from_numpy(val_x), torch.from_numpy(val_y)
    ridge_val = float(np.mean((ridge.predict(val_x) - val_y) ** 2))

    def val_loss() -> float:
        net.eval()
        with torch.no_grad():
            return float(torch.nn.functional.mse_loss(net(vx), vy))

    best, best_state, bad, history = val_loss(), copy.deepcopy(net.state_dict()), 0, []
    history.append({"step": 0.0, "train_loss": float("nan"), "val_loss": best,
                    "val_loss_ridge": ridge_val})  # fmt: skip
    running: list[float] = []
    bar = tqdm(range(1, tc.max_steps + 1), desc="translator", disable=not progress)
    for step in bar:
        net.train()
        x, y = draw.batch(draw.starts(tc.batch_size, rng))
        loss = torch.nn.functional.mse_loss(net(torch.from_numpy(x)), torch.from_numpy(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
        running.append(float(loss.detach()))
        if step % tc.eval_every and step != tc.max_steps:
            continue
        v = val_loss()
        history.append({"step": float(step), "train_loss": float(np.mean(running)),
                        "val_loss": v, "val_loss_ridge": ridge_val})  # fmt: skip
        running = []
        bar.set_postfix(val=f"{v:.4f}", ridge=f"{ridge_val:.4f}")
        if v < best:
            best, best_state, bad = v, copy.deepcopy(net.state_dict()), 0
        else:
            bad += 1
            if bad >= tc.patience:
                break
    net.load_state_dict(best_state)
    net.eval()
    return TranslationModel(
        net=net,
        ridge=ridge,
        window=window,
        spec=spec,
        scaling=scaling,
        eeg_names=list(first.eeg_names),
        meg_names=list(first.meg_names),
        meg_types=list(first.meg_types),
        history=history,
        trained_on=f"{SIMULATED_TAG}: {len(train)} simulated subjects; {train[0].description}",
    )


# --------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class TranslationScores:
    """Per-sensor agreement of translated and recorded (or simulated) MEG.

    Attributes
    ----------
    meg_names, meg_types : list of str
        Scored channels and their types.
    corr : ndarray, shape (n_meg,)
        Pearson correlation over time.
    explained_variance : ndarray, shape (n_meg,)
        ``1 - var(recorded - translated) / var(recorded)`` (can be negative).
    n_samples : int
        Samples compared per sensor.
    simulated : bool
        Whether the reference MEG is simulated.
    description : str
        What was scored.
    """

    meg_names: list[str]
    meg_types: list[str]
    corr: NDArray[np.float64]
    explained_variance: NDArray[np.float64]
    n_samples: int
    simulated: bool
    description: str

    def summary(self) -> dict[str, float]:
        """Medians over sensors per type: ``corr_mag``, ``ev_mag``, ``corr_grad``, ... ."""
        types = np.asarray(self.meg_types)
        out: dict[str, float] = {}
        for t in MEG_TYPES:
            sel = types == t
            out[f"corr_{t}"] = float(np.median(self.corr[sel])) if sel.any() else float("nan")
            out[f"ev_{t}"] = (
                float(np.median(self.explained_variance[sel])) if sel.any() else float("nan")
            )
            out[f"n_{t}"] = float(sel.sum())
        out["n_samples"] = float(self.n_samples)
        return out


def score_translation(
    translated: ArrayLike,
    reference: ArrayLike,
    meg_names: Sequence[str],
    meg_types: Sequence[str],
    *,
    simulated: bool,
    description: str = "",
) -> TranslationScores:
    """Per-sensor correlation and explained variance of translated against reference MEG.

    Parameters
    ----------
    translated, reference : array, shape (n_meg, n_samples)
        Same channels, same samples, any one unit per channel.
    meg_names, meg_types : sequence of str
        Channel names and types (``"mag"``/``"grad"``) of the rows.
    simulated : bool
        Whether the reference is simulated.
    description : str
        What is scored.
    """
    p = np.asarray(translated, dtype=np.float64)
    r = np.asarray(reference, dtype=np.float64)
    if p.shape != r.shape or p.ndim != 2 or p.shape[1] < 3:
        raise ValueError(
            f"translated and reference must both be (n_meg, n_samples >= 3), got {p.shape} and "
            f"{r.shape}."
        )
    if len(meg_names) != p.shape[0] or len(meg_types) != p.shape[0]:
        raise ValueError("Give one name and one type per MEG row.")
    # scale each channel first: squares of tesla underflow float arithmetic
    unit = r.std(axis=1, keepdims=True)
    unit[unit == 0] = 1.0
    p, r = p / unit, r / unit
    pc, rc = p - p.mean(axis=1, keepdims=True), r - r.mean(axis=1, keepdims=True)
    denom = np.sqrt((pc**2).sum(axis=1) * (rc**2).sum(axis=1))
    corr = np.divide((pc * rc).sum(axis=1), denom, out=np.zeros(len(p)), where=denom > 0)
    resid = r - p
    ev = 1.0 - resid.var(axis=1) / np.where(r.var(axis=1) > 0, r.var(axis=1), np.inf)
    return TranslationScores(
        list(meg_names), list(meg_types), corr, ev, int(p.shape[1]), simulated, description
    )


def translate_segment(
    predict: Callable[[NDArray[np.float32]], NDArray[np.float32]],
    inputs: NDArray[np.float32],
    window: TranslationWindow,
    *,
    batch_size: int = 256,
) -> tuple[NDArray[np.float32], slice]:
    """Translate a continuous input window by window, as a stream would.

    Windows end every ``window.n_window`` samples, so their translated parts tile the
    segment without overlap.

    Parameters
    ----------
    predict : callable
        Model inputs (n, n_eeg, n_times) → MEG (n, n_meg, n_window).
    inputs : ndarray, shape (n_eeg, n_samples)
        Finalised EEG of a segment.
    window : TranslationWindow
        The model's window.
    batch_size : int
        Windows per call of ``predict``.

    Returns
    -------
    translated : ndarray, shape (n_meg, n_covered)
        Translated MEG.
    covered : slice
        The samples of the segment it covers.
    """
    n, t, w = inputs.shape[1], window.n_times, window.n_window
    ends = np.arange(t, n + 1, w)
    if not len(ends):
        raise ValueError(f"The segment ({n} samples) is shorter than one window ({t} samples).")
    pieces = []
    for a in range(0, len(ends), batch_size):
        batch = np.stack([inputs[:, e - t : e] for e in ends[a : a + batch_size]])
        pieces.append(predict(batch))
    out = np.concatenate(pieces, axis=0)  # (n_windows, n_meg, w)
    return np.concatenate(list(out), axis=1), slice(int(ends[0] - w), int(ends[-1]))


def evaluate_segment(
    model: TranslationModel,
    segment: SimultaneousSegment,
    which: str = "net",
    *,
    predict: Callable[[NDArray[np.float32]], NDArray[np.float32]] | None = None,
) -> TranslationScores:
    """Score a translator on a segment it was not trained on.

    Parameters
    ----------
    model : TranslationModel
        The trained models (their preprocessing and channels).
    segment : SimultaneousSegment
        Held-out simulation or a real recording (:func:`recording_segment`); only its MEG
        channels are scored, in its order.
    which : {"net", "ridge"}
        Which model to score (ignored when ``predict`` is given).
    predict : callable | None
        Another implementation of the same model (e.g. the exported ONNX artifact through the
        runtime), from inputs (n, n_eeg, n_times) to MEG (n, n_meg_model, n_window).
    """
    if segment.eeg_names != model.eeg_names:
        raise ValueError("The segment's EEG channels differ from the model's inputs.")
    missing = [n for n in segment.meg_names if n not in model.meg_names]
    if missing:
        raise ValueError(f"The model does not output MEG channels {missing[:5]}.")
    x = model_inputs(segment, model.spec)
    fn = predict if predict is not None else model.predictor(which)
    out, covered = translate_segment(fn, x, model.window)
    rows = [model.meg_names.index(n) for n in segment.meg_names]
    translated = out[rows].astype(np.float64)
    if segment.meg_projector is not None:
        translated = segment.meg_projector @ translated
    label = "network" if predict is None and which == "net" else which
    return score_translation(
        translated,
        segment.meg[:, covered],
        segment.meg_names,
        segment.meg_types,
        simulated=segment.simulated,
        description=f"{label} on {segment.description}",
    )


# --------------------------------------------------------------------------- export


def check_windows(
    model: TranslationModel, segment: SimultaneousSegment, n: int = 64
) -> NDArray[np.float32]:
    """Up to ``n`` consecutive, non-overlapping model inputs of a (held-out) segment."""
    x = model_inputs(segment, model.spec)
    t = model.window.n_times
    starts = np.arange(0, x.shape[1] - t + 1, t)[:n]
    if not len(starts):
        raise ValueError("The segment is shorter than one model input.")
    return np.stack([x[:, a : a + t] for a in starts])


def finite_figures(values: dict[str, float] | None) -> dict[str, float]:
    """The figures that artifact metadata can hold: non-finite ones (not measured) left out."""
    return {k: float(v) for k, v in (values or {}).items() if np.isfinite(v)}


def export_translator(
    model: TranslationModel,
    path: str | Path,
    *,
    which: str = "net",
    check_segment: SimultaneousSegment,
    name: str,
    version: str = "1",
    stream_sfreq: float,
    metrics: dict[str, float] | None = None,
    metrics_note: str = "",
    seed: int | None = None,
    rtol: float = 1e-4,
) -> Artifact:
    """Write a translator as an artifact with task ``translation``.

    The graph takes the finalised EEG span (context and window, common-scaled) and outputs
    the MEG of the window's samples in tesla (magnetometers) and tesla/metre (gradiometers),
    every MEG channel of the training geometry, at the translator's rate; the runtime turns it
    into the translation payload (``ch_names``, ``ch_types``, ``sfreq_hz``, ``signal``).

    Parameters
    ----------
    model : TranslationModel
        The trained models.
    path : path-like
        The ``.onnx`` file.
    which : {"net", "ridge"}
        Export the network or the ridge baseline.
    check_segment : SimultaneousSegment
        Held-out data whose windows must give the same output in ONNX and torch.
    name, version : str
        Artifact name and version.
    stream_sfreq : float
        Rate of the training streams in Hz (streams at other rates are resampled).
    metrics : dict | None
        Measured figures to store (non-finite ones are left out).
    metrics_note : str
        How they were measured.
    seed : int | None
        Training seed.
    rtol : float
        Tolerance of the ONNX-versus-torch check relative to the largest channel scale (the
        gradiometers' training standard deviation): outputs are of the order of 1e-13 T, so
        a fixed absolute tolerance would check nothing. 1e-4 of it is a few thousandths of a
        magnetometer's standard deviation, far below any error a faulty export makes.

    Raises
    ------
    ExportCheckError
        If ONNX and torch disagree by more than the tolerance; nothing is written then.
    """
    module = model.scaled_module(which)
    x = check_windows(model, check_segment)
    with warnings.catch_warnings():
        # the exporter warns that an LSTM traced with batch 2 may fail at other batch sizes;
        # its initial states are zeros shaped from the input here, and check_onnx runs the
        # graph at other batch sizes (the runtime then uses batches of one)
        warnings.filterwarnings("ignore", message=".*LSTM.*", category=UserWarning)
        proto = export_onnx(module, torch.from_numpy(x[:2]), input_name="eeg", output_name="meg")
    atol = rtol * float(model.scaling.meg_scale.max())
    diff = check_onnx(proto, module, x, atol=atol)
    w = model.window
    meta = ArtifactMetadata(
        name=name,
        version=version,
        task="translation",
        input=InputSpec(
            ch_names=list(model.eeg_names),
            ch_types=["eeg"] * len(model.eeg_names),
            sfreq_hz=float(stream_sfreq),
            window_s=w.n_window / w.sfreq_hz,
            context_s=w.n_context / w.sfreq_hz,
            stride_s=w.n_window / w.sfreq_hz,
            preprocess=model.spec,
            scalogram=None,
        ),
        output=OutputSpec(
            tensor="meg",
            class_names=None,
            embedding_size=None,
            gallery=None,
            ch_names=list(model.meg_names),
            ch_types=list(model.meg_types),
            sfreq_hz=w.sfreq_hz,
        ),
        provenance=Provenance(
            data=model.trained_on,
            split="training and validation on different simulated subjects (subject_seed); "
            "scores on further held-out simulated subjects and on real recordings never used "
            "in training",
            seed=seed,
            git_commit=git_commit(),
        ),
        simulated_training_data=True,
        metrics=Metrics(
            values={**finite_figures(metrics), "export_max_abs_diff": diff}, note=metrics_note
        ),
        description=(
            ("U-Net with Bi-LSTM bottleneck" if which == "net" else "Ridge regression")
            + f" translating {len(model.eeg_names)} EEG channels into {len(model.meg_names)} MEG "
            f"channels ({model.window.l_freq_hz:g}-{model.window.h_freq_hz:g} Hz, "
            f"{w.sfreq_hz:g} Hz); each window gives the MEG of its last {w.n_window} samples. "
            "Trained on SIMULATED simultaneous EEG/MEG."
        ),
        content_sha256=None,
    )
    return save_artifact(proto, meta, path)
