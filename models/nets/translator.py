"""EEG→MEG translation networks (torch; training and export only).

:class:`EEGToMEGUNet` follows the EEG "super-resolution" study that motivates model family 4
of the design brief: a U-Net whose encoder convolves the EEG over time (channels × time), a
recurrent bidirectional LSTM bottleneck, and a decoder that up-samples back to the input
length and outputs every MEG channel, trained with the mean squared error and Adam. The study
over-fitted its little simultaneous data and lost to ICA; two choices here follow from that:

- the network is trained on physics-based simulation (:mod:`.translation_data`,
  :mod:`.translation`), where simultaneous EEG and MEG are unlimited, and judged on real
  simultaneous recordings it never saw;
- a **linear path** (one 1 × 1 convolution from the EEG to the MEG channels, initialised
  with the ridge baseline's map) runs beside the U-Net, whose output is added to it: volume
  conduction is instantaneous and linear, so the linear map is the physically expected core
  of any EEG→MEG translation and the U-Net learns what it misses.

Both models re-reference their input to the common average first: the simulator's EEG is
average-referenced, recordings use whatever reference the amplifier had, and the average
reference makes the translation independent of that choice.

References
----------
Ronneberger O, Fischer P, Brox T (2015). U-Net: convolutional networks for biomedical image
segmentation. MICCAI, LNCS 9351, 234–241.
Hochreiter S, Schmidhuber J (1997). Long short-term memory. Neural Computation 9, 1735–1780.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import nn


@dataclass(frozen=True)
class TranslatorConfig:
    """Sizes of :class:`EEGToMEGUNet`.

    Attributes
    ----------
    n_eeg : int
        EEG input channels.
    n_meg : int
        MEG output channels (magnetometers and gradiometers).
    n_times : int
        Samples per input window; must be divisible by ``2 ** depth``.
    base_channels : int
        Feature channels at the first level; each deeper level doubles them.
    depth : int
        Down-sampling levels of the encoder (each halves the time axis).
    lstm_hidden : int
        Hidden units per direction of the Bi-LSTM bottleneck.
    kernel_size : int
        Temporal kernel of the convolutions (odd).
    dropout : float
        Dropout before the output layer during training.
    """

    n_eeg: int
    n_meg: int
    n_times: int
    base_channels: int = 32
    depth: int = 2
    lstm_hidden: int = 64
    kernel_size: int = 5
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.n_eeg < 2 or self.n_meg < 1:
            raise ValueError(
                f"A translator needs at least 2 EEG channels (the average reference of one "
                f"channel is zero) and 1 MEG channel, got {self.n_eeg} and {self.n_meg}."
            )
        if self.depth < 1 or self.base_channels < 1 or self.lstm_hidden < 1:
            raise ValueError("depth, base_channels and lstm_hidden must be positive.")
        if self.n_times < 2**self.depth or self.n_times % 2**self.depth:
            raise ValueError(
                f"n_times={self.n_times} must be a positive multiple of 2**depth = "
                f"{2**self.depth} so that the decoder restores the input length; pad or crop "
                "the window, or lower depth."
            )
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and positive, got {self.kernel_size}.")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}.")

    def to_dict(self) -> dict[str, Any]:
        """The configuration as plain JSON-serialisable values."""
        return asdict(self)


class CommonAverageReference(nn.Module):
    """Subtract the mean over channels at every time sample (input: batch × channels × time)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - x.mean(dim=1, keepdim=True)


class _ConvBlock(nn.Sequential):
    """Two temporal convolutions with batch normalisation and GELU."""

    def __init__(self, n_in: int, n_out: int, kernel_size: int) -> None:
        pad = kernel_size // 2
        super().__init__(
            nn.Conv1d(n_in, n_out, kernel_size, padding=pad, bias=False),
            nn.BatchNorm1d(n_out),
            nn.GELU(),
            nn.Conv1d(n_out, n_out, kernel_size, padding=pad, bias=False),
            nn.BatchNorm1d(n_out),
            nn.GELU(),
        )


