"""Training the retrieval brain module, and its export (torch; offline only).

A retrieval decoder maps a preprocessed MEG/EEG window (:mod:`.retrieval_data`) to an
embedding in a gallery's space (:mod:`neurocast.models.serving.gallery`); the gallery images
closest to it are its answer. The **brain module** (:mod:`neurocast.models.nets.brain_module`,
Défossez et al. 2023; Benchetrit et al. 2024) is trained with ``λ·CLIP + (1 − λ)·MSE``
against the seen images' embeddings (:func:`fit_brain_module`) and exported with the gallery's
name (:func:`export_retrieval`). Its ridge baseline and the retrieval measures are in
:mod:`.retrieval_eval`; the whole recipe (windows, training, measures) is
:func:`neurocast.models.training.recipes.retrieval.fit_retrieval`.

References
----------
Défossez A, Caucheteux C, Rapin J, Kabeli O, King J-R (2023). Decoding speech perception from
non-invasive brain recordings. Nature Machine Intelligence 5, 1097–1107.
Benchetrit Y, Banville H, King J-R (2024). Brain decoding: toward real-time reconstruction of
visual perception. ICLR. https://arxiv.org/abs/2310.19812
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import mne
import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray

from neurocast.models.nets.brain_module import (
    BrainModule,
    BrainModuleConfig,
    CombinedLoss,
    RetrievalHead,
    sensor_positions_2d,
)
from neurocast.models.serving.artifact import Artifact
from neurocast.models.serving.gallery import Gallery
from neurocast.models.serving.schema import ArtifactMetadata, InputSpec, OutputSpec
from neurocast.models.training.export import DEFAULT_ATOL, ArtifactAbout, export_artifact
from neurocast.models.training.loop import EpochTrainConfig
from neurocast.models.training.retrieval_data import WindowGeometry, WindowSampler
from neurocast.streaming.preprocessing.filters import PreprocessSpec

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetrievalTrainConfig(EpochTrainConfig):
    """Hyper-parameters of brain-module training.

    Attributes
    ----------
    max_epochs, patience, batch_size, max_steps_per_epoch, seed, progress
        See :class:`~neurocast.models.training.loop.EpochTrainConfig` (windows per step).
    lr : float
        Adam learning rate (3e-4 in the study).
    weight_decay : float
        AdamW weight decay (0.05 did better than 1e-4 on a validation split of simulated
        training images).
    clip_weight : float
        λ of ``λ·CLIP + (1 − λ)·MSE``.
    val_fraction : float
        Fraction of the training images whose windows are held out for early stopping.
    """

    max_epochs: int = 40
    patience: int = 6
    batch_size: int = 64
    lr: float = 3e-4
    weight_decay: float = 0.05
    clip_weight: float = 0.75
    val_fraction: float = 0.15


@dataclass
class RetrievalTrainResult:
    """What :func:`fit_brain_module` did.

    Attributes
    ----------
    best_epoch : int
        Epoch (1-based) whose weights were kept.
    epochs_run : int
        Epochs trained.
    val_loss : float
        Validation loss at the best epoch.
    history : list of dict
        Per epoch: ``epoch``, ``train_loss``, ``val_loss``, ``val_clip``, ``val_mse``.
    """

    best_epoch: int
    epochs_run: int
    val_loss: float
    history: list[dict[str, float]] = field(default_factory=list)


def split_by_image(
    image_rows: NDArray[np.int64], val_fraction: float, seed: int
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Training and validation epoch indices with no image on both sides."""
    images = np.unique(image_rows)
    if len(images) < 2:
        raise ValueError("A validation split needs at least two distinct images.")
    rng = np.random.default_rng(seed)
    n_val = min(len(images) - 1, max(1, round(val_fraction * len(images))))
    val_images = rng.permutation(images)[:n_val]
    is_val = np.isin(image_rows, val_images)
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def _batch_loss(
    module: BrainModule,
    loss_fn: CombinedLoss,
    x: NDArray[np.float32],
    rows: NDArray[np.int64],
    subjects: NDArray[np.int64],
    targets: torch.Tensor,
    n_context: int,
) -> torch.Tensor:
    uniq, labels = np.unique(rows, return_inverse=True)
    out = module(torch.from_numpy(x[:, :, n_context:]), torch.from_numpy(subjects))
    return loss_fn(module, out, targets[torch.from_numpy(uniq)], torch.from_numpy(labels))


