"""Training loop of the scalogram transfer classifier (torch; training only).

Partial fine-tuning as in Jhilal, Martin & Giraud (2026): the optimizer receives the parameter
groups of :meth:`~neurocast.models.nets.classifier.ScalogramClassifier.param_groups` (early layers
frozen, last block at lr 1e-4, new layers at lr 1e-3), the loss is class-balanced
cross-entropy, and training stops early when the loss on a validation split (whole trials held
out from the training data, never the test data) has not improved for ``patience`` epochs; the
best epoch's weights are restored.
"""

from __future__ import annotations

import copy
import logging
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from sklearn.metrics import balanced_accuracy_score
from tqdm.auto import tqdm

from neurocast.models.nets.classifier import (
    MixingInit,
    MixingKind,
    PCAMixing,
    ScalogramClassifier,
    ScalogramStandardizer,
    SensorMixing,
)
from neurocast.models.serving.artifact import InputSpec
from neurocast.streaming.preprocessing.filters import (
    PreprocessSpec,
    fit_robust_scaler,
    preprocess_array,
)
from neurocast.streaming.preprocessing.scalogram import morlet_power
from neurocast.streaming.sources.base import StreamInfo

logger = logging.getLogger(__name__)


def set_seed(seed: int) -> np.random.Generator:
    """Seed Python, NumPy and torch; returns a NumPy generator for the caller's own draws."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def set_threads(n: int | None) -> None:
    """Make torch use ``n`` intra-op threads from now on (None: leave torch's choice).

    Raises
    ------
    ValueError
        If ``n`` is less than 1.
    """
    if n is not None:
        if n < 1:
            raise ValueError(f"--threads must be at least 1, got {n}.")
        torch.set_num_threads(n)


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run torch on ``n`` intra-op threads inside the block, restoring the setting after."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


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

    :func:`~neurocast.streaming.preprocessing.filters.preprocess_array` with the model's channels: the
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

    Applies the spec's robust scaling and then :func:`~neurocast.streaming.preprocessing.scalogram.morlet_power`,
    as :class:`~neurocast.streaming.preprocessing.scalogram.ScalogramPreprocessor` does live, so training
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


def build_classifier(
    train: ScalogramWindows,
    n_classes: int,
    *,
    backbone: str = "efficientnet-lite0",
    pretrained: bool = True,
    mixing: MixingKind = "learned",
    mixing_init: MixingInit = "discriminant",
    input_size: int = 224,
    weights: str | None = None,
    compact_width: int = 16,
    seed: int = 0,
) -> ScalogramClassifier:
    """A classifier whose log-power statistics (and PCA-3 projection) come from ``train``.

    Parameters
    ----------
    train : ScalogramWindows
        Training windows (never validation or test windows).
    n_classes : int
        Number of classes.
    backbone, pretrained, mixing, input_size, weights, compact_width
        See :class:`~neurocast.models.nets.classifier.ScalogramClassifier`.
    mixing_init : {"discriminant", "random"}
        Start of the learned mixing: discriminant filters of the training windows
        (:meth:`~neurocast.models.nets.classifier.SensorMixing.init_discriminant`) or PyTorch's
        random initialisation. Ignored with ``mixing="pca3"``.
    seed : int
        Seed of the new layers' initialisation.

    Returns
    -------
    model : ScalogramClassifier
        Untrained head and mixing, in eval mode.
    """
    if mixing_init not in ("discriminant", "random"):
        raise ValueError(f"Unknown mixing_init {mixing_init!r}; choose 'discriminant' or 'random'.")
    power = train.batch(np.arange(len(train)))
    standardizer = ScalogramStandardizer.fit(power)
    z = None
    if mixing == "pca3" or mixing_init == "discriminant":  # both start from training data
        with torch.no_grad():
            z = standardizer(torch.from_numpy(power)).numpy()
    pca = PCAMixing.fit(z) if mixing == "pca3" and z is not None else None
    set_seed(seed)
    model = ScalogramClassifier(
        standardizer,
        n_classes,
        backbone=backbone,
        pretrained=pretrained,
        mixing=mixing,
        pca=pca,
        input_size=input_size,
        weights=weights,
        compact_width=compact_width,
    )
    if isinstance(model.mixing, SensorMixing) and z is not None:
        model.mixing.init_discriminant(z, train.labels)
    return model


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


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of partial fine-tuning.

    Parameters
    ----------
    max_epochs : int
        Upper bound on passes over the training windows.
    patience : int
        Stop after this many epochs without a lower validation loss.
    batch_size : int
        Windows per optimizer step.
    lr_last_block : float
        Learning rate of the pretrained last block (the study: 1e-4).
    lr_new : float
        Learning rate of the new layers (the study: 1e-3).
    weight_decay : float
        AdamW weight decay.
    max_steps_per_epoch : int | None
        Cap on optimizer steps per epoch (windows are drawn at random each epoch).
    seed : int
        Seed of initialisation, shuffling and dropout.
    progress : bool
        Show a progress bar.
    """

    max_epochs: int = 30
    patience: int = 5
    batch_size: int = 32
    lr_last_block: float = 1e-4
    lr_new: float = 1e-3
    weight_decay: float = 1e-4
    max_steps_per_epoch: int | None = None
    seed: int = 0
    progress: bool = True


@dataclass
class TrainResult:
    """What :func:`fit` did.

    Attributes
    ----------
    best_epoch : int
        Epoch (1-based) whose weights were kept.
    epochs_run : int
        Epochs trained before stopping.
    val_loss : float
        Validation cross-entropy at the best epoch.
    val_balanced_accuracy : float
        Window-level balanced accuracy on the validation split at the best epoch.
    history : list of dict
        Per epoch: ``epoch``, ``train_loss``, ``val_loss``, ``val_balanced_accuracy``.
    """

    best_epoch: int
    epochs_run: int
    val_loss: float
    val_balanced_accuracy: float
    history: list[dict[str, float]] = field(default_factory=list)


def _class_weights(labels: NDArray[np.int64], n_classes: int) -> torch.Tensor:
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    if (counts == 0).any():
        raise ValueError(
            "Every class needs training windows; counts per class are "
            f"{counts.astype(int).tolist()}."
        )
    return torch.as_tensor(counts.sum() / (n_classes * counts), dtype=torch.float32)


@torch.no_grad()
def predict_log_proba(
    model: ScalogramClassifier, windows: ScalogramWindows, batch_size: int = 64
) -> NDArray[np.float32]:
    """Log class probabilities of every window, shape (n_windows, n_classes)."""
    was_training = model.training
    model.train(False)
    out = []
    for a in range(0, len(windows), batch_size):
        x = torch.from_numpy(windows.batch(np.arange(a, min(a + batch_size, len(windows)))))
        out.append(F.log_softmax(model(x), dim=-1).numpy())
    model.train(was_training)
    n_classes = model.n_classes
    return np.concatenate(out) if out else np.empty((0, n_classes), np.float32)


def trial_log_proba(
    log_proba: NDArray[np.floating], groups: NDArray[np.int64]
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Per-trial decision: the mean log-probability of each trial's windows.

    Parameters
    ----------
    log_proba : array, shape (n_windows, n_classes)
        Window log-probabilities.
    groups : array of int, shape (n_windows,)
        Trial of each window.

    Returns
    -------
    trials : ndarray of int, shape (n_trials,)
        The trial ids, sorted.
    mean_log_proba : ndarray, shape (n_trials, n_classes)
        Their mean window log-probabilities (argmax is the trial's predicted class).
    """
    trials, inverse = np.unique(groups, return_inverse=True)
    sums = np.zeros((len(trials), log_proba.shape[1]))
    np.add.at(sums, inverse, log_proba)
    return trials, sums / np.bincount(inverse)[:, None]


def evaluate(model: ScalogramClassifier, windows: ScalogramWindows) -> dict[str, float]:
    """Balanced accuracy of ``model`` on ``windows``, per window and per trial.

    Returns
    -------
    figures : dict
        ``window_balanced_accuracy``, ``trial_balanced_accuracy``, ``n_windows``, ``n_trials``.
    """
    logp = predict_log_proba(model, windows)
    trials, mean = trial_log_proba(logp, windows.groups)
    trial_labels = np.array([windows.labels[windows.groups == t][0] for t in trials])
    return {
        "window_balanced_accuracy": float(
            balanced_accuracy_score(windows.labels, logp.argmax(axis=1))
        ),
        "trial_balanced_accuracy": float(balanced_accuracy_score(trial_labels, mean.argmax(1))),
        "n_windows": float(len(windows)),
        "n_trials": float(len(trials)),
    }


def _evaluate(
    model: ScalogramClassifier, windows: ScalogramWindows, weights: torch.Tensor, batch: int
) -> tuple[float, float]:
    logp = predict_log_proba(model, windows, batch)
    loss = F.nll_loss(torch.from_numpy(logp), torch.from_numpy(windows.labels), weight=weights)
    return float(loss), float(balanced_accuracy_score(windows.labels, logp.argmax(axis=1)))


def fit(
    model: ScalogramClassifier,
    train: ScalogramWindows,
    val: ScalogramWindows,
    config: TrainConfig | None = None,
) -> TrainResult:
    """Train with partial fine-tuning and early stopping on the validation split.

    Parameters
    ----------
    model : ScalogramClassifier
        The model; trained in place and left in eval mode with the best epoch's weights.
    train, val : ScalogramWindows
        Training windows and validation windows (whole trials held out of the training data).
    config : TrainConfig | None
        Hyperparameters (defaults of :class:`TrainConfig` when None).

    Returns
    -------
    result : TrainResult
        Best epoch, validation figures and the per-epoch history.
    """
    config = config or TrainConfig()
    if len(train) == 0 or len(val) == 0:
        raise ValueError(
            f"Training needs windows on both sides of the split; got {len(train)} training and "
            f"{len(val)} validation windows."
        )
    rng = set_seed(config.seed)
    n_classes = model.n_classes
    weights = _class_weights(train.labels, n_classes)
    optimizer = torch.optim.AdamW(
        model.param_groups(config.lr_last_block, config.lr_new),  # type: ignore[arg-type,unused-ignore]
        weight_decay=config.weight_decay,
    )
    n_steps = -(-len(train) // config.batch_size)
    if config.max_steps_per_epoch is not None:
        n_steps = min(n_steps, config.max_steps_per_epoch)
    best_loss, best_state, best_epoch, best_bacc = np.inf, copy.deepcopy(model.state_dict()), 0, 0.0
    history: list[dict[str, float]] = []
    bar = tqdm(
        total=config.max_epochs * n_steps, desc="training", unit="step", disable=not config.progress
    )
    epoch = 0
    try:
        for epoch in range(1, config.max_epochs + 1):
            model.train(True)
            order = rng.permutation(len(train))
            losses = []
            for step in range(n_steps):
                idx = order[step * config.batch_size : (step + 1) * config.batch_size]
                x = torch.from_numpy(train.batch(idx))
                y = torch.from_numpy(train.labels[idx])
                loss = F.cross_entropy(model(x), y, weight=weights)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
                bar.update(1)
            val_loss, val_bacc = _evaluate(model, val, weights, 2 * config.batch_size)
            history.append(
                {
                    "epoch": epoch,
                    "train_loss": float(np.mean(losses)),
                    "val_loss": val_loss,
                    "val_balanced_accuracy": val_bacc,
                }
            )
            bar.set_postfix(val_loss=f"{val_loss:.3f}", val_bacc=f"{val_bacc:.2f}")
            if val_loss < best_loss:
                best_loss, best_epoch, best_bacc = val_loss, epoch, val_bacc
                best_state = copy.deepcopy(model.state_dict())
            elif epoch - best_epoch >= config.patience:
                logger.info("Early stop at epoch %d (best %d)", epoch, best_epoch)
                break
    finally:
        bar.close()
    model.load_state_dict(best_state)
    model.train(False)
    return TrainResult(best_epoch, epoch, float(best_loss), best_bacc, history)
