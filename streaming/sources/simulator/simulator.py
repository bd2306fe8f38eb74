"""The embedded physics-based MEG/EEG simulator: the default source when no device is connected.

Current dipoles in a spherical head (:mod:`.geometry`) are projected through MNE forward
models onto EEG electrodes and MEG coils, so EEG and MEG show the same sources at the same
time. The activity has three parts:

- **Classes** of ongoing activity, delivered in blocks marked ``"class/<name>"``: each class
  sets the strength of band-limited rhythms under named scalp sites (:data:`CLASSES`,
  :data:`RHYTHMS`), e.g. occipito-parietal alpha for ``"rest"``, left temporal/frontal beta
  and gamma for ``"speech"``.
- **Image-evoked responses**, marked ``"image/<id>"``: visual-cortex dipoles whose
  amplitudes are a fixed linear map of the image's embedding vector (plus an
  image-independent part), with components peaking 100 and 240 ms after onset and after
  offset (:data:`EVOKED_COMPONENTS`).
- **Noise**: 1/f (pink) background activity of dipoles spread over the cortex, plus white
  sensor noise of realistic spectral density or noise drawn from a measured noise covariance.

Data are in volts (EEG, average reference), tesla (magnetometers) and tesla/metre
(gradiometers). Everything is deterministic given ``seed`` (activity, noise, block and
image order) and ``subject_seed`` (source orientations and the embedding-to-source map, so
that decoders trained on one seed decode streams of another). Every output is labelled as
simulated.
"""

from __future__ import annotations

import bisect
import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import mne
import numpy as np
from mne.io.constants import FIFF
from numpy.typing import ArrayLike, NDArray
from scipy import signal
from threadpoolctl import ThreadpoolController

from neurocast.streaming.sources.base import (
    SIMULATED_TAG,
    Chunk,
    Marker,
    SourceError,
    SourceStatus,
    StreamInfo,
    local_clock,
    require_open,
)
from neurocast.streaming.sources.simulator.geometry import (
    Modality,
    default_info,
    default_sphere,
    forward_gain,
    head_sphere,
    load_info,
)
from neurocast.streaming.sources.simulator.geometry import template_directions as _directions
from neurocast.streaming.sources.specs import SimulatorSpec

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rhythm:
    """Band-limited activity of dipoles under named scalp sites.

    Attributes
    ----------
    name : str
        Identifier used in :attr:`ActivityClass.gains`.
    sites : tuple of str
        10-05 electrode names; one dipole lies under each, with its own independent signal.
    band_hz : tuple of float
        Pass band in Hz.
    amplitude_nam : float
        RMS dipole moment in nA·m at gain 1.
    """

    name: str
    sites: tuple[str, ...]
    band_hz: tuple[float, float]
    amplitude_nam: float


@dataclass(frozen=True)
class ActivityClass:
    """A class of ongoing activity: how strong each rhythm is while it lasts.

    Attributes
    ----------
    name : str
        Marker text after ``"class/"``.
    description : str
        What it imitates.
    gains : dict of str to float
        Rhythm name to gain (amplitude factor); rhythms not listed have gain 0.
    """

    name: str
    description: str
    gains: dict[str, float]


@dataclass(frozen=True)
class EvokedComponent:
    """One Gaussian-shaped component of the image-evoked response.

    Attributes
    ----------
    anchor : {"onset", "offset"}
        Whether the latency counts from image onset or offset.
    latency_s : float
        Peak latency in seconds.
    width_s : float
        Standard deviation of the Gaussian time course in seconds.
    scale : float
        Relative amplitude.
    """

    anchor: Literal["onset", "offset"]
    latency_s: float
    width_s: float
    scale: float


RHYTHMS: tuple[Rhythm, ...] = (
    Rhythm("occipital_alpha", ("O1", "Oz", "O2", "PO3", "PO4"), (8.0, 12.0), 45.0),
    Rhythm("left_mu", ("C3",), (9.0, 13.0), 45.0),
    Rhythm("right_mu", ("C4",), (9.0, 13.0), 45.0),
    Rhythm("left_sensorimotor_beta", ("C3",), (16.0, 24.0), 30.0),
    Rhythm("right_sensorimotor_beta", ("C4",), (16.0, 24.0), 30.0),
    Rhythm("left_temporal_beta", ("T7", "FT7", "F7", "FC5"), (15.0, 25.0), 35.0),
    Rhythm("left_temporal_gamma", ("T7", "FT7", "F7"), (30.0, 45.0), 25.0),
)

CLASSES: tuple[ActivityClass, ...] = (
    ActivityClass(
        "rest",
        "relaxed rest: strong occipito-parietal alpha (8-12 Hz)",
        {
            "occipital_alpha": 1.0,
            "left_mu": 0.6,
            "right_mu": 0.6,
            "left_sensorimotor_beta": 0.5,
            "right_sensorimotor_beta": 0.5,
            "left_temporal_beta": 0.15,
            "left_temporal_gamma": 0.1,
        },
    ),
    ActivityClass(
        "speech",
        "speech imagery: left temporal/inferior-frontal beta (15-25 Hz) and gamma (30-45 Hz), "
        "alpha suppressed",
        {
            "occipital_alpha": 0.25,
            "left_mu": 0.5,
            "right_mu": 0.5,
            "left_sensorimotor_beta": 0.4,
            "right_sensorimotor_beta": 0.4,
            "left_temporal_beta": 1.0,
            "left_temporal_gamma": 1.0,
        },
    ),
    ActivityClass(
        "motor",
        "right-hand motor imagery: mu (9-13 Hz) and beta (16-24 Hz) desynchronise over the "
        "left sensorimotor cortex (C3) but not the right (C4)",
        {
            "occipital_alpha": 0.5,
            "left_mu": 0.1,
            "right_mu": 0.6,
            "left_sensorimotor_beta": 0.1,
            "right_sensorimotor_beta": 0.5,
            "left_temporal_beta": 0.15,
            "left_temporal_gamma": 0.1,
        },
    ),
)

#: 10-05 sites over visual cortex; two tangential dipoles under each carry image responses.
IMAGE_SITES: tuple[str, ...] = (
    "O1", "Oz", "O2", "PO7", "PO3", "POz", "PO4", "PO8", "P7", "P8", "PO9", "PO10",
)  # fmt: skip

EVOKED_COMPONENTS: tuple[EvokedComponent, ...] = (
    EvokedComponent("onset", 0.100, 0.020, 1.0),
    EvokedComponent("onset", 0.240, 0.040, 1.0),
    EvokedComponent("offset", 0.100, 0.020, 0.6),
    EvokedComponent("offset", 0.240, 0.040, 0.6),
)

