"""Streaming Morlet scalogram: wavelet power of many channels, a few new columns at a time.

The pieces live in three modules, all re-exported here:

- :mod:`~neurocast.streaming.preprocessing.scalogram_spec`: :class:`ScalogramSpec`, the
  wavelets a model expects (stored in its metadata);
- :mod:`~neurocast.streaming.preprocessing.morlet_kernels`: :class:`StreamingMorlet` and
  :func:`morlet_power`, which compute MNE's Morlet wavelet power incrementally (see that
  module for the algorithm and its cost);
- this module: :class:`ScalogramPreprocessor`, the online preprocessing of scalogram models.

This module is on the serving path: numpy, scipy and MNE only, never torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike, NDArray

from neurocast.streaming.preprocessing.morlet_kernels import StreamingMorlet, morlet_power
from neurocast.streaming.preprocessing.scalogram_spec import ScalogramSpec

if TYPE_CHECKING:
    # only an annotation: the engine imports preprocessing, not the other way round
    from neurocast.streaming.engine.pipeline import OnlinePreprocessor

__all__ = ["ScalogramPreprocessor", "ScalogramSpec", "StreamingMorlet", "morlet_power"]


class ScalogramPreprocessor:
    """Online preprocessing followed by the streaming scalogram, for scalogram models.

    Implements the ``OnlinePreprocessor`` protocol of :mod:`neurocast.streaming.engine.pipeline`:
    :meth:`push` runs ``base`` and then :class:`StreamingMorlet` on the new samples and returns
    the new power columns flattened to ``(n_channels * n_freqs, n_columns)`` rows, so the
    decode engine keeps them in its usual ring buffer; :meth:`finalize` gives the model its
    ``(n_channels, n_freqs, n_times)`` input. Scaling the power (log, z-score) belongs in the
    exported graph, so training and serving share it.

    Parameters
    ----------
    base : OnlinePreprocessor
        The signal preprocessing (channel picks, filters, resampling); its per-window steps
        are not used.
    spec : ScalogramSpec
        The wavelets; ``spec.sfreq_hz`` is ``base``'s output rate.
    center, scale : array, shape (n_channels,) | None
        Robust scaling applied to the continuous signal before the wavelets:
        ``(x - center) / scale``. MEG power in tesla² falls to 1e-40 and below, where float32
        loses its precision; scaled signals keep the power near 1.
    block : int | None
        Samples per scalogram update (odd); see :class:`StreamingMorlet`.
    n_threads : int
        Threads computing the scalogram.
    """

    def __init__(
        self,
        base: OnlinePreprocessor,
        spec: ScalogramSpec,
        *,
        center: ArrayLike | None = None,
        scale: ArrayLike | None = None,
        block: int | None = None,
        n_threads: int = 1,
    ) -> None:
        if abs(base.sfreq_out - spec.sfreq_hz) > 1e-4 * spec.sfreq_hz:
            raise ValueError(
                f"The scalogram is defined at {spec.sfreq_hz:g} Hz but the preprocessing "
                f"outputs {base.sfreq_out:g} Hz; set the preprocessing's resample_hz to "
                f"{spec.sfreq_hz:g}."
            )
        self.base = base
        n = base.n_channels_out
        self._center = np.zeros((n, 1)) if center is None else np.asarray(center, float)[:, None]
        self._scale = np.ones((n, 1)) if scale is None else np.asarray(scale, float)[:, None]
        if self._center.shape != (n, 1) or self._scale.shape != (n, 1):
            raise ValueError(
                f"center and scale need one value per channel ({n}), got "
                f"{self._center.shape[0]} and {self._scale.shape[0]}; refit them with "
                "fit_robust_scaler."
            )
        self.morlet = StreamingMorlet(spec, n, block=block, n_threads=n_threads)

    @property
    def sfreq_out(self) -> float:
        """Rate of the power columns in Hz."""
        return self.morlet.sfreq_out

    def reset(self) -> None:
        """Forget all state, as if no sample had been pushed (the decode engine calls it when
        it fell further behind than its ring buffer holds)."""
        self.base.reset()
        self.morlet.reset()

    @property
    def n_channels_out(self) -> int:
        """Rows of :meth:`push`'s output: channels × frequencies."""
        return self.morlet.n_channels * self.morlet.n_freqs

    @property
    def latency_s(self) -> float:
        """Delay of the power columns behind the preprocessed signal, in seconds."""
        return self.morlet.latency_s

    def push(self, x: NDArray[np.floating]) -> NDArray[np.float32]:
        """Preprocess new samples and return the power columns they complete.

        Returns
        -------
        power : ndarray, shape (n_channels * n_freqs, n_new_columns), float32
            Channel-major rows: row ``c * n_freqs + f`` is channel ``c`` at frequency ``f``.
        """
        signal = (self.base.push(x) - self._center) / self._scale
        power = self.morlet.push(signal)
        return power.reshape(self.n_channels_out, power.shape[-1])

    def finalize(self, window: NDArray[np.floating]) -> NDArray[np.float32]:
        """The model input from consecutive rows of :meth:`push`.

        Parameters
        ----------
        window : array, shape (n_channels * n_freqs, n_times)
            Power columns.

        Returns
        -------
        x : ndarray, shape (n_channels, n_freqs, n_times), float32
            A new array.
        """
        arr = np.asarray(window)
        if arr.ndim != 2 or arr.shape[0] != self.n_channels_out:
            raise ValueError(
                f"finalize expects ({self.n_channels_out}, n_times), got shape {arr.shape}."
            )
        return np.array(
            arr.reshape(self.morlet.n_channels, self.morlet.n_freqs, -1), dtype=np.float32
        )

    def close(self) -> None:
        """Stop the scalogram's worker threads."""
        self.morlet.close()
