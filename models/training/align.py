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

Both encoders are the brain module of :mod:`.brain_module` (spatial attention over sensor
positions, residual dilated convolutions, temporal aggregation, CLIP head), and windows are
cut and preprocessed by the retrieval code (:mod:`.retrieval`: resampling to 120 Hz,
baseline over the context before the window, robust scaling fitted on training windows,
clipping), so the exported encoder (:func:`export_encoder`, an artifact with task
``embedding``) sees in a live stream exactly what it saw in training.

Training data are simulated simultaneous EEG and MEG of image-evoked responses
(:meth:`neurocast.streaming.sources.simulator.simulator.Simulator.simulate_image_epochs`): both modalities
record the same dipoles on the same trials. The noise level is set by scaling the
simulator's noise (background activity, ongoing rhythms and sensor noise), obtained exactly
as the difference between a noisy and a noiseless simulation of the same trials.

Accuracies (:func:`evaluate_aligned`) are measured on held-out images never seen in
training. A 2-way accuracy is the probability that the true candidate scores higher than
one other candidate (averaged over all other candidates; ties count half); chance is 0.5.
Conversion accuracy is normalised by the target modality's own split-half reliability: the
repetitions of each test image are split in two halves, converted representations come from
one half and targets from the other, and the ceiling is the target modality's half against
its own other half.

References
----------
Ferrante M, Boccato T, Rashkov G, Toschi N (2024). Towards neural foundation models for
vision: aligning EEG, MEG, and fMRI representations for decoding, encoding, and modality
conversion. arXiv:2411.09723.
Radford A et al. (2021). Learning transferable visual models from natural language
supervision (CLIP). ICML.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import mne
import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from tqdm.auto import tqdm

from neurocast.models.nets.brain_module import (
    BrainModule,
    BrainModuleConfig,
    RetrievalHead,
    clip_loss,
    small_config,
)
from neurocast.models.serving.artifact import Artifact, InputSpec, OutputSpec
from neurocast.models.training.checked_export import export_checked
from neurocast.models.training.classifier import set_seed, torch_threads
from neurocast.models.training.retrieval import (
    EpochSet,
    WindowGeometry,
    WindowSampler,
    fit_robust_windows,
    make_brain_module,
    predict_embeddings,
    preprocess_epochs,
    retrieval_spec,
    split_by_image,
    top_k_accuracy,
)
from neurocast.streaming.preprocessing.filters import PreprocessSpec
from neurocast.streaming.sources.base import StreamInfo
from neurocast.streaming.sources.simulator.simulator import SIMULATED_TAG, Simulator
from neurocast.streaming.sources.specs import SimulatorSpec

logger = logging.getLogger(__name__)

Modality = Literal["eeg", "meg"]
MODALITIES: tuple[Modality, ...] = ("eeg", "meg")
_PICK = {"eeg": {"meg": False, "eeg": True}, "meg": {"meg": True, "eeg": False}}
#: Conversion accuracy is normalised only by a target modality whose split halves identify
#: their own images at least this well (2-way); near chance the ratio would mean nothing.
MIN_CEILING_2WAY = 0.6


@dataclass(frozen=True)
class AlignWindow:
    """The window an encoder reads, relative to image onset.

    Attributes
    ----------
    window_s : float
        Seconds the encoder reads, ending ``window_s`` after image onset (it covers the
        responses to onset and offset of a 0.5 s image).
    context_s : float
        Seconds before the window whose mean is the baseline (dropped by the encoder).
    sfreq_hz : float
        Rate the encoder runs at (the study's 120 Hz).
    lead_s : float
        Extra seconds simulated before the context so that the resampler settles.
    """

    window_s: float = 0.8
    context_s: float = 0.2
    sfreq_hz: float = 120.0
    lead_s: float = 0.3

    def __post_init__(self) -> None:
        if not (self.window_s > 0 and self.context_s > 0 and self.sfreq_hz > 0):
            raise ValueError("window_s, context_s and sfreq_hz must be positive.")
        if self.lead_s < 0:
            raise ValueError(f"lead_s must be >= 0, got {self.lead_s}.")

    @property
    def geometry(self) -> WindowGeometry:
        """Context and window in samples at the encoder's rate."""
        return WindowGeometry.from_seconds(self.window_s, self.context_s, self.sfreq_hz)

    @property
    def tmin_s(self) -> float:
        """Start of the simulated epochs relative to onset, seconds."""
        return -(self.context_s + self.lead_s)

    @property
    def tmax_s(self) -> float:
        """End of the simulated epochs relative to onset, seconds (a margin after the window)."""
        return self.window_s + 0.1