# Dipole depths as fractions of the scalp radius (the innermost shell lies at 0.90).
_CORTEX_DEPTH = 0.78
_IMAGE_DEPTH = 0.75
_BACKGROUND_DEPTH = (0.68, 0.80)
_N_BACKGROUND = 96
# Rhythm dipoles tilt this far out of the tangent plane (gyral crowns are partly radial).
_RHYTHM_TILT_DEG = 30.0
# Per-dipole moments, nA·m: 1/f background (rms), image-specific evoked response per unit
# embedding norm (rms over dipoles) and image-independent evoked response (rms).
_BACKGROUND_NAM = 9.0
_EVOKED_NAM = 12.0
_EVOKED_COMMON_NAM = 8.0
# White sensor noise spectral densities (VectorView and EEG-amplifier orders of magnitude).
SENSOR_NOISE_DENSITY = {
    "mag": 3e-15,  # T/sqrt(Hz)
    "grad": 2e-13,  # T/m/sqrt(Hz), i.e. 2 fT/cm/sqrt(Hz)
    "eeg": 1e-7,  # V/sqrt(Hz)
}
_RAMP_S = 0.3  # class transitions fade over this long
_WARMUP_SAMPLES = 4000  # filter settling before the first sample
_MIN_SFREQ = 100.0
_RENDER_AHEAD_S = 0.2  # generate() renders at least this much at a time
# After an image's offset its response lasts until the latest component has decayed.
_EVOKED_TAIL_S = max(c.latency_s + 4 * c.width_s for c in EVOKED_COMPONENTS)


def default_image_set(
    n_images: int = 100, dim: int = 64, seed: int = 0
) -> tuple[NDArray[np.float32], list[str]]:
    """Seeded random unit-norm image embeddings and their ids.

    Parameters
    ----------
    n_images : int
        Number of images.
    dim : int
        Embedding dimension.
    seed : int
        Random seed (the simulator uses its ``subject_seed``).

    Returns
    -------
    embeddings : ndarray, shape (n_images, dim), float32
        Unit-norm rows.
    ids : list of str
        ``"img000"``, ``"img001"``, ...
    """
    if n_images < 1 or dim < 1:
        raise ValueError(f"n_images and dim must be positive, got {n_images} and {dim}.")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x1A6E5]))
    emb = rng.standard_normal((n_images, dim))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return emb.astype(np.float32), [f"img{i:03d}" for i in range(n_images)]


