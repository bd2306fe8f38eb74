"""Re-centring an aligned Riemannian artifact on a new subject's unlabelled recording.

An aligned decoder (covariance → :class:`~neurocast.models.training.pipeline_steps.Recenter`
→ tangent space → classifier) is trained on covariances re-centred per subject. For a new
subject only the re-centring matrix changes: it becomes ``M^{-1/2}`` with ``M`` the
Riemannian mean of that subject's window covariances, from any recording of the subject
without labels (Zanini et al. 2018).
"""

from __future__ import annotations

from pathlib import Path

import mne
import numpy as np
from numpy.typing import NDArray
from pyriemann.geometry.mean import mean_riemann
from threadpoolctl import threadpool_limits

from neurocast.models.serving.artifact import Artifact, load_artifact, save_artifact
from neurocast.models.serving.compat import aliased_stream
from neurocast.models.serving.features import (
    FeaturePreprocessor,
    FeatureSpec,
    RecenterStep,
    apply_steps,
    isqrtm,
)
from neurocast.models.serving.onnx_file import read_file
from neurocast.streaming.sources.base import StreamInfo


def subject_covariances(
    artifact: Artifact, data: NDArray[np.floating], stream: StreamInfo, every_s: float = 0.5
) -> NDArray[np.float64]:
    """Covariances the artifact computes before re-centring, for windows every ``every_s``.

    Raises
    ------
    StreamMismatchError
        If the recording lacks the model's channels (named in the message).
    """
    artifact.check_stream(stream)
    meta = artifact.metadata
    spec = meta.input
    features = spec.features
    if features is None or not any(isinstance(s, RecenterStep) for s in features.steps):
        raise ValueError(f"Model {meta.name!r} has no re-centring step to calibrate.")
    first = next(i for i, s in enumerate(features.steps) if isinstance(s, RecenterStep))
    head = FeatureSpec(steps=features.steps[:first])
    pre = FeaturePreprocessor(
        spec.preprocess.model_copy(update={"picks": spec.ch_names}),
        FeatureSpec(),
        aliased_stream(meta, stream),
    )
    rows = pre.push(np.asarray(data))
    total = spec.window.in_samples(stream.sfreq).total
    step = max(1, round(every_s * stream.sfreq))
    # skip the filters' first second, where they still settle
    start = max(total, int(stream.sfreq))
    return np.array(
        [
            apply_steps(head, pre.finalize(rows[:, end - total : end]))
            for end in range(start, rows.shape[1] + 1, step)
        ]
    )


def recenter_artifact(path: str | Path, raw: mne.io.BaseRaw, out: str | Path) -> Artifact:
    """Write a copy of an aligned artifact re-centred on ``raw`` (unlabelled).

    Parameters
    ----------
    path : str | Path
        The aligned artifact.
    raw : mne.io.BaseRaw
        A preloaded recording of the new subject (any task; labels are not used).
    out : str | Path
        Where to write the calibrated artifact.

    Returns
    -------
    artifact : Artifact
        The calibrated artifact.
    """
    import onnx

    artifact = load_artifact(path)
    stream = StreamInfo(name=Path(raw.filenames[0] or "calibration").name, info=raw.info)
    # small eigendecompositions: OpenBLAS threads on busy cores only slow them down
    with threadpool_limits(limits=1, user_api="blas"):
        covs = subject_covariances(artifact, raw.get_data(), stream)
        matrix = isqrtm(mean_riemann(covs)).tolist()
    meta = artifact.metadata
    spec = meta.input
    assert spec.features is not None
    steps = [
        RecenterStep(matrix=matrix) if isinstance(s, RecenterStep) else s
        for s in spec.features.steps
    ]
    features = spec.features.model_copy(update={"steps": steps})
    new_meta = meta.model_copy(
        update={"input": spec.model_copy(update={"features": features}), "content_sha256": None}
    )
    model = onnx.load_model_from_string(read_file(artifact.path))
    return save_artifact(model, new_meta, out)
