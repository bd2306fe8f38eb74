"""Feature steps that run in numpy before an artifact's ONNX graph, and the filter bank.

Some decoders need operations that ONNX has no operator for: the matrix logarithm of the
Riemannian tangent space and the affine-invariant Riemannian distance of minimum distance to
mean (MDM) both need an eigendecomposition. An artifact declares such steps in its metadata
(:class:`FeatureSpec`, the ``input.features`` field), with their fitted parameters, and the
runtime executes them here, per window, between the online preprocessing and the graph. The
graph then reads the features (tangent vectors, distances) instead of the signal window.

A filter bank (``bands_hz``) runs the model's online preprocessing once per band, with the
band's edges as its band-pass, and stacks the bands: the graph reads (bands, channels, times).
Live and batch decoding run the same causal filters (:mod:`neurocast.streaming.preprocessing`).

Every step equals its pyriemann counterpart (float64) within 1e-6. This module is on the
serving path: numpy and pydantic only.
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, model_validator

from neurocast.streaming.preprocessing.filters import OnlinePreprocessor, PreprocessSpec
from neurocast.streaming.sources.base import StreamInfo

Matrix = list[list[float]]


class _Step(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CovarianceStep(_Step):
    """Spatial covariance of a (channels, times) window.

    Parameters
    ----------
    estimator : {"scm", "cov", "lwf", "oas"}
        pyriemann's estimator of the same name: ``scm`` (mean removed, divided by the number
        of samples), ``cov`` (``np.cov``, divided by samples - 1), ``lwf`` (Ledoit-Wolf
        shrinkage) and ``oas`` (oracle approximating shrinkage), as scikit-learn computes them.
    """

    op: Literal["covariance"] = "covariance"
    estimator: Literal["scm", "cov", "lwf", "oas"] = "oas"


class XdawnStep(_Step):
    """xDAWN super-trial: the class prototypes stacked over the (filtered) window.

    Parameters
    ----------
    prototypes : list of list of float, shape (n_prototypes, n_times)
        Filtered class-mean responses (pyriemann ``XdawnCovariances.P_``), in the window's
        units.
    filters : list of list of float | None, shape (n_filters, n_channels)
        Spatial filters applied to the window first (``applyfilters=True``); None keeps the
        channels.
    """

    op: Literal["xdawn"] = "xdawn"
    prototypes: Matrix
    filters: Matrix | None = None


class RecenterStep(_Step):
    """Congruence ``A C A^T``: re-centres covariances of a subject at its reference.

    Parameters
    ----------
    matrix : list of list of float, shape (n, n)
        ``A``; ``M^{-1/2}`` for a subject whose covariances have the Riemannian mean ``M``.
    """

    op: Literal["recenter"] = "recenter"
    matrix: Matrix


class TangentSpaceStep(_Step):
    """Riemannian tangent space at a reference ``Cref``: ``upper(logm(Cref^-1/2 C Cref^-1/2))``.

    Parameters
    ----------
    isqrt_reference : list of list of float, shape (n, n)
        ``Cref^{-1/2}``; off-diagonal terms of the upper triangle are weighted by sqrt(2), as
        :func:`pyriemann.utils.tangentspace.upper` does.
    """

    op: Literal["tangent_space"] = "tangent_space"
    isqrt_reference: Matrix


class RiemannDistanceStep(_Step):
    """Affine-invariant Riemannian distance to each class mean (MDM).

    Parameters
    ----------
    isqrt_means : list of (n, n) matrices
        ``M_k^{-1/2}`` of every class mean ``M_k``, in class order. The step outputs
        ``||logm(M_k^-1/2 C M_k^-1/2)||_F`` per class (dimensionless).
    """

    op: Literal["riemann_distance"] = "riemann_distance"
    isqrt_means: list[Matrix] = Field(min_length=2)


FeatureStep = Annotated[
    CovarianceStep | XdawnStep | RecenterStep | TangentSpaceStep | RiemannDistanceStep,
    Field(discriminator="op"),
]


class FeatureSpec(BaseModel):
    """A filter bank and the numpy steps between the preprocessed window and the graph.

    Parameters
    ----------
    bands_hz : list of (float, float) | None
        Band-pass edges in Hz of each band of a filter bank; each band runs the model's
        preprocessing with these edges (its own ``l_freq_hz``/``h_freq_hz`` must be None).
        The window becomes (bands, channels, times). None for no filter bank.
    steps : list of steps
        Numpy steps in order (not allowed with a filter bank).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    bands_hz: list[tuple[float, float]] | None = Field(None, min_length=1)
    steps: list[FeatureStep] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> FeatureSpec:
        if self.bands_hz is not None:
            if self.steps:
                raise ValueError("A filter bank cannot be followed by numpy steps.")
            bad = [b for b in self.bands_hz if not 0 < b[0] < b[1]]
            if bad:
                raise ValueError(f"Each band needs 0 < low < high (Hz), got {bad}.")
        return self

    def output_shape(self, n_channels: int, n_times: int) -> tuple[int, ...]:
        """Shape of the graph input for a (channels, times) window.

        Raises
        ------
        ValueError
            If a step does not fit what the previous one outputs.
        """
        if self.bands_hz is not None:
            return (len(self.bands_hz), n_channels, n_times)
        shape: tuple[int, ...] = (n_channels, n_times)
        for step in self.steps:
            shape = _step_shape(step, shape)
        return shape

    def axes(self) -> tuple[str, ...]:
        """Names of the graph input's axes (without the batch axis)."""
        if self.bands_hz is not None:
            return ("bands", "channels", "times")
        names: tuple[str, ...] = ("channels", "times")
        for step in self.steps:
            if isinstance(step, CovarianceStep):
                names = ("channels", "channels")
            elif isinstance(step, TangentSpaceStep):
                names = ("tangent features",)
            elif isinstance(step, RiemannDistanceStep):
                names = ("class distances",)
        return names


