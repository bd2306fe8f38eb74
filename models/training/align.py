"""An aligned EEG–MEG–image space (torch; training, evaluation and export only).

Model family 3 of the design brief (Ferrante et al. 2024): an encoder per brain modality is
trained contrastively (CLIP loss) against the embeddings of the images seen and against the
other modality's encoder on the same trials, so that EEG, MEG and images share one space.
The space is the image embedding space itself (the image side is not transformed), which
gives, with one similarity (cosine):

- **decoding** (brain → image): a single trial's representation ranks the candidate images;
- **encoding** (image → brain): an image's embedding is its predicted brain representation,
  which ranks the measured representations of the candidate images;
- **conversion** (EEG ↔ MEG): an EEG representation is the predicted MEG representation of
  the same image, which ranks the measured MEG representations of the candidates.

Both encoders are the brain module of :mod:`neurocast.models.nets.brain_module` (spatial
attention over sensor positions, residual dilated convolutions, temporal aggregation, CLIP
head), and windows are cut and preprocessed by the retrieval code (:mod:`.retrieval_data`:
resampling to 120 Hz, baseline over the context before the window, robust scaling fitted on
training windows, clipping), so the exported encoder (:func:`export_encoder`, an artifact with task
``embedding``) sees in a live stream exactly what it saw in training.

Training data (:mod:`.align_data`) are simulated simultaneous EEG and MEG of image trials;
accuracies (:func:`~neurocast.models.training.align_eval.evaluate_aligned`) are measured on
held-out images never seen in training.

References
----------
Ferrante M, Boccato T, Rashkov G, Toschi N (2024). Towards neural foundation models for
vision: aligning EEG, MEG, and fMRI representations for decoding, encoding, and modality
conversion. arXiv:2411.09723.
Radford A et al. (2021). Learning transferable visual models from natural language
supervision (CLIP). ICML.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mne
import numpy as np
import torch
from numpy.typing import NDArray

from neurocast.models.nets.brain_module import (
    BrainModule,
    BrainModuleConfig,
    RetrievalHead,
    clip_loss,
    small_config,
)
from neurocast.models.serving.artifact import Artifact
from neurocast.models.serving.schema import ArtifactMetadata, InputSpec, OutputSpec
from neurocast.models.training.align_data import (
    MODALITIES,
    AlignedEpochs,
    AlignWindow,
    Modality,
    unit_rows,
)
from neurocast.models.training.export import ArtifactAbout, export_artifact
from neurocast.models.training.loop import EpochTrainConfig
from neurocast.models.training.retrieval import (
    make_brain_module,
    predict_embeddings,
    split_by_image,
)
from neurocast.models.training.retrieval_data import (
    EpochSet,
    WindowSampler,
    fit_robust_windows,
    retrieval_spec,
)
from neurocast.streaming.preprocessing.filters import PreprocessSpec
from neurocast.streaming.sources.base import SIMULATED_TAG

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class AlignTrainConfig(EpochTrainConfig):
    """Hyper-parameters of contrastive alignment.

    Attributes
    ----------
    max_epochs, patience, weight_decay, max_steps_per_epoch, seed, progress
        See :class:`~neurocast.models.training.loop.EpochTrainConfig` (AdamW weight decay).
    batch_size : int
        Trials per step: two trials each of ``batch_size // 2`` images.
    lr : float
        AdamW learning rate.
    cross_weight : float
        Weight of the EEG–MEG term against the two brain–image terms.
    clip_weight : float
        λ of each brain–image term ``λ·CLIP + (1 − λ)·MSE``.
    val_fraction : float
        Fraction of the training images whose trials are held out for early stopping.
    n_threads : int
        Torch threads while training.
    """

    batch_size: int = 64
    lr: float = 1e-3
    cross_weight: float = 1.0
    clip_weight: float = 0.75
    val_fraction: float = 0.15
    n_threads: int = 1

    def __post_init__(self) -> None:
        if self.max_epochs < 1 or self.patience < 1 or self.batch_size < 2:
            raise ValueError("max_epochs and patience must be >= 1 and batch_size >= 2.")
        if not self.lr > 0 or self.weight_decay < 0 or self.cross_weight < 0:
            raise ValueError("lr must be positive, weight_decay and cross_weight >= 0.")


def align_encoder_config(**overrides: Any) -> BrainModuleConfig:
    """Encoder size for CPU training: :func:`~.brain_module.small_config`, narrower still.

    32 spatial channels, one residual block of 32 channels, heads of 64: on simulated image
    trials (a few hundred images) wider encoders learned more slowly and over-fitted sooner.
    """
    params: dict[str, Any] = dict(n_spatial=32, hidden=32, n_blocks=1, head_hidden=64)
    params.update(overrides)
    return small_config(**params)


@dataclass
class AlignedModel:
    """Two encoders into one space with the image embeddings, and their preprocessing.

    Attributes
    ----------
    encoders : dict of str to BrainModule
        ``"eeg"`` and ``"meg"`` encoders (evaluation mode).
    specs : dict of str to PreprocessSpec
        Each modality's full preprocessing (robust scaling fitted on training windows).
    infos : dict of str to mne.Info
        Each modality's channels.
    window : AlignWindow
        Window and rate.
    window_end : int
        Index (into the epochs' samples) of the end of the trained window.
    history : list of dict
        Per epoch: ``epoch``, ``train_loss``, ``val_loss``.
    trained_on : str
        What the training data were (says SIMULATED).
    n_train_images : int
        Images seen in training.
    """

    encoders: dict[str, BrainModule]
    specs: dict[str, PreprocessSpec]
    infos: dict[str, mne.Info]
    window: AlignWindow
    window_end: int
    history: list[dict[str, float]] = field(default_factory=list)
    trained_on: str = ""
    n_train_images: int = 0

    @property
    def dim(self) -> int:
        """Dimension of the shared space (the image embeddings')."""
        return self.encoders["eeg"].out_dim

    def windows(self, data: AlignedEpochs, modality: Modality) -> NDArray[np.float32]:
        """Finalised encoder inputs (n_trials, n_channels, context + window) of every trial."""
        sampler = WindowSampler(data.epochs[modality], self.specs[modality], self.window.geometry)
        idx = np.arange(len(data))
        return sampler.windows(idx, np.full(len(idx), self.window_end))

    def embed(self, data: AlignedEpochs, modality: Modality) -> NDArray[np.float32]:
        """Unit-norm representations (n_trials, dim) of every trial of one modality."""
        x = self.windows(data, modality)
        z = predict_embeddings(self.encoders[modality], x, n_context=self.window.geometry.n_context)
        return unit_rows(z)


def _window_end(epochs: EpochSet, window: AlignWindow) -> int:
    """Epoch sample index (exclusive) at which the window ends ``window_s`` after onset."""
    sampler_times = epochs.times
    # the preprocessed signal lags the input by the resampler's delay
    t_end = window.window_s + epochs.delay_s
    end = int(np.argmin(np.abs(sampler_times - t_end))) + 1
    if end - window.geometry.total < 0 or end > len(sampler_times):
        raise ValueError("The epochs are too short for the window; simulate a longer span.")
    return end


def aligned_loss(
    first: dict[str, tuple[torch.Tensor, torch.Tensor]],
    second: dict[str, tuple[torch.Tensor, torch.Tensor]],
    images: torch.Tensor,
    encoders: dict[str, BrainModule],
    cross_scale: torch.Tensor,
    *,
    cross_weight: float = 1.0,
    clip_weight: float = 1.0,
) -> torch.Tensor:
    """Contrastive loss of both encoders against the images and against each other.

    A batch holds two trials of each of ``n`` distinct images: ``first`` and ``second``.
    The EEG–MEG terms match one trial's EEG with the *other* trial's MEG of the same image,
    so that the encoders align on the image and not on the background activity that EEG and
    MEG of one trial share (which would make matching trials trivial and useless).

    Parameters
    ----------
    first, second : dict of str to (tensor, tensor)
        ``"eeg"`` and ``"meg"`` encoder outputs (CLIP head, MSE head), each (n, dim), of the
        first and second trial of each image.
    images : tensor, shape (n, dim)
        Embedding of each image, in batch order.
    encoders : dict of str to BrainModule
        The encoders (their learned CLIP temperatures).
    cross_scale : tensor
        Log inverse temperature of the EEG–MEG terms.
    cross_weight : float
        Weight ``w`` of the EEG–MEG terms.
    clip_weight : float
        λ: each brain–image term is ``λ·CLIP + (1 − λ)·MSE`` (the MSE head regresses the
        image embedding, as in the brain module's training).

    Returns
    -------
    loss : tensor
        Mean over both trials of ``Σ_m [λ·CLIP(m → image) + (1 − λ)·MSE_m]``, plus
        ``w · (CLIP(eeg₁ → meg₂) + CLIP(meg₁ → eeg₂)) / 2``.
    """
    n = images.shape[0]
    if any(out[m][0].shape[0] != n for out in (first, second) for m in MODALITIES):
        raise ValueError("Every output needs one row per image of the batch.")
    labels = torch.arange(n)
    total = torch.zeros(())
    for out in (first, second):
        for m in MODALITIES:
            clip_out, mse_out = out[m]
            lc = clip_loss(clip_out, images, encoders[m].logit_scale, labels)
            lm = ((mse_out - images) ** 2).sum(dim=-1).mean()
            total = total + 0.5 * (clip_weight * lc + (1 - clip_weight) * lm)
    cross = 0.5 * (
        clip_loss(first["eeg"][0], second["meg"][0], cross_scale, labels)
        + clip_loss(first["meg"][0], second["eeg"][0], cross_scale, labels)
    )
    return total + cross_weight * cross


def _pairs(
    rows: NDArray[np.int64], trials: NDArray[np.intp], rng: np.random.Generator | None
) -> NDArray[np.intp]:
    """Disjoint pairs of different trials of the same image: (n_pairs, 2) trial indices.

    With ``rng``, every image's trials are shuffled and paired up (an odd one out waits for
    the next draw) and the pairs are shuffled; without, the first two trials of each image.
    """
    pairs = []
    for img in np.unique(rows[trials]):
        own = trials[rows[trials] == img]
        if len(own) < 2:
            continue
        if rng is None:
            pairs.append(own[:2])
        else:
            own = rng.permutation(own)
            pairs.extend(own[: len(own) // 2 * 2].reshape(-1, 2))
    out = np.array(pairs, dtype=np.intp).reshape(-1, 2)
    return out[rng.permutation(len(out))] if rng is not None else out


def fit_aligned(
    data: AlignedEpochs,
    config: AlignTrainConfig | None = None,
    encoder_config: BrainModuleConfig | None = None,
    *,
    window: AlignWindow | None = None,
) -> AlignedModel:
    """Train the EEG and MEG encoders contrastively on simulated image trials.

    Parameters
    ----------
    data : AlignedEpochs
        Training trials (the images tested on must not be among them).
    config : AlignTrainConfig | None
        Optimisation settings.
    encoder_config : BrainModuleConfig | None
        Encoder sizes (default :func:`align_encoder_config`).
    window : AlignWindow | None
        Must be the window the epochs were simulated for (default :class:`AlignWindow`).

    Returns
    -------
    model : AlignedModel
        Encoders with the lowest validation loss, in evaluation mode.
    """
    tc = config or AlignTrainConfig()
    return _fit_aligned(data, tc, encoder_config or align_encoder_config(), window)


def _fit_aligned(
    data: AlignedEpochs,
    tc: AlignTrainConfig,
    enc_cfg: BrainModuleConfig,
    window: AlignWindow | None,
) -> AlignedModel:
    w = window or AlignWindow()
    # the loop seeds torch, so it is made before the encoders are initialised
    loop = tc.training_loop("aligned space", n_threads=tc.n_threads)
    fit_idx, val_idx = split_by_image(data.image_rows, tc.val_fraction, tc.seed)
    end = _window_end(data.epochs["eeg"], w)
    specs, x = _encoder_inputs(data, w, fit_idx, end)
    dim = data.embeddings.shape[1]
    encoders: dict[str, BrainModule] = {
        m: make_brain_module(data.infos[m], w.geometry, dim, enc_cfg) for m in MODALITIES
    }
    steps = _AlignSteps(encoders, x, data, tc)
    rows = data.image_rows
    val_pairs = _pairs(rows, val_idx, None)
    n_pairs = len(_pairs(rows, fit_idx, None))
    if len(val_pairs) < 2 or n_pairs < 2:
        raise ValueError(
            "Contrastive alignment needs every training image shown at least twice (pairs of "
            "trials of the same image); simulate more repetitions."
        )

    def validate() -> tuple[float, dict[str, float]]:
        with torch.no_grad():
            return float(steps.loss(val_pairs)), {}

    def run_epoch(epoch: int, rng: np.random.Generator, advance: Callable[[], None]) -> float:
        return steps.epoch(_pairs(rows, fit_idx, rng), advance)

    n_steps = max(1, n_pairs // steps.per_step)
    result = loop.run(
        steps.module, run_epoch, validate, steps_per_epoch=n_steps, validate_first=True
    )
    return AlignedModel(
        encoders=encoders,
        specs=specs,
        infos=data.infos,
        window=w,
        window_end=end,
        history=[{**h, "epoch": float(h["epoch"])} for h in result.history],
        trained_on=f"{SIMULATED_TAG}: {data.description}",
        n_train_images=len(np.unique(rows)),
    )


class _AlignSteps:
    """Optimiser steps of both encoders on pairs of trials of the same image.

    Parameters
    ----------
    encoders : dict of str to BrainModule
        The ``"eeg"`` and ``"meg"`` encoders (trained in place).
    x : dict of str to ndarray
        Each modality's encoder input of every trial (context dropped).
    data : AlignedEpochs
        The trials (image of each, image embeddings).
    tc : AlignTrainConfig
        Optimisation settings.
    """

    def __init__(
        self,
        encoders: dict[str, BrainModule],
        x: dict[str, NDArray[np.float32]],
        data: AlignedEpochs,
        tc: AlignTrainConfig,
    ) -> None:
        self.encoders, self.x, self.tc = encoders, x, tc
        # one module holding both encoders, whose weights the loop keeps and restores together
        self.module = torch.nn.ModuleDict(encoders)
        self.cross_scale = torch.nn.Parameter(torch.tensor(float(np.log(1 / 0.07))))
        self.opt = torch.optim.AdamW(
            [*self.module.parameters(), self.cross_scale], lr=tc.lr, weight_decay=tc.weight_decay
        )
        self.targets = torch.as_tensor(unit_rows(data.embeddings))
        self.rows = data.image_rows
        self.per_step = max(2, tc.batch_size // 2)

    def loss(self, pairs: NDArray[np.intp]) -> torch.Tensor:
        """:func:`aligned_loss` of the trial pairs (n_pairs, 2)."""
        halves: list[dict[str, tuple[torch.Tensor, torch.Tensor]]] = [
            {m: self.encoders[m](torch.from_numpy(self.x[m][pairs[:, k]])) for m in MODALITIES}
            for k in (0, 1)
        ]
        images = self.targets[torch.from_numpy(self.rows[pairs[:, 0]])]
        return aligned_loss(
            halves[0], halves[1], images, self.encoders, self.cross_scale,
            cross_weight=self.tc.cross_weight, clip_weight=self.tc.clip_weight,
        )  # fmt: skip

    def epoch(self, pairs: NDArray[np.intp], advance: Callable[[], None]) -> float:
        """Steps over the shuffled pairs (capped per epoch); returns the mean training loss."""
        n_steps = max(1, len(pairs) // self.per_step)
        if self.tc.max_steps_per_epoch is not None:
            n_steps = min(n_steps, self.tc.max_steps_per_epoch)
        losses = []
        for s in range(n_steps):
            batch = pairs[s * self.per_step : (s + 1) * self.per_step]
            if len(batch) < 2:
                continue
            loss = self.loss(batch)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            losses.append(float(loss.detach()))
            advance()
        return float(np.mean(losses))


def _encoder_inputs(
    data: AlignedEpochs, window: AlignWindow, fit_idx: NDArray[np.intp], end: int
) -> tuple[dict[str, PreprocessSpec], dict[str, NDArray[np.float32]]]:
    """Per modality, the full preprocessing (scaling from ``fit_idx``) and every trial's input."""
    geom = window.geometry
    specs: dict[str, PreprocessSpec] = {}
    x: dict[str, NDArray[np.float32]] = {}
    for m in MODALITIES:
        base = retrieval_spec(
            data.infos[m]["ch_names"], context_s=window.context_s, sfreq_hz=window.sfreq_hz
        )
        specs[m] = fit_robust_windows(data.epochs[m].subset(fit_idx), base, geom, [end])
        sampler = WindowSampler(data.epochs[m], specs[m], geom)
        windows = sampler.windows(np.arange(len(data)), np.full(len(data), end))
        x[m] = windows[:, :, geom.n_context :]
    return specs, x


# --------------------------------------------------------------------------- export


def export_encoder(
    model: AlignedModel,
    modality: Modality,
    path: str | Path,
    *,
    check_data: AlignedEpochs,
    about: ArtifactAbout,
    stream_sfreq: float,
    atol: float = 1e-4,
) -> Artifact:
    """Write one modality's encoder as an artifact with task ``embedding``.

    The graph takes the preprocessed span (context and window) and outputs the unit-norm
    representation in the shared space (the image embedding space): compare it by cosine
    with image embeddings (retrieval) or with the other modality's representations
    (conversion).

    Parameters
    ----------
    model : AlignedModel
        The trained encoders.
    modality : {"eeg", "meg"}
        Which encoder.
    path : path-like
        The ``.onnx`` file.
    check_data : AlignedEpochs
        Held-out trials whose windows must give the same output in ONNX and torch.
    about : ArtifactAbout
        Name, version, seed and measured figures (non-finite ones, e.g. a conversion ratio
        not reported, are left out); training data, split and description default to the
        model's, and the training data are simulated.
    stream_sfreq : float
        Rate of the training streams in Hz (streams at other rates are resampled).
    atol : float
        Tolerance of the ONNX-versus-torch check (the representation is unit-norm).

    Returns
    -------
    artifact : Artifact
        The embedding artifact written.

    Raises
    ------
    ExportCheckError
        If the ONNX representations differ from torch's by more than ``atol`` on the check
        trials; no file is written then.
    """
    if modality not in MODALITIES:
        raise ValueError(f"modality must be 'eeg' or 'meg', got {modality!r}.")
    # the head drops the context, runs the encoder and L2-normalises its CLIP output
    head = RetrievalHead(model.encoders[modality], n_context=model.window.geometry.n_context)
    about = about.completed(
        trained_on=model.trained_on,
        split=f"{model.n_train_images} simulated training images (validation: images held "
        "out of them); test images never seen in training",
        simulated_training_data=True,
        description=(
            f"{modality.upper()} encoder of an aligned EEG-MEG-image space (CLIP-style "
            "contrastive training, Ferrante et al. 2024): unit-norm representation of the "
            f"{model.window.window_s:g} s after an image onset, in the image embedding space."
        ),
    )
    meta = ArtifactMetadata(
        task="embedding",
        input=_encoder_input_spec(model, modality, stream_sfreq),
        output=OutputSpec(tensor="embedding", embedding_size=model.dim),
        **about.metadata_fields(),
    )
    check = model.windows(check_data, modality)[:64]
    return export_artifact(head.eval(), path, meta, check, input_name="window", atol=atol)


def _encoder_input_spec(model: AlignedModel, modality: Modality, stream_sfreq: float) -> InputSpec:
    """What one modality's encoder reads: its channels, span and full preprocessing."""
    geom, w = model.window.geometry, model.window
    info = model.infos[modality]
    return InputSpec(
        ch_names=list(info["ch_names"]),
        ch_types=list(info.get_channel_types()),
        sfreq_hz=float(stream_sfreq),
        window_s=geom.n_window / w.sfreq_hz,
        context_s=geom.n_context / w.sfreq_hz,
        stride_s=0.025,
        preprocess=model.specs[modality],
        scalogram=None,
    )
