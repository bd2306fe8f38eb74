"""scikit-learn estimators that the classical recipes need and MNE/pyriemann do not provide.

:class:`FilterBankCSP` fits one MNE ``CSP`` per band of filter-bank windows (n, bands,
channels, times) and concatenates their log band powers (Ang et al. 2008, without the
mutual-information feature selection). :class:`Recenter` re-centres covariance matrices at
their Riemannian mean (Zanini et al. 2018), the alignment that lets a decoder trained on
other subjects read a new one from unlabelled data of that subject.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from mne.decoding import CSP
from numpy.typing import NDArray
from pyriemann.geometry.mean import mean_riemann
from sklearn.base import BaseEstimator, TransformerMixin

from neurocast.models.serving.features import isqrtm


class FilterBankCSP(TransformerMixin, BaseEstimator):
    """One CSP per band; features are every band's log band powers, band after band.

    Parameters
    ----------
    n_components : int
        CSP filters kept per band.
    reg : str | float | None
        Covariance regularisation of each CSP (MNE's ``reg``).
    """

    def __init__(self, n_components: int = 4, reg: str | float | None = None) -> None:
        self.n_components = n_components
        self.reg = reg

    def fit(self, X: NDArray[np.floating], y: NDArray[Any]) -> FilterBankCSP:
        """Fit a CSP on each band of ``X`` (n, bands, channels, times)."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 4:
            raise ValueError(f"FilterBankCSP takes (n, bands, channels, times), got {X.shape}.")
        self.csps_ = [
            CSP(n_components=self.n_components, reg=self.reg, log=True).fit(X[:, k], y)
            for k in range(X.shape[1])
        ]
        return self

    def transform(self, X: NDArray[np.floating]) -> NDArray[np.float64]:
        """Log band power of each band's CSP components, shape (n, bands × n_components)."""
        X = np.asarray(X, dtype=np.float64)
        return np.concatenate([csp.transform(X[:, k]) for k, csp in enumerate(self.csps_)], axis=1)


class Recenter(TransformerMixin, BaseEstimator):
    """Congruence ``M^{-1/2} C M^{-1/2}`` with ``M`` the Riemannian mean of the fitted matrices.

    ``fit`` needs no labels: fitting it on a subject's unlabelled covariances moves that
    subject's mean to the identity.
    """

    def fit(self, X: NDArray[np.floating], y: Any = None) -> Recenter:
        """Take the Riemannian mean of covariances ``X`` (n, c, c) as the reference."""
        self.reference_ = mean_riemann(np.asarray(X, dtype=np.float64))
        return self

    def transform(self, X: NDArray[np.floating]) -> NDArray[np.float64]:
        """Re-centred covariances, shape (n, c, c)."""
        a = isqrtm(self.reference_)
        return np.asarray(a @ np.asarray(X, dtype=np.float64) @ a.T)
