"""Fitted scikit-learn pipelines (MNE, pyriemann, scikit-learn steps) as artifacts.

:func:`export_pipeline` splits a fitted pipeline into three parts that the torch-free runtime
runs in order on every window:

1. numpy steps declared in the artifact's metadata (:mod:`neurocast.models.serving.features`):
   the pyriemann estimators that need an eigendecomposition, which ONNX lacks (covariances,
   xDAWN super-trials, re-centring, tangent space, MDM distances);
2. linear signal steps written as ONNX operators: MNE ``CSP`` (spatial filters as a MatMul,
   then log band power), :class:`~neurocast.models.training.pipeline_steps.FilterBankCSP`,
   pyriemann ``Xdawn`` filters, MNE ``Scaler`` and ``Vectorizer``;
3. the scikit-learn tail (``StandardScaler``, ``LinearDiscriminantAnalysis``,
   ``LogisticRegression``, linear ``SVC`` with probabilities) converted by skl2onnx, or the
   softmax of negative squared distances for MDM.

Nothing here is needed to serve the result: the artifact runs on numpy and onnxruntime.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mne
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from neurocast.models.serving.artifact import Artifact, save_artifact
from neurocast.models.serving.features import (
    CovarianceStep,
    FeatureSpec,
    FeatureStep,
    RecenterStep,
    RiemannDistanceStep,
    TangentSpaceStep,
    XdawnStep,
    isqrtm,
)
from neurocast.models.serving.schema import (
    ArtifactMetadata,
    InputSpec,
    Metrics,
    OutputSpec,
    Provenance,
)
from neurocast.streaming.engine.windows import WindowSpec
from neurocast.streaming.preprocessing.filters import PreprocessSpec

OPSET = 17
SUPPORTED_STEPS = (
    "pyriemann Covariances (estimator scm, cov, lwf or oas)",
    "pyriemann XdawnCovariances (same estimators)",
    "neurocast Recenter",
    "pyriemann TangentSpace (metric riemann, tsupdate=False)",
    "pyriemann MDM (metric riemann), last",
    "MNE CSP (transform_into average_power or csp_space)",
    "neurocast FilterBankCSP",
    "pyriemann Xdawn",
    "MNE Scaler",
    "MNE Vectorizer",
    "sklearn StandardScaler",
    "sklearn LinearDiscriminantAnalysis, last",
    "sklearn LogisticRegression, last",
    "sklearn SVC(kernel='linear', probability=True), last",
)
_SKLEARN_TAIL = ("StandardScaler", "LinearDiscriminantAnalysis", "LogisticRegression", "SVC")


class UnsupportedStepError(ValueError):
    """A pipeline step that cannot be exported; the message names it and the supported ones."""


def _unsupported(name: str, step: Any, why: str = "") -> UnsupportedStepError:
    listed = "; ".join(SUPPORTED_STEPS)
    return UnsupportedStepError(
        f"Step {name!r} ({type(step).__module__}.{type(step).__name__}) cannot be exported"
        f"{': ' + why if why else ''}. Supported steps, in pipeline order: {listed}."
    )


def _matrix(a: Any) -> list[list[float]]:
    return np.asarray(a, dtype=np.float64).tolist()


def _numpy_step(name: str, step: Any) -> list[FeatureStep] | None:
    """The declared numpy steps of a pyriemann estimator, None for a graph step."""
    kind = type(step).__name__
    if kind in ("Covariances", "XdawnCovariances"):
        est = step.estimator
        if est not in ("scm", "cov", "lwf", "oas"):
            raise _unsupported(name, step, f"covariance estimator {est!r}")
        cov = CovarianceStep(estimator=est)
        if kind == "Covariances":
            return [cov]
        filters = _matrix(step.Xd_.filters_) if step.applyfilters else None
        return [XdawnStep(prototypes=_matrix(step.P_), filters=filters), cov]
    if kind == "Recenter":
        return [RecenterStep(matrix=_matrix(isqrtm(step.reference_)))]
    if kind == "TangentSpace":
        if step.metric not in ("riemann", {"mean": "riemann", "map": "riemann"}):
            raise _unsupported(name, step, f"metric {step.metric!r}")
        if step.tsupdate:
            raise _unsupported(name, step, "tsupdate=True re-fits the reference on test data")
        return [TangentSpaceStep(isqrt_reference=_matrix(isqrtm(step.reference_)))]
    if kind == "MDM":
        if step.metric not in ("riemann", {"mean": "riemann", "distance": "riemann"}):
            raise _unsupported(name, step, f"metric {step.metric!r}")
        means = [_matrix(isqrtm(m)) for m in step.covmeans_]
        return [RiemannDistanceStep(isqrt_means=means)]
    return None


class _Graph:
    """ONNX nodes of the signal steps, built one after the other."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.name = "x"
        self._k = 0

    def const(self, value: Any, dtype: Any = np.float32) -> str:
        self._k += 1
        name = f"nc_c{self._k}"
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, *inputs: str, **attrs: Any) -> str:
        self._k += 1
        out = f"nc_t{self._k}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], **attrs))
        self.name = out
        return out

    def log_power(self, x: str, filters: np.ndarray) -> str:
        """``log(mean((W x)^2, time))`` for x (batch, channels, times) → (batch, filters)."""
        y = self.op("MatMul", self.const(filters), x)
        sq = self.op("Mul", y, y)
        mean = self.op("ReduceMean", sq, axes=[-1], keepdims=0)
        return self.op("Log", mean)


