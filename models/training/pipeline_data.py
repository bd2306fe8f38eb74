"""Training windows and recipes of the classical and Riemannian decoders.

:func:`training_windows` cuts labelled windows out of a recording exactly as the decode engine
will see them live: the same causal preprocessing (:class:`~neurocast.models.serving.features.
FeaturePreprocessor`, filter bank included) run over the whole recording, and windows ending on
the engine's stride grid (multiples of the stride in samples since the first sample). A model
trained on them therefore reads the same numbers when it is served.

:func:`make_recipe` builds the scikit-learn pipeline, band-pass and filter bank of each recipe
that ``neurocast train pipeline`` and ``bench/decoders_eegbci.py`` train.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from neurocast.models.serving.features import FeaturePreprocessor, FeatureSpec
from neurocast.streaming.engine.windows import WindowSpec
from neurocast.streaming.preprocessing.filters import PreprocessSpec
from neurocast.streaming.sources.base import StreamInfo

RECIPES = ("csp-lda", "fbcsp-lda", "ts-lr", "mdm", "xdawn-ts-lr", "vec-lr")
#: Motor-imagery band (mu and beta rhythms), Hz.
MI_BAND_HZ = (8.0, 30.0)
#: Event-related potentials: slow waves, Hz.
ERP_BAND_HZ = (1.0, 20.0)
#: Filter bank of FBCSP (Ang et al. 2008 use 4-Hz bands from 4 to 40 Hz), Hz.
FILTER_BANK_HZ = ((4.0, 8.0), (8.0, 12.0), (12.0, 16.0), (16.0, 24.0), (24.0, 32.0), (32.0, 40.0))


@dataclass(frozen=True)
class Recipe:
    """A recipe: its unfitted pipeline and the preprocessing its windows go through.

    Attributes
    ----------
    name : str
        One of :data:`RECIPES`.
    pipeline : sklearn.pipeline.Pipeline
        Unfitted.
    preprocess : PreprocessSpec
        Causal online preprocessing (band-pass) without picks.
    bands_hz : tuple of (float, float) | None
        Filter bank edges in Hz (FBCSP).
    """

    name: str
    pipeline: Any
    preprocess: PreprocessSpec
    bands_hz: tuple[tuple[float, float], ...] | None = None


def make_recipe(name: str) -> Recipe:
    """The unfitted pipeline and preprocessing of a recipe.

    Parameters
    ----------
    name : str
        ``csp-lda`` (MNE CSP, 4 components, + LDA; 8-30 Hz), ``fbcsp-lda`` (a CSP per band
        of :data:`FILTER_BANK_HZ` + shrinkage LDA), ``ts-lr`` (OAS covariance → Riemannian
        tangent space → logistic regression; 8-30 Hz), ``mdm`` (OAS covariance → minimum
        distance to the Riemannian class means; 8-30 Hz), ``xdawn-ts-lr`` (xDAWN covariances,
        2 filters per class → tangent space → logistic regression; 1-20 Hz, for ERPs),
        ``vec-lr`` (the samples themselves, standardised → logistic regression; 1-20 Hz).

    Raises
    ------
    ValueError
        For an unknown recipe (the message lists them).
    """
    from mne.decoding import CSP, Vectorizer
    from pyriemann.classification import MDM
    from pyriemann.estimation import Covariances, XdawnCovariances
    from pyriemann.tangentspace import TangentSpace
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from neurocast.models.training.pipeline_steps import FilterBankCSP

    mi = PreprocessSpec(l_freq_hz=MI_BAND_HZ[0], h_freq_hz=MI_BAND_HZ[1])
    erp = PreprocessSpec(l_freq_hz=ERP_BAND_HZ[0], h_freq_hz=ERP_BAND_HZ[1])
    lr = LogisticRegression(C=1.0, max_iter=1000)
    if name == "csp-lda":
        return Recipe(name, make_pipeline(CSP(n_components=4), LinearDiscriminantAnalysis()), mi)
    if name == "fbcsp-lda":
        lda = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto")
        pipe = make_pipeline(FilterBankCSP(n_components=4), lda)
        return Recipe(name, pipe, PreprocessSpec(), FILTER_BANK_HZ)
    if name == "ts-lr":
        return Recipe(name, make_pipeline(Covariances("oas"), TangentSpace(), lr), mi)
    if name == "mdm":
        return Recipe(name, make_pipeline(Covariances("oas"), MDM()), mi)
    if name == "xdawn-ts-lr":
        pipe = make_pipeline(XdawnCovariances(nfilter=2, estimator="oas"), TangentSpace(), lr)
        return Recipe(name, pipe, erp)
    if name == "vec-lr":
        return Recipe(name, make_pipeline(Vectorizer(), StandardScaler(), lr), erp)
    raise ValueError(f"Unknown recipe {name!r}; choose one of {', '.join(RECIPES)}.")


def window_ends(
    onsets: NDArray[np.integer],
    sfreq: float,
    window: WindowSpec,
    tmin_s: float,
    tmax_s: float,
    n_samples: int,
) -> list[NDArray[np.int64]]:
    """Window ends (exclusive sample indices) on the engine's grid, per trial.

    Parameters
    ----------
    onsets : array of int
        Trial onsets in samples since the first sample.
    sfreq : float
        Sampling rate in Hz.
    window : WindowSpec
        The model's window; ``stride_s`` is the engine's stride.
    tmin_s, tmax_s : float
        Windows end in ``[onset + tmin_s, onset + tmax_s]`` (seconds after the onset).
    n_samples : int
        Length of the recording; windows must lie inside it.

    Returns
    -------
    ends : list of ndarray
        One array per trial (possibly empty).
    """
    samples = window.in_samples(sfreq)
    stride, first = samples.stride, samples.first_end
    out = []
    for onset in np.asarray(onsets, dtype=np.int64):
        lo = max(int(onset) + int(np.ceil(tmin_s * sfreq - 1e-9)), first)
        hi = min(int(onset) + int(np.floor(tmax_s * sfreq + 1e-9)), n_samples)
        start = -(-lo // stride) * stride
        out.append(np.arange(start, hi + 1, stride, dtype=np.int64))
    return out


def training_windows(
    data: NDArray[np.floating],
    stream: StreamInfo,
    onsets: NDArray[np.integer],
    labels: NDArray[np.integer],
    preprocess: PreprocessSpec,
    window: WindowSpec,
    tmin_s: float,
    tmax_s: float,
    *,
    bands_hz: Sequence[tuple[float, float]] | None = None,
    ch_names: Sequence[str] | None = None,
    every: int = 4,
) -> tuple[NDArray[np.float64], NDArray[np.int64], NDArray[np.int64]]:
    """Labelled windows of one recording, preprocessed as the engine preprocesses them live.

    Parameters
    ----------
    data : array, shape (n_channels, n_samples)
        The recording in SI units, channels in the order of ``stream``.
    stream : StreamInfo
        Its channels and rate.
    onsets, labels : arrays of int
        Trial onsets (samples) and class indices.
    preprocess : PreprocessSpec
        Causal preprocessing (no resampling; ``picks`` is set to ``ch_names``).
    window : WindowSpec
        The model's window and context, and the engine's stride.
    tmin_s, tmax_s : float
        Windows end in ``[onset + tmin_s, onset + tmax_s]``.
    bands_hz : sequence of (float, float) | None
        Filter bank: windows become (bands, channels, times).
    ch_names : sequence of str | None
        Channels the model reads, in order (default: every channel of the stream).
    every : int
        Keep every n-th window of the engine's grid (4 at a 25 ms stride: one per 100 ms).

    Returns
    -------
    X : ndarray, shape (n_windows, [bands,] channels, times)
        The windows the model reads, float32 values in float64.
    y : ndarray of int, shape (n_windows,)
        Labels.
    trial : ndarray of int, shape (n_windows,)
        Index of each window's trial.
    """
    if preprocess.resample_hz is not None:
        raise ValueError("Training windows are cut at the stream's rate: drop resample_hz.")
    names = list(ch_names or stream.ch_names)
    pre = FeaturePreprocessor(
        preprocess.model_copy(update={"picks": names}),
        FeatureSpec(bands_hz=list(bands_hz) if bands_hz else None),
        stream,
    )
    arr = np.asarray(data)
    block = 1 << 15
    rows = np.concatenate(
        [pre.push(arr[:, a : a + block]) for a in range(0, arr.shape[1], block)], axis=1
    )
    total = window.in_samples(stream.sfreq).total
    ends = window_ends(onsets, stream.sfreq, window, tmin_s, tmax_s, arr.shape[1])
    xs, ys, ts = [], [], []
    for k, trial_ends in enumerate(ends):
        for end in trial_ends[::every]:
            xs.append(pre.finalize(rows[:, end - total : end]))
            ys.append(labels[k])
            ts.append(k)
    if not xs:
        raise ValueError(
            f"No window of {total / stream.sfreq:g} s ends {tmin_s:g}-{tmax_s:g} s after a "
            "trial onset inside the recording."
        )
    return np.asarray(xs, dtype=np.float64), np.asarray(ys), np.asarray(ts)