class _BiLSTMBottleneck(nn.Module):
    """A bidirectional LSTM over the coarsest time axis, projected back to its channels."""

    def __init__(self, n_channels: int, hidden: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(n_channels, hidden, batch_first=True, bidirectional=True)
        self.proj = nn.Linear(2 * hidden, n_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.lstm(x.transpose(1, 2))  # (batch, time, 2 * hidden)
        return x + self.proj(h).transpose(1, 2)


class EEGToMEGUNet(nn.Module):
    """U-Net with a Bi-LSTM bottleneck translating EEG windows into every MEG channel.

    Input and output are standardised signals (see
    :class:`.translation_data.TranslationScaling`); the exported model wraps this network with
    the scaling back to tesla and tesla/metre.

    Parameters
    ----------
    config : TranslatorConfig
        Channel counts, window length and layer sizes.

    Notes
    -----
    ``forward(x)`` maps ``(batch, n_eeg, n_times)`` to ``(batch, n_meg, n_times)``: the
    average-referenced EEG goes through the linear path and the U-Net (encoder levels of
    two convolutions each followed by max-pooling by 2, the Bi-LSTM bottleneck, decoder
    levels of transposed-convolution up-sampling by 2, concatenation with the encoder's
    features of the same level and two convolutions), whose 1 × 1 output layer gives the
    correction added to the linear path.
    """

    def __init__(self, config: TranslatorConfig) -> None:
        super().__init__()
        self.config = config
        c, k = config.base_channels, config.kernel_size
        self.reference = CommonAverageReference()
        self.linear = nn.Conv1d(config.n_eeg, config.n_meg, 1)
        widths = [c * 2**level for level in range(config.depth + 1)]
        self.stem = _ConvBlock(config.n_eeg, widths[0], k)
        self.down = nn.ModuleList(
            _ConvBlock(widths[i], widths[i + 1], k) for i in range(config.depth)
        )
        self.pool = nn.MaxPool1d(2)
        self.bottleneck = _BiLSTMBottleneck(widths[-1], config.lstm_hidden)
        self.up = nn.ModuleList(
            nn.ConvTranspose1d(widths[i + 1], widths[i], 2, stride=2)
            for i in reversed(range(config.depth))
        )
        self.merge = nn.ModuleList(
            _ConvBlock(2 * widths[i], widths[i], k) for i in reversed(range(config.depth))
        )
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Conv1d(widths[0], config.n_meg, 1)
        # the U-Net starts as a zero correction: training begins at the linear path's fit
        nn.init.zeros_(self.head.weight)
        assert self.head.bias is not None
        nn.init.zeros_(self.head.bias)

    def set_linear_map(self, weight: ArrayLike, bias: ArrayLike | None = None) -> None:
        """Set the linear path to a given map (e.g. the ridge baseline's).

        Parameters
        ----------
        weight : array, shape (n_meg, n_eeg)
            Standardised MEG per unit of standardised, average-referenced EEG.
        bias : array, shape (n_meg,) | None
            Offset of each MEG channel (zero when None).
        """
        w = torch.as_tensor(np.asarray(weight), dtype=torch.float32)
        expected = (self.config.n_meg, self.config.n_eeg)
        if tuple(w.shape) != expected:
            raise ValueError(f"weight must have shape {expected}, got {tuple(w.shape)}.")
        b = torch.zeros(expected[0]) if bias is None else torch.as_tensor(bias).float()
        assert self.linear.bias is not None
        with torch.no_grad():
            self.linear.weight.copy_(w[:, :, None])
            self.linear.bias.copy_(b.reshape(-1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Translate standardised EEG ``(batch, n_eeg, n_times)`` to ``(batch, n_meg, n_times)``."""
        x = self.reference(x)
        skips = [self.stem(x)]
        h = skips[0]
        for block in self.down:
            h = block(self.pool(h))
            skips.append(h)
        h = self.bottleneck(skips.pop())
        for up, merge in zip(self.up, self.merge, strict=True):
            h = merge(torch.cat([up(h), skips.pop()], dim=1))
        return self.linear(x) + self.head(self.dropout(h))

    def n_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


class LinearTranslator(nn.Module):
    """The ridge baseline as a module: average reference, then one EEG→MEG matrix per sample.

    Parameters
    ----------
    weight : array, shape (n_meg, n_eeg)
        Standardised MEG per unit of standardised, average-referenced EEG.
    bias : array, shape (n_meg,)
        Offset of each MEG channel.
    """

    def __init__(self, weight: ArrayLike, bias: ArrayLike) -> None:
        super().__init__()
        w = torch.as_tensor(np.asarray(weight), dtype=torch.float32)
        if w.ndim != 2:
            raise ValueError(f"weight must be (n_meg, n_eeg), got shape {tuple(w.shape)}.")
        self.reference = CommonAverageReference()
        self.linear = nn.Conv1d(w.shape[1], w.shape[0], 1)
        assert self.linear.bias is not None
        with torch.no_grad():
            self.linear.weight.copy_(w[:, :, None])
            self.linear.bias.copy_(torch.as_tensor(np.asarray(bias)).float().reshape(-1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Translate standardised EEG ``(batch, n_eeg, n_times)`` to ``(batch, n_meg, n_times)``."""
        return self.linear(self.reference(x))


class ScaledTranslator(nn.Module):
    """A translator in physical units, as exported: crop to the window and scale to SI.

    Parameters
    ----------
    net : nn.Module
        Maps standardised EEG ``(batch, n_eeg, n_times)`` to standardised MEG of the same
        length (:class:`EEGToMEGUNet` or :class:`LinearTranslator`).
    meg_scale : array, shape (n_meg,)
        Standard deviation of each MEG channel in the training data (tesla for
        magnetometers, tesla/metre for gradiometers): the output is multiplied by it.
    n_output_times : int
        The last ``n_output_times`` samples are returned (the window; the samples before it
        are context the network reads but does not translate for the caller).
    """

    def __init__(self, net: nn.Module, meg_scale: ArrayLike, n_output_times: int) -> None:
        super().__init__()
        if n_output_times < 1:
            raise ValueError(f"n_output_times must be positive, got {n_output_times}.")
        self.net = net
        scale = torch.as_tensor(np.asarray(meg_scale, dtype=np.float32))
        self.register_buffer("meg_scale", scale.reshape(1, -1, 1))
        self.n_output_times = int(n_output_times)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Standardised EEG ``(batch, n_eeg, n_times)`` to MEG in SI units, last samples only."""
        y = self.net(x)[..., -self.n_output_times :]
        return y * self.meg_scale
