"""The brain module: MEG/EEG windows to image embeddings (torch; training and export only).

Architecture of Défossez et al. (2023), reused for image decoding by Benchetrit et al. (2024):

1. **Spatial attention** over the sensors' 2-D positions: each of ``n_spatial`` (270) output
   channels is a softmax-weighted sum of the input sensors, the weights being a learned
   function of Fourier features of the sensor positions. It therefore works for any sensor
   set with positions (EEG, MEG, both) and survives missing channels. In training, *spatial
   dropout* removes all sensors within a radius of a random point.
2. A 1×1 convolution, then a **per-subject linear layer** (a 1×1 convolution per subject).
3. **Residual blocks** (5) of dilated convolutions (320 channels, kernel 3): two residual
   convolutions with batch norm and GELU, dilations cycling through 1, 2, 4, 8, 16, then a
   convolution to twice the channels followed by a GLU (1×1 by default; ``glu_context=1``
   widens it to kernel 3 at the cost of 2 M more parameters).
4. A 1×1 convolution to ``2 * hidden`` channels with GELU, then a **learned affine temporal
   aggregation** (a linear map from the ``n_times`` samples to one value).
5. Two MLP heads (LayerNorm, GELU, linear): the **CLIP head**, trained with a contrastive loss
   against the image embeddings (its output is what retrieval compares with a gallery), and
   the **MSE head**, trained to regress the embeddings. Loss: ``λ·CLIP + (1 − λ)·MSE``.

At the paper's defaults the module has about 6.4 million parameters (6.2 M with 4 subjects and
768-dimensional embeddings, 6.6 M with 1 subject and the 1280-dimensional EfficientNet-Lite0
features); smaller configurations (:func:`small_config`) suit 100 ms windows, few-channel EEG
and CPU training.

References
----------
Défossez A, Caucheteux C, Rapin J, Kabeli O, King J-R (2023). Decoding speech perception from
non-invasive brain recordings. Nature Machine Intelligence 5, 1097–1107.
https://doi.org/10.1038/s42256-023-00714-5
Benchetrit Y, Banville H, King J-R (2024). Brain decoding: toward real-time reconstruction of
visual perception. ICLR. https://arxiv.org/abs/2310.19812
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import mne
import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import nn


@dataclass(frozen=True)
class BrainModuleConfig:
    """Hyper-parameters of :class:`BrainModule` (paper defaults).

    Attributes
    ----------
    n_spatial : int
        Output channels of the spatial attention (270).
    n_fourier : int
        Fourier frequencies per axis of the position embedding (32, giving 2·32² features).
    spatial_dropout : float
        Radius, in normalised layout units (the layout spans [0, 1]²), of the disc of
        sensors removed at a random place in each training batch (0.2); 0 disables it.
    hidden : int
        Channels of the residual blocks (320).
    n_blocks : int
        Residual blocks (5).
    kernel_size : int
        Kernel of the dilated convolutions (3).
    glu_context : int
        Half-width of the GLU convolution's kernel (0: 1×1; 1: kernel 3).
    dilation_period : int
        Dilations cycle through ``2**0 .. 2**(period-1)`` (5).
    head_hidden : int
        Channels before temporal aggregation, and width of the heads (640).
    n_subjects : int
        Subjects with their own linear layer.
    """

    n_spatial: int = 270
    n_fourier: int = 32
    spatial_dropout: float = 0.2
    hidden: int = 320
    n_blocks: int = 5
    kernel_size: int = 3
    glu_context: int = 0
    dilation_period: int = 5
    head_hidden: int = 640
    n_subjects: int = 1

    def __post_init__(self) -> None:
        for name in ("n_spatial", "n_fourier", "hidden", "n_blocks", "head_hidden", "n_subjects"):
            if getattr(self, name) < 1:
                raise ValueError(f"BrainModuleConfig.{name} must be at least 1.")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and positive, got {self.kernel_size}.")
        if not 0 <= self.spatial_dropout < 1:
            raise ValueError(f"spatial_dropout must be in [0, 1), got {self.spatial_dropout}.")

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dictionary (stored in artifacts)."""
        return asdict(self)


