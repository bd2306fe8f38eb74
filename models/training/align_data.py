"""Simultaneous EEG and MEG of image trials, preprocessed for the aligned-space encoders.

Training data are simulated simultaneous EEG and MEG of image-evoked responses
(:meth:`neurocast.streaming.sources.simulator.simulator.Simulator.simulate_image_epochs`): both
modalities record the same dipoles on the same trials. The noise level is set by scaling the
simulator's noise (background activity, ongoing rhythms and sensor noise), obtained exactly
as the difference between a noisy and a noiseless simulation of the same trials. Windows are
preprocessed by the retrieval code (:mod:`.retrieval_data`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import mne
import numpy as np
from numpy.typing import ArrayLike, NDArray

from neurocast.models.training.retrieval_data import (
    EpochSet,
    WindowGeometry,
    preprocess_epochs,
    retrieval_spec,
)
from neurocast.streaming.sources.base import StreamInfo
from neurocast.streaming.sources.simulator.simulator import Simulator
from neurocast.streaming.sources.specs import SimulatorSpec

Modality = Literal["eeg", "meg"]
MODALITIES: tuple[Modality, ...] = ("eeg", "meg")
_PICK = {"eeg": {"meg": False, "eeg": True}, "meg": {"meg": True, "eeg": False}}


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
    image_indices: Sequence[int] | NDArray[np.integer],
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


def unit_rows(x: ArrayLike) -> NDArray[np.float32]:
    """Rows of ``x`` scaled to unit L2 norm (zero rows left as they are)."""
    a = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(a, axis=-1, keepdims=True)
    return (a / np.where(n > 0, n, 1.0)).astype(np.float32)
