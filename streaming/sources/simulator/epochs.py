"""Labelled epochs simulated for training decoders."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import mne
import numpy as np
from numpy.typing import NDArray


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
        return self.data[:, pick_channels(self.info, picks)]

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


def pick_channels(info: mne.Info, picks: str | Sequence[str] | None) -> NDArray[np.intp]:
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