def small_config(n_subjects: int = 1, **overrides: Any) -> BrainModuleConfig:
    """A configuration for 100 ms windows and CPU training.

    Same structure as the paper's, narrower: 64 spatial channels, 96 hidden channels,
    3 residual blocks with dilations 1, 2, 4 (a 100 ms window at 120 Hz is 12 samples),
    8 Fourier frequencies per axis; about 0.4 M parameters plus ``2 * 192 * out_dim`` in
    the two heads.
    """
    params: dict[str, Any] = dict(
        n_spatial=64,
        n_fourier=8,
        hidden=96,
        n_blocks=3,
        dilation_period=3,
        head_hidden=192,
        n_subjects=n_subjects,
    )
    params.update(overrides)
    return BrainModuleConfig(**params)


# --------------------------------------------------------------------------- sensor positions


def sensor_positions_2d(info: mne.Info) -> NDArray[np.float32]:
    """2-D sensor positions from an MNE ``Info``, scaled to the unit square.

    MNE's layout for the sensor set is used when it covers every channel
    (:func:`mne.channels.find_layout`: the standard layouts of MEG systems, or an EEG layout
    from the montage); otherwise the 3-D positions (MEG sensors moved into head coordinates
    with ``info["dev_head_t"]``) are projected azimuthally around the head centre, and sensors
    sharing a position (the magnetometer and two gradiometers of a MEG site) are spread on a
    small circle around it, as MNE's ``Vectorview-all`` layout does, so that the spatial
    attention can weight them differently.

    Parameters
    ----------
    info : mne.Info
        The recording's measurement info; every channel needs a position.

    Returns
    -------
    pos : array, shape (n_channels, 2)
        x and y of each channel, each axis scaled to [0, 1].

    Raises
    ------
    ValueError
        If some channels have no position (set a montage with ``raw.set_montage``).
    """
    locs = np.array([ch["loc"][:3] for ch in info["chs"]], dtype=np.float64)
    missing = [
        info["ch_names"][i]
        for i in range(len(locs))
        if not np.all(np.isfinite(locs[i])) or np.allclose(locs[i], 0)
    ]
    if missing:
        raise ValueError(
            f"Channels without a sensor position: {missing[:8]}"
            f"{' ...' if len(missing) > 8 else ''}. The brain module needs positions: set a "
            "montage (raw.set_montage('standard_1020')) or drop these channels (misc, AUX)."
        )
    xy = _layout_positions(info)
    if xy is None:
        xy = _spread_colocated(_projected_positions(info, locs))
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    out = np.where(hi - lo > 0, (xy - lo) / span, 0.5)
    return out.astype(np.float32)


def _layout_positions(info: mne.Info) -> NDArray[np.float64] | None:
    try:
        layout = mne.channels.find_layout(info)
    except (RuntimeError, ValueError):
        return None
    names = list(layout.names)
    if not all(name in names for name in info["ch_names"]):
        return None
    pos = np.asarray(layout.pos, dtype=np.float64)
    idx = [names.index(name) for name in info["ch_names"]]
    # layout boxes are (x, y, width, height) from their lower-left corner
    return pos[idx, :2] + pos[idx, 2:4] / 2


def _projected_positions(info: mne.Info, locs: NDArray[np.float64]) -> NDArray[np.float64]:
    locs = locs.copy()
    meg = mne.pick_types(info, meg=True, ref_meg=True, exclude=[])
    if len(meg) and info["dev_head_t"] is not None:
        locs[meg] = mne.transforms.apply_trans(info["dev_head_t"], locs[meg])
    # the usual centre of a head sphere in head coordinates (metres)
    v = locs - np.array([0.0, 0.0, 0.04])
    r = np.linalg.norm(v, axis=1)
    theta = np.arccos(np.clip(v[:, 2] / r, -1, 1))  # angle from the vertex
    phi = np.arctan2(v[:, 1], v[:, 0])
    return np.stack([theta * np.cos(phi), theta * np.sin(phi)], axis=1)


def _spread_colocated(xy: NDArray[np.float64]) -> NDArray[np.float64]:
    _, group, counts = np.unique(xy.round(6), axis=0, return_inverse=True, return_counts=True)
    if counts.max() == 1:
        return xy
    centres = np.unique(xy.round(6), axis=0)
    if len(centres) > 1:
        d = np.linalg.norm(centres[:, None] - centres[None], axis=-1)
        np.fill_diagonal(d, np.inf)
        radius = 0.3 * float(np.median(d.min(axis=1)))
    else:
        radius = 0.05
    out = xy.copy()
    seen = np.zeros(len(counts), dtype=int)
    for i, g in enumerate(group.ravel()):
        if counts[g] > 1:
            angle = 2 * np.pi * seen[g] / counts[g]
            out[i] += radius * np.array([np.cos(angle), np.sin(angle)])
            seen[g] += 1
    return out


