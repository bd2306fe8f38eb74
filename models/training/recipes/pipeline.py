"""Recipe of the classical and Riemannian decoders: windows → fitted pipeline → artifact.

:func:`train_pipeline` is what ``neurocast train pipeline`` and ``bench/decoders_eegbci.py``
run: it cuts the training windows the engine will see (:mod:`..pipeline_data`), fits the
recipe's scikit-learn pipeline and exports it (:func:`..pipeline_export.export_pipeline`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import mne
import numpy as np
from numpy.typing import NDArray
from threadpoolctl import threadpool_limits

from neurocast.models.serving.artifact import Artifact
from neurocast.models.serving.schema import Metrics, Provenance
from neurocast.models.training.pipeline_data import Recipe, make_recipe, training_windows
from neurocast.models.training.pipeline_export import export_pipeline
from neurocast.streaming.engine.windows import WindowSpec
from neurocast.streaming.sources.base import StreamInfo

#: The model reads the last second every 25 ms: a 100 ms window and 0.9 s of context.
DEFAULT_WINDOW = WindowSpec(window_s=0.1, stride_s=0.025, context_s=0.9)


@dataclass(frozen=True)
class TrialRecording:
    """A recording with its trials.

    Attributes
    ----------
    data : ndarray, shape (n_channels, n_samples)
        Samples in SI units.
    stream : StreamInfo
        Channels (standardised names) and rate.
    onsets : ndarray of int
        Trial onsets in samples.
    labels : ndarray of int
        Class index of each trial.
    """

    data: NDArray[np.floating]
    stream: StreamInfo
    onsets: NDArray[np.int64]
    labels: NDArray[np.int64]


def model_channels(info: mne.Info) -> list[str]:
    """The EEG and MEG channels of ``info`` that are not marked bad (the model's inputs)."""
    picks = mne.pick_types(info, meg=True, eeg=True, exclude="bads")
    if not len(picks):
        raise ValueError("The recording has no EEG or MEG channel to decode.")
    return [info["ch_names"][i] for i in picks]


def recipe_windows(
    recipe: Recipe,
    recordings: Sequence[TrialRecording],
    window: WindowSpec,
    tmin_s: float,
    tmax_s: float,
    ch_names: Sequence[str] | None = None,
    *,
    every: int = 4,
) -> list[tuple[NDArray[np.float64], NDArray[np.int64]]]:
    """Labelled windows of each recording, preprocessed as the recipe's model will read them.

    Parameters
    ----------
    recipe : Recipe
        Its preprocessing and filter bank are applied.
    recordings : sequence of TrialRecording
        The recordings with their trials.
    window : WindowSpec
        The model's window and context, and the engine's stride.
    tmin_s, tmax_s : float
        Windows end in ``[onset + tmin_s, onset + tmax_s]``.
    ch_names : sequence of str | None
        Channels the model reads, in order (default: every channel of each stream).
    every : int
        Keep every n-th window of the engine's grid.

    Returns
    -------
    windows : list of (X, y)
        Per recording, its windows and their class indices (see
        :func:`..pipeline_data.training_windows`).
    """
    out = []
    for rec in recordings:
        X, y, _ = training_windows(
            rec.data,
            rec.stream,
            rec.onsets,
            rec.labels,
            recipe.preprocess,
            window,
            tmin_s,
            tmax_s,
            bands_hz=recipe.bands_hz,
            ch_names=ch_names,
            every=every,
        )
        out.append((X, y))
    return out


def fit_recipe(
    recipe: Recipe,
    recordings: Sequence[TrialRecording],
    window: WindowSpec,
    tmin_s: float,
    tmax_s: float,
    *,
    every: int = 4,
) -> tuple[object, list[str]]:
    """Fit a recipe's pipeline on the windows of ``recordings``; returns it and its channels."""
    names = model_channels(recordings[0].stream.info)
    windows = recipe_windows(recipe, recordings, window, tmin_s, tmax_s, names, every=every)
    xs = [X for X, _ in windows]
    y_all = np.concatenate([y for _, y in windows])
    if len(np.unique(y_all)) < 2:
        raise ValueError("The training windows hold a single class; give trials of each.")
    # batched eigendecompositions of small matrices run >10x slower when OpenBLAS threads
    # compete for busy cores than on one thread
    with threadpool_limits(limits=1, user_api="blas"):
        return recipe.pipeline.fit(np.concatenate(xs), y_all), names


def train_pipeline(
    recipe_name: str,
    recordings: Sequence[TrialRecording],
    class_names: Sequence[str],
    out: str | Path,
    *,
    window: WindowSpec = DEFAULT_WINDOW,
    tmin_s: float = 1.5,
    tmax_s: float = 3.5,
    ch_aliases: dict[str, str] | None = None,
    provenance: Provenance | None = None,
    metrics: Metrics | None = None,
    name: str | None = None,
    every: int = 4,
) -> Artifact:
    """Train a recipe and export it as an artifact.

    Parameters
    ----------
    recipe_name : str
        One of :data:`~neurocast.models.training.pipeline_data.RECIPES`.
    recordings : sequence of TrialRecording
        Training recordings (same channels).
    class_names : sequence of str
        Class names in label order.
    out : str | Path
        The artifact to write.
    window : WindowSpec
        What the model reads every stride (default: the last second every 25 ms).
    tmin_s, tmax_s : float
        Training windows end in ``[onset + tmin_s, onset + tmax_s]`` (one every 100 ms).
    ch_aliases : dict | None
        Stream → model channel names stored with the model (e.g. raw EEGBCI names).
    provenance, metrics, name
        Artifact metadata.
    every : int
        Keep every n-th training window of the 25 ms grid (4: one per 100 ms).

    Returns
    -------
    artifact : Artifact
        The exported model.
    """
    recipe = make_recipe(recipe_name)
    pipeline, names = fit_recipe(recipe, recordings, window, tmin_s, tmax_s, every=every)
    info = mne.pick_info(
        recordings[0].stream.info,
        mne.pick_channels(recordings[0].stream.ch_names, names, ordered=True),
    )
    return export_pipeline(
        pipeline,
        info,
        window=window,
        out=out,
        preprocessing=recipe.preprocess,
        bands_hz=recipe.bands_hz,
        class_names=list(class_names),
        ch_aliases=ch_aliases,
        name=name,
        provenance=provenance,
        metrics=metrics,
        description=(
            f"{recipe_name}: windows of {window.window_s + window.context_s:g} s ending "
            f"{tmin_s:g}-{tmax_s:g} s after each cue; classes {', '.join(class_names)}."
        ),
    )
