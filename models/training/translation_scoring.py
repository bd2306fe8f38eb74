"""Scoring EEG→MEG translators against recorded or simulated MEG.

:func:`evaluate_segment` translates a segment window by window as a stream would
(:func:`translate_segment`), applies the segment's SSP projector to the translation as it was
applied to the reference MEG, and reports per-sensor correlation and explained variance
(:func:`score_translation`) for magnetometers and gradiometers separately.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike, NDArray

from neurocast.models.training.translation_data import (
    MEG_TYPES,
    SimultaneousSegment,
    TranslationWindow,
    model_inputs,
)

if TYPE_CHECKING:
    from neurocast.models.training.translation import TranslationModel


@dataclass(frozen=True)
class TranslationScores:
    """Per-sensor agreement of translated and recorded (or simulated) MEG.

    Attributes
    ----------
    meg_names, meg_types : list of str
        Scored channels and their types.
    corr : ndarray, shape (n_meg,)
        Pearson correlation over time.
    explained_variance : ndarray, shape (n_meg,)
        ``1 - var(recorded - translated) / var(recorded)`` (can be negative).
    n_samples : int
        Samples compared per sensor.
    simulated : bool
        Whether the reference MEG is simulated.
    description : str
        What was scored.
    """

    meg_names: list[str]
    meg_types: list[str]
    corr: NDArray[np.float64]
    explained_variance: NDArray[np.float64]
    n_samples: int
    simulated: bool
    description: str

    def summary(self) -> dict[str, float]:
        """Medians over sensors per type: ``corr_mag``, ``ev_mag``, ``corr_grad``, ... ."""
        types = np.asarray(self.meg_types)
        out: dict[str, float] = {}
        for t in MEG_TYPES:
            sel = types == t
            out[f"corr_{t}"] = float(np.median(self.corr[sel])) if sel.any() else float("nan")
            out[f"ev_{t}"] = (
                float(np.median(self.explained_variance[sel])) if sel.any() else float("nan")
            )
            out[f"n_{t}"] = float(sel.sum())
        out["n_samples"] = float(self.n_samples)
        return out


def score_translation(
    translated: ArrayLike,
    reference: ArrayLike,
    meg_names: Sequence[str],
    meg_types: Sequence[str],
    *,
    simulated: bool,
    description: str = "",
) -> TranslationScores:
    """Per-sensor correlation and explained variance of translated against reference MEG.

    Parameters
    ----------
    translated, reference : array, shape (n_meg, n_samples)
        Same channels, same samples, any one unit per channel.
    meg_names, meg_types : sequence of str
        Channel names and types (``"mag"``/``"grad"``) of the rows.
    simulated : bool
        Whether the reference is simulated.
    description : str
        What is scored.
    """
    p = np.asarray(translated, dtype=np.float64)
    r = np.asarray(reference, dtype=np.float64)
    if p.shape != r.shape or p.ndim != 2 or p.shape[1] < 3:
        raise ValueError(
            f"translated and reference must both be (n_meg, n_samples >= 3), got {p.shape} and "
            f"{r.shape}."
        )
    if len(meg_names) != p.shape[0] or len(meg_types) != p.shape[0]:
        raise ValueError("Give one name and one type per MEG row.")
    # scale each channel first: squares of tesla underflow float arithmetic
    unit = r.std(axis=1, keepdims=True)
    unit[unit == 0] = 1.0
    p, r = p / unit, r / unit
    pc, rc = p - p.mean(axis=1, keepdims=True), r - r.mean(axis=1, keepdims=True)
    denom = np.sqrt((pc**2).sum(axis=1) * (rc**2).sum(axis=1))
    corr = np.divide((pc * rc).sum(axis=1), denom, out=np.zeros(len(p)), where=denom > 0)
    resid = r - p
    ev = 1.0 - resid.var(axis=1) / np.where(r.var(axis=1) > 0, r.var(axis=1), np.inf)
    return TranslationScores(
        list(meg_names), list(meg_types), corr, ev, int(p.shape[1]), simulated, description
    )


def translate_segment(
    predict: Callable[[NDArray[np.float32]], NDArray[np.float32]],
    inputs: NDArray[np.float32],
    window: TranslationWindow,
    *,
    batch_size: int = 256,
) -> tuple[NDArray[np.float32], slice]:
    """Translate a continuous input window by window, as a stream would.

    Windows end every ``window.n_window`` samples, so their translated parts tile the
    segment without overlap.

    Parameters
    ----------
    predict : callable
        Model inputs (n, n_eeg, n_times) → MEG (n, n_meg, n_window).
    inputs : ndarray, shape (n_eeg, n_samples)
        Finalised EEG of a segment.
    window : TranslationWindow
        The model's window.
    batch_size : int
        Windows per call of ``predict``.

    Returns
    -------
    translated : ndarray, shape (n_meg, n_covered)
        Translated MEG.
    covered : slice
        The samples of the segment it covers.
    """
    n, t, w = inputs.shape[1], window.n_times, window.n_window
    ends = np.arange(t, n + 1, w)
    if not len(ends):
        raise ValueError(f"The segment ({n} samples) is shorter than one window ({t} samples).")
    pieces = []
    for a in range(0, len(ends), batch_size):
        batch = np.stack([inputs[:, e - t : e] for e in ends[a : a + batch_size]])
        pieces.append(predict(batch))
    out = np.concatenate(pieces, axis=0)  # (n_windows, n_meg, w)
    return np.concatenate(list(out), axis=1), slice(int(ends[0] - w), int(ends[-1]))


def evaluate_segment(
    model: TranslationModel,
    segment: SimultaneousSegment,
    which: str = "net",
    *,
    predict: Callable[[NDArray[np.float32]], NDArray[np.float32]] | None = None,
) -> TranslationScores:
    """Score a translator on a segment it was not trained on.

    Parameters
    ----------
    model : TranslationModel
        The trained models (their preprocessing and channels).
    segment : SimultaneousSegment
        Held-out simulation or a real recording
        (:func:`.translation_data.recording_segment`); only its MEG channels are scored, in
        its order.
    which : {"net", "ridge"}
        Which model to score (ignored when ``predict`` is given).
    predict : callable | None
        Another implementation of the same model (e.g. the exported ONNX artifact through the
        runtime), from inputs (n, n_eeg, n_times) to MEG (n, n_meg_model, n_window).
    """
    if segment.eeg_names != model.eeg_names:
        raise ValueError("The segment's EEG channels differ from the model's inputs.")
    missing = [n for n in segment.meg_names if n not in model.meg_names]
    if missing:
        raise ValueError(f"The model does not output MEG channels {missing[:5]}.")
    x = model_inputs(segment, model.spec)
    fn = predict if predict is not None else model.predictor(which)
    out, covered = translate_segment(fn, x, model.window)
    rows = [model.meg_names.index(n) for n in segment.meg_names]
    translated = out[rows].astype(np.float64)
    if segment.meg_projector is not None:
        translated = segment.meg_projector @ translated
    label = "network" if predict is None and which == "net" else which
    return score_translation(
        translated,
        segment.meg[:, covered],
        segment.meg_names,
        segment.meg_types,
        simulated=segment.simulated,
        description=f"{label} on {segment.description}",
    )
