"""The classifier recipe: recordings to a trained, scored scalogram transfer classifier.

:func:`train_classifier` is what ``neurocast train classifier``, the demo-model builder and
the EEGBCI benchmark all run: preprocess the training recordings as the stream will, fit the
robust signal scaling on them, cut scalogram windows around trial onsets, hold out whole
trials for early stopping, build and fine-tune the classifier
(:func:`~neurocast.models.training.classifier.fit`) and score it on held-out recordings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from numpy.typing import NDArray

from neurocast.models.nets.classifier import MixingInit, MixingKind, ScalogramClassifier
from neurocast.models.serving.schema import InputSpec
from neurocast.models.training.classifier import (
    TrainConfig,
    TrainResult,
    build_classifier,
    evaluate,
    fit,
)
from neurocast.models.training.classifier_data import (
    ScalogramWindows,
    export_check_inputs,
    preprocess_recording,
    recording_power,
    split_windows,
    trial_windows,
    with_signal_scaling,
)
from neurocast.streaming.sources.base import StreamInfo


@dataclass(frozen=True)
class LabelledRecording:
    """A continuous recording with its trials.

    Attributes
    ----------
    data : array, shape (n_channels, n_samples)
        The recording in SI units, channels in the order of ``stream``.
    stream : StreamInfo
        Its channel names and rate.
    onsets_s : array, shape (n_trials,)
        Trial onsets in seconds since the first sample.
    labels : array of int, shape (n_trials,)
        Trial classes.
    """

    data: NDArray[np.floating]
    stream: StreamInfo
    onsets_s: NDArray[np.floating]
    labels: NDArray[np.int64]


@dataclass(frozen=True)
class ClassifierRecipe:
    """Windows, model and optimisation of a classifier.

    Attributes
    ----------
    tmin_s, tmax_s : float
        Range of window ends after each trial onset, in seconds.
    train_stride_s : float
        Step between training windows in seconds (held-out windows use the spec's stride).
    val_fraction : float
        Fraction of each class's training trials held out for early stopping.
    backbone, pretrained, mixing, mixing_init, input_size, weights, compact_width
        See :func:`~neurocast.models.training.classifier.build_classifier`.
    train : TrainConfig
        Optimisation settings (its seed is replaced by ``seed``).
    seed : int
        Seed of the validation split, the new layers and training.
    """

    tmin_s: float
    tmax_s: float
    train_stride_s: float
    val_fraction: float = 0.2
    backbone: str = "efficientnet-lite0"
    pretrained: bool = True
    mixing: MixingKind = "learned"
    mixing_init: MixingInit = "discriminant"
    input_size: int = 224
    weights: str | None = None
    compact_width: int = 16
    train: TrainConfig = field(default_factory=TrainConfig)
    seed: int = 0


@dataclass
class TrainedClassifier:
    """What :func:`train_classifier` produced.

    Attributes
    ----------
    model : ScalogramClassifier
        The trained model (best validation epoch, eval mode).
    spec : InputSpec
        Its input, robust signal scaling included.
    train, val : ScalogramWindows
        Training and validation windows.
    test : ScalogramWindows | None
        Windows of the held-out recordings (None without them).
    result : TrainResult
        Best epoch and validation figures.
    scores : dict of str to float
        :func:`~neurocast.models.training.classifier.evaluate` on ``test`` (empty without).
    """

    model: ScalogramClassifier
    spec: InputSpec
    train: ScalogramWindows
    val: ScalogramWindows
    test: ScalogramWindows | None
    result: TrainResult
    scores: dict[str, float]

    def check_inputs(self, seed: int) -> NDArray[np.float32]:
        """Held-out windows (test, else validation) for the ONNX-versus-torch check."""
        return export_check_inputs(self.test if self.test is not None else self.val, seed)


def _windows(
    recordings: Sequence[LabelledRecording],
    signals: Sequence[NDArray[np.float32]],
    spec: InputSpec,
    recipe: ClassifierRecipe,
    stride_s: float,
) -> ScalogramWindows:
    return trial_windows(
        [recording_power(x, spec) for x in signals],
        [r.onsets_s for r in recordings],
        [r.labels for r in recordings],
        spec,
        tmin_s=recipe.tmin_s,
        tmax_s=recipe.tmax_s,
        stride_s=stride_s,
    )


def train_classifier(
    spec: InputSpec,
    recordings: Sequence[LabelledRecording],
    n_classes: int,
    recipe: ClassifierRecipe,
    test_recordings: Sequence[LabelledRecording] = (),
) -> TrainedClassifier:
    """Train a scalogram classifier on labelled recordings and score it on held-out ones.

    Parameters
    ----------
    spec : InputSpec
        The model's input without robust scaling (fitted here on the training signals).
    recordings : sequence of LabelledRecording
        Training recordings (validation trials are held out of them).
    n_classes : int
        Number of classes.
    recipe : ClassifierRecipe
        Windows, model and optimisation.
    test_recordings : sequence of LabelledRecording
        Held-out recordings, never trained on.

    Returns
    -------
    trained : TrainedClassifier
        The model, its spec, windows and figures.
    """
    signals = [preprocess_recording(r.data, r.stream, spec) for r in recordings]
    spec = with_signal_scaling(spec, signals)
    windows = _windows(recordings, signals, spec, recipe, recipe.train_stride_s)
    train, val = split_windows(windows, recipe.val_fraction, recipe.seed)
    model = build_classifier(
        train,
        n_classes,
        backbone=recipe.backbone,
        pretrained=recipe.pretrained,
        mixing=recipe.mixing,
        mixing_init=recipe.mixing_init,
        input_size=recipe.input_size,
        weights=recipe.weights,
        compact_width=recipe.compact_width,
        seed=recipe.seed,
    )
    result = fit(model, train, val, replace(recipe.train, seed=recipe.seed))
    test, scores = None, {}
    if test_recordings:
        held = [preprocess_recording(r.data, r.stream, spec) for r in test_recordings]
        test = _windows(test_recordings, held, spec, recipe, spec.stride_s)
        scores = evaluate(model, test)
    return TrainedClassifier(model, spec, train, val, test, result, scores)
