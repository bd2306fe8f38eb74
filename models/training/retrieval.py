"""Training retrieval decoders: the brain module and its ridge baseline (torch; offline only).

A retrieval decoder maps a preprocessed MEG/EEG window to an embedding in a gallery's space
(:mod:`.gallery`); the gallery images closest to it are its answer. Two decoders learn the
same map from the same windows:

- the **brain module** (:mod:`.brain_module`, Défossez et al. 2023; Benchetrit et al. 2024),
  trained with ``λ·CLIP + (1 − λ)·MSE`` against the seen images' embeddings;
- a **ridge regression** (scikit-learn ``RidgeCV`` on standardised, flattened windows), the
  linear baseline of the study.

Preprocessing is the study's, expressed as the model's
:class:`~neurocast.streaming.preprocessing.filters.PreprocessSpec` so that training and streaming
(:mod:`neurocast.streaming.engine.pipeline`) see the same input: resample to 120 Hz, subtract the
mean of a baseline span (the ``context_s`` seconds before each window; before image onset in
the study's epochs), robust scaling (per-channel median and interquartile range fitted on the
training windows) and clipping at ±20. Windows are cut from the continuously preprocessed
signal and finalised by :meth:`~neurocast.streaming.preprocessing.filters.OnlinePreprocessor.finalize`,
the very code that finalises streamed windows.

References
----------
Défossez A, Caucheteux C, Rapin J, Kabeli O, King J-R (2023). Decoding speech perception from
non-invasive brain recordings. Nature Machine Intelligence 5, 1097–1107.
Benchetrit Y, Banville H, King J-R (2024). Brain decoding: toward real-time reconstruction of
visual perception. ICLR. https://arxiv.org/abs/2310.19812
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import mne
import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from sklearn.linear_model import RidgeCV
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from tqdm.auto import tqdm

from neurocast.models.nets.brain_module import (
    BrainModule,
    BrainModuleConfig,
    CombinedLoss,
    RetrievalHead,
    sensor_positions_2d,
)
from neurocast.models.serving.artifact import Artifact, InputSpec, OutputSpec
from neurocast.models.serving.gallery import Gallery
from neurocast.models.training.checked_export import export_checked
from neurocast.models.training.classifier import set_seed
from neurocast.models.training.export import DEFAULT_ATOL
from neurocast.streaming.preprocessing.filters import (
    OnlinePreprocessor,
    PreprocessSpec,
    fit_robust_scaler,
    preprocess_array,
)
from neurocast.streaming.sources.base import StreamInfo

logger = logging.getLogger(__name__)

RETRIEVAL_SFREQ_HZ = 120.0
CLIP_AT = 20.0


# --------------------------------------------------------------------------- preprocessing


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


# --------------------------------------------------------------------------- brain module


@dataclass(frozen=True)
class RetrievalTrainConfig:
    """Hyper-parameters of brain-module training.

    Attributes
    ----------
    max_epochs : int
        Upper bound on passes over the training windows.
    patience : int
        Stop after this many epochs without a lower validation loss.
    batch_size : int
        Windows per optimizer step.
    lr : float
        Adam learning rate (3e-4 in the study).
    weight_decay : float
        AdamW weight decay (0.05 did better than 1e-4 on a validation split of simulated
        training images).
    clip_weight : float
        λ of ``λ·CLIP + (1 − λ)·MSE``.
    val_fraction : float
        Fraction of the training images whose windows are held out for early stopping.
    max_steps_per_epoch : int | None
        Cap on optimizer steps per epoch.
    seed : int
        Seed of initialisation, shuffling, dropout and the validation split.
    progress : bool
        Show a progress bar.
    """

    max_epochs: int = 40
    patience: int = 6
    batch_size: int = 64
    lr: float = 3e-4
    weight_decay: float = 0.05
    clip_weight: float = 0.75
    val_fraction: float = 0.15
    max_steps_per_epoch: int | None = None
    seed: int = 0
    progress: bool = False


@dataclass
class RetrievalTrainResult:
    """What :func:`fit_brain_module` did.

    Attributes
    ----------
    best_epoch : int
        Epoch (1-based) whose weights were kept.
    epochs_run : int
        Epochs trained.
    val_loss : float
        Validation loss at the best epoch.
    history : list of dict
        Per epoch: ``epoch``, ``train_loss``, ``val_loss``, ``val_clip``, ``val_mse``.
    """

    best_epoch: int
    epochs_run: int
    val_loss: float
    history: list[dict[str, float]] = field(default_factory=list)


def split_by_image(
    image_rows: NDArray[np.int64], val_fraction: float, seed: int
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Training and validation epoch indices with no image on both sides."""
    images = np.unique(image_rows)
    if len(images) < 2:
        raise ValueError("A validation split needs at least two distinct images.")
    rng = np.random.default_rng(seed)
    n_val = min(len(images) - 1, max(1, round(val_fraction * len(images))))
    val_images = rng.permutation(images)[:n_val]
    is_val = np.isin(image_rows, val_images)
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def _batch_loss(
    module: BrainModule,
    loss_fn: CombinedLoss,
    x: NDArray[np.float32],
    rows: NDArray[np.int64],
    subjects: NDArray[np.int64],
    targets: torch.Tensor,
    n_context: int,
) -> torch.Tensor:
    uniq, labels = np.unique(rows, return_inverse=True)
    out = module(torch.from_numpy(x[:, :, n_context:]), torch.from_numpy(subjects))
    return loss_fn(module, out, targets[torch.from_numpy(uniq)], torch.from_numpy(labels))


