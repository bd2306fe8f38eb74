"""The wavelets of a Morlet scalogram, as a model stores them in its metadata."""

from __future__ import annotations

from typing import Any

import numpy as np
from mne.time_frequency import morlet
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class ScalogramSpec(BaseModel):
    """Morlet wavelet power a model expects as input (stored in the model's metadata).

    Parameters
    ----------
    sfreq_hz : float
        Rate in Hz of the signal the wavelets are applied to (the preprocessing output rate).
    freqs_hz : list of float
        Wavelet frequencies in Hz, each below the Nyquist frequency.
    n_cycles : float | list of float
        Cycles per wavelet, one value or one per frequency (as for ``tfr_array_morlet``).
    zero_mean : bool
        Subtract each wavelet's mean (``tfr_array_morlet``'s default, True), so that a DC
        offset gives no power.
    decim : int
        Keep every ``decim``-th column (MNE's ``decim``): the output rate is
        ``sfreq_hz / decim``.
    latency_s : float | None
        Half the longest wavelet in seconds: how long after a column's time its value is
        available. Computed from the other fields when omitted; a stored value must match.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    sfreq_hz: float = Field(gt=0)
    freqs_hz: list[float] = Field(min_length=1)
    n_cycles: float | list[float] = 7.0
    zero_mean: bool = True
    decim: int = Field(1, ge=1)
    latency_s: float | None = None

    @field_validator("freqs_hz", "n_cycles", mode="before")
    @classmethod
    def _array_to_list(cls, value: Any) -> Any:
        if isinstance(value, np.ndarray):
            return value.tolist()
        return value

    @model_validator(mode="after")
    def _check(self) -> ScalogramSpec:
        freqs = np.asarray(self.freqs_hz, dtype=np.float64)
        if not (np.isfinite(freqs).all() and (freqs > 0).all()):
            raise ValueError(f"freqs_hz must be positive and finite, got {self.freqs_hz}.")
        if freqs.max() >= self.sfreq_hz / 2:
            raise ValueError(
                f"freqs_hz reach {freqs.max():g} Hz, at or above the Nyquist frequency "
                f"({self.sfreq_hz / 2:g} Hz) of {self.sfreq_hz:g} Hz; lower the frequencies or "
                "raise the preprocessing rate (resample_hz)."
            )
        cycles = np.atleast_1d(np.asarray(self.n_cycles, dtype=np.float64))
        if cycles.size not in (1, freqs.size):
            raise ValueError(
                f"n_cycles has {cycles.size} values for {freqs.size} frequencies; give one "
                "value or one per frequency."
            )
        if not (np.isfinite(cycles).all() and (cycles > 0).all()):
            raise ValueError(f"n_cycles must be positive and finite, got {self.n_cycles}.")
        latency = self.latency_samples / self.sfreq_hz
        if self.latency_s is None:
            object.__setattr__(self, "latency_s", latency)
        elif not np.isclose(self.latency_s, latency, rtol=1e-9, atol=0.0):
            raise ValueError(
                f"latency_s={self.latency_s} does not match these wavelets (half the longest is "
                f"{latency} s); the metadata is inconsistent: re-export the model."
            )
        return self

    @property
    def sfreq_out_hz(self) -> float:
        """Rate of the output columns in Hz."""
        return self.sfreq_hz / self.decim

    @property
    def n_freqs(self) -> int:
        """Number of frequencies."""
        return len(self.freqs_hz)

    @property
    def latency_samples(self) -> int:
        """Half the longest wavelet, in samples at :attr:`sfreq_hz`."""
        return (max(w.size for w in self.wavelets()) - 1) // 2

    def wavelets(self) -> list[NDArray[np.complex128]]:
        """MNE's wavelets for these frequencies (:func:`mne.time_frequency.morlet`)."""
        ws = morlet(
            self.sfreq_hz,
            np.asarray(self.freqs_hz, dtype=np.float64),
            n_cycles=self.n_cycles,
            zero_mean=self.zero_mean,
        )
        return [np.asarray(w, dtype=np.complex128) for w in ws]