def load_image_set(path: str | Path) -> tuple[NDArray[np.float32], list[str]]:
    """Image embeddings and ids from an ``.npz`` file.

    The file holds ``embeddings`` (n_images, dim) and ``ids`` or ``image_ids`` (n_images,)
    strings, so a gallery written by ``neurocast gallery build`` works as it is.

    Raises
    ------
    ValueError
        If the file is unreadable or the arrays are missing or inconsistent.
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            emb = np.asarray(z["embeddings"], dtype=np.float32)
            ids = [str(i) for i in z["ids" if "ids" in z.files else "image_ids"]]
    except (OSError, KeyError, ValueError) as exc:
        raise ValueError(
            f"Cannot read image embeddings from {path!s}: {exc}. Expected an .npz file with "
            "arrays 'embeddings' (n_images, dim) and 'ids' or 'image_ids' (n_images,)."
        ) from exc
    _check_image_set(emb, ids)
    return emb, ids


def _check_image_set(emb: NDArray[np.floating], ids: Sequence[str]) -> None:
    if emb.ndim != 2 or emb.shape[0] < 1 or emb.shape[1] < 1:
        raise ValueError(f"Image embeddings must be a 2-D array (n_images, dim), got {emb.shape}.")
    if len(ids) != emb.shape[0]:
        raise ValueError(
            f"Got {len(ids)} image ids for {emb.shape[0]} embeddings; they must match."
        )
    if len(set(ids)) != len(ids):
        raise ValueError("Image ids must be unique.")
    if not np.all(np.isfinite(emb)):
        raise ValueError("Image embeddings contain NaN or infinite values.")


@dataclass(frozen=True)
class SimulatedEpochs:
    """Simulated epochs of all channels with their labels.

    Attributes
    ----------
    data : ndarray, shape (n_epochs, n_channels, n_times), float32
        Volts (EEG), tesla (magnetometers), tesla/metre (gradiometers).
    times : ndarray, shape (n_times,)
        Seconds relative to the epoch's event (block or image onset).
    info : mne.Info
        The simulator's channels; EEG and MEG of the same trials are columns of ``data``.
    labels : ndarray, shape (n_epochs,), int
        Index into ``label_names``: the class, or the image (row of the embeddings given).
    label_names : list of str
        Class names, or image ids.
    kind : {"class", "image"}
        What the labels mean.
    simulated : bool
        Always True.
    """

    data: NDArray[np.float32]
    times: NDArray[np.float64]
    info: mne.Info
    labels: NDArray[np.int64]
    label_names: list[str]
    kind: Literal["class", "image"]
    simulated: bool = True

    def get_data(self, picks: str | Sequence[str] | None = None) -> NDArray[np.float32]:
        """Data of some channels: a type (``"eeg"``, ``"meg"``, ``"mag"``, ``"grad"``) or names."""
        return self.data[:, _pick(self.info, picks)]

    def to_mne(self) -> mne.EpochsArray:
        """The epochs as an :class:`mne.EpochsArray` with events ``<kind>/<label name>``."""
        names = [f"{self.kind}/{n}" for n in self.label_names]
        used = sorted(set(self.labels.tolist()))
        events = np.c_[
            np.arange(len(self.labels)) * len(self.times), np.zeros(len(self.labels)), self.labels
        ].astype(int)
        return mne.EpochsArray(
            self.data.astype(np.float64),
            self.info,
            events=events,
            tmin=float(self.times[0]),
            event_id={names[i]: i for i in used},
            verbose="error",
        )


def _pick(info: mne.Info, picks: str | Sequence[str] | None) -> NDArray[np.intp]:
    types = np.array(info.get_channel_types())
    if picks is None:
        return np.arange(len(types))
    if isinstance(picks, str):
        wanted = {"meg": ("mag", "grad")}.get(picks, (picks,))
        idx = np.flatnonzero(np.isin(types, wanted))
        if not len(idx):
            raise ValueError(f"No {picks!r} channels here; channel types are {sorted(set(types))}.")
        return idx
    names = list(info["ch_names"])
    missing = [p for p in picks if p not in names]
    if missing:
        raise ValueError(f"Unknown channels {missing}.")
    return np.array([names.index(p) for p in picks], dtype=np.intp)


class _SourceModel:
    """Dipoles of one simulated subject and their lead field onto the sensors."""

    def __init__(
        self,
        info: mne.Info,
        sphere: mne.bem.ConductorModel,
        subject_seed: int,
        cache_dir: str | Path | None,
    ) -> None:
        rng = np.random.default_rng(np.random.SeedSequence([subject_seed, 0x50BCE]))
        r0 = np.asarray(sphere["r0"], dtype=float)
        scalp = float(sphere["layers"][-1]["rad"])

        # rhythm dipoles: one per site, tangential tilted partly radial
        sites = [s for rh in RHYTHMS for s in rh.sites]
        d = _directions(sites)
        tilt = np.radians(_RHYTHM_TILT_DEG)
        rh_nn = np.cos(tilt) * _random_tangents(d, rng) + np.sin(tilt) * d
        rh_rr = r0 + _CORTEX_DEPTH * scalp * d
        self.rhythm_of_dipole = np.array(
            [i for i, rh in enumerate(RHYTHMS) for _ in rh.sites], dtype=np.intp
        )

        # image dipoles: two orthogonal tangential dipoles per site (MEG-visible)
        d = _directions(IMAGE_SITES)
        t1 = _random_tangents(d, rng)
        t2 = np.cross(d, t1)
        im_rr = np.repeat(r0 + _IMAGE_DEPTH * scalp * d, 2, axis=0)
        im_nn = np.stack([t1, t2], axis=1).reshape(-1, 3)

        # background dipoles: spread over the upper head, random orientations
        d = _fibonacci_directions(_N_BACKGROUND)
        depth = rng.uniform(*_BACKGROUND_DEPTH, size=(_N_BACKGROUND, 1))
        bg_rr = r0 + depth * scalp * d
        bg_nn = rng.standard_normal((_N_BACKGROUND, 3))
        bg_nn /= np.linalg.norm(bg_nn, axis=1, keepdims=True)

        rr = np.concatenate([rh_rr, im_rr, bg_rr])
        nn = np.concatenate([rh_nn, im_nn, bg_nn])
        gain = forward_gain(info, sphere, rr, nn, cache_dir=cache_dir).copy()
        eeg = np.array(info.get_channel_types()) == "eeg"
        if eeg.any():
            gain[eeg] -= gain[eeg].mean(axis=0)  # average reference
        self.gain = gain
        n_rh, n_im = len(rh_rr), len(im_rr)
        self.rhythm_slice = slice(0, n_rh)
        self.image_slice = slice(n_rh, n_rh + n_im)
        self.background_slice = slice(n_rh + n_im, len(rr))
        self.n_sources = len(rr)
        self.n_image_sources = n_im
        self.subject_seed = subject_seed
        self.common_response = (
            _EVOKED_COMMON_NAM * 1e-9 * rng.standard_normal((len(EVOKED_COMPONENTS), n_im))
        )

    def image_map(self, dim: int) -> NDArray[np.float64]:
        """The fixed linear map from an embedding to evoked dipole moments, (n_comp, K, dim)."""
        rng = np.random.default_rng(np.random.SeedSequence([self.subject_seed, dim, 0x1A6E]))
        return rng.standard_normal((len(EVOKED_COMPONENTS), self.n_image_sources, dim))

    def image_responses(self, embeddings: NDArray[np.floating]) -> NDArray[np.float64]:
        """Dipole moments (A·m) per image and component: (n_images, n_comp, K)."""
        emb = np.asarray(embeddings, dtype=np.float64)
        scales = np.array([c.scale for c in EVOKED_COMPONENTS])[None, :, None]
        specific = np.einsum("ckd,nd->nck", self.image_map(emb.shape[1]), emb)
        return scales * (_EVOKED_NAM * 1e-9 * specific + self.common_response[None])


def _random_tangents(d: NDArray[np.float64], rng: np.random.Generator) -> NDArray[np.float64]:
    """A random unit vector in the tangent plane of each unit direction."""
    v = rng.standard_normal(d.shape)
    v -= np.sum(v * d, axis=1, keepdims=True) * d
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _fibonacci_directions(n: int) -> NDArray[np.float64]:
    """Evenly spread unit vectors over the part of the sphere above the ears."""
    # z from 1 down to -0.35: cortex under the scalp, not the neck
    i = np.arange(n) + 0.5
    z = 1.0 - (i / n) * 1.35
    phi = np.pi * (3.0 - np.sqrt(5.0)) * i
    r = np.sqrt(1.0 - z * z)
    return np.c_[r * np.cos(phi), r * np.sin(phi), z]


class _Schedule:
    """Class blocks and image trials in samples, extended on demand by optional generators."""

    def __init__(
        self,
        responses: NDArray[np.float64],
        class_gains: NDArray[np.float64],
        sfreq: float,
    ) -> None:
        self.responses = responses
        self.class_gains = class_gains  # (n_classes, n_rhythms)
        self.block_onsets: list[int] = []
        self.block_classes: list[int] = []
        self.trial_onsets: list[int] = []
        self.trial_offsets: list[int] = []
        self.trial_images: list[int] = []
        self.block_generator: Callable[[int], tuple[int, int]] | None = None
        self.trial_generator: Callable[[int], tuple[int, int, int]] | None = None
        self._ramp = max(1, round(_RAMP_S * sfreq))
        self._tail = round(_EVOKED_TAIL_S * sfreq) + 1
        self._components = [
            (c.anchor == "offset", c.latency_s * sfreq, c.width_s * sfreq)
            for c in EVOKED_COMPONENTS
        ]

    def extend_to(self, stop: int) -> None:
        """Plan blocks and trials until sample ``stop`` (generators draw in a fixed order)."""
        if self.block_generator is not None:
            while not self.block_onsets or self.block_onsets[-1] < stop:
                start = self.block_onsets[-1] if self.block_onsets else 0
                onset, cls = self.block_generator(start)
                self.block_onsets.append(onset)
                self.block_classes.append(cls)
        if self.trial_generator is not None:
            while not self.trial_onsets or self.trial_onsets[-1] < stop:
                after = self.trial_onsets[-1] if self.trial_onsets else None
                onset, offset, image = self.trial_generator(-1 if after is None else after)
                self.trial_onsets.append(onset)
                self.trial_offsets.append(offset)
                self.trial_images.append(image)

    def forget_before(self, start: int) -> None:
        """Drop blocks and trials that can no longer affect samples from ``start`` on."""
        # keep the block in force at start and the one before it (its ramp)
        k = bisect.bisect_right(self.block_onsets, start) - 2
        if k > 0:
            del self.block_onsets[:k], self.block_classes[:k]
        k = bisect.bisect_left(self.trial_onsets, start - self._max_trial_span())
        if k > 0:
            del self.trial_onsets[:k], self.trial_offsets[:k], self.trial_images[:k]

    def _max_trial_span(self) -> int:
        if not self.trial_onsets:
            return 0
        spans = np.subtract(self.trial_offsets, self.trial_onsets)
        return int(spans.max()) + self._tail

    def rhythm_gains(self, start: int, n: int) -> NDArray[np.float64]:
        """Gain of each rhythm at samples ``start .. start + n``: (n_rhythms, n)."""
        if not self.block_onsets:
            return np.zeros((self.class_gains.shape[1], n))
        t = np.arange(start, start + n)
        onsets = np.asarray(self.block_onsets)
        classes = np.asarray(self.block_classes)
        b = np.clip(np.searchsorted(onsets, t, side="right") - 1, 0, None)
        cur = self.class_gains[classes[b]]
        prev = self.class_gains[classes[np.clip(b - 1, 0, None)]]
        w = np.clip((t - onsets[b]) / self._ramp, 0.0, 1.0)
        w = (0.5 - 0.5 * np.cos(np.pi * w))[:, None]
        return (prev + (cur - prev) * w).T

    def evoked(self, start: int, n: int) -> NDArray[np.float64]:
        """Image-evoked dipole moments (A·m) at samples ``start .. start + n``: (K, n)."""
        out = np.zeros((self.responses.shape[2], n))
        if not self.trial_onsets:
            return out
        lo = bisect.bisect_left(self.trial_onsets, start - self._max_trial_span())
        hi = bisect.bisect_left(self.trial_onsets, start + n)
        t = np.arange(start, start + n, dtype=np.float64)
        for i in range(lo, hi):
            onset, offset = self.trial_onsets[i], self.trial_offsets[i]
            if offset + self._tail < start:
                continue
            courses = np.array(
                [
                    np.exp(-0.5 * ((t - (offset if at_off else onset) - lat) / width) ** 2)
                    for at_off, lat, width in self._components
                ]
            )
            out += self.responses[self.trial_images[i]].T @ courses
        return out

    def events(self, start: int, stop: int) -> list[tuple[int, int, str, int]]:
        """Block and trial onsets in ``[start, stop)``: (sample, duration, kind, index)."""
        out: list[tuple[int, int, str, int]] = []
        lo = bisect.bisect_left(self.block_onsets, start)
        hi = bisect.bisect_left(self.block_onsets, stop)
        for i in range(lo, hi):
            end = self.block_onsets[i + 1] if i + 1 < len(self.block_onsets) else stop
            out.append((self.block_onsets[i], end - self.block_onsets[i], "class", i))
        lo = bisect.bisect_left(self.trial_onsets, start)
        hi = bisect.bisect_left(self.trial_onsets, stop)
        for i in range(lo, hi):
            dur = self.trial_offsets[i] - self.trial_onsets[i]
            out.append((self.trial_onsets[i], dur, "image", i))
        out.sort(key=lambda e: (e[0], e[2]))
        return out


@dataclass
class _Filter:
    """A causal filter applied column-wise to white noise, with its state carried over."""

    sos: NDArray[np.float64]
    scale: float  # output gain giving unit variance for unit-variance white input
    state: NDArray[np.float64]  # (n_sections, 2, n_columns)
    columns: NDArray[np.intp]  # dipoles it drives, as rows of the source block it fills

    def __call__(self, white: NDArray[np.float64]) -> NDArray[np.float64]:
        y, self.state = signal.sosfilt(self.sos, white, axis=0, zi=self.state)
        return y * self.scale


class _Renderer:
    """Stateful generation of source activity and sensor signals, sample index by index.

    Random draws are made sample-major and filters carry their state, so rendering
    ``[a, b)`` then ``[b, c)`` gives exactly what rendering ``[a, c)`` gives.
    """

    def __init__(
        self,
        model: _SourceModel,
        sfreq: float,
        seed: np.random.SeedSequence,
        noise_colour: NDArray[np.float64] | None,
        *,
        background: bool,
        rhythms: bool,
    ) -> None:
        self.model = model
        self.noise_colour = noise_colour
        self.background = background
        self.rhythms = rhythms
        self._rng_bg, self._rng_rh, self._rng_noise = (
            np.random.default_rng(s) for s in seed.spawn(3)
        )
        # pink (1/f power) noise over about three decades below Nyquist: the 3-pole filter
        # of J. O. Smith, "Spectral Audio Signal Processing" (pink noise example)
        pink = signal.tf2sos(
            [0.049922035, -0.095993537, 0.050612699, -0.004408786],
            [1.0, -2.494956002, 2.017265875, -0.522189400],
        )
        n_bg = model.background_slice.stop - model.background_slice.start
        self._pink = _Filter(
            pink, _unit_gain(pink), np.zeros((pink.shape[0], 2, n_bg)), np.arange(n_bg)
        )
        self._bands: list[_Filter] = []
        for k, rh in enumerate(RHYTHMS):
            cols = np.flatnonzero(model.rhythm_of_dipole == k)
            band = (rh.band_hz[0], min(rh.band_hz[1], 0.45 * sfreq))
            sos = signal.butter(2, band, btype="bandpass", fs=sfreq, output="sos")
            state = np.zeros((sos.shape[0], 2, len(cols)))
            self._bands.append(_Filter(sos, _unit_gain(sos), state, cols))
        self._amplitudes = 1e-9 * np.array(
            [RHYTHMS[k].amplitude_nam for k in model.rhythm_of_dipole]
        )
        # let the filters reach their stationary state before sample 0
        self._sources(_WARMUP_SAMPLES, np.ones((len(RHYTHMS), _WARMUP_SAMPLES)))

    def _sources(self, n: int, gains: NDArray[np.float64]) -> NDArray[np.float64]:
        """Background and rhythm dipole moments (A·m) for the next n samples."""
        m = self.model
        s = np.zeros((m.n_sources, n))
        if self.background:
            white = self._rng_bg.standard_normal((n, len(self._pink.columns)))
            s[m.background_slice] = self._pink(white).T * (_BACKGROUND_NAM * 1e-9)
        if self.rhythms:
            white = self._rng_rh.standard_normal((n, len(m.rhythm_of_dipole)))
            rh = np.empty((len(m.rhythm_of_dipole), n))
            for band in self._bands:
                rh[band.columns] = band(white[:, band.columns]).T
            s[m.rhythm_slice] = rh * self._amplitudes[:, None] * gains[m.rhythm_of_dipole]
        return s

    def render(self, start: int, n: int, schedule: _Schedule) -> NDArray[np.float32]:
        """Sensor data (n_channels, n) for samples ``start .. start + n``, float32."""
        if n == 0:
            return np.zeros((self.model.gain.shape[0], 0), dtype=np.float32)
        # these products are small: BLAS threads gain nothing and, spinning on a busy
        # machine, would take cores from the decoder
        with _blas_controller().limit(limits=1, user_api="blas"):
            s = self._sources(n, schedule.rhythm_gains(start, n))
            s[self.model.image_slice] += schedule.evoked(start, n)
            data = self.model.gain @ s
            if self.noise_colour is not None:
                white = self._rng_noise.standard_normal((n, data.shape[0]))
                if self.noise_colour.ndim == 1:
                    data += (white * self.noise_colour).T
                else:
                    data += self.noise_colour @ white.T
        return data.astype(np.float32)


@functools.lru_cache(maxsize=1)
def _blas_controller() -> ThreadpoolController:
    return ThreadpoolController()


def _unit_gain(sos: NDArray[np.float64]) -> float:
    """Factor giving the filter's output unit variance for unit-variance white input."""
    impulse = np.zeros(1 << 16)
    impulse[0] = 1.0
    return float(1.0 / np.sqrt(np.sum(signal.sosfilt(sos, impulse) ** 2)))


