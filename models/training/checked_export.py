"""Write a torch model as an artifact whose ONNX graph is checked against torch first.

:func:`export_checked` is the sequence every exporter of a task other than classification
shares (classifiers have :func:`.export.export_classifier`): trace the module to ONNX
(:func:`.export.export_onnx`), run the graph on held-out inputs and compare it with torch
(:func:`.export.check_onnx`, which raises before anything is written), then write the
artifact with its provenance (the checked-out commit included) and its metrics, the measured
ONNX-versus-torch difference added as ``export_max_abs_diff``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray

from neurocast.models.serving.artifact import (
    Artifact,
    ArtifactMetadata,
    InputSpec,
    Metrics,
    OutputSpec,
    Provenance,
    Task,
    save_artifact,
)
from neurocast.models.training.export import check_onnx, export_onnx, git_commit


def finite_figures(values: dict[str, float] | None) -> dict[str, float]:
    """The figures that artifact metadata can hold: non-finite ones (not measured) left out."""
    return {k: float(v) for k, v in (values or {}).items() if np.isfinite(v)}


def export_checked(
    module: torch.nn.Module,
    path: str | Path,
    *,
    check_inputs: NDArray[np.float32],
    input_name: str,
    output_name: str,
    atol: float,
    name: str,
    version: str,
    task: Task,
    input_spec: InputSpec,
    output_spec: OutputSpec,
    trained_on: str,
    split: str,
    seed: int | None,
    simulated_training_data: bool,
    metrics: dict[str, float] | None,
    metrics_note: str,
    description: str,
) -> Artifact:
    """Export a module to ONNX, check the graph against torch and write the artifact.

    Parameters
    ----------
    module : torch.nn.Module
        The model as exported (evaluation mode is set here).
    path : path-like
        The ``.onnx`` file to write.
    check_inputs : array, shape (n_windows, ...)
        Held-out model inputs on which ONNX and torch must agree within ``atol``; the first
        two also trace the graph.
    input_name, output_name : str
        Names of the graph's input and output tensors (``output_spec.tensor``).
    atol : float
        Largest absolute difference allowed between the ONNX and the torch output, in the
        output's units.
    name, version : str
        Artifact name and version.
    task : str
        The artifact's task (see :class:`~.artifact.ArtifactMetadata`).
    input_spec, output_spec : InputSpec, OutputSpec
        What the model reads and outputs.
    trained_on : str
        The training data (says SIMULATED for simulated data).
    split : str
        How training, validation and test data were separated.
    seed : int | None
        Training seed.
    simulated_training_data : bool
        True when the model was trained on simulated data.
    metrics : dict of str to float | None
        Measured figures to store; non-finite ones (not measured) are left out.
    metrics_note : str
        How they were measured.
    description : str
        Free text.

    Returns
    -------
    artifact : Artifact
        The artifact as :func:`~.artifact.save_artifact` wrote and validated it.

    Raises
    ------
    ExportCheckError
        If an output is not finite or the largest difference exceeds ``atol``
        (:func:`.export.check_onnx`); no file is written then.
    """
    example = torch.from_numpy(np.ascontiguousarray(check_inputs[:2]))
    proto = export_onnx(module, example, input_name=input_name, output_name=output_name)
    diff = check_onnx(proto, module, check_inputs, atol=atol)
    meta = ArtifactMetadata(
        name=name,
        version=version,
        task=task,
        input=input_spec,
        output=output_spec,
        provenance=Provenance(data=trained_on, split=split, seed=seed, git_commit=git_commit()),
        simulated_training_data=simulated_training_data,
        metrics=Metrics(
            values={**finite_figures(metrics), "export_max_abs_diff": diff}, note=metrics_note
        ),
        description=description,
        content_sha256=None,
    )
    return save_artifact(proto, meta, path)
