"""The translator recipe: simulated subjects to a trained EEG→MEG network and its ridge.

:func:`train_translator` is what ``neurocast train translator`` and the translation
benchmark run: simulate training, validation and test subjects of one geometry (different
``subject_seed``), size the network for their channels and window, and fit the ridge baseline
and the network (:func:`~neurocast.models.training.translation.fit_translator`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from neurocast.models.nets.translator import TranslatorConfig
from neurocast.models.training.translation import (
    TranslationModel,
    TranslatorTrainConfig,
    fit_translator,
)
from neurocast.models.training.translation_data import (
    SimultaneousSegment,
    TranslationWindow,
    simulate_segments,
)
from neurocast.streaming.sources.specs import SimulatorSpec


@dataclass(frozen=True)
class SubjectSplit:
    """Which simulated subjects train, validate and test, and for how long.

    Attributes
    ----------
    train, val, test : sequence of int
        Subject seeds of each set (never shared).
    seconds : float
        Seconds simulated per training subject.
    val_seconds, test_seconds : float | None
        Seconds per validation and test subject (``seconds`` when None).
    """

    train: Sequence[int]
    val: Sequence[int]
    test: Sequence[int]
    seconds: float
    val_seconds: float | None = None
    test_seconds: float | None = None


@dataclass
class TrainedTranslator:
    """A trained translator and the held-out simulated subjects it was not trained on.

    Attributes
    ----------
    model : TranslationModel
        The network (best validation loss) and its ridge baseline.
    test : list of SimultaneousSegment
        One segment per test subject.
    """

    model: TranslationModel
    test: list[SimultaneousSegment]


def train_translator(
    sim_spec: SimulatorSpec,
    window: TranslationWindow,
    subjects: SubjectSplit,
    train_config: TranslatorTrainConfig,
    *,
    base_channels: int = 32,
    depth: int | None = None,
    lstm_hidden: int = 64,
    progress: bool = False,
) -> TrainedTranslator:
    """Simulate subjects, then fit the ridge baseline and train the network.

    Parameters
    ----------
    sim_spec : SimulatorSpec
        Geometry, noise and rate of the simulated recordings.
    window : TranslationWindow
        Rate, band and window; ``window.multiple`` must equal ``2 ** depth``.
    subjects : SubjectSplit
        Subject seeds and durations of the training, validation and test sets.
    train_config : TranslatorTrainConfig
        Optimisation settings.
    base_channels, lstm_hidden : int
        U-Net width at level 1 and Bi-LSTM units per direction.
    depth : int | None
        U-Net levels (the network's default when None).
    progress : bool
        Show progress bars (simulation of the training subjects and training).

    Returns
    -------
    trained : TrainedTranslator
        The models and the test segments.
    """
    val_s = subjects.val_seconds or subjects.seconds
    test_s = subjects.test_seconds or subjects.seconds
    train = simulate_segments(sim_spec, window, subjects.train, subjects.seconds, progress=progress)
    val = simulate_segments(sim_spec, window, subjects.val, val_s)
    test = simulate_segments(sim_spec, window, subjects.test, test_s)
    first = train[0]
    sizes = {"depth": depth} if depth is not None else {}
    config = TranslatorConfig(
        n_eeg=len(first.eeg_names),
        n_meg=len(first.meg_names),
        n_times=window.n_times,
        base_channels=base_channels,
        lstm_hidden=lstm_hidden,
        **sizes,
    )
    model = fit_translator(train, val, window, config, train_config, progress=progress)
    return TrainedTranslator(model, test)