class Simulator:
    """Physics-based MEG/EEG generator with class blocks, image trials and markers.

    Parameters
    ----------
    spec : SimulatorSpec | None
        Settings; keyword arguments given explicitly override its fields.
    seed, sfreq, modality, info_path, subject_seed, noise_cov_path, embeddings_path, \
eeg_channels, classes, block_s, image_duration_s
        See :class:`~neurocast.streaming.sources.specs.SimulatorSpec`.
    image_embeddings : array, shape (n_images, dim) | None
        Embeddings of the images shown in the stream (unit-norm rows give realistic
        amplitudes; the response scales with the norm). None: ``embeddings_path``, else
        :func:`default_image_set` seeded with ``subject_seed``.
    image_ids : sequence of str | None
        Ids of those images (marker ``"image/<id>"``); default ``img000``, ``img001``, ...
    noise_cov : mne.Covariance | None
        A noise covariance to draw sensor noise from instead of white noise (or give
        ``noise_cov_path``). Its channels are matched by name, ignoring spaces.
    background : bool
        Include the 1/f background activity.
    sensor_noise : bool
        Include sensor noise.
    cache_dir : path-like | None
        Forward-solution cache folder (see :func:`~.geometry.forward_gain`).

    Attributes
    ----------
    info : mne.Info
        Channels, positions and sampling rate; ``info["description"]`` says SIMULATED.
    stream_info : StreamInfo
        The same, as a simulated stream.
    class_names : list of str
        Classes in the order of :meth:`simulate_epochs` labels.
    image_ids : list of str
        Images shown in the stream.
    image_embeddings : ndarray, shape (n_images, dim)
        Their embeddings.
    start_time : float
        Source-clock time of sample 0 in seconds (0 unless set, e.g. to
        :func:`~.source.local_clock` by :class:`SimulatorSource`).
    """

    def __init__(
        self,
        spec: SimulatorSpec | None = None,
        *,
        seed: int | None = None,
        sfreq: float | None = None,
        modality: Modality | None = None,
        info_path: str | None = None,
        subject_seed: int | None = None,
        noise_cov_path: str | None = None,
        embeddings_path: str | None = None,
        eeg_channels: Sequence[str] | None = None,
        classes: Sequence[str] | None = None,
        block_s: float | None = None,
        image_duration_s: float | None = None,
        image_embeddings: ArrayLike | None = None,
        image_ids: Sequence[str] | None = None,
        noise_cov: mne.Covariance | None = None,
        background: bool = True,
        sensor_noise: bool = True,
        cache_dir: str | Path | None = None,
    ) -> None:
        overrides = {
            k: v
            for k, v in dict(
                seed=seed,
                sfreq=sfreq,
                modality=modality,
                info_path=info_path,
                subject_seed=subject_seed,
                noise_cov_path=noise_cov_path,
                embeddings_path=embeddings_path,
                eeg_channels=None if eeg_channels is None else list(eeg_channels),
                classes=None if classes is None else list(classes),
                block_s=block_s,
                image_duration_s=image_duration_s,
            ).items()
            if v is not None
        }
        base = spec.model_dump() if spec is not None else {}
        self.spec = SimulatorSpec.model_validate({**base, **overrides})
        sp = self.spec
        if sp.sfreq < _MIN_SFREQ:
            raise ValueError(f"sfreq must be at least {_MIN_SFREQ:g} Hz, got {sp.sfreq:g} Hz.")
        self.sfreq = float(sp.sfreq)
        self.seed = int(sp.seed)

        known = [c.name for c in CLASSES]
        names = sp.classes if sp.classes is not None else known
        unknown = [c for c in names if c not in known]
        if unknown or not names:
            raise ValueError(f"Unknown or no classes {unknown or names}; choose from {known}.")
        self.class_names = list(names)
        self._class_gains = np.array(
            [
                [next(c for c in CLASSES if c.name == n).gains.get(rh.name, 0.0) for rh in RHYTHMS]
                for n in self.class_names
            ]
        )

        if image_embeddings is not None:
            emb = np.asarray(image_embeddings, dtype=np.float32)
            ids = (
                list(image_ids)
                if image_ids is not None
                else [f"img{i:03d}" for i in range(emb.shape[0] if emb.ndim == 2 else 0)]
            )
        elif sp.embeddings_path is not None:
            emb, ids = load_image_set(sp.embeddings_path)
        else:
            emb, ids = default_image_set(seed=sp.subject_seed)
        _check_image_set(emb, ids)
        _warn_on_norms(emb)
        self.image_embeddings = emb
        self.image_ids = ids

        if sp.info_path is not None:
            info = load_info(sp.info_path, self.sfreq, sp.modality)
        else:
            info = default_info(self.sfreq, sp.modality, sp.eeg_channels)
        sphere = head_sphere(info) if sp.info_path is not None else default_sphere()
        self._model = _SourceModel(info, sphere, sp.subject_seed, cache_dir)
        if any(t == "eeg" for t in info.get_channel_types()):
            with info._unlock():
                info["custom_ref_applied"] = FIFF.FIFFV_MNE_CUSTOM_REF_ON

        cov = noise_cov
        if cov is None and sp.noise_cov_path is not None:
            try:
                cov = mne.read_cov(sp.noise_cov_path, verbose="error")
            except Exception as exc:  # MNE's readers raise many types on foreign files
                raise ValueError(
                    f"Cannot read a noise covariance from {sp.noise_cov_path}: {exc}."
                ) from exc
        colour = _cov_colour(cov, info) if cov is not None else _white_noise_std(info, self.sfreq)
        self._noise_colour = colour if sensor_noise else None
        self._background = background

        description = (
            f"{SIMULATED_TAG} data from the neurocast physics-based simulator (current dipoles "
            "in a spherical head, MNE forward model; classes "
            f"{', '.join(self.class_names)}; {len(self.image_ids)} images); seed={self.seed}, "
            f"subject_seed={sp.subject_seed}. Not a recording."
        )
        with info._unlock():
            info["description"] = description
        self.info = info
        self.stream_info = StreamInfo(
            name=f"neurocast simulator ({SIMULATED_TAG})",
            info=info,
            simulated=True,
            source_id=f"neurocast-simulator:seed={self.seed}:subject={sp.subject_seed}",
        )
        self.start_time = 0.0
        self._n_generated = 0
        # samples rendered but not yet returned by generate(), from sample _ahead_start on
        self._ahead = np.zeros((len(info["ch_names"]), 0), dtype=np.float32)
        self._ahead_start = 0
        self._pending: list[tuple[int, int, str]] = []
        self._render_block = max(1, round(_RENDER_AHEAD_S * self.sfreq))
        self._renderer = self._new_renderer(np.random.SeedSequence([self.seed, 0]))
        self._schedule = self._new_schedule(self.image_embeddings)
        plan = np.random.default_rng(np.random.SeedSequence([self.seed, 1]))
        self._schedule.block_generator = self._block_plan(plan)
        trials = np.random.default_rng(np.random.SeedSequence([self.seed, 2]))
        self._schedule.trial_generator = self._trial_plan(trials, len(self.image_ids))

    # -- construction helpers -------------------------------------------------------------

    def _new_renderer(
        self, seed: np.random.SeedSequence, *, noise: bool = True, rhythms: bool = True
    ) -> _Renderer:
        return _Renderer(
            self._model,
            self.sfreq,
            seed,
            self._noise_colour if noise else None,
            background=self._background and noise,
            rhythms=rhythms,
        )

    def _new_schedule(self, embeddings: NDArray[np.floating]) -> _Schedule:
        return _Schedule(self._model.image_responses(embeddings), self._class_gains, self.sfreq)

    def _block_plan(self, rng: np.random.Generator) -> Callable[[int], tuple[int, int]]:
        """Blocks of ``block_s`` ± 12.5 %, classes in shuffled cycles; first at sample 0."""
        order: list[int] = []
        first = True
        block = self.spec.block_s * self.sfreq

        def next_block(last_onset: int) -> tuple[int, int]:
            nonlocal first
            if not order:
                order.extend(rng.permutation(len(self.class_names)).tolist())
            cls = order.pop(0)
            if first:
                first = False
                return 0, cls
            return last_onset + round(block * rng.uniform(0.875, 1.125)), cls

        return next_block

    def _trial_plan(
        self, rng: np.random.Generator, n_images: int
    ) -> Callable[[int], tuple[int, int, int]]:
        """Images for ``image_duration_s`` every duration + 0.5-0.8 s, in shuffled cycles."""
        order: list[int] = []
        dur = max(1, round(self.spec.image_duration_s * self.sfreq))

        def next_trial(last_onset: int) -> tuple[int, int, int]:
            if not order:
                order.extend(rng.permutation(n_images).tolist())
            gap = rng.uniform(0.5, 0.8) * self.sfreq
            onset = round(0.5 * self.sfreq) if last_onset < 0 else last_onset + dur + round(gap)
            return onset, onset + dur, order.pop(0)

        return next_trial

    # -- streaming ------------------------------------------------------------------------

    @property
    def n_generated(self) -> int:
        """Samples generated so far by :meth:`generate` (the next sample's index)."""
        return self._n_generated

    def sample_times(self, start: int, n: int) -> NDArray[np.float64]:
        """Source-clock times in seconds of samples ``start .. start + n``."""
        return self.start_time + np.arange(start, start + n, dtype=np.float64) / self.sfreq

    def generate(self, n_samples: int) -> tuple[NDArray[np.float32], list[Marker]]:
        """The next ``n_samples`` of the stream.

        Consecutive calls continue seamlessly: any chunking of the same total gives the same
        data and markers.

        Parameters
        ----------
        n_samples : int
            Number of samples (>= 0).

        Returns
        -------
        data : ndarray, shape (n_channels, n_samples), float32
            Volts (EEG), tesla (mag), tesla/metre (grad).
        markers : list of Marker
            ``"class/<name>"`` at block onsets and ``"image/<id>"`` at image onsets within
            the chunk, stamped in seconds on the source clock (:attr:`start_time` at sample 0).
        """
        data, events = self._generate(n_samples)
        return data, [
            Marker(self.start_time + onset / self.sfreq, value) for onset, _, value in events
        ]

    def _generate(self, n_samples: int) -> tuple[NDArray[np.float32], list[tuple[int, int, str]]]:
        n = int(n_samples)
        if n < 0 or n != n_samples:
            raise ValueError(f"n_samples must be a non-negative integer, got {n_samples!r}.")
        start, stop = self._n_generated, self._n_generated + n
        rendered = self._ahead_start + self._ahead.shape[1]
        if stop > rendered:
            # render ahead in blocks: the cost of a render is mostly per call, not per sample
            data, events = self._render(rendered, max(stop - rendered, self._render_block))
            self._ahead = np.concatenate([self._ahead[:, start - self._ahead_start :], data], 1)
            self._ahead_start = start
            self._pending.extend(events)
        offset = start - self._ahead_start
        out = self._ahead[:, offset : offset + n]
        events = [e for e in self._pending if e[0] < stop]
        self._pending = [e for e in self._pending if e[0] >= stop]
        self._n_generated = stop
        return out, events

    def _render(self, start: int, n: int) -> tuple[NDArray[np.float32], list[tuple[int, int, str]]]:
        """Samples ``start .. start + n`` of the stream and the events starting in them."""
        sched = self._schedule
        sched.forget_before(start)
        sched.extend_to(start + n)
        data = self._renderer.render(start, n, sched)
        events = [
            (onset, dur, self._event_value(kind, idx))
            for onset, dur, kind, idx in sched.events(start, start + n)
        ]
        return data, events

    def _event_value(self, kind: str, index: int) -> str:
        sched = self._schedule
        if kind == "class":
            return f"class/{self.class_names[sched.block_classes[index]]}"
        return f"image/{self.image_ids[sched.trial_images[index]]}"

    def simulate_raw(
        self,
        seconds: float,
        *,
        progress: Callable[[int], Any] | None = None,
        chunk_s: float = 1.0,
    ) -> mne.io.RawArray:
        """The next ``seconds`` of the stream as a Raw object with annotations.

        Parameters
        ----------
        seconds : float
            Duration in seconds.
        progress : callable | None
            Called with the number of samples generated after each chunk (e.g.
            ``tqdm.update``).
        chunk_s : float
            Generation chunk in seconds (affects memory use, not the data).

        Returns
        -------
        raw : mne.io.RawArray
            Data in SI units; annotations ``"class/<name>"`` (lasting the block, clipped to
            the recording) and ``"image/<id>"`` (lasting the image display);
            ``raw.info["description"]`` says SIMULATED.
        """
        if not seconds > 0:
            raise ValueError(f"seconds must be positive, got {seconds}.")
        total = max(1, round(seconds * self.sfreq))
        step = max(1, round(chunk_s * self.sfreq))
        first = self._n_generated
        pieces: list[NDArray[np.float32]] = []
        events: list[tuple[int, int, str]] = []
        done = 0
        while done < total:
            n = min(step, total - done)
            data, ev = self._generate(n)
            pieces.append(data)
            events.extend(ev)
            done += n
            if progress is not None:
                progress(n)
        raw = mne.io.RawArray(np.concatenate(pieces, axis=1), self.info.copy(), verbose="error")
        if events:
            onsets = np.array([(e[0] - first) / self.sfreq for e in events])
            durations = np.array(
                [min(e[1], first + total - e[0]) / self.sfreq for e in events], dtype=float
            )
            raw.set_annotations(
                mne.Annotations(onsets, durations, [e[2] for e in events], orig_time=None)
            )
        return raw

    # -- training sets --------------------------------------------------------------------

    def simulate_epochs(
        self,
        n_per_class: int,
        *,
        duration_s: float = 1.0,
        classes: Sequence[str] | None = None,
        noise: bool = True,
        seed: int | None = None,
    ) -> SimulatedEpochs:
        """Class-labelled epochs of sustained activity, as fast as the machine allows.

        Each epoch is cut from the steady part of its own class block (after the transition
        from the previous block). No images are shown. Independent of the stream: calling it
        does not advance :meth:`generate`.

        Parameters
        ----------
        n_per_class : int
            Epochs per class (shuffled order).
        duration_s : float
            Epoch length in seconds.
        classes : sequence of str | None
            Classes to simulate (default all of :attr:`class_names`).
        noise : bool
            Include background activity and sensor noise (False: rhythms only).
        seed : int | None
            Random seed (default: the simulator's seed).

        Returns
        -------
        epochs : SimulatedEpochs
            ``labels`` index :attr:`class_names`; ``times`` start at 0.
        """
        names = list(classes) if classes is not None else self.class_names
        unknown = [c for c in names if c not in self.class_names]
        if unknown:
            raise ValueError(f"Unknown classes {unknown}; this simulator has {self.class_names}.")
        if n_per_class < 1 or not duration_s > 0:
            raise ValueError("n_per_class must be >= 1 and duration_s positive.")
        seq = np.random.SeedSequence([self.seed if seed is None else seed, 3])
        rng = np.random.default_rng(seq.spawn(1)[0])
        labels = np.repeat([self.class_names.index(c) for c in names], n_per_class)
        labels = rng.permutation(labels)
        n_times = max(1, round(duration_s * self.sfreq))
        lead = round((_RAMP_S + 0.2) * self.sfreq)
        sched = self._new_schedule(self.image_embeddings[:0])  # no images
        renderer = self._new_renderer(seq, noise=noise)
        out = np.empty((len(labels), len(self.info["ch_names"]), n_times), dtype=np.float32)
        slot = lead + n_times
        for i, cls in enumerate(labels):
            sched.block_onsets.append(i * slot)
            sched.block_classes.append(int(cls))
            out[i] = renderer.render(i * slot, slot, sched)[:, lead:]
            sched.forget_before((i + 1) * slot)
        return SimulatedEpochs(
            out,
            np.arange(n_times) / self.sfreq,
            self.info.copy(),
            labels.astype(np.int64),
            list(self.class_names),
            "class",
        )

    def simulate_image_epochs(
        self,
        embeddings: ArrayLike | None = None,
        *,
        image_indices: Sequence[int] | None = None,
        n_repeats: int = 1,
        image_ids: Sequence[str] | None = None,
        tmin: float = -0.2,
        tmax: float = 1.0,
        noise: bool = True,
        seed: int | None = None,
    ) -> SimulatedEpochs:
        """Image-evoked epochs, as fast as the machine allows.

        Images are shown for ``image_duration_s``, far enough apart that each epoch holds one
        image's response only; the ongoing classes change in blocks as in the stream.
        Independent of the stream: calling it does not advance :meth:`generate`.

        Parameters
        ----------
        embeddings : array, shape (n_images, dim) | None
            Embeddings of the images (None: the stream's images). The same fixed linear map
            (per ``subject_seed`` and ``dim``) turns them into source patterns.
        image_indices : sequence of int | None
            Row of ``embeddings`` shown in each trial, in order. None: every image
            ``n_repeats`` times in shuffled order.
        n_repeats : int
            Repetitions per image when ``image_indices`` is None.
        image_ids : sequence of str | None
            Names of the rows (default the stream's ids when ``embeddings`` is None, else
            ``img000``, ...).
        tmin, tmax : float
            Epoch limits in seconds relative to image onset (both included).
        noise : bool
            Include background activity, ongoing rhythms and sensor noise (False: the
            evoked responses alone, exactly linear in the embeddings).
        seed : int | None
            Random seed (default: the simulator's seed).

        Returns
        -------
        epochs : SimulatedEpochs
            ``labels`` are rows of ``embeddings``; ``label_names`` their ids.
        """
        if embeddings is None:
            emb = self.image_embeddings
            ids = list(self.image_ids) if image_ids is None else list(image_ids)
        else:
            emb = np.asarray(embeddings, dtype=np.float64)
            ids = (
                list(image_ids)
                if image_ids is not None
                else [f"img{i:03d}" for i in range(emb.shape[0] if emb.ndim == 2 else 0)]
            )
        _check_image_set(np.asarray(emb), ids)
        if not tmax > tmin:
            raise ValueError(f"tmax must exceed tmin, got tmin={tmin}, tmax={tmax}.")
        seq = np.random.SeedSequence([self.seed if seed is None else seed, 4])
        rng_order, rng_blocks = (np.random.default_rng(s) for s in seq.spawn(2))
        if image_indices is None:
            if n_repeats < 1:
                raise ValueError(f"n_repeats must be >= 1, got {n_repeats}.")
            order = rng_order.permutation(np.tile(np.arange(len(ids)), n_repeats))
        else:
            order = np.asarray(image_indices, dtype=np.int64).reshape(-1)
            if not len(order) or order.min() < 0 or order.max() >= len(ids):
                raise ValueError(
                    f"image_indices must be a non-empty list of rows 0..{len(ids) - 1}."
                )
        first = round(tmin * self.sfreq)
        n_times = round(tmax * self.sfreq) - first + 1
        dur = max(1, round(self.spec.image_duration_s * self.sfreq))
        tail = round(_EVOKED_TAIL_S * self.sfreq) + 1
        # consecutive trials: the previous response has faded before the next epoch starts
        soa = max(n_times, dur + tail - first)
        sched = self._new_schedule(np.asarray(emb))
        sched.block_generator = self._block_plan(rng_blocks)
        renderer = self._new_renderer(seq, noise=noise, rhythms=noise)
        out = np.empty((len(order), len(self.info["ch_names"]), n_times), dtype=np.float32)
        lead = max(0, -first)  # first trial's pre-stimulus part
        for i, img in enumerate(order):
            onset = lead + i * soa
            sched.trial_onsets.append(onset)
            sched.trial_offsets.append(onset + dur)
            sched.trial_images.append(int(img))
            start = onset + first
            sched.extend_to(start + soa)
            out[i] = renderer.render(start, soa, sched)[:, :n_times]
            sched.forget_before(start + soa)
        return SimulatedEpochs(
            out,
            (first + np.arange(n_times)) / self.sfreq,
            self.info.copy(),
            order.astype(np.int64),
            ids,
            "image",
        )