def _step_shape(step: _Step, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Output shape of ``step`` for an input of ``shape``; ValueError when it does not fit."""
    op = step.op  # type: ignore[attr-defined]
    square = len(shape) == 2 and shape[0] == shape[1]
    if isinstance(step, CovarianceStep | XdawnStep) and len(shape) != 2:
        raise ValueError(f"Step {op!r} needs a (channels, times) window, got shape {shape}.")
    if isinstance(step, CovarianceStep):
        return (shape[0], shape[0])
    if isinstance(step, XdawnStep):
        proto = np.asarray(step.prototypes)
        n_rows = shape[0]
        if step.filters is not None:
            filt = np.asarray(step.filters)
            if filt.ndim != 2 or filt.shape[1] != shape[0]:
                raise ValueError(f"xdawn filters {filt.shape} do not fit {shape[0]} channels.")
            n_rows = filt.shape[0]
        if proto.ndim != 2 or proto.shape[1] != shape[1]:
            raise ValueError(
                f"xdawn prototypes {proto.shape} do not span the window's {shape[1]} samples."
            )
        return (proto.shape[0] + n_rows, shape[1])
    if not square:
        raise ValueError(f"Step {op!r} needs square matrices, got shape {shape}.")
    n = shape[0]
    if isinstance(step, RecenterStep | TangentSpaceStep):
        mat = np.asarray(step.matrix if isinstance(step, RecenterStep) else step.isqrt_reference)
        if mat.shape != (n, n):
            raise ValueError(f"Step {op!r} holds a {mat.shape} matrix for {n}x{n} inputs.")
        return (n, n) if isinstance(step, RecenterStep) else (n * (n + 1) // 2,)
    assert isinstance(step, RiemannDistanceStep)
    means = np.asarray(step.isqrt_means)
    if means.ndim != 3 or means.shape[1:] != (n, n):
        raise ValueError(f"riemann_distance holds means of shape {means.shape} for {n}x{n}.")
    return (means.shape[0],)


# --- numpy implementations (float64) ---


def covariance(x: NDArray[np.float64], estimator: str) -> NDArray[np.float64]:
    """Covariance of ``x`` (channels, times) by pyriemann's ``estimator`` (see above)."""
    n_ch, n_t = x.shape
    xc = x - x.mean(axis=1, keepdims=True)
    if estimator == "cov":
        return (xc @ xc.T) / (n_t - 1)
    emp = (xc @ xc.T) / n_t
    if estimator == "scm":
        return emp
    mu = np.trace(emp) / n_ch
    if estimator == "oas":
        # scikit-learn's OAS (its simplified form of Chen et al. 2010, eq. 23)
        alpha = np.mean(emp**2)
        num = alpha + mu**2
        den = (n_t + 1.0) * (alpha - mu**2 / n_ch)
        shrinkage = 1.0 if den == 0 else min(num / den, 1.0)
    elif estimator == "lwf":
        # scikit-learn's ledoit_wolf_shrinkage with one block
        x2 = xc**2
        beta_ = np.sum(x2 @ x2.T)
        delta_ = np.sum(emp**2)
        beta = (beta_ / n_t - delta_) / (n_ch * n_t)
        delta = (delta_ - 2.0 * mu * np.trace(emp) + n_ch * mu**2) / n_ch
        beta = min(beta, delta)
        shrinkage = 0.0 if beta == 0 else beta / delta
    else:
        raise ValueError(f"Unknown covariance estimator {estimator!r}.")
    out = (1.0 - shrinkage) * emp
    out.flat[:: n_ch + 1] += shrinkage * mu
    return out


def _sym_fn(c: NDArray[np.float64], fn: str) -> NDArray[np.float64]:
    """``logm``/``sqrtm``/``invsqrtm`` of a symmetric positive definite matrix (eigh)."""
    w, v = np.linalg.eigh(c)
    if fn == "log":
        f = np.log(w)
    elif fn == "sqrt":
        f = np.sqrt(w)
    else:
        f = 1.0 / np.sqrt(w)
    return (v * f) @ v.T


def upper(m: NDArray[np.float64]) -> NDArray[np.float64]:
    """Upper triangle of a symmetric matrix, off-diagonal terms times sqrt(2) (pyriemann)."""
    n = m.shape[-1]
    rows, cols = np.triu_indices(n)
    coeffs = np.where(rows == cols, 1.0, np.sqrt(2.0))
    return coeffs * m[rows, cols]


def apply_step(step: _Step, x: NDArray[np.float64]) -> NDArray[np.float64]:
    """Run one declared step on one window's array (float64)."""
    if isinstance(step, CovarianceStep):
        return covariance(x, step.estimator)
    if isinstance(step, XdawnStep):
        filtered = x if step.filters is None else np.asarray(step.filters) @ x
        return np.concatenate([np.asarray(step.prototypes), filtered], axis=0)
    if isinstance(step, RecenterStep):
        a = np.asarray(step.matrix)
        return a @ x @ a.T
    if isinstance(step, TangentSpaceStep):
        p = np.asarray(step.isqrt_reference)
        return upper(_sym_fn(p @ x @ p.T, "log"))
    assert isinstance(step, RiemannDistanceStep)
    out = np.empty(len(step.isqrt_means))
    for k, m in enumerate(step.isqrt_means):
        p = np.asarray(m)
        w = np.linalg.eigvalsh(p @ x @ p.T)
        out[k] = np.sqrt(np.sum(np.log(w) ** 2))
    return out


def apply_steps(spec: FeatureSpec, x: NDArray[np.floating]) -> NDArray[np.float64]:
    """Run every declared step of ``spec`` on one window (float64 throughout)."""
    out = np.asarray(x, dtype=np.float64)
    for step in spec.steps:
        out = apply_step(step, out)
    return out


def isqrtm(c: NDArray[np.float64]) -> NDArray[np.float64]:
    """``C^{-1/2}`` of a symmetric positive definite matrix (for building steps)."""
    return _sym_fn(np.asarray(c, dtype=np.float64), "isqrt")


class FeaturePreprocessor:
    """Online preprocessing of a model with :class:`FeatureSpec`: filter bank, then steps.

    Implements the engine's ``OnlinePreprocessor`` protocol: :meth:`push` stacks the bands
    (bands × channels rows), :meth:`finalize` applies each band's per-window steps and then
    the numpy steps, giving the graph's input.

    Parameters
    ----------
    preprocess : PreprocessSpec
        The model's preprocessing (``picks`` set); with a filter bank its band-pass edges
        must be None.
    features : FeatureSpec
        The filter bank and steps.
    stream : StreamInfo
        The stream (channel names as the model knows them).
    """

    def __init__(
        self, preprocess: PreprocessSpec, features: FeatureSpec, stream: StreamInfo
    ) -> None:
        self.features = features
        if features.bands_hz is None:
            specs = [preprocess]
        else:
            if preprocess.l_freq_hz is not None or preprocess.h_freq_hz is not None:
                raise ValueError(
                    "A filter bank sets each band's edges: leave preprocess.l_freq_hz and "
                    "h_freq_hz unset."
                )
            specs = [
                preprocess.model_copy(update={"l_freq_hz": lo, "h_freq_hz": hi})
                for lo, hi in features.bands_hz
            ]
        self.bands = [OnlinePreprocessor(s, stream) for s in specs]
        self._n = self.bands[0].n_channels_out

    @property
    def sfreq_out(self) -> float:
        """Output rate in Hz."""
        return self.bands[0].sfreq_out

    @property
    def n_channels_out(self) -> int:
        """Rows pushed out: bands × channels."""
        return self._n * len(self.bands)

    def reset(self) -> None:
        """Forget the filters' state."""
        for band in self.bands:
            band.reset()

    def push(self, x: NDArray[np.floating]) -> NDArray[np.float32]:
        """Preprocess new samples in every band; rows are band-major."""
        if len(self.bands) == 1:
            return self.bands[0].push(x)
        return np.concatenate([band.push(x) for band in self.bands], axis=0)

    def finalize(self, window: NDArray[np.floating]) -> NDArray[np.float32]:
        """The graph's input for one window of pushed rows (float32)."""
        n = self._n
        if self.features.bands_hz is not None:
            return np.stack(
                [b.finalize(window[i * n : (i + 1) * n]) for i, b in enumerate(self.bands)]
            )
        x = self.bands[0].finalize(window)
        return apply_steps(self.features, x).astype(np.float32)