def _graph_step(name: str, step: Any, g: _Graph) -> None:
    """Append the ONNX operators of a signal step; UnsupportedStepError when there are none."""
    kind = type(step).__name__
    if kind == "CSP":
        filters = np.asarray(step.filters_[: step.n_components])
        if getattr(step, "dec_type", "single") != "single" or len(g.shape) != 2:
            raise _unsupported(name, step, "only single-decomposition CSP on (channels, times)")
        if step.transform_into == "csp_space":
            g.op("MatMul", g.const(filters), g.name)
            g.shape = (len(filters), g.shape[1])
            return
        feat = g.log_power(g.name, filters)
        if step.log is False:
            feat = g.op("Exp", feat)
            feat = g.op("Sub", feat, g.const(step.mean_))
            g.op("Div", feat, g.const(step.std_))
        g.shape = (len(filters),)
    elif kind == "FilterBankCSP":
        if len(g.shape) != 3 or g.shape[0] != len(step.csps_):
            raise _unsupported(name, step, "the filter bank's bands must match the input's")
        x = g.name
        parts = []
        for k, csp in enumerate(step.csps_):
            band = g.op("Gather", x, g.const(k, np.int64), axis=1)
            parts.append(g.log_power(band, np.asarray(csp.filters_[: csp.n_components])))
        g.op("Concat", *parts, axis=1)
        g.shape = (sum(c.n_components for c in step.csps_),)
    elif kind == "Xdawn" and hasattr(step, "filters_") and len(g.shape) == 2:
        filters = np.asarray(step.filters_)
        g.op("MatMul", g.const(filters), g.name)
        g.shape = (len(filters), g.shape[1])
    elif kind == "Scaler" and len(g.shape) == 2:
        sc = step.scaler_
        center = getattr(sc, "center_", getattr(sc, "mean_", None))
        scale = getattr(sc, "scale_", getattr(sc, "std_", None))
        if center is None or scale is None:
            raise _unsupported(name, step, "its scaler has no center and scale")
        centered = g.op("Sub", g.name, g.const(np.asarray(center)[:, None]))
        g.op("Div", centered, g.const(np.asarray(scale)[:, None]))
    elif kind == "Vectorizer":
        g.op("Reshape", g.name, g.const([-1, int(np.prod(g.shape))], np.int64))
        g.shape = (int(np.prod(g.shape)),)
    else:
        raise _unsupported(name, step)