def _warn_on_norms(emb: NDArray[np.floating]) -> None:
    norms = np.linalg.norm(emb, axis=1)
    med = float(np.median(norms))
    if not 0.2 <= med <= 5.0:
        logger.warning(
            "Image embeddings have median norm %.3g; evoked amplitudes scale with it "
            "(L2-normalise them for realistic amplitudes).",
            med,
        )


def _white_noise_std(info: mne.Info, sfreq: float) -> NDArray[np.float64]:
    """Per-channel standard deviation of white sensor noise at ``sfreq`` Hz."""
    density = np.array([SENSOR_NOISE_DENSITY[t] for t in info.get_channel_types()])
    return density * np.sqrt(sfreq / 2.0)


def _cov_colour(cov: mne.Covariance, info: mne.Info) -> NDArray[np.float64]:
    """A matrix turning white noise into noise with the covariance of ``info``'s channels."""
    names = [n.replace(" ", "") for n in cov["names"]]
    index = {n: i for i, n in enumerate(names)}
    wanted = [n.replace(" ", "") for n in info["ch_names"]]
    missing = [n for n in wanted if n not in index]
    if missing:
        raise ValueError(
            f"The noise covariance lacks {len(missing)} of the simulated channels (e.g. "
            f"{missing[:3]}); use a covariance measured with the same sensors (and the "
            "recording's geometry via info_path), or omit it for white sensor noise."
        )
    idx = [index[n] for n in wanted]
    c = np.asarray(cov.data, dtype=float)
    if c.ndim == 1:  # diagonal covariance
        return np.sqrt(np.clip(c[idx], 0.0, None))
    sub = c[np.ix_(idx, idx)]
    evals, evecs = np.linalg.eigh(0.5 * (sub + sub.T))
    # projectors make measured covariances rank-deficient: drop tiny negative eigenvalues
    return evecs * np.sqrt(np.clip(evals, 0.0, None))


