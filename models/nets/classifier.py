"""The scalogram transfer classifier (torch; training and export only).

Jhilal, Martin & Giraud (2026) decode imagined speech from MEG by turning Morlet scalograms
(sensors × frequencies × time, z-scored) into images: a learnable 1×1 convolution mixes all
sensors into three "spatial scalogram mixtures" (the image's colour channels), the image is
resized bilinearly to 224×224 and fed to an ImageNet-pretrained vision backbone (ResNet-18 or
ViT-Tiny in the study) with a new classification head, trained by partial fine-tuning (early
layers frozen, last block at lr 1e-4, head at lr 1e-3). Reported balanced accuracy: imagined
speech vs silence 90.4 %, vs silent reading 81.0 %, three vowels 60.6 %; without ImageNet
pretraining 81.6 %; a fixed PCA-3 projection instead of the learned mixing costs 3.9 points.

The modules here follow braindecode's style: small ``nn.Module`` classes named as in the paper,
with its hyperparameters as defaults. Both ablations of the study are options of
:class:`ScalogramClassifier`: ``pretrained=False`` (random initialisation, every layer trained)
and ``mixing="pca3"`` (a fixed PCA projection fitted on training data).

References
----------
Jhilal S, Martin S, Giraud A-L (2026). Transfer learning from ImageNet for MEG-based decoding
of imagined speech. https://arxiv.org/abs/2601.15909
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import nn

from neurocast.models.nets.backbones import Backbone, build_backbone

MixingKind = Literal["learned", "pca3"]
MixingInit = Literal["discriminant", "random"]

# Power below this (in the scalogram's squared units) is treated as this before the log, so
# flat or zero-padded channels do not give -inf.
POWER_FLOOR = 1e-30


class ScalogramStandardizer(nn.Module):
    """Log power, z-scored per sensor and frequency with statistics of the training data.

    The statistics are fixed buffers, so a streamed window is scaled exactly as the training
    windows were (a per-window z-score would erase the band-power differences that motor
    imagery and speech imagery produce).

    Parameters
    ----------
    mean, std : array, shape (n_channels, n_freqs)
        Mean and standard deviation of ``log(power)`` over training windows and time.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: NDArray[np.floating], std: NDArray[np.floating]) -> None:
        super().__init__()
        if mean.shape != std.shape or mean.ndim != 2:
            raise ValueError(
                "mean and std must both be (n_channels, n_freqs), got "
                f"{mean.shape} and {std.shape}."
            )
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32)[..., None])
        self.register_buffer(
            "std", torch.as_tensor(np.maximum(std, 1e-6), dtype=torch.float32)[..., None]
        )

    @classmethod
    def fit(cls, power: NDArray[np.floating]) -> ScalogramStandardizer:
        """Fit on training scalograms of shape (n_windows, n_channels, n_freqs, n_times)."""
        logp = np.log(np.maximum(power, POWER_FLOOR))
        return cls(logp.mean(axis=(0, 3)), logp.std(axis=(0, 3)))

    def forward(self, power: torch.Tensor) -> torch.Tensor:
        return (torch.log(torch.clamp(power, min=POWER_FLOOR)) - self.mean) / self.std