@dataclass
class AlignedEpochs:
    """Simultaneous EEG and MEG epochs of image trials, continuously preprocessed.

    Attributes
    ----------
    epochs : dict of str to EpochSet
        Per modality (``"eeg"``, ``"meg"``), the same trials in the same order.
    infos : dict of str to mne.Info
        Per modality, the channels (with positions) of the epochs.
    embeddings : ndarray, shape (n_images, dim)
        Embeddings of the images ``image_rows`` refer to.
    image_ids : list of str
        Their ids.
    stream_sfreq : float
        Rate of the simulated signals before preprocessing, Hz.
    noise_scale : float
        Factor applied to the simulator's noise.
    description : str
        Where the data came from (says SIMULATED).
    """

    epochs: dict[str, EpochSet]
    infos: dict[str, mne.Info]
    embeddings: NDArray[np.float32]
    image_ids: list[str]
    stream_sfreq: float
    noise_scale: float
    description: str

    @property
    def image_rows(self) -> NDArray[np.int64]:
        """Image of each trial (row of ``embeddings``)."""
        return self.epochs["eeg"].image_rows

    def __len__(self) -> int:
        return len(self.image_rows)


def simulate_aligned_epochs(
    spec: SimulatorSpec,
    embeddings: ArrayLike,
    image_indices: Sequence[int],
    *,
    image_ids: Sequence[str] | None = None,
    window: AlignWindow | None = None,
    noise_scale: float = 1.0,
    seed: int = 0,
    chunk: int = 64,
    cache_dir: str | Path | None = None,
) -> AlignedEpochs:
    """Simulate image trials and preprocess their EEG and MEG for the encoders.

    Parameters
    ----------
    spec : SimulatorSpec
        Simulated subject (``subject_seed``: the same brain for training and testing),
        geometry, sensor noise and rate; it must simulate both EEG and MEG.
    embeddings : array, shape (n_images, dim)
        Image embeddings (unit-norm rows give realistic response amplitudes).
    image_indices : sequence of int
        Image shown in each trial, in order.
    image_ids : sequence of str | None
        Ids of the images (``img000``, ... when None).
    window : AlignWindow | None
        Window and rate of the encoders.
    noise_scale : float
        Multiplies the simulator's noise (1: its realistic level); the evoked responses
        are unchanged.
    seed : int
        Seed of the noise (different seeds give different trials of the same subject).
    chunk : int
        Trials simulated at a time (bounds memory).
    cache_dir : path-like | None
        Forward-solution cache.

    Returns
    -------
    epochs : AlignedEpochs
        Labelled SIMULATED.
    """
    if not noise_scale >= 0:
        raise ValueError(f"noise_scale must be >= 0, got {noise_scale}.")
    if spec.modality != "both":
        raise ValueError("An aligned space needs simultaneous EEG and MEG: use modality='both'.")
    w = window or AlignWindow()
    emb = np.asarray(embeddings, dtype=np.float32)
    ids = list(image_ids) if image_ids is not None else [f"img{i:03d}" for i in range(len(emb))]
    order = np.asarray(image_indices, dtype=np.int64).reshape(-1)
    sim = Simulator(spec, cache_dir=cache_dir)
    stream: StreamInfo = sim.stream_info
    infos: dict[str, mne.Info] = {
        m: mne.pick_info(sim.info, mne.pick_types(sim.info, **_PICK[m])) for m in MODALITIES
    }
    specs = {m: retrieval_spec(infos[m]["ch_names"], context_s=w.context_s, sfreq_hz=w.sfreq_hz)
             for m in MODALITIES}  # fmt: skip
    parts: dict[str, list[EpochSet]] = {m: [] for m in MODALITIES}
    for k, a in enumerate(range(0, len(order), chunk)):
        rows = order[a : a + chunk]
        kwargs: dict[str, Any] = dict(
            image_indices=rows, image_ids=ids, tmin=w.tmin_s, tmax=w.tmax_s, seed=seed * 100_003 + k
        )
        data = sim.simulate_image_epochs(emb, noise=True, **kwargs).data
        if noise_scale != 1.0:
            clean = sim.simulate_image_epochs(emb, noise=False, **kwargs).data
            # the simulator is linear: noisy - clean is exactly the noise of these trials
            data = clean + np.float32(noise_scale) * (data - clean)
        for m in MODALITIES:
            parts[m].append(preprocess_epochs(data, stream, specs[m], w.tmin_s, rows))
    return AlignedEpochs(
        epochs={m: EpochSet.concatenate(parts[m]) for m in MODALITIES},
        infos=infos,
        embeddings=emb,
        image_ids=ids,
        stream_sfreq=sim.sfreq,
        noise_scale=float(noise_scale),
        description=f"{sim.info['description']} Noise x{noise_scale:g}.",
    )


# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class AlignTrainConfig:
    """Hyper-parameters of contrastive alignment.

    Attributes
    ----------
    max_epochs : int
        Upper bound on passes over the training trials.
    patience : int
        Stop after this many epochs without a lower validation loss (best weights kept).
    batch_size : int
        Trials per step: two trials each of ``batch_size // 2`` images.
    lr : float
        AdamW learning rate.
    weight_decay : float
        AdamW weight decay.
    cross_weight : float
        Weight of the EEG–MEG term against the two brain–image terms.
    clip_weight : float
        λ of each brain–image term ``λ·CLIP + (1 − λ)·MSE``.
    val_fraction : float
        Fraction of the training images whose trials are held out for early stopping.
    max_steps_per_epoch : int | None
        Cap on steps per epoch.
    n_threads : int
        Torch threads while training.
    seed : int
        Seed of initialisation, batches, dropout and the validation split.
    progress : bool
        Show a progress bar.
    """

    max_epochs: int = 30
    patience: int = 5
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    cross_weight: float = 1.0
    clip_weight: float = 0.75
    val_fraction: float = 0.15
    max_steps_per_epoch: int | None = None
    n_threads: int = 1
    seed: int = 0
    progress: bool = False

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
        return _unit(z)


def _unit(x: ArrayLike) -> NDArray[np.float32]:
    a = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(a, axis=-1, keepdims=True)
    return (a / np.where(n > 0, n, 1.0)).astype(np.float32)


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
    with torch_threads(tc.n_threads):
        return _fit_aligned(data, tc, encoder_config or align_encoder_config(), window)


