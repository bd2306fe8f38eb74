"""Training loop of the scalogram transfer classifier (torch; training only).

Partial fine-tuning as in Jhilal, Martin & Giraud (2026): the optimizer receives the parameter
groups of :meth:`~neurocast.models.classifier.ScalogramClassifier.param_groups` (early layers
frozen, last block at lr 1e-4, new layers at lr 1e-3), the loss is class-balanced
cross-entropy, and training stops early when the loss on a validation split (whole trials held
out from the training data, never the test data) has not improved for ``patience`` epochs; the
best epoch's weights are restored.
"""

from __future__ import annotations

import copy
import logging
import random
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from sklearn.metrics import balanced_accuracy_score
from tqdm.auto import tqdm

from .classifier import ScalogramClassifier

logger = logging.getLogger(__name__)


def set_seed(seed: int) -> np.random.Generator:
    """Seed Python, NumPy and torch; returns a NumPy generator for the caller's own draws."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


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
            [self.power[r][..., s : s + self.n_times] for r, s in zip(self.recording[index], self.start[index], strict=True)]
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
            f"Every class needs training windows; counts per class are {counts.astype(int).tolist()}."
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
    n_classes = int(model.config["n_classes"])
    return np.concatenate(out) if out else np.empty((0, n_classes), np.float32)


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
    n_classes = int(model.config["n_classes"])
    weights = _class_weights(train.labels, n_classes)
    optimizer = torch.optim.AdamW(
        model.param_groups(config.lr_last_block, config.lr_new),  # type: ignore[arg-type]
        weight_decay=config.weight_decay,
    )
    n_steps = -(-len(train) // config.batch_size)
    if config.max_steps_per_epoch is not None:
        n_steps = min(n_steps, config.max_steps_per_epoch)
    best_loss, best_state, best_epoch, best_bacc = np.inf, copy.deepcopy(model.state_dict()), 0, 0.0
    history: list[dict[str, float]] = []
    bar = tqdm(total=config.max_epochs * n_steps, desc="training", unit="step", disable=not config.progress)
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
                losses.append(float(loss))
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