class SensorMixing(nn.Module):
    """The learnable 1×1 convolution mixing all sensors into three image channels.

    Sensors are the input channels of a ``Conv2d`` over the frequency × time plane, so each
    output channel is one learned spatial filter applied to every scalogram pixel.

    Parameters
    ----------
    n_channels : int
        Number of sensors.
    n_outputs : int
        Image channels (3, as the backbones expect RGB).
    """

    def __init__(self, n_channels: int, n_outputs: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(n_channels, n_outputs, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)

    @torch.no_grad()
    def init_discriminant(self, z: NDArray[np.floating], labels: NDArray[np.integer]) -> None:
        """Start from discriminant spatial filters instead of random weights (still trained).

        With a few dozen training trials, a randomly initialised mixing dilutes the few
        sensors that carry the classes among all the others, and the frozen backbone gives
        it almost no gradient to find them (the model then fits trial-specific detail). Here
        the first ``n_classes - 1`` outputs (at most 3) are the shrinkage-LDA directions of
        the windows' mean sensor log-power (Ledoit-Wolf shrinkage, as in MNE's and
        scikit-learn's regularised LDA), the remaining outputs the leading principal axes of
        the pixels (as :class:`PCAMixing`); each output is centred and scaled to unit
        variance over the training pixels.

        Parameters
        ----------
        z : array, shape (n_windows, n_channels, n_freqs, n_times)
            Standardised training scalograms (:class:`ScalogramStandardizer` output).
        labels : array of int, shape (n_windows,)
            Class of each window.
        """
        from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

        n_out, n_channels = self.conv.weight.shape[:2]
        if len(np.unique(labels)) < 2:
            raise ValueError(
                "A discriminant start of the mixing needs training windows of at least two "
                f"classes, got classes {np.unique(labels).tolist()}; check the trial labels."
            )
        pixels = np.moveaxis(np.asarray(z, dtype=np.float64), 1, -1).reshape(-1, n_channels)
        center, axes = _principal_axes(pixels, n_out)
        lda = LinearDiscriminantAnalysis(solver="eigen", shrinkage="auto")
        lda.fit(np.asarray(z, dtype=np.float64).mean(axis=(2, 3)), labels)
        n_disc = min(len(lda.classes_) - 1, n_out)
        directions = np.vstack([lda.scalings_[:, :n_disc].T, axes[: n_out - n_disc]])
        directions /= np.maximum(((pixels - center) @ directions.T).std(axis=0), 1e-12)[:, None]
        w = torch.as_tensor(directions, dtype=torch.float32)
        self.conv.weight.copy_(w[:, :, None, None])
        assert self.conv.bias is not None  # nn.Conv2d's default bias=True
        self.conv.bias.copy_(-(w @ torch.as_tensor(center, dtype=torch.float32)))


class PCAMixing(nn.Module):
    """The study's ablation: a fixed projection on the first three principal components.

    Each scalogram pixel's sensor vector is projected on the top three principal components of
    the training data and whitened (unit variance per component, the scale a normalised image
    has). Nothing here is trained.

    Parameters
    ----------
    components : array, shape (n_outputs, n_channels)
        Whitened projection (principal axes divided by their standard deviation).
    center : array, shape (n_channels,)
        Mean sensor vector subtracted before projecting.
    """

    weight: torch.Tensor
    bias: torch.Tensor

    def __init__(self, components: NDArray[np.floating], center: NDArray[np.floating]) -> None:
        super().__init__()
        w = torch.as_tensor(components, dtype=torch.float32)
        self.register_buffer("weight", w[:, :, None, None])
        self.register_buffer("bias", -(w @ torch.as_tensor(center, dtype=torch.float32)))

    @classmethod
    def fit(cls, z: NDArray[np.floating], n_outputs: int = 3) -> PCAMixing:
        """Fit on standardised training scalograms (n_windows, n_channels, n_freqs, n_times)."""
        pixels = np.moveaxis(np.asarray(z, dtype=np.float64), 1, -1).reshape(-1, z.shape[1])
        if pixels.shape[1] < n_outputs:
            raise ValueError(
                f"PCA-{n_outputs} mixing needs at least {n_outputs} sensors, got {pixels.shape[1]}."
            )
        center, axes = _principal_axes(pixels, n_outputs)
        scale = np.maximum(((pixels - center) @ axes.T).std(axis=0, ddof=1), 1e-12)
        return cls(axes / scale[:, None], center)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias)