def _tail_model(steps: list[tuple[str, Any]], n_features: int) -> tuple[onnx.ModelProto, str]:
    """skl2onnx graph of the scikit-learn tail; returns it and its probability output."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.pipeline import Pipeline

    for name, step in steps:
        kind = type(step).__name__
        if kind not in _SKLEARN_TAIL:
            raise _unsupported(name, step)
        if kind == "SVC" and (step.kernel != "linear" or not step.probability):
            raise _unsupported(name, step, "only kernel='linear' with probability=True")
    last_name, last = steps[-1]
    if not hasattr(last, "predict_proba"):
        raise _unsupported(last_name, last, "the last step must give class probabilities")
    model = convert_sklearn(
        Pipeline(steps),
        initial_types=[("features", FloatTensorType([None, n_features]))],
        target_opset={"": OPSET, "ai.onnx.ml": 3},
        options={id(last): {"zipmap": False}},
    )
    prob = [o.name for o in model.graph.output if o.type.tensor_type.elem_type == TensorProto.FLOAT]
    return model, prob[0]


def _linear_tail(steps: list[tuple[str, Any]], n_features: int) -> tuple[onnx.ModelProto, str]:
    """Scalers and a linear classifier (LDA, logistic regression) as logits of a softmax.

    Two classes give logits ``[0, z]``, whose softmax is scikit-learn's ``[1 - expit(z),
    expit(z)]``; more give the decision function itself (scikit-learn's softmax). Written
    by hand because skl2onnx's LDA converter disagrees with scikit-learn >= 1.6 on two
    classes.
    """
    g = _Graph((n_features,))
    g.name = "features"
    for _, step in steps[:-1]:
        if getattr(step, "mean_", None) is not None and step.with_mean:
            g.op("Sub", g.name, g.const(step.mean_))
        if getattr(step, "scale_", None) is not None and step.with_std:
            g.op("Div", g.name, g.const(step.scale_))
    clf = steps[-1][1]
    coef, intercept = np.asarray(clf.coef_, np.float64), np.asarray(clf.intercept_, np.float64)
    if len(clf.classes_) == 2:
        coef = np.concatenate([np.zeros_like(coef), coef])
        intercept = np.concatenate([[0.0], intercept])
    z = g.op("MatMul", g.name, g.const(coef.T))
    g.nodes.append(helper.make_node("Add", [z, g.const(intercept)], ["logits"]))
    n_out = len(clf.classes_)
    return _single_graph(g, n_features, n_out, "linear"), "logits"


def _single_graph(g: _Graph, n_in: int, n_out: int, label: str) -> onnx.ModelProto:
    graph = helper.make_graph(
        g.nodes,
        label,
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", n_in])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", n_out])],
        g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8  # what every onnxruntime with opset 17 loads
    return model


def _check_tail(steps: list[tuple[str, Any]]) -> None:
    """Scalers then one LDA or logistic regression; UnsupportedStepError otherwise."""
    *scalers, (last_name, last) = steps
    for name, step in scalers:
        if type(step).__name__ != "StandardScaler":
            raise _unsupported(name, step, "only StandardScaler may precede the classifier")
    kind = type(last).__name__
    if kind not in ("LinearDiscriminantAnalysis", "LogisticRegression"):
        raise _unsupported(last_name, last, "the last step must be a supported classifier")
    if kind == "LogisticRegression" and len(last.classes_) > 2 and _ovr(last):
        raise _unsupported(last_name, last, "one-vs-rest logistic regression")


def _ovr(clf: Any) -> bool:
    return getattr(clf, "multi_class", "auto") == "ovr"


def _mdm_tail(n_classes: int) -> tuple[onnx.ModelProto, str]:
    """``-d^2`` as logits for distances ``d`` (pyriemann's MDM probabilities after softmax)."""
    g = _Graph((n_classes,))
    sq = g.op("Mul", "features", "features")
    g.nodes.append(helper.make_node("Neg", [sq], ["logits"]))
    return _single_graph(g, n_classes, n_classes, "mdm"), "logits"


def _compose(
    g: _Graph, tail: onnx.ModelProto, in_shape: tuple[int, ...], out: str
) -> onnx.ModelProto:
    """The signal steps' nodes feeding the tail's ``features`` input: one model."""
    g.nodes.append(helper.make_node("Identity", [g.name], ["nc_features"]))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", *in_shape])
    feat = helper.make_tensor_value_info("nc_features", TensorProto.FLOAT, None)
    front = helper.make_model(
        helper.make_graph(g.nodes, "signal", [x], [feat], g.inits),
        opset_imports=list(tail.opset_import),
    )
    front.ir_version = tail.ir_version
    # both parts number their names from 1: prefix the tail's, keeping its output's name
    tail = onnx.compose.add_prefix(tail, "tail_")
    for node in tail.graph.node:
        node.output[:] = [out if o == f"tail_{out}" else o for o in node.output]
    for value in tail.graph.output:
        if value.name == f"tail_{out}":
            value.name = out
    return onnx.compose.merge_models(
        front, tail, io_map=[("nc_features", tail.graph.input[0].name)], outputs=[out]
    )


def export_pipeline(
    pipeline: Any,
    info: mne.Info,
    *,
    window: WindowSpec,
    out: str | Path,
    preprocessing: PreprocessSpec | None = None,
    bands_hz: Sequence[tuple[float, float]] | None = None,
    class_names: Sequence[str] | None = None,
    ch_aliases: dict[str, str] | None = None,
    name: str | None = None,
    version: str = "1",
    provenance: Provenance | None = None,
    metrics: Metrics | None = None,
    description: str = "",
) -> Artifact:
    """Write a fitted scikit-learn pipeline as an artifact the torch-free runtime serves.

    Parameters
    ----------
    pipeline : sklearn.pipeline.Pipeline
        Fitted on windows shaped as the model will read them: (n, channels, times), or
        (n, bands, channels, times) with ``bands_hz``, preprocessed by ``preprocessing``
        (:func:`~neurocast.models.training.pipeline_data.training_windows` cuts them).
        Supported steps: :data:`SUPPORTED_STEPS`.
    info : mne.Info
        The training recording's info: every channel of ``info`` is a model input, in order.
    window : WindowSpec
        Window and context in seconds (the model reads ``window_s + context_s``).
    out : str | Path
        The ``.onnx`` file to write.
    preprocessing : PreprocessSpec | None
        The causal online preprocessing the training windows went through.
    bands_hz : sequence of (float, float) | None
        Filter-bank edges in Hz (for :class:`FilterBankCSP`).
    class_names : sequence of str | None
        Names of the pipeline's classes in ``pipeline.classes_`` order (default: the classes
        as strings).
    ch_aliases : dict | None
        Stream channel name → model channel name, stored with the model.
    name, version, provenance, metrics, description
        Artifact metadata (name defaults to the file's stem).

    Returns
    -------
    artifact : Artifact
        The written artifact.

    Raises
    ------
    UnsupportedStepError
        If a step cannot be exported; the message names it and lists the supported steps.
    """
    steps = list(pipeline.steps) if hasattr(pipeline, "steps") else [("step", pipeline)]
    numpy_steps, k = _leading_numpy_steps(steps)
    spec = _input_spec(info, window, preprocessing, bands_hz, numpy_steps, ch_aliases)
    model, out_name = _build_model(steps, numpy_steps, k, spec.shape)
    classes = list(class_names or [str(c) for c in pipeline.classes_])
    meta = ArtifactMetadata(
        name=name or Path(out).stem,
        version=version,
        task="classification",
        input=spec,
        output=OutputSpec(tensor=out_name, class_names=classes, logits=out_name == "logits"),
        provenance=provenance or Provenance(data="unspecified", split="unspecified"),
        simulated_training_data=False,
        metrics=metrics or Metrics(),
        description=description or " → ".join(type(s).__name__ for _, s in steps),
    )
    return save_artifact(model, meta, out)


def _leading_numpy_steps(steps: list[tuple[str, Any]]) -> tuple[list[FeatureStep], int]:
    """The declared numpy steps of the pipeline's leading pyriemann steps, and their count."""
    numpy_steps: list[FeatureStep] = []
    k = 0
    while k < len(steps) and (found := _numpy_step(*steps[k])) is not None:
        numpy_steps += found
        k += 1
    return numpy_steps, k


def _build_model(
    steps: list[tuple[str, Any]],
    numpy_steps: list[FeatureStep],
    k: int,
    in_shape: tuple[int, ...],
) -> tuple[onnx.ModelProto, str]:
    """One ONNX model of the graph steps after the first ``k`` (numpy) steps, and its output."""
    g = _Graph(in_shape)
    is_mdm = bool(numpy_steps) and isinstance(numpy_steps[-1], RiemannDistanceStep)
    tail_start = len(steps) if is_mdm else k
    while tail_start < len(steps) and type(steps[tail_start][1]).__name__ not in _SKLEARN_TAIL:
        _graph_step(steps[tail_start][0], steps[tail_start][1], g)
        tail_start += 1
    if len(g.shape) != 1:
        raise UnsupportedStepError(
            f"The steps before the classifier leave features of shape {g.shape}; add a "
            "Vectorizer (or CSP with average power) so that the classifier reads a vector."
        )
    if is_mdm:
        tail, out_name = _mdm_tail(g.shape[0])
    elif tail_start < len(steps):
        tail_steps = steps[tail_start:]
        if type(tail_steps[-1][1]).__name__ == "SVC":
            tail, out_name = _tail_model(tail_steps, g.shape[0])
        else:
            _check_tail(tail_steps)
            tail, out_name = _linear_tail(tail_steps, g.shape[0])
    else:
        raise UnsupportedStepError("The pipeline has no classifier as its last step.")
    return _compose(g, tail, in_shape, out_name), out_name


def _input_spec(
    info: mne.Info,
    window: WindowSpec,
    preprocessing: PreprocessSpec | None,
    bands_hz: Sequence[tuple[float, float]] | None,
    steps: list[FeatureStep],
    ch_aliases: dict[str, str] | None,
) -> InputSpec:
    names = list(info["ch_names"])
    features = None
    if bands_hz is not None or steps:
        bands = [(float(a), float(b)) for a, b in bands_hz] if bands_hz is not None else None
        features = FeatureSpec(bands_hz=bands, steps=steps)
    pre = (preprocessing or PreprocessSpec()).model_copy(update={"picks": names})
    return InputSpec(
        ch_names=names,
        ch_types=info.get_channel_types(),
        sfreq_hz=float(info["sfreq"]),
        window_s=window.window_s,
        context_s=window.context_s,
        stride_s=window.stride_s,
        preprocess=pre,
        features=features,
        ch_aliases=dict(ch_aliases or {}),
    )
