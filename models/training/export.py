"""Export a trained torch model to an ONNX artifact, checked against torch.

:func:`export_onnx` traces the model with ``torch.onnx.export`` (dynamic batch dimension);
:func:`check_onnx` runs the exported graph in ONNX Runtime on real inputs and compares it with
torch, failing loudly (:class:`ExportCheckError`) when the largest absolute difference exceeds
the tolerance (1e-4 by default); :func:`export_artifact`, the one export path of every model
family, does both and writes the artifact with its metadata
(:mod:`neurocast.models.serving.schema`), the measured difference included.
:class:`ArtifactAbout` holds what every family's export records besides the model itself:
name, version, provenance and measured quality.
"""

from __future__ import annotations

import logging
import subprocess
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from numpy.typing import NDArray

from neurocast.models.serving.artifact import Artifact, save_artifact
from neurocast.models.serving.schema import ArtifactMetadata, Metrics, Provenance

logger = logging.getLogger(__name__)

INPUT_NAME = "scalogram"
OUTPUT_NAME = "logits"
DEFAULT_ATOL = 1e-4


class ExportCheckError(RuntimeError):
    """The ONNX graph does not reproduce the torch model within the tolerance."""


def export_onnx(
    model: torch.nn.Module,
    example: torch.Tensor,
    *,
    input_name: str = INPUT_NAME,
    output_name: str = OUTPUT_NAME,
) -> onnx.ModelProto:
    """Trace a model to ONNX with a dynamic batch dimension.

    Parameters
    ----------
    model : torch.nn.Module
        The model (put in eval mode here).
    example : torch.Tensor
        An input of the right shape (any batch size).
    input_name, output_name : str
        Names of the graph's input and output.

    Returns
    -------
    proto : onnx.ModelProto
        The exported model, weights inside.
    """
    model.eval()
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad(), warnings.catch_warnings():
        path = Path(tmp) / "model.onnx"
        # shapes are fixed by the resize to the backbone's input size, so the padding
        # arithmetic that the tracer records as constants is exact
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            model,
            (example,),
            path,
            input_names=[input_name],
            output_names=[output_name],
            dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
            opset_version=18,
            # the TorchScript exporter: the graph has no control flow, and the dynamo exporter
            # takes about three times longer on EfficientNet-Lite0 here
            dynamo=False,
        )
        return onnx.load(path)


def check_onnx(
    proto: onnx.ModelProto | bytes,
    model: torch.nn.Module,
    inputs: NDArray[np.float32],
    *,
    atol: float = DEFAULT_ATOL,
    batch_size: int = 16,
) -> float:
    """Compare an exported graph with the torch model on real inputs.

    Parameters
    ----------
    proto : onnx.ModelProto | bytes
        The exported graph (one input, first output compared).
    model : torch.nn.Module
        The torch model it was exported from.
    inputs : array, shape (n_windows, ...)
        Real model inputs (e.g. scalogram windows of held-out data).
    atol : float
        Largest absolute difference allowed between the two outputs.
    batch_size : int
        Windows per call.

    Returns
    -------
    max_abs_diff : float
        The largest absolute difference found.

    Raises
    ------
    ExportCheckError
        If the difference exceeds ``atol`` or either output is not finite.
    """
    if len(inputs) == 0:
        raise ValueError("check_onnx needs at least one real input window.")
    data = proto if isinstance(proto, bytes) else proto.SerializeToString()
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    model.eval()
    worst = 0.0
    with torch.no_grad():
        for a in range(0, len(inputs), batch_size):
            x = np.ascontiguousarray(inputs[a : a + batch_size], dtype=np.float32)
            y_onnx = session.run(None, {name: x})[0]
            y_torch = model(torch.from_numpy(x)).numpy()
            if not (np.isfinite(y_onnx).all() and np.isfinite(y_torch).all()):
                raise ExportCheckError(
                    f"Non-finite outputs on windows {a}..{a + len(x) - 1} (ONNX finite: "
                    f"{bool(np.isfinite(y_onnx).all())}, torch finite: "
                    f"{bool(np.isfinite(y_torch).all())}); check the inputs and the model."
                )
            worst = max(worst, float(np.abs(y_onnx - y_torch).max()))
    if worst > atol:
        raise ExportCheckError(
            f"The ONNX graph differs from the torch model by up to {worst:.3g} on "
            f"{len(inputs)} real windows (tolerance {atol:g}); the export is wrong: do not "
            "deploy it. Check for operations that ONNX traces differently (data-dependent "
            "control flow, in-place updates) and export again."
        )
    return worst