# --------------------------------------------------------------------------- layers


class FourierEmbedding(nn.Module):
    """Fourier features of 2-D positions: cos and sin of ``2π (k x + l y) / width``.

    Parameters
    ----------
    n_freqs : int
        Frequencies per axis (k, l in ``0 .. n_freqs - 1``); output has ``2 * n_freqs**2``
        features.
    margin : float
        Positions in [0, 1] are shifted by ``margin`` and the period is ``1 + 2 * margin`` so
        that opposite edges of the layout do not alias.
    """

    freqs: torch.Tensor

    def __init__(self, n_freqs: int, margin: float = 0.2) -> None:
        super().__init__()
        self.n_freqs = n_freqs
        self.margin = margin
        self.register_buffer("freqs", torch.arange(n_freqs, dtype=torch.float32), persistent=False)

    @property
    def dim(self) -> int:
        """Number of features per position."""
        return 2 * self.n_freqs**2

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        """Features (n_channels, 2·n_freqs²) of positions (n_channels, 2)."""
        width = 1 + 2 * self.margin
        p = (positions + self.margin) * (2 * math.pi / width)
        loc = p[:, 0, None, None] * self.freqs[:, None] + p[:, 1, None, None] * self.freqs
        loc = loc.reshape(positions.shape[0], -1)
        return torch.cat([torch.cos(loc), torch.sin(loc)], dim=-1)


class SpatialAttention(nn.Module):
    """Softmax attention over sensors, parametrised by the sensors' positions.

    Parameters
    ----------
    positions : array, shape (n_channels, 2)
        Sensor positions in [0, 1]² (see :func:`sensor_positions_2d`).
    n_out : int
        Output channels.
    n_freqs : int
        Fourier frequencies per axis.
    dropout_radius : float
        Radius of the disc of sensors removed at a random place per training batch.
    """

    positions: torch.Tensor

    def __init__(
        self, positions: NDArray[np.floating], n_out: int, n_freqs: int, dropout_radius: float
    ) -> None:
        super().__init__()
        self.register_buffer("positions", torch.as_tensor(positions, dtype=torch.float32))
        self.embedding = FourierEmbedding(n_freqs)
        self.heads = nn.Parameter(torch.randn(n_out, self.embedding.dim) / self.embedding.dim**0.5)
        self.dropout_radius = dropout_radius

    def weights(self) -> torch.Tensor:
        """Mixing weights (n_out, n_channels); each row sums to one."""
        scores = self.heads @ self.embedding(self.positions).T
        if self.training and self.dropout_radius > 0:
            centre = torch.rand(2, device=scores.device)
            banned = (self.positions - centre).norm(dim=-1) <= self.dropout_radius
            # never ban every sensor: the softmax would be undefined
            if bool(banned.any()) and not bool(banned.all()):
                scores = scores.masked_fill(banned[None, :], float("-inf"))
        return torch.softmax(scores, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, n_channels, time) → (batch, n_out, time)."""
        return torch.einsum("oc,bct->bot", self.weights(), x)


class SubjectLayers(nn.Module):
    """A linear map of the channels per subject (identity at initialisation)."""

    def __init__(self, n_channels: int, n_subjects: int) -> None:
        super().__init__()
        self.weights = nn.Parameter(torch.eye(n_channels).repeat(n_subjects, 1, 1))

    def forward(self, x: torch.Tensor, subjects: torch.Tensor) -> torch.Tensor:
        """(batch, channels, time) with subject indices (batch,) → same shape."""
        return torch.einsum("bct,bcd->bdt", x, self.weights[subjects])


class ResidualBlock(nn.Module):
    """Two residual dilated convolutions (batch norm, GELU), then a convolution and a GLU."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int,
        dilations: tuple[int, int],
        glu_context: int,
    ) -> None:
        super().__init__()
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        ch = in_ch
        for d in dilations:
            pad = d * (kernel_size - 1) // 2
            self.convs.append(nn.Conv1d(ch, out_ch, kernel_size, dilation=d, padding=pad))
            self.norms.append(nn.BatchNorm1d(out_ch))
            ch = out_ch
        self.in_ch = in_ch
        self.glu = nn.Conv1d(out_ch, 2 * out_ch, 1 + 2 * glu_context, padding=glu_context)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv, norm in zip(self.convs, self.norms, strict=True):
            y = F.gelu(norm(conv(x)))
            # the first convolution of the first block changes the width: no skip there
            x = x + y if x.shape[1] == y.shape[1] else y
        return F.glu(self.glu(x), dim=1)


