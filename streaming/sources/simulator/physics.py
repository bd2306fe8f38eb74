"""Physics of the simulator: dipoles in a spherical head, their activity and the sensors.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import mne
import numpy as np
from numpy.typing import NDArray
from scipy import signal
from threadpoolctl import ThreadpoolController

from neurocast.streaming.sources.simulator.geometry import forward_gain
from neurocast.streaming.sources.simulator.geometry import template_directions as _directions


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

#: Names of the classes, in the order of :data:`CLASSES`.
CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in CLASSES)


def class_gains(names: Sequence[str]) -> NDArray[np.float64]:
    """Gain of each rhythm in each class: shape (n_classes, n_rhythms), rows in ``names`` order.

    Raises
    ------
    ValueError
        If ``names`` is empty or names a class that is not in :data:`CLASSES`.
    """
    unknown = [c for c in names if c not in CLASS_NAMES]
    if unknown or not names:
        raise ValueError(
            f"Unknown or no classes {unknown or list(names)}; choose from {list(CLASS_NAMES)}."
        )
    by_name = {c.name: c for c in CLASSES}
    return np.array([[by_name[n].gains.get(rh.name, 0.0) for rh in RHYTHMS] for n in names])


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
RAMP_S = 0.3  # class transitions fade over this long
_WARMUP_SAMPLES = 4000  # filter settling before the first sample
# After an image's offset its response lasts until the latest component has decayed.
EVOKED_TAIL_S = max(c.latency_s + 4 * c.width_s for c in EVOKED_COMPONENTS)


class SourceModel:
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


class Schedule:
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
        self._ramp = max(1, round(RAMP_S * sfreq))
        self._tail = round(EVOKED_TAIL_S * sfreq) + 1
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


class Renderer:
    """Stateful generation of source activity and sensor signals, sample index by index.

    Random draws are made sample-major and filters carry their state, so rendering
    ``[a, b)`` then ``[b, c)`` gives exactly what rendering ``[a, c)`` gives.
    """

    def __init__(
        self,
        model: SourceModel,
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

    def render(self, start: int, n: int, schedule: Schedule) -> NDArray[np.float32]:
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


def white_noise_std(info: mne.Info, sfreq: float) -> NDArray[np.float64]:
    """Per-channel standard deviation of white sensor noise at ``sfreq`` Hz."""
    density = np.array([SENSOR_NOISE_DENSITY[t] for t in info.get_channel_types()])
    return density * np.sqrt(sfreq / 2.0)


def cov_colour(cov: mne.Covariance, info: mne.Info) -> NDArray[np.float64]:
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
