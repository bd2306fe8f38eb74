"""Measuring retrieval: ranks among distractor images, top-k accuracy, and the ridge baseline.

The ridge regression (scikit-learn ``RidgeCV`` on standardised, flattened windows) is the
linear baseline of the study (Benchetrit et al. 2024).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.linear_model import RidgeCV
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler


class RidgeRetrieval:
    """Ridge regression from flattened windows to image embeddings (the linear baseline).

    Standardises every (channel, time) feature, then fits scikit-learn's ``RidgeCV`` with the
    regularisation chosen by efficient leave-one-out cross-validation on the training data.

    Parameters
    ----------
    alphas : sequence of float
        Candidate regularisation strengths.
    """

    def __init__(self, alphas: Sequence[float] = tuple(np.logspace(-1, 7, 17))) -> None:
        self.alphas = tuple(float(a) for a in alphas)
        self.pipeline: Pipeline | None = None

    def fit(self, x: ArrayLike, y: ArrayLike) -> RidgeRetrieval:
        """Fit on windows ``x`` (n, n_channels, n_times) and embeddings ``y`` (n, dim)."""
        arr = np.asarray(x, dtype=np.float32)
        xf = arr.reshape(arr.shape[0], -1)
        self.pipeline = make_pipeline(StandardScaler(), RidgeCV(alphas=self.alphas))
        self.pipeline.fit(xf, np.asarray(y, dtype=np.float32))
        return self

    @property
    def alpha(self) -> float:
        """The regularisation strength chosen."""
        if self.pipeline is None:
            raise RuntimeError("Fit the ridge decoder first.")
        return float(self.pipeline[-1].alpha_)

    def predict(self, x: ArrayLike) -> NDArray[np.float32]:
        """Predicted embeddings (n, dim) of windows (n, n_channels, n_times)."""
        if self.pipeline is None:
            raise RuntimeError("Fit the ridge decoder before predicting.")
        arr = np.asarray(x, dtype=np.float32)
        xf = arr.reshape(arr.shape[0], -1)
        return np.asarray(self.pipeline.predict(xf), dtype=np.float32)


def retrieval_ranks(
    predicted: ArrayLike,
    true_rows: ArrayLike,
    candidates: ArrayLike,
    pool: ArrayLike,
    n_distractors: int,
    *,
    seed: int = 0,
) -> NDArray[np.int64]:
    """Rank of the true image among it and ``n_distractors`` random others, per prediction.

    Parameters
    ----------
    predicted : array, shape (n, dim)
        Decoded embeddings.
    true_rows : array of int, shape (n,)
        Row of ``candidates`` of the image actually seen.
    candidates : array, shape (n_images, dim)
        Embeddings of all images (compared by cosine similarity).
    pool : array of int
        Rows distractors are drawn from (the true image is never its own distractor).
    n_distractors : int
        Distractors per prediction (a gallery of ``n_distractors + 1`` images).
    seed : int
        Seed of the draws.

    Returns
    -------
    ranks : array of int, shape (n,)
        0 when the true image scores highest; ties count against it.
    """
    p = np.asarray(predicted, dtype=np.float64)
    c = np.asarray(candidates, dtype=np.float64)
    p = p / np.linalg.norm(p, axis=1, keepdims=True)
    c = c / np.linalg.norm(c, axis=1, keepdims=True)
    pool_arr = np.asarray(pool, dtype=np.intp)
    true = np.asarray(true_rows, dtype=np.intp)
    if n_distractors > len(pool_arr) - 1:
        raise ValueError(
            f"{n_distractors} distractors requested but the pool has {len(pool_arr)} images."
        )
    rng = np.random.default_rng(seed)
    scores = p @ c[pool_arr].T
    true_scores = np.einsum("nd,nd->n", p, c[true])
    ranks = np.empty(len(p), dtype=np.int64)
    is_true = pool_arr[None, :] == true[:, None]
    for i in range(len(p)):
        choices = np.flatnonzero(~is_true[i])
        pick = rng.choice(choices, n_distractors, replace=False)
        ranks[i] = int((scores[i, pick] >= true_scores[i]).sum())
    return ranks


def top_k_accuracy(ranks: ArrayLike, k: int) -> float:
    """Fraction of ranks below ``k``."""
    return float(np.mean(np.asarray(ranks) < k))