def fit_brain_module(
    module: BrainModule,
    sampler: WindowSampler,
    train: NDArray[np.integer],
    val: NDArray[np.integer],
    ends: Sequence[int],
    targets: ArrayLike,
    config: RetrievalTrainConfig | None = None,
) -> RetrievalTrainResult:
    """Train a brain module on windows of epochs against image embeddings.

    Each step draws random (epoch, window end) pairs from the training epochs; the CLIP
    candidates are the distinct images of the batch. Training stops when the loss on the
    validation epochs (over all their windows, with all their images as candidates) has not
    improved for ``patience`` epochs, and the best weights are restored.

    Parameters
    ----------
    module : BrainModule
        The module (trained in place; left in eval mode).
    sampler : WindowSampler
        Cuts and finalises windows.
    train, val : array of int
        Epoch indices for training and for early stopping.
    ends : sequence of int
        Window ends (indices into the epochs' samples) to train on.
    targets : array, shape (n_images, dim)
        Embedding of every image ``epochs.image_rows`` refers to.
    config : RetrievalTrainConfig | None
        Hyper-parameters.
    """
    config = config or RetrievalTrainConfig()
    if not len(train) or not len(val):
        raise ValueError(
            f"Training needs epochs on both sides of the split; got {len(train)} training and "
            f"{len(val)} validation epochs."
        )
    rng = set_seed(config.seed)
    epochs = sampler.epochs
    tgt = torch.as_tensor(np.asarray(targets), dtype=torch.float32)
    if tgt.ndim != 2 or tgt.shape[1] != module.out_dim:
        raise ValueError(f"targets must be (n_images, {module.out_dim}), got {tuple(tgt.shape)}.")
    n_ctx = sampler.geometry.n_context
    ends_arr = np.asarray(ends, dtype=np.intp)
    pairs = np.array([(i, e) for i in train for e in ends_arr], dtype=np.intp)
    val_pairs = np.array([(i, e) for i in val for e in ends_arr], dtype=np.intp)
    if len(val_pairs) > 4096:
        val_pairs = val_pairs[rng.choice(len(val_pairs), 4096, replace=False)]
    loss_fn = CombinedLoss(config.clip_weight)
    opt = torch.optim.AdamW(module.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    n_steps = -(-len(pairs) // config.batch_size)
    if config.max_steps_per_epoch is not None:
        n_steps = min(n_steps, config.max_steps_per_epoch)
    best = (np.inf, copy.deepcopy(module.state_dict()), 0)
    history: list[dict[str, float]] = []
    bar = tqdm(total=config.max_epochs * n_steps, desc="brain module", disable=not config.progress)
    epoch = 0
    for epoch in range(1, config.max_epochs + 1):
        module.train()
        order = rng.permutation(len(pairs))
        losses = []
        for step in range(n_steps):
            p = pairs[order[step * config.batch_size : (step + 1) * config.batch_size]]
            if len(p) < 2:
                continue
            x = sampler.windows(p[:, 0], p[:, 1])
            loss = _batch_loss(
                module, loss_fn, x, epochs.image_rows[p[:, 0]], epochs.subjects[p[:, 0]], tgt, n_ctx
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            bar.update(1)
        val_loss, parts = _validation_loss(module, loss_fn, sampler, val_pairs, tgt)
        history.append(
            {"epoch": epoch, "train_loss": float(np.mean(losses)), "val_loss": val_loss, **parts}
        )
        bar.set_postfix(val_loss=f"{val_loss:.3f}")
        if val_loss < best[0]:
            best = (val_loss, copy.deepcopy(module.state_dict()), epoch)
        elif epoch - best[2] >= config.patience:
            logger.info("early stop at epoch %d (best %d)", epoch, best[2])
            break
    bar.close()
    module.load_state_dict(best[1])
    module.eval()
    return RetrievalTrainResult(best[2], epoch, float(best[0]), history)


@torch.no_grad()
def _validation_loss(
    module: BrainModule,
    loss_fn: CombinedLoss,
    sampler: WindowSampler,
    pairs: NDArray[np.intp],
    targets: torch.Tensor,
) -> tuple[float, dict[str, float]]:
    module.eval()
    epochs = sampler.epochs
    rows = epochs.image_rows[pairs[:, 0]]
    uniq, labels = np.unique(rows, return_inverse=True)
    clip_out, mse_out = [], []
    for a in range(0, len(pairs), 256):
        p = pairs[a : a + 256]
        x = sampler.windows(p[:, 0], p[:, 1])[:, :, sampler.geometry.n_context :]
        c, m = module(torch.from_numpy(x), torch.from_numpy(epochs.subjects[p[:, 0]]))
        clip_out.append(c)
        mse_out.append(m)
    out = (torch.cat(clip_out), torch.cat(mse_out))
    loss = loss_fn(module, out, targets[torch.from_numpy(uniq)], torch.from_numpy(labels))
    return float(loss), {f"val_{k}": v for k, v in loss_fn.last.items()}


@torch.no_grad()
def predict_embeddings(
    module: BrainModule,
    x: NDArray[np.float32],
    subjects: ArrayLike | None = None,
    n_context: int = 0,
) -> NDArray[np.float32]:
    """CLIP-head embeddings (n, out_dim) of finalised inputs (n, n_channels, n_context + n)."""
    module.eval()
    subj = np.zeros(len(x), np.int64) if subjects is None else np.asarray(subjects, np.int64)
    out = []
    for a in range(0, len(x), 256):
        xb = torch.from_numpy(np.ascontiguousarray(x[a : a + 256, :, n_context:]))
        out.append(module(xb, torch.from_numpy(subj[a : a + 256]))[0].numpy())
    return np.concatenate(out) if out else np.empty((0, module.out_dim), np.float32)


def make_brain_module(
    info: mne.Info,
    geometry: WindowGeometry,
    out_dim: int,
    config: BrainModuleConfig,
    seed: int | None = None,
) -> BrainModule:
    """A brain module for the channels of ``info`` (positions from it) and a window size.

    ``seed`` seeds torch before the weights are initialised, for reproducible runs.
    """
    if seed is not None:
        torch.manual_seed(seed)
    return BrainModule(sensor_positions_2d(info), geometry.n_window, out_dim, config)


# --------------------------------------------------------------------------- ridge baseline


class RidgeRetrieval:
    """Ridge regression from flattened windows to image embeddings (the linear baseline).

    Standardises every (channel, time) feature, then fits scikit-learn's ``RidgeCV`` with the
    regularisation chosen by efficient leave-one-out cross-validation on the training data.

    Parameters
    ----------
    alphas : sequence of float
        Candidate regularisation strengths.
    """

    def __init__(self, alphas: Sequence[float] = tuple(np.logspace(-1, 7, 17))) -> None:
        self.alphas = tuple(float(a) for a in alphas)
        self.pipeline: Pipeline | None = None

    def fit(self, x: ArrayLike, y: ArrayLike) -> RidgeRetrieval:
        """Fit on windows ``x`` (n, n_channels, n_times) and embeddings ``y`` (n, dim)."""
        arr = np.asarray(x, dtype=np.float32)
        xf = arr.reshape(arr.shape[0], -1)
        self.pipeline = make_pipeline(StandardScaler(), RidgeCV(alphas=self.alphas))
        self.pipeline.fit(xf, np.asarray(y, dtype=np.float32))
        return self

    @property
    def alpha(self) -> float:
        """The regularisation strength chosen."""
        if self.pipeline is None:
            raise RuntimeError("Fit the ridge decoder first.")
        return float(self.pipeline[-1].alpha_)

    def predict(self, x: ArrayLike) -> NDArray[np.float32]:
        """Predicted embeddings (n, dim) of windows (n, n_channels, n_times)."""
        if self.pipeline is None:
            raise RuntimeError("Fit the ridge decoder before predicting.")
        arr = np.asarray(x, dtype=np.float32)
        xf = arr.reshape(arr.shape[0], -1)
        return np.asarray(self.pipeline.predict(xf), dtype=np.float32)


# --------------------------------------------------------------------------- evaluation


def retrieval_ranks(
    predicted: ArrayLike,
    true_rows: ArrayLike,
    candidates: ArrayLike,
    pool: ArrayLike,
    n_distractors: int,
    *,
    seed: int = 0,
) -> NDArray[np.int64]:
    """Rank of the true image among it and ``n_distractors`` random others, per prediction.

    Parameters
    ----------
    predicted : array, shape (n, dim)
        Decoded embeddings.
    true_rows : array of int, shape (n,)
        Row of ``candidates`` of the image actually seen.
    candidates : array, shape (n_images, dim)
        Embeddings of all images (compared by cosine similarity).
    pool : array of int
        Rows distractors are drawn from (the true image is never its own distractor).
    n_distractors : int
        Distractors per prediction (a gallery of ``n_distractors + 1`` images).
    seed : int
        Seed of the draws.

    Returns
    -------
    ranks : array of int, shape (n,)
        0 when the true image scores highest; ties count against it.
    """
    p = np.asarray(predicted, dtype=np.float64)
    c = np.asarray(candidates, dtype=np.float64)
    p = p / np.linalg.norm(p, axis=1, keepdims=True)
    c = c / np.linalg.norm(c, axis=1, keepdims=True)
    pool_arr = np.asarray(pool, dtype=np.intp)
    true = np.asarray(true_rows, dtype=np.intp)
    if n_distractors > len(pool_arr) - 1:
        raise ValueError(
            f"{n_distractors} distractors requested but the pool has {len(pool_arr)} images."
        )
    rng = np.random.default_rng(seed)
    scores = p @ c[pool_arr].T
    true_scores = np.einsum("nd,nd->n", p, c[true])
    ranks = np.empty(len(p), dtype=np.int64)
    is_true = pool_arr[None, :] == true[:, None]
    for i in range(len(p)):
        choices = np.flatnonzero(~is_true[i])
        pick = rng.choice(choices, n_distractors, replace=False)
        ranks[i] = int((scores[i, pick] >= true_scores[i]).sum())
    return ranks


def top_k_accuracy(ranks: ArrayLike, k: int) -> float:
    """Fraction of ranks below ``k``."""
    return float(np.mean(np.asarray(ranks) < k))


# --------------------------------------------------------------------------- export

EXPORT_INPUT = "window"
EXPORT_OUTPUT = "embedding"


def export_retrieval(
    module: BrainModule,
    path: str | Path,
    *,
    gallery: Gallery,
    info: mne.Info,
    spec: PreprocessSpec,
    geometry: WindowGeometry,
    check_inputs: NDArray[np.float32],
    name: str,
    version: str,
    trained_on: str,
    split: str,
    seed: int | None,
    metrics: dict[str, float],
    metrics_note: str,
    simulated_training_data: bool,
    stride_s: float = 0.025,
    subject: int = 0,
    description: str = "",
    atol: float = DEFAULT_ATOL,
) -> Artifact:
    """Export a trained brain module as a retrieval artifact, checked against torch.

    The graph maps one finalised input (channels × (context + window) samples at the model
    rate) to the L2-normalised CLIP-head embedding; the artifact names its gallery, which the
    runtime searches for the top-k images of every window (:class:`OnnxWindowModel`).

    Parameters
    ----------
    module : BrainModule
        The trained module.
    path : path-like
        The ``.onnx`` file to write.
    gallery : Gallery
        The gallery whose space the module was trained in (its name is stored; keep the
        gallery file ``<name>.npz`` beside the artifact for the server to find it).
    info : mne.Info
        The recording's info (channel types of the model's channels).
    spec : PreprocessSpec
        The full preprocessing (with robust scaling) the module was trained with.
    geometry : WindowGeometry
        Context and window lengths.
    check_inputs : array, shape (n_windows, n_channels, n_context + n_window)
        Real finalised windows (held-out data) on which ONNX and torch must agree.
    name, version : str
        Model name and version.
    trained_on, split : str
        Training data (says SIMULATED for simulated data) and how it was split.
    seed : int | None
        Training seed.
    metrics : dict of str to float
        Measured quality (non-finite figures are left out); ``export_max_abs_diff`` is added.
    metrics_note : str
        How the metrics were measured.
    simulated_training_data : bool
        True when trained on simulated data.
    stride_s : float
        Stride of the windows the module was evaluated on, in seconds.
    subject : int
        Whose per-subject layer to export.
    description : str
        Free text.
    atol : float
        Tolerance of the ONNX-versus-torch check.

    Raises
    ------
    ExportCheckError
        If ONNX and torch disagree by more than ``atol`` (nothing is written then).
    ValueError
        If the module and the gallery disagree on the embedding size.
    """
    if module.out_dim != gallery.dim:
        raise ValueError(
            f"The module outputs {module.out_dim} values but gallery {gallery.name!r} has "
            f"{gallery.dim}-dimensional embeddings; train against this gallery."
        )
    picks = list(spec.picks or info["ch_names"])
    types = dict(zip(info["ch_names"], info.get_channel_types(), strict=True))
    head = RetrievalHead(module, subject=subject, n_context=geometry.n_context)
    input_spec = InputSpec(
        ch_names=picks,
        ch_types=[types[c] for c in picks],
        sfreq_hz=float(info["sfreq"]),
        window_s=geometry.n_window / geometry.sfreq,
        context_s=geometry.n_context / geometry.sfreq,
        stride_s=stride_s,
        preprocess=spec,
    )
    if tuple(check_inputs.shape[1:]) != input_spec.shape:
        raise ValueError(
            f"check_inputs have shape {check_inputs.shape[1:]} per window, the model reads "
            f"{input_spec.shape}."
        )
    return export_checked(
        head,
        path,
        check_inputs=np.asarray(check_inputs, dtype=np.float32),
        input_name=EXPORT_INPUT,
        output_name=EXPORT_OUTPUT,
        atol=atol,
        name=name,
        version=version,
        task="retrieval",
        input_spec=input_spec,
        output_spec=OutputSpec(
            tensor=EXPORT_OUTPUT, embedding_size=gallery.dim, gallery=gallery.name, sfreq_hz=None
        ),
        trained_on=trained_on,
        split=split,
        seed=seed,
        simulated_training_data=simulated_training_data,
        metrics=metrics,
        metrics_note=metrics_note,
        description=description
        or (
            f"Brain module (Défossez et al. 2023; Benchetrit et al. 2024), "
            f"{module.n_parameters()} parameters, {module.config.to_dict()}: "
            f"{1e3 * input_spec.window_s:.0f} ms windows to embeddings of gallery "
            f"{gallery.name!r}."
        ),
    )


# --------------------------------------------------------------------------- one training run


@dataclass
class RetrievalFit:
    """A trained brain module with its preprocessing and held-out figures.

    Attributes
    ----------
    module : BrainModule
        The trained module (eval mode).
    spec : PreprocessSpec
        Its full preprocessing (robust scaling fitted on training windows).
    geometry : WindowGeometry
        Context and window lengths.
    ends : list of int
        Window ends it was trained on (indices into the epochs' samples).
    metrics : dict of str to float
        Held-out figures (brain module and ridge at the same windows).
    check_inputs : ndarray
        Held-out finalised windows, for the export check.
    train_result : RetrievalTrainResult
        Training history.
    """

    module: BrainModule
    spec: PreprocessSpec
    geometry: WindowGeometry
    ends: list[int]
    metrics: dict[str, float]
    check_inputs: NDArray[np.float32]
    train_result: RetrievalTrainResult


def fit_retrieval(
    epochs: EpochSet,
    info: mne.Info,
    spec: PreprocessSpec,
    targets: ArrayLike,
    test: NDArray[np.bool_],
    *,
    window_s: float,
    context_s: float,
    end_range_s: tuple[float, float],
    stride_s: float = 0.025,
    config: BrainModuleConfig | None = None,
    train_config: RetrievalTrainConfig | None = None,
    ridge: bool = True,
    max_distractors: int = 100,
) -> RetrievalFit:
    """Train a brain module on the training epochs and measure it on the test epochs.

    Parameters
    ----------
    epochs : EpochSet
        Continuously preprocessed epochs (:func:`preprocess_epochs` or
        :func:`epochs_from_recording`) with ``spec``'s continuous steps.
    info : mne.Info
        Info of the recording's channels (positions for the spatial attention), restricted
        to or containing ``epochs.ch_names``.
    spec : PreprocessSpec
        Preprocessing without robust scaling (:func:`retrieval_spec`).
    targets : array, shape (n_images, dim)
        Embedding of every image ``epochs.image_rows`` refers to (the gallery's).
    test : array of bool, shape (n_epochs,)
        Held-out epochs (their images should not be shown in training epochs).
    window_s, context_s : float
        Model window and the baseline span before it, in seconds.
    end_range_s : tuple of float
        First and last window end (time of the last sample, s after onset) trained on;
        windows end every ``stride_s`` in between.
    stride_s : float
        Step between window ends in seconds.
    config : BrainModuleConfig | None
        Architecture (the paper's when None).
    train_config : RetrievalTrainConfig | None
        Training hyper-parameters.
    ridge : bool
        Also fit the ridge baseline on the same windows and report it.
    max_distractors : int
        Retrieval is measured among the held-out images: each test window's image against up
        to this many other held-out images.
    """
    tc = train_config or RetrievalTrainConfig()
    emb = np.asarray(targets, dtype=np.float32)
    test = np.asarray(test, dtype=bool)
    train_idx, test_idx = np.flatnonzero(~test), np.flatnonzero(test)
    if not len(test_idx) or not len(train_idx):
        raise ValueError("Both training and held-out epochs are needed.")
    geometry = WindowGeometry.from_seconds(window_s, context_s, epochs.sfreq)
    probe = WindowSampler(epochs, spec, geometry)
    first, last = (probe.end_index(t) for t in end_range_s)
    stride = max(1, round(stride_s * epochs.sfreq))
    ends = list(range(first, last + 1, stride))
    full_spec = fit_robust_windows(epochs.subset(train_idx), spec, geometry, ends, seed=tc.seed)
    sampler = WindowSampler(epochs, full_spec, geometry)
    fit_idx, val_idx = split_by_image(epochs.image_rows[train_idx], tc.val_fraction, tc.seed)
    picks = [info["ch_names"].index(c) for c in epochs.ch_names]
    module = make_brain_module(
        mne.pick_info(info, picks), geometry, emb.shape[1], config or BrainModuleConfig(), tc.seed
    )
    result = fit_brain_module(
        module, sampler, train_idx[fit_idx], train_idx[val_idx], ends, emb, tc
    )
    pool = np.unique(epochs.image_rows[test_idx])
    n_distractors = min(max_distractors, len(pool) - 1)
    if n_distractors < 1:
        raise ValueError("Measuring retrieval needs at least two distinct held-out images.")
    rridge = None
    if ridge:
        rng = np.random.default_rng(tc.seed)
        pairs = np.array([(i, e) for i in train_idx for e in ends])
        n_features = len(epochs.ch_names) * geometry.n_window
        # fewer windows than features keeps RidgeCV's leave-one-out on the Gram matrix
        pairs = pairs[rng.permutation(len(pairs))[: max(2, min(len(pairs), n_features))]]
        x = sampler.windows(pairs[:, 0], pairs[:, 1])[:, :, geometry.n_context :]
        rridge = RidgeRetrieval().fit(x, emb[epochs.image_rows[pairs[:, 0]]])
    true = epochs.image_rows[test_idx]
    curves: dict[str, list[float]] = {"ours_top1": [], "ours_top5": [], "ridge_top5": []}
    for e in ends:
        xt = sampler.windows(test_idx, e)
        ranks = retrieval_ranks(
            predict_embeddings(module, xt, epochs.subjects[test_idx], geometry.n_context),
            true,
            emb,
            pool,
            n_distractors,
            seed=e,
        )
        curves["ours_top1"].append(top_k_accuracy(ranks, 1))
        curves["ours_top5"].append(top_k_accuracy(ranks, 5))
        if rridge is not None:
            ranks = retrieval_ranks(
                rridge.predict(xt[:, :, geometry.n_context :]),
                true,
                emb,
                pool,
                n_distractors,
                seed=e,
            )
            curves["ridge_top5"].append(top_k_accuracy(ranks, 5))
    metrics = {
        "test_top1_mean": float(np.mean(curves["ours_top1"])),
        "test_top5_mean": float(np.mean(curves["ours_top5"])),
        "test_top5_peak": float(np.max(curves["ours_top5"])),
        "test_top5_peak_end_s": float(
            sampler.end_times([ends[int(np.argmax(curves["ours_top5"]))]])[0]
        ),
        "test_gallery_size": float(n_distractors + 1),
        "test_chance_top5": min(1.0, 5 / (n_distractors + 1)),
        "n_parameters": float(module.n_parameters()),
        "best_epoch": float(result.best_epoch),
    }
    if rridge is not None:
        metrics["ridge_test_top5_mean"] = float(np.mean(curves["ridge_top5"]))
        metrics["ridge_test_top5_peak"] = float(np.max(curves["ridge_top5"]))
    check = sampler.windows(test_idx[:32], ends[len(ends) // 2])
    return RetrievalFit(module, full_spec, geometry, ends, metrics, check, result)