def _fit_aligned(
    data: AlignedEpochs,
    tc: AlignTrainConfig,
    enc_cfg: BrainModuleConfig,
    window: AlignWindow | None,
) -> AlignedModel:
    w = window or AlignWindow()
    geom = w.geometry
    rng = set_seed(tc.seed)
    fit_idx, val_idx = split_by_image(data.image_rows, tc.val_fraction, tc.seed)
    end = _window_end(data.epochs["eeg"], w)
    specs: dict[str, PreprocessSpec] = {}
    x: dict[str, NDArray[np.float32]] = {}
    for m in MODALITIES:
        base = retrieval_spec(data.infos[m]["ch_names"], context_s=w.context_s, sfreq_hz=w.sfreq_hz)
        specs[m] = fit_robust_windows(data.epochs[m].subset(fit_idx), base, geom, [end])
        sampler = WindowSampler(data.epochs[m], specs[m], geom)
        x[m] = sampler.windows(np.arange(len(data)), np.full(len(data), end))[
            :, :, geom.n_context :
        ]
    dim = data.embeddings.shape[1]
    encoders: dict[str, BrainModule] = {
        m: make_brain_module(data.infos[m], geom, dim, enc_cfg) for m in MODALITIES
    }
    cross_scale = torch.nn.Parameter(torch.tensor(float(np.log(1 / 0.07))))
    params = [p for e in encoders.values() for p in e.parameters()] + [cross_scale]
    opt = torch.optim.AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay)
    targets = torch.as_tensor(_unit(data.embeddings))
    rows = data.image_rows
    val_pairs = _pairs(rows, val_idx, None)
    if len(val_pairs) < 2 or len(_pairs(rows, fit_idx, None)) < 2:
        raise ValueError(
            "Contrastive alignment needs every training image shown at least twice (pairs of "
            "trials of the same image); simulate more repetitions."
        )

    def batch_loss(pairs: NDArray[np.intp]) -> torch.Tensor:
        halves: list[dict[str, tuple[torch.Tensor, torch.Tensor]]] = [
            {m: encoders[m](torch.from_numpy(x[m][pairs[:, k]])) for m in MODALITIES}
            for k in (0, 1)
        ]
        images = targets[torch.from_numpy(rows[pairs[:, 0]])]
        return aligned_loss(
            halves[0], halves[1], images, encoders, cross_scale,
            cross_weight=tc.cross_weight, clip_weight=tc.clip_weight,
        )  # fmt: skip

    def val_loss() -> float:
        for e in encoders.values():
            e.eval()
        with torch.no_grad():
            return float(batch_loss(val_pairs))

    per_step = max(2, tc.batch_size // 2)
    best = (val_loss(), copy.deepcopy({m: e.state_dict() for m, e in encoders.items()}), 0)
    history: list[dict[str, float]] = [{"epoch": 0.0, "train_loss": float("nan"),
                                        "val_loss": best[0]}]  # fmt: skip
    bar = tqdm(range(1, tc.max_epochs + 1), desc="aligned space", disable=not tc.progress)
    for epoch in bar:
        for e in encoders.values():
            e.train()
        pairs = _pairs(rows, fit_idx, rng)
        n_steps = max(1, len(pairs) // per_step)
        if tc.max_steps_per_epoch is not None:
            n_steps = min(n_steps, tc.max_steps_per_epoch)
        losses = []
        for s in range(n_steps):
            batch = pairs[s * per_step : (s + 1) * per_step]
            if len(batch) < 2:
                continue
            loss = batch_loss(batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        v = val_loss()
        history.append({"epoch": float(epoch), "train_loss": float(np.mean(losses)), "val_loss": v})
        bar.set_postfix(val=f"{v:.3f}")
        if v < best[0]:
            best = (v, copy.deepcopy({m: e.state_dict() for m, e in encoders.items()}), epoch)
        elif epoch - best[2] >= tc.patience:
            break
    for name, encoder in encoders.items():
        encoder.load_state_dict(best[1][name])
        encoder.eval()
    return AlignedModel(
        encoders=encoders,
        specs=specs,
        infos=data.infos,
        window=w,
        window_end=end,
        history=history,
        trained_on=f"{SIMULATED_TAG}: {data.description}",
        n_train_images=len(np.unique(rows)),
    )


# --------------------------------------------------------------------------- evaluation


def two_way_accuracy(scores: ArrayLike, true: ArrayLike) -> float:
    """Mean 2-way accuracy of rows of a score matrix.

    Parameters
    ----------
    scores : array, shape (n_queries, n_candidates)
        Similarity of each query to each candidate.
    true : array of int, shape (n_queries,)
        The correct candidate of each query.

    Returns
    -------
    accuracy : float
        Fraction of (query, wrong candidate) pairs in which the correct candidate scores
        higher (ties count half); 0.5 is chance.
    """
    s = np.asarray(scores, dtype=np.float64)
    t = np.asarray(true, dtype=np.intp)
    if s.ndim != 2 or s.shape[1] < 2 or len(t) != s.shape[0]:
        raise ValueError(
            "scores must be (n_queries, n_candidates >= 2) with one true index per row."
        )
    right = s[np.arange(len(t)), t][:, None]
    wins = (right > s).sum(axis=1) + 0.5 * ((right == s).sum(axis=1) - 1)
    return float(np.mean(wins / (s.shape[1] - 1)))


def _ranks(scores: NDArray[np.float64], true: NDArray[np.intp]) -> NDArray[np.int64]:
    right = scores[np.arange(len(true)), true][:, None]
    return ((scores >= right).sum(axis=1) - 1).astype(np.int64)


def _split_means(
    z: NDArray[np.float32], rows: NDArray[np.int64], images: NDArray[np.int64]
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Per image, the mean representation of its first and its second half of repetitions."""
    a, b = [], []
    for img in images:
        trials = np.flatnonzero(rows == img)
        half = len(trials) // 2
        a.append(z[trials[:half]].mean(axis=0))
        b.append(z[trials[half:]].mean(axis=0))
    return _unit(np.array(a)), _unit(np.array(b))


def evaluate_aligned(model: AlignedModel, test: AlignedEpochs, *, k: int = 5) -> dict[str, float]:
    """Decoding, encoding and conversion accuracies on held-out images.

    Parameters
    ----------
    model : AlignedModel
        The trained encoders.
    test : AlignedEpochs
        Trials of images never seen in training, each image repeated at least twice.
    k : int
        Top-k of decoding.

    Returns
    -------
    figures : dict of str to float
        For each modality ``m``: ``decode_2way_m`` and ``decode_top{k}_m`` (single trials
        against all test images), ``decode_top1_m``, ``encode_2way_m`` (each image's
        embedding against the mean representations of all test images); and
        ``conversion_2way_eeg_to_meg``, ``conversion_2way_norm_eeg_to_meg`` (and the reverse;
        NaN when the target's ceiling is below :data:`MIN_CEILING_2WAY`),
        ``ceiling_2way_meg``, ``ceiling_2way_eeg``; plus ``n_test_images``, ``n_test_trials``.
    """
    rows = test.image_rows
    images, true = np.unique(rows, return_inverse=True)
    counts = np.bincount(true)
    if len(images) < 2 or counts.min() < 2:
        raise ValueError(
            "Evaluation needs at least two test images, each shown at least twice (for the "
            "split-half normalisation of conversion)."
        )
    cand = _unit(test.embeddings[images])
    z = {m: model.embed(test, m) for m in MODALITIES}
    out: dict[str, float] = {"n_test_images": float(len(images)), "n_test_trials": float(len(rows))}
    halves: dict[str, tuple[NDArray[np.float32], NDArray[np.float32]]] = {}
    for m in MODALITIES:
        s = z[m].astype(np.float64) @ cand.T.astype(np.float64)
        ranks = _ranks(s, true)
        out[f"decode_2way_{m}"] = two_way_accuracy(s, true)
        out[f"decode_top1_{m}"] = top_k_accuracy(ranks, 1)
        out[f"decode_top{k}_{m}"] = top_k_accuracy(ranks, k)
        mean = _unit(np.array([z[m][true == i].mean(axis=0) for i in range(len(images))]))
        out[f"encode_2way_{m}"] = two_way_accuracy(cand @ mean.T, np.arange(len(images)))
        halves[m] = _split_means(z[m], true, np.arange(len(images)))
    diag = np.arange(len(images))
    for src, dst in (("eeg", "meg"), ("meg", "eeg")):
        raw = two_way_accuracy(halves[src][0] @ halves[dst][1].T, diag)
        ceiling = two_way_accuracy(halves[dst][0] @ halves[dst][1].T, diag)
        out[f"conversion_2way_{src}_to_{dst}"] = raw
        out[f"ceiling_2way_{dst}"] = ceiling
        reliable = ceiling >= MIN_CEILING_2WAY
        out[f"conversion_2way_norm_{src}_to_{dst}"] = raw / ceiling if reliable else float("nan")
    return out


# --------------------------------------------------------------------------- export


def export_encoder(
    model: AlignedModel,
    modality: Modality,
    path: str | Path,
    *,
    check_data: AlignedEpochs,
    name: str,
    version: str = "1",
    stream_sfreq: float,
    metrics: dict[str, float] | None = None,
    metrics_note: str = "",
    seed: int | None = None,
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
    name, version : str
        Artifact name and version.
    stream_sfreq : float
        Rate of the training streams in Hz (streams at other rates are resampled).
    metrics : dict | None
        Measured figures to store (non-finite ones, e.g. a conversion ratio not reported,
        are left out).
    metrics_note : str
        How they were measured.
    seed : int | None
        Training seed.
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
    geom = model.window.geometry
    w = model.window
    info = model.infos[modality]
    # the head drops the context, runs the encoder and L2-normalises its CLIP output
    head = RetrievalHead(model.encoders[modality], n_context=geom.n_context).eval()
    return export_checked(
        head,
        path,
        check_inputs=model.windows(check_data, modality)[:64],
        input_name="window",
        output_name="embedding",
        atol=atol,
        name=name,
        version=version,
        task="embedding",
        input_spec=InputSpec(
            ch_names=list(info["ch_names"]),
            ch_types=list(info.get_channel_types()),
            sfreq_hz=float(stream_sfreq),
            window_s=geom.n_window / w.sfreq_hz,
            context_s=geom.n_context / w.sfreq_hz,
            stride_s=0.025,
            preprocess=model.specs[modality],
            scalogram=None,
        ),
        output_spec=OutputSpec(
            tensor="embedding",
            class_names=None,
            embedding_size=model.dim,
            gallery=None,
            ch_names=None,
            ch_types=None,
            sfreq_hz=None,
        ),
        trained_on=model.trained_on,
        split=f"{model.n_train_images} simulated training images (validation: images held "
        "out of them); test images never seen in training",
        seed=seed,
        simulated_training_data=True,
        metrics=metrics,
        metrics_note=metrics_note,
        description=(
            f"{modality.upper()} encoder of an aligned EEG-MEG-image space (CLIP-style "
            "contrastive training, Ferrante et al. 2024): unit-norm representation of the "
            f"{w.window_s:g} s after an image onset, in the image embedding space."
        ),
    )