def fit_brain_module(
    module: BrainModule,
    sampler: WindowSampler,
    train: NDArray[np.integer],
    val: NDArray[np.integer],
    ends: Sequence[int],
    targets: ArrayLike,
    config: RetrievalTrainConfig | None = None,
) -> RetrievalTrainResult:
    """Train a brain module on windows of epochs against image embeddings.

    Each step draws random (epoch, window end) pairs from the training epochs; the CLIP
    candidates are the distinct images of the batch. Training stops when the loss on the
    validation epochs (over all their windows, with all their images as candidates) has not
    improved for ``patience`` epochs, and the best weights are restored.

    Parameters
    ----------
    module : BrainModule
        The module (trained in place; left in eval mode).
    sampler : WindowSampler
        Cuts and finalises windows.
    train, val : array of int
        Epoch indices for training and for early stopping.
    ends : sequence of int
        Window ends (indices into the epochs' samples) to train on.
    targets : array, shape (n_images, dim)
        Embedding of every image ``epochs.image_rows`` refers to.
    config : RetrievalTrainConfig | None
        Hyper-parameters.
    """
    config = config or RetrievalTrainConfig()
    if not len(train) or not len(val):
        raise ValueError(
            f"Training needs epochs on both sides of the split; got {len(train)} training and "
            f"{len(val)} validation epochs."
        )
    loop = config.training_loop("brain module")
    tgt = torch.as_tensor(np.asarray(targets), dtype=torch.float32)
    if tgt.ndim != 2 or tgt.shape[1] != module.out_dim:
        raise ValueError(f"targets must be (n_images, {module.out_dim}), got {tuple(tgt.shape)}.")
    ends_arr = np.asarray(ends, dtype=np.intp)
    pairs = np.array([(i, e) for i in train for e in ends_arr], dtype=np.intp)
    val_pairs = np.array([(i, e) for i in val for e in ends_arr], dtype=np.intp)
    if len(val_pairs) > 4096:
        val_pairs = val_pairs[loop.rng.choice(len(val_pairs), 4096, replace=False)]
    loss_fn = CombinedLoss(config.clip_weight)
    opt = torch.optim.AdamW(module.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    n_steps, size = config.steps_per_epoch(len(pairs)), config.batch_size

    def run_epoch(epoch: int, rng: np.random.Generator, advance: Callable[[], None]) -> float:
        order = rng.permutation(len(pairs))
        batches = (pairs[order[k * size : (k + 1) * size]] for k in range(n_steps))
        return _train_epoch(module, loss_fn, opt, sampler, batches, tgt, advance)

    result = loop.run(
        module,
        run_epoch,
        lambda: _validation_loss(module, loss_fn, sampler, val_pairs, tgt),
        steps_per_epoch=n_steps,
    )
    return RetrievalTrainResult(
        result.best_epoch, result.epochs_run, result.best_loss, result.history
    )


def _train_epoch(
    module: BrainModule,
    loss_fn: CombinedLoss,
    opt: torch.optim.Optimizer,
    sampler: WindowSampler,
    batches: Iterable[NDArray[np.intp]],
    targets: torch.Tensor,
    advance: Callable[[], None],
) -> float:
    """One optimiser step per batch of (epoch, window end) pairs; the mean training loss."""
    epochs, n_ctx = sampler.epochs, sampler.geometry.n_context
    losses = []
    for p in batches:
        # a single window has no other image to contrast with
        if len(p) < 2:
            continue
        x = sampler.windows(p[:, 0], p[:, 1])
        loss = _batch_loss(
            module, loss_fn, x, epochs.image_rows[p[:, 0]], epochs.subjects[p[:, 0]], targets, n_ctx
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        advance()
    return float(np.mean(losses))


@torch.no_grad()
def _validation_loss(
    module: BrainModule,
    loss_fn: CombinedLoss,
    sampler: WindowSampler,
    pairs: NDArray[np.intp],
    targets: torch.Tensor,
) -> tuple[float, dict[str, float]]:
    module.eval()
    epochs = sampler.epochs
    rows = epochs.image_rows[pairs[:, 0]]
    uniq, labels = np.unique(rows, return_inverse=True)
    clip_out, mse_out = [], []
    for a in range(0, len(pairs), 256):
        p = pairs[a : a + 256]
        x = sampler.windows(p[:, 0], p[:, 1])[:, :, sampler.geometry.n_context :]
        c, m = module(torch.from_numpy(x), torch.from_numpy(epochs.subjects[p[:, 0]]))
        clip_out.append(c)
        mse_out.append(m)
    out = (torch.cat(clip_out), torch.cat(mse_out))
    loss = loss_fn(module, out, targets[torch.from_numpy(uniq)], torch.from_numpy(labels))
    return float(loss), {f"val_{k}": v for k, v in loss_fn.last.items()}


@torch.no_grad()
def predict_embeddings(
    module: BrainModule,
    x: NDArray[np.float32],
    subjects: ArrayLike | None = None,
    n_context: int = 0,
) -> NDArray[np.float32]:
    """CLIP-head embeddings (n, out_dim) of finalised inputs (n, n_channels, n_context + n)."""
    module.eval()
    subj = np.zeros(len(x), np.int64) if subjects is None else np.asarray(subjects, np.int64)
    out = []
    for a in range(0, len(x), 256):
        xb = torch.from_numpy(np.ascontiguousarray(x[a : a + 256, :, n_context:]))
        out.append(module(xb, torch.from_numpy(subj[a : a + 256]))[0].numpy())
    return np.concatenate(out) if out else np.empty((0, module.out_dim), np.float32)


def make_brain_module(
    info: mne.Info,
    geometry: WindowGeometry,
    out_dim: int,
    config: BrainModuleConfig,
    seed: int | None = None,
) -> BrainModule:
    """A brain module for the channels of ``info`` (positions from it) and a window size.

    ``seed`` seeds torch before the weights are initialised, for reproducible runs.
    """
    if seed is not None:
        torch.manual_seed(seed)
    return BrainModule(sensor_positions_2d(info), geometry.n_window, out_dim, config)


EXPORT_INPUT = "window"
EXPORT_OUTPUT = "embedding"


def export_retrieval(
    module: BrainModule,
    path: str | Path,
    *,
    gallery: Gallery,
    info: mne.Info,
    spec: PreprocessSpec,
    geometry: WindowGeometry,
    check_inputs: NDArray[np.float32],
    about: ArtifactAbout,
    stride_s: float = 0.025,
    subject: int = 0,
    atol: float = DEFAULT_ATOL,
) -> Artifact:
    """Export a trained brain module as a retrieval artifact, checked against torch.

    The graph maps one finalised input (channels × (context + window) samples at the model
    rate) to the L2-normalised CLIP-head embedding; the artifact names its gallery, which the
    runtime searches for the top-k images of every window (:class:`OnnxWindowModel`).

    Parameters
    ----------
    module : BrainModule
        The trained module.
    path : path-like
        The ``.onnx`` file to write.
    gallery : Gallery
        The gallery whose space the module was trained in (its name is stored; keep the
        gallery file ``<name>.npz`` beside the artifact for the server to find it).
    info : mne.Info
        The recording's info (channel types of the model's channels).
    spec : PreprocessSpec
        The full preprocessing (with robust scaling) the module was trained with.
    geometry : WindowGeometry
        Context and window lengths.
    check_inputs : array, shape (n_windows, n_channels, n_context + n_window)
        Real finalised windows (held-out data) on which ONNX and torch must agree.
    about : ArtifactAbout
        Name, version, training data, split, seed, measured quality and whether the data
        were simulated (say it); an empty description describes the module.
    stride_s : float
        Stride of the windows the module was evaluated on, in seconds.
    subject : int
        Whose per-subject layer to export.
    atol : float
        Tolerance of the ONNX-versus-torch check.

    Raises
    ------
    ExportCheckError
        If ONNX and torch disagree by more than ``atol`` (nothing is written then).
    ValueError
        If the module and the gallery disagree on the embedding size.
    """
    if module.out_dim != gallery.dim:
        raise ValueError(
            f"The module outputs {module.out_dim} values but gallery {gallery.name!r} has "
            f"{gallery.dim}-dimensional embeddings; train against this gallery."
        )
    head = RetrievalHead(module, subject=subject, n_context=geometry.n_context)
    input_spec = _retrieval_input_spec(info, spec, geometry, stride_s)
    about = about.completed(
        description=f"Brain module (Défossez et al. 2023; Benchetrit et al. 2024), "
        f"{module.n_parameters()} parameters, {module.config.to_dict()}: "
        f"{1e3 * input_spec.window_s:.0f} ms windows to embeddings of gallery {gallery.name!r}."
    )
    meta = ArtifactMetadata(
        task="retrieval",
        input=input_spec,
        output=OutputSpec(
            tensor=EXPORT_OUTPUT, embedding_size=gallery.dim, gallery=gallery.name, sfreq_hz=None
        ),
        **about.metadata_fields(),
    )
    return export_artifact(head, path, meta, check_inputs, input_name=EXPORT_INPUT, atol=atol)


def _retrieval_input_spec(
    info: mne.Info, spec: PreprocessSpec, geometry: WindowGeometry, stride_s: float
) -> InputSpec:
    """What the module reads: the picked channels (types from ``info``), span and preprocessing."""
    picks = list(spec.picks or info["ch_names"])
    types = dict(zip(info["ch_names"], info.get_channel_types(), strict=True))
    return InputSpec(
        ch_names=picks,
        ch_types=[types[c] for c in picks],
        sfreq_hz=float(info["sfreq"]),
        window_s=geometry.n_window / geometry.sfreq,
        context_s=geometry.n_context / geometry.sfreq,
        stride_s=stride_s,
        preprocess=spec,
    )
