"""Simultaneous EEG and MEG for EEG→MEG translation: simulated and recorded segments.

Simultaneous EEG and MEG exist in public data only as seconds (``../shared/data/meg_eeg``):
enough to judge a translator, not to train one. Training data therefore come from the
physics-based simulator (:mod:`neurocast.streaming.sources.simulator.simulator`): current dipoles
projected
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
(:func:`~neurocast.streaming.preprocessing.filters.preprocess_array`: resampling and a causal
band-pass),
so phase delays are identical in EEG and MEG. The model's input is the EEG divided by one
common scale (:class:`TranslationScaling`; so the average reference inside the models stays
an average reference) and clipped; its output is MEG in tesla and tesla/metre.

Real recordings (:func:`recording_segment`) are read by EEG channel name (bad electrodes
interpolated from their neighbours with :meth:`mne.io.Raw.interpolate_bads`); only MEG
channels present and not bad are kept, and the recording's SSP projectors are applied to the
recorded MEG (and must be applied to translated MEG alike, see
:attr:`SimultaneousSegment.meg_projector`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import mne
import numpy as np
from numpy.typing import NDArray
from tqdm.auto import tqdm

from neurocast.streaming.io import read_recording
from neurocast.streaming.preprocessing.filters import (
    OnlinePreprocessor,
    PreprocessSpec,
    fit_robust_scaler,
    preprocess_array,
)
from neurocast.streaming.sources.base import StreamInfo
from neurocast.streaming.sources.simulator.simulator import Simulator
from neurocast.streaming.sources.specs import SimulatorSpec

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
        Forward-solution cache (see
        :func:`neurocast.streaming.sources.simulator.geometry.forward_gain`).
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
        types = list(sim.info.get_channel_types())
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
        Any recording :func:`~neurocast.streaming.io.read_recording` reads (FIF,
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
        (:attr:`SimultaneousSegment.meg_projector`;
        :func:`.translation_scoring.evaluate_segment` does).

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

    Parameters
    ----------
    projs : sequence of mne.Projection
        The projectors (e.g. :func:`meg_projectors`).
    ch_names : sequence of str
        The channels, in the order of the rows the matrix will act on.

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
    """The MEG SSP projectors stored in a FIF file (e.g. to apply them to another file).

    Parameters
    ----------
    path : path-like
        A FIF file.

    Returns
    -------
    projs : list of mne.Projection
        Its projectors that act on MEG channels only.
    """
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

    Parameters
    ----------
    segment : SimultaneousSegment
        The segment (EEG already through the continuous steps).
    spec : PreprocessSpec
        The model's preprocessing (:meth:`TranslationWindow.model_spec`); its continuous
        steps are skipped here.

    Returns
    -------
    inputs : ndarray, shape (n_eeg, n_samples), float32
        Common-scaled, clipped EEG.
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
    """Model input (:func:`model_inputs`) and standardised MEG targets of a whole segment.

    Parameters
    ----------
    segment : SimultaneousSegment
        The segment.
    spec : PreprocessSpec
        The model's preprocessing.
    scaling : TranslationScaling
        Scales fitted on training data with the segment's MEG channels.

    Returns
    -------
    inputs : ndarray, shape (n_eeg, n_samples), float32
        Model input.
    targets : ndarray, shape (n_meg, n_samples), float32
        MEG divided by each channel's training standard deviation (unitless).
    """
    if len(scaling.meg_scale) != len(segment.meg_names):
        raise ValueError(
            f"The scaling has {len(scaling.meg_scale)} MEG channels, the segment "
            f"{len(segment.meg_names)}; fit the scaling on segments with the same MEG channels."
        )
    y = (segment.meg / scaling.meg_scale[:, None]).astype(np.float32)
    return model_inputs(segment, spec), y