class BrainModule(nn.Module):
    """MEG/EEG window → image embedding (Défossez et al. 2023; Benchetrit et al. 2024).

    Parameters
    ----------
    positions : array, shape (n_channels, 2)
        Sensor positions in [0, 1]² (:func:`sensor_positions_2d` of the recording's info).
    n_times : int
        Samples per input window (the temporal aggregation is a linear map over them).
    out_dim : int
        Length of the image embeddings.
    config : BrainModuleConfig
        Hyper-parameters (paper defaults when omitted).
    """

    def __init__(
        self,
        positions: NDArray[np.floating],
        n_times: int,
        out_dim: int,
        config: BrainModuleConfig | None = None,
    ) -> None:
        super().__init__()
        cfg = config or BrainModuleConfig()
        pos = np.asarray(positions)
        if pos.ndim != 2 or pos.shape[1] != 2 or pos.shape[0] < 1:
            raise ValueError(f"positions must have shape (n_channels, 2), got {pos.shape}.")
        if n_times < 1 or out_dim < 1:
            raise ValueError(f"n_times and out_dim must be positive, got {n_times}, {out_dim}.")
        self.config = cfg
        self.n_channels = int(pos.shape[0])
        self.n_times = int(n_times)
        self.out_dim = int(out_dim)
        self.spatial = SpatialAttention(pos, cfg.n_spatial, cfg.n_fourier, cfg.spatial_dropout)
        self.initial = nn.Conv1d(cfg.n_spatial, cfg.n_spatial, 1)
        self.subject_layers = SubjectLayers(cfg.n_spatial, cfg.n_subjects)
        blocks = []
        ch = cfg.n_spatial
        for k in range(cfg.n_blocks):
            dil = (2 ** ((2 * k) % cfg.dilation_period), 2 ** ((2 * k + 1) % cfg.dilation_period))
            blocks.append(ResidualBlock(ch, cfg.hidden, cfg.kernel_size, dil, cfg.glu_context))
            ch = cfg.hidden
        self.blocks = nn.Sequential(*blocks)
        self.final = nn.Sequential(nn.Conv1d(cfg.hidden, cfg.head_hidden, 1), nn.GELU())
        self.aggregate = nn.Linear(n_times, 1)
        self.clip_head = _mlp_head(cfg.head_hidden, out_dim)
        self.mse_head = _mlp_head(cfg.head_hidden, out_dim)
        # CLIP temperature, learned in log space (initial 1/0.07 as in CLIP)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def features(self, x: torch.Tensor, subjects: torch.Tensor) -> torch.Tensor:
        """Aggregated features (batch, head_hidden) of windows (batch, n_channels, n_times)."""
        if x.ndim != 3 or x.shape[1] != self.n_channels or x.shape[2] != self.n_times:
            raise ValueError(
                f"Expected windows of shape (batch, {self.n_channels}, {self.n_times}), got "
                f"{tuple(x.shape)}."
            )
        h = self.subject_layers(self.initial(self.spatial(x)), subjects)
        h = self.final(self.blocks(h))
        return self.aggregate(h).squeeze(-1)

    def forward(
        self, x: torch.Tensor, subjects: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """CLIP-head and MSE-head outputs, each (batch, out_dim).

        Parameters
        ----------
        x : tensor, shape (batch, n_channels, n_times)
            Preprocessed windows.
        subjects : tensor of int, shape (batch,) | None
            Subject index of each window (all 0 when None).
        """
        if subjects is None:
            subjects = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        h = self.features(x, subjects)
        return self.clip_head(h), self.mse_head(h)

    def n_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


def _mlp_head(n_in: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.LayerNorm(n_in), nn.GELU(), nn.Linear(n_in, n_out))


class RetrievalHead(nn.Module):
    """The exported part: one subject's CLIP-head embedding of a window, L2-normalised.

    Input ``x`` (batch, n_channels, n_context + n_times) float32, the preprocessed span the
    decode engine hands over (context samples serve the baseline and are dropped here);
    output (batch, out_dim). The spatial attention and the subject's layer are fixed (eval
    mode), so the graph is plain matrix products and convolutions.

    Parameters
    ----------
    module : BrainModule
        The trained module.
    subject : int
        Whose per-subject layer to use.
    n_context : int
        Samples before the window in each input.
    """

    def __init__(self, module: BrainModule, subject: int = 0, n_context: int = 0) -> None:
        super().__init__()
        if not 0 <= subject < module.config.n_subjects:
            raise ValueError(
                f"subject must be in 0..{module.config.n_subjects - 1}, got {subject}."
            )
        if n_context < 0:
            raise ValueError(f"n_context must be non-negative, got {n_context}.")
        self.module = module.eval()
        self.subject = subject
        self.n_context = n_context

    @property
    def n_input_times(self) -> int:
        """Samples per input: context plus window."""
        return self.n_context + self.module.n_times

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, self.n_context :]
        subjects = torch.full((x.shape[0],), self.subject, dtype=torch.long, device=x.device)
        clip, _ = self.module(x, subjects)
        return F.normalize(clip, dim=-1)