class SimulatorSource:
    """The simulator as a :class:`~neurocast.streaming.sources.base.Source`.

    Parameters
    ----------
    spec : SimulatorSpec
        Simulator settings, pacing (``realtime``), ``chunk_s`` and ``duration_s``.

    Notes
    -----
    Timestamps are :func:`~.source.local_clock` seconds: sample 0 is stamped at the time
    :meth:`open` returned. With ``realtime`` a chunk is delivered when its last sample is
    due (due times are computed from sample 0, so pacing does not drift); a reader that
    falls behind gets the samples due since, up to one second per read. Without
    ``realtime`` chunks come as fast as they are read.
    """

    def __init__(self, spec: SimulatorSpec, **simulator_kwargs: Any) -> None:
        self.spec = spec
        self._kwargs = simulator_kwargs
        self._sim: Simulator | None = None
        self._status: SourceStatus = "starting"
        self._lock = threading.Lock()
        self._chunk = max(1, round(spec.chunk_s * spec.sfreq))
        self._end: int | None = (
            None if spec.duration_s is None else max(1, round(spec.duration_s * spec.sfreq))
        )

    @property
    def simulator(self) -> Simulator:
        """The underlying :class:`Simulator` (after :meth:`open`)."""
        return require_open(self._sim, "simulator")

    @property
    def stream_info(self) -> StreamInfo:
        """Channels and rate of the simulated stream (after :meth:`open`)."""
        return self.simulator.stream_info

    @property
    def status(self) -> SourceStatus:
        """``"starting"``, ``"running"``, or ``"stopped"`` once closed or past ``duration_s``."""
        return self._status

    def open(self) -> StreamInfo:
        """Build the simulator (forward model from cache when possible) and start the clock.

        Opening a closed source resumes the stream: its next sample is due at once (or when
        it was due, if the stream ran ahead of the clock), so the timestamps show any pause
        as a gap and never go backwards.
        """
        with self._lock:
            if self._sim is None:
                try:
                    self._sim = Simulator(self.spec, **self._kwargs)
                except (ValueError, OSError, RuntimeError) as exc:
                    self._status = "failed"
                    raise SourceError(f"Cannot start the simulator: {exc}") from exc
            sim = self._sim
            if self._status == "starting":
                sim.start_time = local_clock()
            elif self._status != "running":
                # never backwards: a stream that ran ahead of the clock keeps its times
                resume = local_clock() - sim.n_generated / sim.sfreq
                sim.start_time = max(sim.start_time, resume)
            self._status = "running"
            return sim.stream_info

    def read(self, timeout: float) -> Chunk | None:
        """The next chunk, or None if none is due within ``timeout`` seconds or it has ended."""
        with self._lock:
            sim = self._sim
            if sim is None or self._status != "running":
                return None
            start = sim.n_generated
            n = self._chunk
            if self._end is not None:
                n = min(n, self._end - start)
                if n <= 0:
                    self._status = "stopped"
                    return None
            if self.spec.realtime:
                due = sim.start_time + (start + n - 1) / sim.sfreq
                wait = due - local_clock()
                if wait > timeout:
                    time.sleep(max(0.0, timeout))
                    return None
                if wait > 0:
                    time.sleep(wait)
                if self._status != "running":  # closed meanwhile
                    return None
                # catch up on everything that fell due meanwhile, in whole chunks
                behind = int((local_clock() - sim.start_time) * sim.sfreq) + 1 - start
                n = max(
                    n, min(behind // self._chunk, round(sim.sfreq) // self._chunk) * self._chunk
                )
                if self._end is not None:
                    n = min(n, self._end - start)
            data, markers = sim.generate(n)
            return Chunk(
                data=data.T,
                timestamps=sim.sample_times(start, n),
                receipt_time=local_clock(),
                clock_offset=0.0,
                markers=markers,
            )

    def close(self) -> None:
        """Stop the stream; later reads return None. Safe to call more than once."""
        self._status = "stopped"
