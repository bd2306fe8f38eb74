"""Training loop of the scalogram transfer classifier (torch; training only).

Partial fine-tuning as in Jhilal, Martin & Giraud (2026): the optimizer receives the parameter
groups of :meth:`~neurocast.models.nets.classifier.ScalogramClassifier.param_groups` (early layers
frozen, last block at lr 1e-4, new layers at lr 1e-3), the loss is class-balanced
cross-entropy, and training stops early when the loss on a validation split (whole trials held
out from the training data, never the test data) has not improved for ``patience`` epochs; the
best epoch's weights are restored.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from sklearn.metrics import balanced_accuracy_score

from neurocast.models.nets.classifier import (
    MixingInit,
    MixingKind,
    PCAMixing,
    ScalogramClassifier,
    ScalogramStandardizer,
    SensorMixing,
)
from neurocast.models.serving.artifact import Artifact
from neurocast.models.serving.schema import ArtifactMetadata, InputSpec, OutputSpec
from neurocast.models.training.classifier_data import ScalogramWindows
from neurocast.models.training.export import (
    DEFAULT_ATOL,
    INPUT_NAME,
    OUTPUT_NAME,
    ArtifactAbout,
    export_artifact,
)
from neurocast.models.training.loop import EpochTrainConfig, set_seed

logger = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class TrainConfig(EpochTrainConfig):
    """Hyperparameters of partial fine-tuning.

    Parameters
    ----------
    max_epochs, patience, batch_size, weight_decay, max_steps_per_epoch, seed, progress
        See :class:`~neurocast.models.training.loop.EpochTrainConfig` (windows per step,
        AdamW weight decay; windows are drawn at random each epoch).
    lr_last_block : float
        Learning rate of the pretrained last block (the study: 1e-4).
    lr_new : float
        Learning rate of the new layers (the study: 1e-3).
    """

    lr_last_block: float = 1e-4
    lr_new: float = 1e-3
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
    loop = config.training_loop()
    weights = _class_weights(train.labels, model.n_classes)
    optimizer = torch.optim.AdamW(
        model.param_groups(config.lr_last_block, config.lr_new),  # type: ignore[arg-type,unused-ignore]
        weight_decay=config.weight_decay,
    )
    n_steps = config.steps_per_epoch(len(train))

    def run_epoch(epoch: int, rng: np.random.Generator, advance: Callable[[], None]) -> float:
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
            advance()
        return float(np.mean(losses))

    def validate() -> tuple[float, dict[str, float]]:
        loss, bacc = _evaluate(model, val, weights, 2 * config.batch_size)
        return loss, {"val_balanced_accuracy": bacc}

    result = loop.run(model, run_epoch, validate, steps_per_epoch=n_steps)
    return TrainResult(
        result.best_epoch,
        result.epochs_run,
        result.best_loss,
        result.best_figures.get("val_balanced_accuracy", 0.0),
        result.history,
    )


def export_classifier(
    model: torch.nn.Module,
    path: str | Path,
    *,
    check_inputs: NDArray[np.float32],
    about: ArtifactAbout,
    input_spec: InputSpec,
    class_names: list[str],
    atol: float = DEFAULT_ATOL,
) -> Artifact:
    """Export a classifier through :func:`~neurocast.models.training.export.export_artifact`.

    Parameters
    ----------
    model : torch.nn.Module
        The trained classifier (outputs logits).
    path : path-like
        The ``.onnx`` file to write.
    check_inputs : array, shape (n_windows, *input_spec.shape)
        Real windows (held-out data) on which ONNX and torch must agree within ``atol``.
    about : ArtifactAbout
        Name, version, training data, split, seed, measured quality and whether the data
        were simulated (say it); ``export_max_abs_diff`` is added to the metrics.
    input_spec : InputSpec
        What the model reads.
    class_names : list of str
        Output classes in column order.
    atol : float
        Tolerance of the ONNX-versus-torch check, in logits.

    Returns
    -------
    artifact : Artifact
        The written, validated artifact.

    Raises
    ------
    ExportCheckError
        If ONNX and torch disagree by more than ``atol``; nothing is written then.
    """
    meta = ArtifactMetadata(
        task="classification",
        input=input_spec,
        output=OutputSpec(
            tensor=OUTPUT_NAME,
            class_names=list(class_names),
            logits=True,
            embedding_size=None,
            sfreq_hz=None,
        ),
        content_sha256=None,
        **about.metadata_fields(),
    )
    return export_artifact(model, path, meta, check_inputs, input_name=INPUT_NAME, atol=atol)
