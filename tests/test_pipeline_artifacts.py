"""Classical and Riemannian pipelines as artifacts: numpy steps, export, serving, bad input."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import mne
import numpy as np
import pytest

pyriemann = pytest.importorskip("pyriemann")

from mne.decoding import CSP  # noqa: E402
from pyriemann.classification import MDM  # noqa: E402
from pyriemann.estimation import Covariances, XdawnCovariances  # noqa: E402
from pyriemann.tangentspace import TangentSpace  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402

from neurocast.models.serving.features import CovarianceStep, apply_step, apply_steps  # noqa: E402
from neurocast.models.serving.runtime import OnnxWindowModel  # noqa: E402
from neurocast.models.serving.schema import StreamMismatchError  # noqa: E402
from neurocast.models.training.pipeline_export import (  # noqa: E402
    UnsupportedStepError,
    export_pipeline,
)
from neurocast.streaming.engine.windows import WindowSpec  # noqa: E402
from neurocast.streaming.sources.base import StreamInfo  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WINDOW = WindowSpec(window_s=0.1, context_s=0.9)


@pytest.fixture(scope="module")
def toy() -> tuple[np.ndarray, np.ndarray, mne.Info]:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 8, 160)) * 1e-5
    y = np.repeat([0, 1, 2], 20)
    X[y == 1, 0] *= 1.3
    X[y == 2, 3] *= 1.3
    info = mne.create_info([f"E{i}" for i in range(8)], 160.0, "eeg")
    return X.astype(np.float32).astype(np.float64), y, info


@pytest.mark.parametrize("estimator", ["scm", "cov", "lwf", "oas"])
def test_covariance_equals_pyriemann(toy, estimator) -> None:
    X, _, _ = toy
    ref = Covariances(estimator).fit_transform(X)
    got = np.array([apply_step(CovarianceStep(estimator=estimator), x) for x in X])
    assert np.max(np.abs(got - ref)) <= 1e-6 * np.max(np.abs(ref))


@pytest.mark.parametrize(
    "pipe",
    [
        make_pipeline(Covariances("oas"), TangentSpace()),
        make_pipeline(Covariances("lwf"), MDM()),
        make_pipeline(XdawnCovariances(nfilter=2, estimator="oas"), TangentSpace()),
    ],
    ids=["tangent", "mdm", "xdawn"],
)
def test_numpy_steps_equal_pyriemann(toy, tmp_path, pipe) -> None:
    """Tangent vectors and MDM distances of the declared steps, against pyriemann."""
    X, y, info = toy
    is_mdm = isinstance(pipe.steps[-1][1], MDM)
    if not is_mdm:
        pipe.steps.append(("lr", LogisticRegression(max_iter=500)))
    pipe.fit(X, y)
    art = export_pipeline(pipe, info, window=WINDOW, out=tmp_path / "m.onnx")
    features = art.metadata.input.features
    got = np.array([apply_steps(features, x) for x in X])
    # MDM: distances to each class mean
    ref = pipe[-1]._predict_distances(pipe[0].transform(X)) if is_mdm else pipe[:-1].transform(X)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6 * max(1.0, np.abs(ref).max()))
    served = OnnxWindowModel(art, device="cpu")
    probs = np.array([served.run(f.astype(np.float32))["probabilities"] for f in got])
    np.testing.assert_allclose(probs, pipe.predict_proba(X), atol=1e-5)


def test_csp_lda_graph_equals_sklearn(toy, tmp_path) -> None:
    X, y, info = toy
    pipe = make_pipeline(CSP(n_components=4), LinearDiscriminantAnalysis()).fit(X, y)
    art = export_pipeline(pipe, info, window=WINDOW, out=tmp_path / "csp.onnx")
    assert art.metadata.input.features is None
    served = OnnxWindowModel(art, device="cpu")
    probs = np.array([p["probabilities"] for p in served.run_batch(X.astype(np.float32))])
    np.testing.assert_allclose(probs, pipe.predict_proba(X), atol=1e-5)


def test_unsupported_step_is_named(toy, tmp_path) -> None:
    X, y, info = toy
    pipe = make_pipeline(CSP(n_components=4), PCA(2), LinearDiscriminantAnalysis()).fit(X, y)
    with pytest.raises(UnsupportedStepError, match=r"'pca'.*Supported steps.*MNE CSP"):
        export_pipeline(pipe, info, window=WINDOW, out=tmp_path / "x.onnx")


def test_serving_a_pipeline_imports_no_training_library(toy, tmp_path) -> None:
    X, y, info = toy
    pipe = make_pipeline(Covariances("oas"), TangentSpace(), LogisticRegression()).fit(X, y)
    art = export_pipeline(pipe, info, window=WINDOW, out=tmp_path / "ts.onnx")
    script = textwrap.dedent(
        f"""
        import json, sys
        import numpy as np, mne
        from neurocast.models.serving.runtime import OnnxWindowModel
        from neurocast.streaming.engine.pipeline import decode_array
        from neurocast.streaming.sources.base import StreamInfo
        info = mne.create_info([f"E{{i}}" for i in range(8)], 160.0, "eeg")
        data = np.random.default_rng(1).standard_normal((8, 800)) * 1e-5
        model = OnnxWindowModel({str(art.path)!r}, device="cpu")
        out = list(decode_array(data, np.arange(800) / 160.0, StreamInfo("s", info), [model]))
        bad = sorted({{m.split(".")[0] for m in sys.modules}} & {{"torch", "sklearn", "pyriemann"}})
        print(json.dumps({{"n": len(out), "bad": bad}}))
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["n"] > 0
    assert result["bad"] == []


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "neurocast.clients.cli", *args],
        capture_output=True,
        text=True,
        env={"OPENBLAS_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )


@pytest.fixture(scope="module")
def eegbci_model(shared_data: Path, tmp_path_factory) -> Path:
    """A CSP+LDA artifact trained with --eegbci on S001 run 4."""
    out = tmp_path_factory.mktemp("m") / "csp.onnx"
    d = shared_data / "eegbci"
    proc = _cli(
        "train", "pipeline", "--recipe", "csp-lda", "--data", str(d / "S001R04.edf"),
        "--eegbci", "--event", "T1=left", "--event", "T2=right", "--out", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


@pytest.mark.shared_data
def test_eegbci_model_decodes_raw_edf(eegbci_model: Path, shared_data: Path) -> None:
    """The rename map travels in the artifact: the raw EDF names decode, in batch too."""
    from neurocast.streaming.engine.batch import decode_recording, load_recording

    art = OnnxWindowModel(eegbci_model, device="cpu")
    assert art.metadata.input.ch_aliases["Fc5."] == "FC5"
    rec = load_recording(shared_data / "eegbci" / "S001R08.edf")
    assert "Fc5." in rec.stream.ch_names
    results = decode_recording(rec, [art])
    assert len(results) > 4000
    proc = _cli(
        "evaluate", str(eegbci_model), str(shared_data / "eegbci" / "S001R08.edf"),
        "--event", "T1=left", "--event", "T2=right", "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["n_trials"] == 15
    assert len(report["decisions"]) == 15
    assert 0.0 <= report["balanced_accuracy"] <= 1.0
    assert sum(map(sum, report["confusion_matrix"])) == 15


@pytest.mark.shared_data
def test_bad_input(eegbci_model: Path, shared_data: Path, tmp_path: Path) -> None:
    d = shared_data / "eegbci"
    model = OnnxWindowModel(eegbci_model, device="cpu")
    raw = mne.io.read_raw_edf(d / "S001R08.edf", verbose="error")
    small = raw.copy().pick(raw.ch_names[:32])
    with pytest.raises(StreamMismatchError, match=r"lacks 32 of them \(F1, Fz, F2"):
        model.preprocessor(StreamInfo("32ch", small.info))
    proc = _cli(
        "evaluate", str(eegbci_model), str(d / "S001R08.edf"), "--event", "T9=left",
        "--event", "T2=right",
    )  # fmt: skip
    assert proc.returncode == 2
    assert "no annotation 'T9'" in proc.stderr
    assert re.search(r"present are \['T0', 'T1', 'T2'\]", proc.stderr)


@pytest.mark.shared_data
def test_calibration_file_of_another_montage(shared_data: Path, tmp_path: Path) -> None:
    from pyriemann.estimation import Covariances as Cov

    from neurocast.models.training.pipeline_align import recenter_artifact
    from neurocast.models.training.pipeline_steps import Recenter

    raw = mne.io.read_raw_edf(shared_data / "eegbci" / "S001R04.edf", verbose="error")
    raw.crop(0.0, 30.0).load_data()
    X = np.random.default_rng(0).standard_normal((20, 64, 160)) * 1e-5
    y = np.repeat([0, 1], 10)
    pipe = make_pipeline(Cov("oas"), Recenter(), TangentSpace(), LogisticRegression()).fit(X, y)
    art = export_pipeline(pipe, raw.info, window=WINDOW, out=tmp_path / "al.onnx")
    calibrated = recenter_artifact(art.path, raw, tmp_path / "cal.onnx")
    assert calibrated.metadata.input.features != art.metadata.input.features
    eeglab = mne.io.read_raw_eeglab(shared_data / "eeglab" / "test_raw.set", preload=True,
                                    verbose="error")  # fmt: skip
    with pytest.raises(StreamMismatchError, match="lacks"):
        recenter_artifact(art.path, eeglab, tmp_path / "bad.onnx")


@pytest.mark.shared_data
def test_readme_example_runs(shared_data: Path, tmp_path: Path, monkeypatch) -> None:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Classical and Riemannian decoders") :]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    source = code.group(1).replace('"../shared/data"', repr(str(shared_data)))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(source, "README.md", "exec"), namespace)
    assert (tmp_path / "left-right.onnx").is_file()
    assert namespace["artifact"].metadata.output.class_names == ["left", "right"]
