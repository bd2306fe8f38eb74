"""Trial decisions from streamed window results, and the scores of those decisions.

A streamed classifier gives class probabilities for a window every stride (25 ms). A trial's
decision is the class of highest mean log-probability over the windows that end in
``[onset + tmin, onset + tmax]``; :func:`time_resolved_accuracy` scores single windows by
their delay after the cue. numpy only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


def check_events(present: Iterable[str], event_map: Mapping[str, str], where: str) -> None:
    """Refuse an event map that names annotations a recording lacks.

    Raises
    ------
    ValueError
        Naming the absent annotations and listing the ones present.
    """
    have = sorted(set(present))
    absent = [d for d in event_map if d not in have]
    if absent:
        raise ValueError(
            f"{where} has no annotation {', '.join(map(repr, absent))}; the annotations "
            f"present are {have}. Give --event ANNOTATION=CLASS with one of them."
        )


@dataclass(frozen=True)
class Decisions:
    """Trial decisions of one or more recordings.

    Attributes
    ----------
    truth, predicted : ndarray of int, shape (n_trials,)
        True and decided class indices.
    mean_log_prob : ndarray, shape (n_trials, n_classes)
        Mean log-probability of each class over the trial's windows.
    n_windows : ndarray of int, shape (n_trials,)
        Windows averaged per trial.
    """

    truth: NDArray[np.int64]
    predicted: NDArray[np.int64]
    mean_log_prob: NDArray[np.float64]
    n_windows: NDArray[np.int64]


def decide(
    ends: NDArray[np.integer],
    probabilities: NDArray[np.floating],
    onsets: NDArray[np.integer],
    labels: NDArray[np.integer],
    sfreq: float,
    tmin_s: float,
    tmax_s: float,
) -> Decisions:
    """Trial decisions from window results.

    Parameters
    ----------
    ends : array of int, shape (n_windows,)
        Window ends (exclusive sample index) of the results.
    probabilities : array, shape (n_windows, n_classes)
        Class probabilities of each window.
    onsets, labels : arrays of int, shape (n_trials,)
        Trial onsets in samples and true classes.
    sfreq : float
        Sampling rate of ``ends`` and ``onsets`` in Hz.
    tmin_s, tmax_s : float
        Windows ending in ``[onset + tmin_s, onset + tmax_s]`` decide a trial.

    Returns
    -------
    decisions : Decisions
        Trials without any such window are left out.
    """
    ends = np.asarray(ends)
    logp = np.log(np.clip(np.asarray(probabilities, dtype=np.float64), 1e-300, None))
    keep, means, counts = [], [], []
    for k, onset in enumerate(np.asarray(onsets)):
        rel = (ends - onset) / sfreq
        sel = (rel >= tmin_s - 1e-9) & (rel <= tmax_s + 1e-9)
        if sel.any():
            keep.append(k)
            means.append(logp[sel].mean(axis=0))
            counts.append(int(sel.sum()))
    mean = np.asarray(means).reshape(len(keep), logp.shape[1])
    return Decisions(
        truth=np.asarray(labels)[keep].astype(np.int64),
        predicted=mean.argmax(axis=1).astype(np.int64),
        mean_log_prob=mean,
        n_windows=np.asarray(counts, dtype=np.int64),
    )


def confusion(truth: NDArray[np.integer], predicted: NDArray[np.integer], n: int) -> NDArray:
    """Confusion matrix, rows true class, columns decided class (counts)."""
    out = np.zeros((n, n), dtype=np.int64)
    np.add.at(out, (np.asarray(truth), np.asarray(predicted)), 1)
    return out


def balanced_accuracy(truth: NDArray[np.integer], predicted: NDArray[np.integer], n: int) -> float:
    """Mean over the classes present of the fraction of their trials decided correctly."""
    cm = confusion(truth, predicted, n)
    rows = cm.sum(axis=1)
    present = rows > 0
    if not present.any():
        return float("nan")
    return float(np.mean(np.diag(cm)[present] / rows[present]))


def time_resolved_accuracy(
    ends: NDArray[np.integer],
    probabilities: NDArray[np.floating],
    onsets: NDArray[np.integer],
    labels: NDArray[np.integer],
    sfreq: float,
    delays_s: NDArray[np.floating],
) -> NDArray[np.float64]:
    """Balanced accuracy of single windows by the delay of their end after the cue.

    Parameters
    ----------
    delays_s : array, shape (n_delays,)
        Delays in seconds; each window counts for the delay nearest its end (within half a
        step of ``delays_s``).

    Returns
    -------
    accuracy : ndarray, shape (n_delays,)
        NaN where no window falls.
    """
    ends = np.asarray(ends)
    pred = np.asarray(probabilities).argmax(axis=1)
    n = np.asarray(probabilities).shape[1]
    step = float(np.diff(delays_s).min()) if len(delays_s) > 1 else 1.0
    truth_at: list[list[int]] = [[] for _ in delays_s]
    pred_at: list[list[int]] = [[] for _ in delays_s]
    for onset, label in zip(np.asarray(onsets), np.asarray(labels), strict=True):
        rel = (ends - onset) / sfreq
        idx = np.round((rel - delays_s[0]) / step).astype(int)
        ok = (
            (idx >= 0)
            & (idx < len(delays_s))
            & (np.abs(rel - delays_s[np.clip(idx, 0, len(delays_s) - 1)]) <= step / 2)
        )
        for i, p in zip(idx[ok], pred[ok], strict=True):
            truth_at[i].append(int(label))
            pred_at[i].append(int(p))
    return np.array(
        [
            balanced_accuracy(np.array(t), np.array(p), n) if t else np.nan
            for t, p in zip(truth_at, pred_at, strict=True)
        ]
    )
