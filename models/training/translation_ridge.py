"""The linear EEG→MEG baseline: ridge regression from each sample's EEG to every MEG channel."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from neurocast.models.nets.translator import LinearTranslator


class RidgeTranslator:
    """Linear EEG→MEG baseline: ridge regression from each sample's EEG to every MEG channel.

    The EEG is average-referenced first (as in the network); an intercept is fitted. The
    regularisation, one value for all MEG channels, is relative to the mean eigenvalue of the
    EEG covariance (so it does not depend on units) and is chosen on validation data from
    *other* recordings or simulated subjects: leave-one-out on the training samples would
    favour too little regularisation, neighbouring samples of a time series being alike.

    Parameters
    ----------
    alphas : sequence of float
        Candidate relative regularisation strengths.
    """

    def __init__(self, alphas: Sequence[float] = tuple(np.logspace(-6, 1, 15))) -> None:
        if not len(alphas) or min(alphas) < 0:
            raise ValueError("alphas must be a non-empty sequence of non-negative values.")
        self.alphas = tuple(float(a) for a in alphas)
        self.alpha: float | None = None
        self.weight: NDArray[np.float64] | None = None
        self.bias: NDArray[np.float64] | None = None
        self.val_mse: dict[float, float] = {}

    @staticmethod
    def _design(x: ArrayLike, name: str) -> NDArray[np.float64]:
        """(n_eeg, n_samples) → average-referenced, still (n_eeg, n_samples)."""
        arr = np.asarray(x, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[0] < 2:
            raise ValueError(f"{name} must be (n_eeg >= 2, n_samples), got shape {arr.shape}.")
        return arr - arr.mean(axis=0, keepdims=True)

    def fit(
        self,
        x: ArrayLike,
        y: ArrayLike,
        x_val: ArrayLike | None = None,
        y_val: ArrayLike | None = None,
    ) -> RidgeTranslator:
        """Fit on EEG ``x`` (n_eeg, n_samples) and MEG ``y`` (n_meg, n_samples).

        ``x_val`` and ``y_val`` (validation EEG and MEG) choose the regularisation; they are
        required when more than one candidate is given.
        """
        xa = np.asarray(x)
        ya = np.asarray(y)
        if xa.ndim != 2 or xa.shape[0] < 2:
            raise ValueError(f"x must be (n_eeg >= 2, n_samples), got shape {xa.shape}.")
        if ya.ndim != 2 or ya.shape[1] != xa.shape[1]:
            raise ValueError(
                f"y must be (n_meg, {xa.shape[1]}) like x's samples, got shape {ya.shape}."
            )
        # means, then cross-products accumulated over blocks: float64 sums without a float64
        # copy of the (large) MEG array
        mx = xa.mean(axis=1, dtype=np.float64)[:, None]
        mx -= mx.mean()  # the time mean of the average-referenced EEG
        my = ya.mean(axis=1, dtype=np.float64)[:, None]
        gram = np.zeros((xa.shape[0], xa.shape[0]))
        cross = np.zeros((ya.shape[0], xa.shape[0]))
        for a in range(0, xa.shape[1], 8192):
            xb = self._design(xa[:, a : a + 8192], "x") - mx
            yb = ya[:, a : a + 8192].astype(np.float64) - my
            gram += xb @ xb.T
            cross += yb @ xb.T
        unit = np.trace(gram) / len(gram)
        evals, evecs = np.linalg.eigh(gram)
        proj = cross @ evecs  # solutions for every alpha share the eigenbasis

        def solve(alpha: float) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
            w = (proj / (evals + alpha * unit)) @ evecs.T
            return w, (my - w @ mx).ravel()

        if x_val is None or y_val is None:
            if len(self.alphas) > 1:
                raise ValueError(
                    "Choosing among several alphas needs validation data (x_val, y_val)."
                )
            self.alpha = self.alphas[0]
        else:
            xv = self._design(x_val, "x_val")
            yv = np.asarray(y_val, dtype=np.float64)
            if yv.shape != (ya.shape[0], xv.shape[1]):
                raise ValueError(
                    f"y_val must be ({ya.shape[0]}, {xv.shape[1]}), got shape {yv.shape}."
                )
            for alpha in self.alphas:
                w, b = solve(alpha)
                self.val_mse[alpha] = float(np.mean((w @ xv + b[:, None] - yv) ** 2))
            self.alpha = min(self.val_mse, key=self.val_mse.__getitem__)
        self.weight, self.bias = solve(self.alpha)
        return self

    def predict(self, x: ArrayLike) -> NDArray[np.float32]:
        """MEG (n_meg, n_samples) for EEG ``x`` (n_eeg, n_samples), or batches of them."""
        if self.weight is None or self.bias is None:
            raise RuntimeError("Fit the ridge translator before predicting.")
        arr = np.asarray(x, dtype=np.float64)
        if arr.ndim < 2 or arr.shape[-2] != self.weight.shape[1]:
            raise ValueError(
                f"x must be (..., {self.weight.shape[1]} EEG channels, n_samples), got {arr.shape}."
            )
        arr = arr - arr.mean(axis=-2, keepdims=True)
        out = np.einsum("me,...et->...mt", self.weight, arr) + self.bias[:, None]
        return out.astype(np.float32)

    def module(self) -> LinearTranslator:
        """The fitted map as a torch module (for export)."""
        if self.weight is None or self.bias is None:
            raise RuntimeError("Fit the ridge translator before exporting it.")
        return LinearTranslator(self.weight, self.bias)
