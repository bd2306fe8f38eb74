"""The retrieval recipe: windows, brain-module training, ridge baseline and held-out measures.

:func:`prepare_windows` fits the robust scaling on training windows and returns the sampler
that cuts finalised windows; :func:`train_brain_module` builds a brain module for the
recording's sensors and trains it with early stopping; :func:`fit_retrieval` is the whole
recipe of ``neurocast train retrieval`` (both steps, the ridge baseline on the same windows
and the retrieval curves on held-out images).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import mne
import numpy as np
from numpy.typing import ArrayLike, NDArray

from neurocast.models.nets.brain_module import BrainModule, BrainModuleConfig
from neurocast.models.training.retrieval import (
    RetrievalTrainConfig,
    RetrievalTrainResult,
    fit_brain_module,
    make_brain_module,
    predict_embeddings,
    split_by_image,
)
from neurocast.models.training.retrieval_data import (
    EpochSet,
    WindowGeometry,
    WindowSampler,
    fit_robust_windows,
)
from neurocast.models.training.retrieval_eval import (
    RidgeRetrieval,
    retrieval_ranks,
    top_k_accuracy,
)
from neurocast.streaming.preprocessing.filters import PreprocessSpec


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


def prepare_windows(
    epochs: EpochSet,
    spec: PreprocessSpec,
    geometry: WindowGeometry,
    train: NDArray[np.integer],
    ends: Sequence[int],
    seed: int,
) -> tuple[PreprocessSpec, WindowSampler]:
    """The full preprocessing (robust scaling from training windows) and its window sampler.

    Parameters
    ----------
    epochs : EpochSet
        All epochs (training and held-out).
    spec : PreprocessSpec
        Preprocessing without robust scaling.
    geometry : WindowGeometry
        Context and window lengths.
    train : array of int
        Training epochs (the only ones the scaling sees).
    ends : sequence of int
        Window ends (indices into the epochs' samples) trained on.
    seed : int
        Seed of the windows the scaling is fitted on.
    """
    full = fit_robust_windows(epochs.subset(train), spec, geometry, ends, seed=seed)
    return full, WindowSampler(epochs, full, geometry)


def train_brain_module(
    info: mne.Info,
    sampler: WindowSampler,
    fit: NDArray[np.integer],
    val: NDArray[np.integer],
    ends: Sequence[int],
    targets: NDArray[np.float32],
    config: BrainModuleConfig,
    train_config: RetrievalTrainConfig,
) -> tuple[BrainModule, RetrievalTrainResult]:
    """A brain module for the sensors of ``info``, trained with early stopping on ``val``.

    Parameters
    ----------
    info : mne.Info
        Info holding (at least) the epochs' channels, with positions.
    sampler : WindowSampler
        Cuts finalised windows (:func:`prepare_windows`).
    fit, val : array of int
        Epochs trained on and epochs of the early-stopping loss (other images).
    ends : sequence of int
        Window ends trained on.
    targets : array, shape (n_images, dim)
        Embedding of every image the epochs refer to.
    config : BrainModuleConfig
        Architecture.
    train_config : RetrievalTrainConfig
        Training hyper-parameters (its seed also seeds the weights).
    """
    names = sampler.epochs.ch_names
    picked = mne.pick_info(info, [info["ch_names"].index(c) for c in names])
    module = make_brain_module(
        picked, sampler.geometry, targets.shape[1], config, train_config.seed
    )
    result = fit_brain_module(module, sampler, fit, val, ends, targets, train_config)
    return module, result


def _ridge_baseline(
    sampler: WindowSampler,
    train: NDArray[np.intp],
    ends: Sequence[int],
    targets: NDArray[np.float32],
    seed: int,
) -> RidgeRetrieval:
    epochs, geometry = sampler.epochs, sampler.geometry
    rng = np.random.default_rng(seed)
    pairs = np.array([(i, e) for i in train for e in ends])
    n_features = len(epochs.ch_names) * geometry.n_window
    # fewer windows than features keeps RidgeCV's leave-one-out on the Gram matrix
    pairs = pairs[rng.permutation(len(pairs))[: max(2, min(len(pairs), n_features))]]
    x = sampler.windows(pairs[:, 0], pairs[:, 1])[:, :, geometry.n_context :]
    return RidgeRetrieval().fit(x, targets[epochs.image_rows[pairs[:, 0]]])


def _held_out_curves(
    module: BrainModule,
    ridge: RidgeRetrieval | None,
    sampler: WindowSampler,
    test: NDArray[np.intp],
    ends: Sequence[int],
    targets: NDArray[np.float32],
    n_distractors: int,
) -> dict[str, list[float]]:
    """Top-1 and top-5 accuracy of held-out windows at every window end."""
    epochs, n_context = sampler.epochs, sampler.geometry.n_context
    true = epochs.image_rows[test]
    pool = np.unique(true)
    curves: dict[str, list[float]] = {"ours_top1": [], "ours_top5": [], "ridge_top5": []}
    for e in ends:
        xt = sampler.windows(test, e)
        pred = predict_embeddings(module, xt, epochs.subjects[test], n_context)
        ranks = retrieval_ranks(pred, true, targets, pool, n_distractors, seed=e)
        curves["ours_top1"].append(top_k_accuracy(ranks, 1))
        curves["ours_top5"].append(top_k_accuracy(ranks, 5))
        if ridge is not None:
            pred = ridge.predict(xt[:, :, n_context:])
            ranks = retrieval_ranks(pred, true, targets, pool, n_distractors, seed=e)
            curves["ridge_top5"].append(top_k_accuracy(ranks, 5))
    return curves


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
        Continuously preprocessed epochs
        (:func:`~neurocast.models.training.retrieval_data.preprocess_epochs` or
        :func:`~neurocast.models.training.retrieval_data.epochs_from_recording`) with
        ``spec``'s continuous steps.
    info : mne.Info
        Info of the recording's channels (positions for the spatial attention), restricted
        to or containing ``epochs.ch_names``.
    spec : PreprocessSpec
        Preprocessing without robust scaling
        (:func:`~neurocast.models.training.retrieval_data.retrieval_spec`).
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
    ends = _window_ends(WindowSampler(epochs, spec, geometry), end_range_s, stride_s)
    full_spec, sampler = prepare_windows(epochs, spec, geometry, train_idx, ends, tc.seed)
    fit_idx, val_idx = split_by_image(epochs.image_rows[train_idx], tc.val_fraction, tc.seed)
    module, result = train_brain_module(
        info, sampler, train_idx[fit_idx], train_idx[val_idx], ends, emb,
        config or BrainModuleConfig(), tc,
    )  # fmt: skip
    n_distractors = min(max_distractors, len(np.unique(epochs.image_rows[test_idx])) - 1)
    if n_distractors < 1:
        raise ValueError("Measuring retrieval needs at least two distinct held-out images.")
    rridge = _ridge_baseline(sampler, train_idx, ends, emb, tc.seed) if ridge else None
    curves = _held_out_curves(module, rridge, sampler, test_idx, ends, emb, n_distractors)
    metrics = _held_out_metrics(
        curves, sampler.end_times(ends), n_distractors, with_ridge=rridge is not None,
        n_parameters=float(module.n_parameters()), best_epoch=float(result.best_epoch),
    )  # fmt: skip
    check = sampler.windows(test_idx[:32], ends[len(ends) // 2])
    return RetrievalFit(module, full_spec, geometry, ends, metrics, check, result)


def _window_ends(
    probe: WindowSampler, end_range_s: tuple[float, float], stride_s: float
) -> list[int]:
    """Window ends (indices into the epochs' samples) every ``stride_s`` across the range."""
    first, last = (probe.end_index(t) for t in end_range_s)
    return list(range(first, last + 1, max(1, round(stride_s * probe.epochs.sfreq))))


def _held_out_metrics(
    curves: dict[str, list[float]],
    end_times: NDArray[np.float64],
    n_distractors: int,
    *,
    with_ridge: bool,
    **figures: float,
) -> dict[str, float]:
    """Mean and peak of the held-out curves, where the peak is, and the chance level.

    Parameters
    ----------
    curves : dict of str to list of float
        :func:`_held_out_curves`.
    end_times : array
        Time of each window end, in the curves' order.
    n_distractors : int
        Other images each held-out window's image was ranked against.
    with_ridge : bool
        Whether the ridge baseline was fitted (its figures come last).
    **figures : float
        Further figures of the brain module, placed before the ridge's.
    """
    metrics = {
        "test_top1_mean": float(np.mean(curves["ours_top1"])),
        "test_top5_mean": float(np.mean(curves["ours_top5"])),
        "test_top5_peak": float(np.max(curves["ours_top5"])),
        "test_top5_peak_end_s": float(end_times[int(np.argmax(curves["ours_top5"]))]),
        "test_gallery_size": float(n_distractors + 1),
        "test_chance_top5": min(1.0, 5 / (n_distractors + 1)),
        **figures,
    }
    if with_ridge:
        metrics["ridge_test_top5_mean"] = float(np.mean(curves["ridge_top5"]))
        metrics["ridge_test_top5_peak"] = float(np.max(curves["ridge_top5"]))
    return metrics