# --------------------------------------------------------------------------- losses


def clip_loss(
    predicted: torch.Tensor,
    targets: torch.Tensor,
    logit_scale: torch.Tensor | float = 1 / 0.07,
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """Contrastive (CLIP) loss of brain embeddings against image embeddings.

    Each prediction must pick its own image among the candidate images: the cross-entropy
    of the softmax over scaled cosine similarities, with the matched image as the correct
    class (brain → image direction, as in Défossez et al.).

    Parameters
    ----------
    predicted : tensor, shape (batch, dim)
        CLIP-head outputs.
    targets : tensor, shape (batch, dim) or (n_candidates, dim)
        Candidate image embeddings: the batch's images in order when ``labels`` is None,
        otherwise any set of images that ``labels`` indexes (so that a batch may hold
        several responses to the same image without contradicting itself).
    logit_scale : tensor | float
        Inverse temperature, or its logarithm when given as a parameter tensor of the module
        (see :attr:`BrainModule.logit_scale`, exponentiated here and capped at 100).
    labels : tensor of int, shape (batch,) | None
        Row of ``targets`` that each prediction should match.

    Returns
    -------
    loss : tensor
        Scalar mean loss.
    """
    if predicted.ndim != 2 or targets.ndim != 2 or predicted.shape[1] != targets.shape[1]:
        raise ValueError(
            f"predicted and targets must be (batch, dim) and (n, dim), got "
            f"{tuple(predicted.shape)} and {tuple(targets.shape)}."
        )
    if labels is None:
        if targets.shape[0] != predicted.shape[0]:
            raise ValueError("Without labels, targets must have one row per prediction.")
        labels = torch.arange(predicted.shape[0], device=predicted.device)
    scale = logit_scale.exp().clamp(max=100.0) if torch.is_tensor(logit_scale) else logit_scale
    logits = scale * F.normalize(predicted, dim=-1) @ F.normalize(targets, dim=-1).T
    return F.cross_entropy(logits, labels)


@dataclass
class CombinedLoss:
    """``λ·CLIP + (1 − λ)·MSE`` of the two heads (Benchetrit et al. 2024).

    Attributes
    ----------
    clip_weight : float
        λ in [0, 1].
    """

    clip_weight: float = 0.75
    last: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 <= self.clip_weight <= 1:
            raise ValueError(f"clip_weight (λ) must be in [0, 1], got {self.clip_weight}.")

    def __call__(
        self,
        module: BrainModule,
        outputs: tuple[torch.Tensor, torch.Tensor],
        candidates: torch.Tensor,
        labels: torch.Tensor,
    ) -> torch.Tensor:
        """Loss of the two heads' outputs.

        Parameters
        ----------
        module : BrainModule
            The module (for its learned CLIP temperature).
        outputs : tuple of tensor
            CLIP-head and MSE-head outputs, each (batch, dim).
        candidates : tensor, shape (n_candidates, dim)
            Embeddings of the images in the batch (each once).
        labels : tensor of int, shape (batch,)
            Row of ``candidates`` seen in each window.
        """
        clip_out, mse_out = outputs
        lc = clip_loss(clip_out, candidates, module.logit_scale, labels)
        # squared error summed over the embedding: O(1) for unit-norm targets, like the CLIP term
        lm = ((mse_out - candidates[labels]) ** 2).sum(dim=-1).mean()
        self.last = {"clip": float(lc.detach()), "mse": float(lm.detach())}
        return self.clip_weight * lc + (1 - self.clip_weight) * lm