def git_commit(path: str | Path | None = None) -> str | None:
    """The commit checked out in the repository holding ``path`` (this package by default)."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def finite_figures(values: dict[str, float] | None) -> dict[str, float]:
    """The figures that artifact metadata can hold: non-finite ones (not measured) left out."""
    return {k: float(v) for k, v in (values or {}).items() if np.isfinite(v)}


@dataclass(frozen=True)
class ArtifactAbout:
    """What an export records about a model besides the graph: who it is and where it comes from.

    Every family's export function takes one; a family fills the fields left empty from what
    its trained model knows (:meth:`completed`).

    Attributes
    ----------
    name, version : str
        Artifact name and version.
    trained_on : str
        The training data (says SIMULATED for simulated data); empty: the family's own.
    split : str
        How data were split into training, validation and test sets; empty: the family's own.
    seed : int | None
        Training seed.
    metrics : mapping of str to float
        Measured quality; non-finite figures (not measured) are left out and
        ``export_max_abs_diff`` is added on export.
    metrics_note : str
        How the metrics were measured.
    simulated_training_data : bool | None
        True when trained on simulated data; None: the family's own (families trained only
        on simulated data say True).
    description : str
        Free text; empty: the family's own.
    """

    name: str
    version: str = "1"
    trained_on: str = ""
    split: str = ""
    seed: int | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    metrics_note: str = ""
    simulated_training_data: bool | None = None
    description: str = ""

    def completed(self, **defaults: Any) -> ArtifactAbout:
        """A copy whose empty fields (``""`` or None) take the given family defaults."""
        unset = {k: v for k, v in defaults.items() if getattr(self, k) in ("", None)}
        return replace(self, **unset)

    def provenance(self) -> Provenance:
        """Training data, split, seed and the commit checked out now."""
        return Provenance(
            data=self.trained_on, split=self.split, seed=self.seed, git_commit=git_commit()
        )

    def metadata_fields(self) -> dict[str, Any]:
        """The :class:`ArtifactMetadata` fields this description fills, as keyword arguments.

        Returns
        -------
        fields : dict
            ``name``, ``version``, ``provenance``, ``metrics``, ``simulated_training_data``
            and ``description``.

        Raises
        ------
        ValueError
            If ``simulated_training_data`` is still None.
        """
        if self.simulated_training_data is None:
            raise ValueError(
                f"Artifact {self.name!r}: say whether the training data were simulated "
                "(simulated_training_data)."
            )
        return {
            "name": self.name,
            "version": self.version,
            "provenance": self.provenance(),
            "metrics": Metrics(values=dict(self.metrics), note=self.metrics_note),
            "simulated_training_data": self.simulated_training_data,
            "description": self.description,
        }


def export_artifact(
    model: torch.nn.Module,
    path: str | Path,
    metadata: ArtifactMetadata,
    check_inputs: NDArray[np.floating],
    *,
    input_name: str = INPUT_NAME,
    atol: float = DEFAULT_ATOL,
) -> Artifact:
    """Export a model to ONNX, check the graph against torch and write the artifact.

    Parameters
    ----------
    model : torch.nn.Module
        The model as exported (evaluation mode is set here).
    path : path-like
        The ``.onnx`` file to write.
    metadata : ArtifactMetadata
        Everything stored with the graph; its output tensor (``metadata.output.tensor``, or
        ``logits``) names the graph's output. Non-finite metrics (not measured) are left out
        and ``export_max_abs_diff`` is added.
    check_inputs : array, shape (n_inputs, *metadata.input.shape)
        Held-out model inputs on which ONNX and torch must agree within ``atol``; the first
        two also trace the graph.
    input_name : str
        Name of the graph's input tensor.
    atol : float
        Largest absolute difference allowed between the ONNX and the torch output, in the
        output's units.

    Returns
    -------
    artifact : Artifact
        The artifact as :func:`~neurocast.models.serving.artifact.save_artifact` wrote and
        validated it.

    Raises
    ------
    ValueError
        If the check inputs do not have the shape the input spec describes.
    ExportCheckError
        If an output is not finite or the largest difference exceeds ``atol``
        (:func:`check_onnx`); no file is written then.
    """
    inputs = np.ascontiguousarray(check_inputs, dtype=np.float32)
    if tuple(inputs.shape[1:]) != metadata.input.shape:
        raise ValueError(
            f"check_inputs have shape {inputs.shape[1:]} per window, the input spec "
            f"says {metadata.input.shape}."
        )
    output_name = metadata.output.tensor or OUTPUT_NAME
    example = torch.from_numpy(inputs[:2])
    proto = export_onnx(model, example, input_name=input_name, output_name=output_name)
    diff = check_onnx(proto, model, inputs, atol=atol)
    logger.info("ONNX matches torch on %d inputs (max abs diff %.2e)", len(inputs), diff)
    values = {**finite_figures(metadata.metrics.values), "export_max_abs_diff": diff}
    metrics = Metrics(values=values, note=metadata.metrics.note)
    return save_artifact(proto, metadata.model_copy(update={"metrics": metrics}), path)
