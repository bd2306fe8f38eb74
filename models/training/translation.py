"""EEG→MEG translators: the ridge baseline, network training and export.

Both models learn from simultaneous EEG and MEG segments (:mod:`.translation_data`: simulated
training data, continuous preprocessing, common EEG scale). The ridge baseline
(:class:`~.translation_ridge.RidgeTranslator`) maps each sample's average-referenced EEG onto every
MEG channel, fitted on the samples of the same windows the network
(:class:`~neurocast.models.nets.translator.EEGToMEGUNet`) learns from; :func:`fit_translator`
fits both.
:func:`export_translator` writes either as a translation artifact that outputs MEG in tesla and
tesla/metre. Scoring is in :mod:`.translation_scoring`.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray

from neurocast.models.nets.translator import (
    EEGToMEGUNet,
    ScaledTranslator,
    TranslatorConfig,
)
from neurocast.models.serving.artifact import Artifact
from neurocast.models.serving.schema import ArtifactMetadata, InputSpec, OutputSpec
from neurocast.models.training.export import ArtifactAbout, export_artifact
from neurocast.models.training.loop import TrainConfigBase, TrainingLoop, torch_threads
from neurocast.models.training.translation_data import (
    SimultaneousSegment,
    TranslationScaling,
    TranslationWindow,
    model_inputs,
    standardized,
)
from neurocast.models.training.translation_ridge import RidgeTranslator
from neurocast.streaming.preprocessing.filters import PreprocessSpec
from neurocast.streaming.sources.base import SIMULATED_TAG

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- training


@dataclass(frozen=True)
class TranslatorTrainConfig(TrainConfigBase):
    """Hyper-parameters of translator training.

    Attributes
    ----------
    batch_size, weight_decay, seed
        See :class:`~neurocast.models.training.loop.TrainConfigBase` (windows per step, Adam
        weight decay; the seed of weights, window draws and dropout).
    patience : int
        Stop after this many validations without a lower loss; the best weights are kept.
    max_steps : int
        Upper bound on optimiser steps (each on a fresh batch of random windows).
    lr : float
        Adam learning rate.
    eval_every : int
        Steps between validation losses.
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
    """

    patience: int = 4
    max_steps: int = 1500
    lr: float = 1e-3
    eval_every: int = 100
    n_val_windows: int = 256
    max_ridge_samples: int = 150_000
    init_from_ridge: bool = True
    n_threads: int = 1

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
    # an "epoch" of the loop is the eval_every steps between two validations
    n_rounds = -(-tc.max_steps // tc.eval_every)
    loop = TrainingLoop(
        max_epochs=n_rounds, patience=tc.patience, seed=tc.seed, progress=progress,
        desc="translator",
    )  # fmt: skip
    rng = loop.rng
    scaling = TranslationScaling.fit(train)
    spec = window.model_spec(first.eeg_names, scaling.eeg_scale)
    tr = [standardized(s, spec, scaling) for s in train]
    va = [standardized(s, spec, scaling) for s in val]
    draw = WindowDraw([x for x, _ in tr], [y for _, y in tr], window.n_times)
    val_draw = WindowDraw([x for x, _ in va], [y for _, y in va], window.n_times)
    val_x, val_y = val_draw.batch(val_draw.starts(tc.n_val_windows, rng))
    ridge = _fit_ridge(draw, val_x, val_y, window, tc, rng)
    net = EEGToMEGUNet(cfg)
    if tc.init_from_ridge:
        assert ridge.weight is not None and ridge.bias is not None
        net.set_linear_map(ridge.weight, ridge.bias)
    opt = torch.optim.Adam(net.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    vx, vy = torch.from_numpy(val_x), torch.from_numpy(val_y)
    ridge_val = float(np.mean((ridge.predict(val_x) - val_y) ** 2))

    def validate() -> tuple[float, dict[str, float]]:
        with torch.no_grad():
            return float(F.mse_loss(net(vx), vy)), {"val_loss_ridge": ridge_val}

    def run_round(r: int, rng: np.random.Generator, advance: Callable[[], None]) -> float:
        running = []
        for _ in range((r - 1) * tc.eval_every, min(r * tc.eval_every, tc.max_steps)):
            x, y = draw.batch(draw.starts(tc.batch_size, rng))
            loss = F.mse_loss(net(torch.from_numpy(x)), torch.from_numpy(y))
            opt.zero_grad()
            loss.backward()
            opt.step()
            running.append(float(loss.detach()))
            advance()
        return float(np.mean(running))

    result = loop.run(net, run_round, validate, steps_per_epoch=tc.eval_every, validate_first=True)
    history = [
        {"step": float(min(h.pop("epoch") * tc.eval_every, tc.max_steps)), **h}
        for h in result.history
    ]
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


def _fit_ridge(
    draw: WindowDraw,
    val_x: NDArray[np.float32],
    val_y: NDArray[np.float32],
    window: TranslationWindow,
    tc: TranslatorTrainConfig,
    rng: np.random.Generator,
) -> RidgeTranslator:
    """The ridge baseline on samples of training windows; validation subjects choose alpha."""
    n_fit = max(1, min(tc.max_ridge_samples, draw.n_samples) // window.n_times)
    rx, ry = draw.batch(draw.starts(n_fit, rng))
    ridge = RidgeTranslator().fit(
        np.concatenate(list(rx), axis=1),
        np.concatenate(list(ry), axis=1),
        np.concatenate(list(val_x), axis=1),
        np.concatenate(list(val_y), axis=1),
    )
    logger.info("ridge baseline: relative alpha %.3g", ridge.alpha)
    return ridge


# --------------------------------------------------------------------------- export


def check_windows(
    model: TranslationModel, segment: SimultaneousSegment, n: int = 64
) -> NDArray[np.float32]:
    """Up to ``n`` consecutive, non-overlapping model inputs of a (held-out) segment.

    Parameters
    ----------
    model : TranslationModel
        The trained models (their preprocessing and window).
    segment : SimultaneousSegment
        Data not used in training.
    n : int
        Most windows returned.

    Returns
    -------
    windows : ndarray, shape (n_windows, n_eeg, n_times), float32
        Finalised EEG, as the exported graph reads it.
    """
    x = model_inputs(segment, model.spec)
    t = model.window.n_times
    starts = np.arange(0, x.shape[1] - t + 1, t)[:n]
    if not len(starts):
        raise ValueError(
            f"The segment ({x.shape[1]} samples) is shorter than one model input ({t} "
            "samples); give a longer held-out segment."
        )
    return np.stack([x[:, a : a + t] for a in starts])


#: How translator training data are split (the recipe's subjects).
TRANSLATOR_SPLIT = (
    "training and validation on different simulated subjects (subject_seed); scores on "
    "further held-out simulated subjects and on real recordings never used in training"
)


def export_translator(
    model: TranslationModel,
    path: str | Path,
    *,
    which: str = "net",
    check_segment: SimultaneousSegment,
    about: ArtifactAbout,
    stream_sfreq: float,
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
    about : ArtifactAbout
        Name, version, seed and measured figures (non-finite ones are left out); training
        data, split and description default to the model's, and the training data are
        simulated.
    stream_sfreq : float
        Rate of the training streams in Hz (streams at other rates are resampled).
    rtol : float
        Tolerance of the ONNX-versus-torch check relative to the largest channel scale (the
        gradiometers' training standard deviation): outputs are of the order of 1e-13 T, so
        a fixed absolute tolerance would check nothing. 1e-4 of it is a few thousandths of a
        magnetometer's standard deviation, far below any error a faulty export makes.

    Returns
    -------
    artifact : Artifact
        The written, validated artifact.

    Raises
    ------
    ExportCheckError
        If ONNX and torch disagree by more than the tolerance; nothing is written then.
    """
    about = about.completed(
        trained_on=model.trained_on,
        split=TRANSLATOR_SPLIT,
        simulated_training_data=True,
        description=_translator_description(model, which),
    )
    with warnings.catch_warnings():
        # the exporter warns that an LSTM traced with batch 2 may fail at other batch sizes;
        # its initial states are zeros shaped from the input here, and check_onnx runs the
        # graph at other batch sizes (the runtime then uses batches of one)
        warnings.filterwarnings("ignore", message=".*LSTM.*", category=UserWarning)
        meta = ArtifactMetadata(
            task="translation",
            input=_translator_input_spec(model, stream_sfreq),
            output=OutputSpec(
                tensor="meg",
                ch_names=list(model.meg_names),
                ch_types=list(model.meg_types),
                sfreq_hz=model.window.sfreq_hz,
            ),
            **about.metadata_fields(),
        )
        return export_artifact(
            model.scaled_module(which),
            path,
            meta,
            check_windows(model, check_segment),
            input_name="eeg",
            atol=rtol * float(model.scaling.meg_scale.max()),
        )


def _translator_input_spec(model: TranslationModel, stream_sfreq: float) -> InputSpec:
    """What a translator reads: its EEG channels, span and preprocessing."""
    w = model.window
    return InputSpec(
        ch_names=list(model.eeg_names),
        ch_types=["eeg"] * len(model.eeg_names),
        sfreq_hz=float(stream_sfreq),
        window_s=w.n_window / w.sfreq_hz,
        context_s=w.n_context / w.sfreq_hz,
        stride_s=w.n_window / w.sfreq_hz,
        preprocess=model.spec,
        scalogram=None,
    )


def _translator_description(model: TranslationModel, which: str) -> str:
    """The artifact's description of the network or the ridge baseline."""
    w = model.window
    return (
        ("U-Net with Bi-LSTM bottleneck" if which == "net" else "Ridge regression")
        + f" translating {len(model.eeg_names)} EEG channels into "
        f"{len(model.meg_names)} MEG channels ({w.l_freq_hz:g}-{w.h_freq_hz:g} Hz, "
        f"{w.sfreq_hz:g} Hz); each window gives the MEG of its last {w.n_window} "
        "samples. Trained on SIMULATED simultaneous EEG/MEG."
    )