def _principal_axes(
    pixels: NDArray[np.float64], n: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Mean and the ``n`` leading principal axes (unit rows, shape (n, n_channels)) of pixels."""
    center = pixels.mean(axis=0)
    _, _, vt = np.linalg.svd(pixels - center, full_matrices=False)
    # the sign of a principal axis is arbitrary; fix it so fitting is reproducible
    signs = np.sign(vt[:n, np.argmax(np.abs(vt[:n]), axis=1)].diagonal())
    return center, vt[:n] * signs[:, None]


class ScalogramClassifier(nn.Module):
    """Scalogram → sensor mixing → bilinear resize → vision backbone → new head.

    Parameters
    ----------
    standardizer : ScalogramStandardizer
        Log-power z-scoring with training statistics (defines the sensor and frequency count).
    n_classes : int
        Number of classes.
    backbone : str
        ``"efficientnet-lite0"`` (ImageNet weights ship with the package), ``"resnet18"`` or
        ``"vit-tiny"`` (the study's backbones; ImageNet weights from ``weights``), or
        ``"compact"`` (small, random init; for size-limited artifacts).
    pretrained : bool
        ImageNet initialisation (True, the study's model) or random initialisation (the
        "without ImageNet pretraining" ablation, in which every layer is trained).
    mixing : {"learned", "pca3"}
        Learnable 1×1 convolution (the study's model) or fixed PCA-3 projection (the ablation);
        ``pca`` must then be given.
    pca : PCAMixing | None
        The fitted projection when ``mixing="pca3"``.
    input_size : int
        Side of the square image fed to the backbone, in pixels (224 in the study; smaller
        sizes trade accuracy for speed).
    weights : path-like | None
        ImageNet state dict for ResNet-18 / ViT-Tiny.
    dropout : float
        Dropout before the head.
    compact_width : int
        First-stage width when ``backbone="compact"``.
    """

    def __init__(
        self,
        standardizer: ScalogramStandardizer,
        n_classes: int,
        *,
        backbone: str = "efficientnet-lite0",
        pretrained: bool = True,
        mixing: MixingKind = "learned",
        pca: PCAMixing | None = None,
        input_size: int = 224,
        weights: str | None = None,
        dropout: float = 0.2,
        compact_width: int = 16,
    ) -> None:
        super().__init__()
        if n_classes < 2:
            raise ValueError(f"A classifier needs at least 2 classes, got {n_classes}.")
        if input_size < 32:
            raise ValueError(f"input_size must be at least 32 pixels, got {input_size}.")
        n_channels, n_freqs = (int(n) for n in standardizer.mean.shape[:2])
        self.standardizer = standardizer
        self.mixing: nn.Module
        if mixing == "learned":
            self.mixing = SensorMixing(n_channels)
        elif mixing == "pca3":
            if pca is None:
                raise ValueError("mixing='pca3' needs a fitted PCAMixing (PCAMixing.fit).")
            if pca.weight.shape[1] != n_channels:
                raise ValueError(
                    f"The PCA projection was fitted on {pca.weight.shape[1]} sensors, the "
                    f"standardizer on {n_channels}."
                )
            self.mixing = pca
        else:
            raise ValueError(f"Unknown mixing {mixing!r}; choose 'learned' or 'pca3'.")
        self.input_size = input_size
        self.backbone: Backbone = build_backbone(
            backbone,
            pretrained=pretrained,
            weights=weights,
            image_size=input_size,
            width=compact_width,
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(self.backbone.n_features, n_classes)
        self.n_classes = n_classes
        self.config: dict[str, object] = {
            "backbone": backbone,
            "pretrained": pretrained,
            "mixing": mixing,
            "input_size": input_size,
            "n_channels": n_channels,
            "n_freqs": n_freqs,
            "n_classes": n_classes,
        }
        norms = [
            m for m in self.backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
        ]
        self._frozen_norms: list[nn.modules.batchnorm._BatchNorm] = []
        if pretrained:
            keep = {id(p) for m in self.backbone.last_block() for p in m.parameters()}
            for p in self.backbone.parameters():
                p.requires_grad_(id(p) in keep)
            # batch statistics of a few dozen strongly correlated windows are too noisy to
            # replace ImageNet's (and, at TensorFlow's momentum, would barely move them), so
            # every normalisation keeps its ImageNet statistics; the last block still trains
            # its affine parameters
            self._frozen_norms = norms
        else:
            for m in norms:  # random init: statistics must be learnt within a few epochs
                m.momentum = 0.1
        self.train(False)

    def train(self, mode: bool = True) -> ScalogramClassifier:
        """Set training mode; pretrained batch-norm layers keep their ImageNet statistics."""
        super().train(mode)
        for m in self._frozen_norms:
            m.train(False)
        return self

    def image(self, power: torch.Tensor) -> torch.Tensor:
        """The three-channel image the backbone sees, (batch, 3, input_size, input_size)."""
        x = self.mixing(self.standardizer(power))
        return F.interpolate(
            x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False
        )

    def forward(self, power: torch.Tensor) -> torch.Tensor:
        """Class logits for scalograms of shape (batch, n_channels, n_freqs, n_times)."""
        return self.head(self.dropout(self.backbone(self.image(power))))

    def param_groups(
        self, lr_last_block: float = 1e-4, lr_new: float = 1e-3
    ) -> list[dict[str, object]]:
        """Optimizer parameter groups of partial fine-tuning.

        Parameters
        ----------
        lr_last_block : float
            Learning rate of the pretrained last block (1e-4 in the study).
        lr_new : float
            Learning rate of the new layers: mixing and head (1e-3 in the study); with a random
            initialisation every backbone layer is new and uses it too.

        Returns
        -------
        groups : list of dict
            ``{"name", "params", "lr"}`` for each non-empty group; frozen parameters are left
            out.
        """
        backbone = [p for p in self.backbone.parameters() if p.requires_grad]
        new = [p for p in (*self.mixing.parameters(), *self.head.parameters()) if p.requires_grad]
        if self.config["pretrained"]:
            groups = [("last_block", backbone, lr_last_block), ("new", new, lr_new)]
        else:
            groups = [("new", backbone + new, lr_new)]
        return [{"name": n, "params": ps, "lr": lr} for n, ps, lr in groups if ps]
