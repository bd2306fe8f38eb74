"""Accuracies of an aligned EEG–MEG–image space on held-out images.

A 2-way accuracy is the probability that the true candidate scores higher than one other
candidate (averaged over all other candidates; ties count half); chance is 0.5. Conversion
accuracy is normalised by the target modality's own split-half reliability: the repetitions
of each test image are split in two halves, converted representations come from one half and
targets from the other, and the ceiling is the target modality's half against its own other
half.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from neurocast.models.training.align import AlignedModel
from neurocast.models.training.align_data import MODALITIES, AlignedEpochs, unit_rows
from neurocast.models.training.retrieval_eval import top_k_accuracy

#: Conversion accuracy is normalised only by a target modality whose split halves identify
#: their own images at least this well (2-way); near chance the ratio would mean nothing.
MIN_CEILING_2WAY = 0.6


def two_way_accuracy(scores: ArrayLike, true: ArrayLike) -> float:
    """Mean 2-way accuracy of rows of a score matrix.

    Parameters
    ----------
    scores : array, shape (n_queries, n_candidates)
        Similarity of each query to each candidate.
    true : array of int, shape (n_queries,)
        The correct candidate of each query.

    Returns
    -------
    accuracy : float
        Fraction of (query, wrong candidate) pairs in which the correct candidate scores
        higher (ties count half); 0.5 is chance.
    """
    s = np.asarray(scores, dtype=np.float64)
    t = np.asarray(true, dtype=np.intp)
    if s.ndim != 2 or s.shape[1] < 2 or len(t) != s.shape[0]:
        raise ValueError(
            "scores must be (n_queries, n_candidates >= 2) with one true index per row."
        )
    right = s[np.arange(len(t)), t][:, None]
    wins = (right > s).sum(axis=1) + 0.5 * ((right == s).sum(axis=1) - 1)
    return float(np.mean(wins / (s.shape[1] - 1)))


def _ranks(scores: NDArray[np.float64], true: NDArray[np.intp]) -> NDArray[np.int64]:
    right = scores[np.arange(len(true)), true][:, None]
    return ((scores >= right).sum(axis=1) - 1).astype(np.int64)


def _split_means(
    z: NDArray[np.float32], rows: NDArray[np.int64], images: NDArray[np.int64]
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Per image, the mean representation of its first and its second half of repetitions."""
    a, b = [], []
    for img in images:
        trials = np.flatnonzero(rows == img)
        half = len(trials) // 2
        a.append(z[trials[:half]].mean(axis=0))
        b.append(z[trials[half:]].mean(axis=0))
    return unit_rows(np.array(a)), unit_rows(np.array(b))


def evaluate_aligned(model: AlignedModel, test: AlignedEpochs, *, k: int = 5) -> dict[str, float]:
    """Decoding, encoding and conversion accuracies on held-out images.

    Parameters
    ----------
    model : AlignedModel
        The trained encoders.
    test : AlignedEpochs
        Trials of images never seen in training, each image repeated at least twice.
    k : int
        Top-k of decoding.

    Returns
    -------
    figures : dict of str to float
        For each modality ``m``: ``decode_2way_m`` and ``decode_top{k}_m`` (single trials
        against all test images), ``decode_top1_m``, ``encode_2way_m`` (each image's
        embedding against the mean representations of all test images); and
        ``conversion_2way_eeg_to_meg``, ``conversion_2way_norm_eeg_to_meg`` (and the reverse;
        NaN when the target's ceiling is below :data:`MIN_CEILING_2WAY`),
        ``ceiling_2way_meg``, ``ceiling_2way_eeg``; plus ``n_test_images``, ``n_test_trials``.
    """
    rows = test.image_rows
    images, true = np.unique(rows, return_inverse=True)
    counts = np.bincount(true)
    if len(images) < 2 or counts.min() < 2:
        raise ValueError(
            "Evaluation needs at least two test images, each shown at least twice (for the "
            "split-half normalisation of conversion)."
        )
    cand = unit_rows(test.embeddings[images])
    z = {m: model.embed(test, m) for m in MODALITIES}
    out: dict[str, float] = {"n_test_images": float(len(images)), "n_test_trials": float(len(rows))}
    halves: dict[str, tuple[NDArray[np.float32], NDArray[np.float32]]] = {}
    for m in MODALITIES:
        s = z[m].astype(np.float64) @ cand.T.astype(np.float64)
        ranks = _ranks(s, true)
        out[f"decode_2way_{m}"] = two_way_accuracy(s, true)
        out[f"decode_top1_{m}"] = top_k_accuracy(ranks, 1)
        out[f"decode_top{k}_{m}"] = top_k_accuracy(ranks, k)
        mean = unit_rows(np.array([z[m][true == i].mean(axis=0) for i in range(len(images))]))
        out[f"encode_2way_{m}"] = two_way_accuracy(cand @ mean.T, np.arange(len(images)))
        halves[m] = _split_means(z[m], true, np.arange(len(images)))
    diag = np.arange(len(images))
    for src, dst in (("eeg", "meg"), ("meg", "eeg")):
        raw = two_way_accuracy(halves[src][0] @ halves[dst][1].T, diag)
        ceiling = two_way_accuracy(halves[dst][0] @ halves[dst][1].T, diag)
        out[f"conversion_2way_{src}_to_{dst}"] = raw
        out[f"ceiling_2way_{dst}"] = ceiling
        reliable = ceiling >= MIN_CEILING_2WAY
        out[f"conversion_2way_norm_{src}_to_{dst}"] = raw / ceiling if reliable else float("nan")
    return out
