"""The ONNX runtime: shared sessions, providers, payloads, and decoding through the engine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from mne.time_frequency import tfr_array_morlet
from numpy.testing import assert_allclose
from test_artifact import (
    channel_names,
    classifier_graph,
    classifier_metadata,
    linear_map_graph,
    mean_power_graph,
    stream,
)

from neurocast.models.serving import (
    ArtifactMetadata,
    InputSpec,
    OutputSpec,
    Provenance,
    StreamMismatchError,
    load_artifact,
    save_artifact,
)
from neurocast.models.serving.gallery import Gallery
from neurocast.models.serving.runtime import (
    CPU,
    CUDA,
    ENV_THREADS,
    OnnxWindowModel,
    default_threads,
    get_session,
    loaded_sessions,
    release_session,
)
from neurocast.streaming.engine.pipeline import decode_array
from neurocast.streaming.preprocessing.filters import PreprocessSpec, preprocess_array
from neurocast.streaming.preprocessing.scalogram import ScalogramSpec

pytestmark = pytest.mark.timeout(120)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.fixture
def classifier(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    model, w, b = classifier_graph(4, 20, 3, seed=11)
    path = tmp_path / "clf.onnx"
    art = save_artifact(model, classifier_metadata(), path)
    yield path, w, b
    release_session(art)


def test_one_session_per_model(
    classifier: tuple[Path, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    path, _, _ = classifier
    a = OnnxWindowModel(path)
    b = OnnxWindowModel(load_artifact(path))
    assert a.session is b.session
    assert get_session(load_artifact(path)) is a.session
    assert a.session in loaded_sessions()
    # a copy of the file is the same model (same content hash): still one session
    copy = tmp_path / "copy.onnx"
    copy.write_bytes(path.read_bytes())
    assert OnnxWindowModel(copy).session is a.session


def test_provider_is_the_one_really_used(classifier: tuple[Path, np.ndarray, np.ndarray]) -> None:
    model = OnnxWindowModel(classifier[0])
    session = model.session
    assert model.provider == session.provider == session._session.get_providers()[0]
    assert session.provider in (CPU, CUDA)
    if session.provider == CPU and CUDA in ort.get_available_providers():
        assert session.provider_note  # says why CUDA was not used
    assert session.load_ms > 0


def test_cpu_device(tmp_path: Path) -> None:
    art = save_artifact(
        classifier_graph(4, 20, 3, seed=12)[0], classifier_metadata(), tmp_path / "c.onnx"
    )
    try:
        session = get_session(art, device="cpu", threads=1)
        assert session.provider == CPU and session.threads == 1
    finally:
        release_session(art)


def test_threads_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_THREADS, "3")
    assert default_threads() == 3
    monkeypatch.setenv(ENV_THREADS, "zero")
    with pytest.raises(ValueError, match="positive integer"):
        default_threads()
    monkeypatch.delenv(ENV_THREADS)
    assert 1 <= default_threads() <= 4


def test_single_and_batched_calls_agree(classifier: tuple[Path, np.ndarray, np.ndarray]) -> None:
    path, w, b = classifier
    model = OnnxWindowModel(path)
    x = np.random.default_rng(0).standard_normal((7, 4, 20)).astype(np.float32)
    batched = model.run_batch(x)
    single = [model.run(xi) for xi in x]
    expected = _softmax(x.mean(axis=2) @ w + b)
    for one, many, ref in zip(single, batched, expected, strict=True):
        assert one["classes"] == ["left", "right", "rest"]
        assert_allclose(one["probabilities"], many["probabilities"], rtol=1e-6)
        assert_allclose(one["probabilities"], ref, rtol=1e-5)
        assert one["simulated_training_data"] is True
    with pytest.raises(ValueError, match=r"\(n, 4, 20\)"):
        model.run_batch(x[:, :3])


def test_fixed_batch_graph_takes_windows_one_by_one(tmp_path: Path) -> None:
    model, w, b = classifier_graph(4, 20, 3, batch=1, seed=13)
    art = save_artifact(model, classifier_metadata(), tmp_path / "fixed.onnx")
    try:
        m = OnnxWindowModel(art)
        assert not art.batch_dynamic
        x = np.random.default_rng(1).standard_normal((5, 4, 20)).astype(np.float32)
        probs = np.array([p["probabilities"] for p in m.run_batch(x)])
        assert_allclose(probs, _softmax(x.mean(axis=2) @ w + b), rtol=1e-5)
    finally:
        release_session(art)


def _metadata(task: str, output: OutputSpec, n_ch: int, **input_fields: object) -> ArtifactMetadata:
    return ArtifactMetadata(
        name=f"test-{task}",
        version="1",
        task=task,  # type: ignore[arg-type]
        input=InputSpec(
            ch_names=channel_names(n_ch),
            ch_types=["eeg"] * n_ch,
            **input_fields,  # type: ignore[arg-type]
        ),
        output=output,
        provenance=Provenance(data="none", split="none"),
        simulated_training_data=False,
    )


def test_translation_payload(tmp_path: Path) -> None:
    graph, w = linear_map_graph(3, 5, 50, seed=3)
    out = OutputSpec(ch_names=[f"MEG{i}" for i in range(5)], ch_types=["mag"] * 5, sfreq_hz=250.0)
    meta = _metadata("translation", out, 3, sfreq_hz=250.0, window_s=0.2)
    art = save_artifact(graph, meta, tmp_path / "t.onnx")
    try:
        model = OnnxWindowModel(art)
        assert model.kind == "translation"
        x = np.random.default_rng(2).standard_normal((3, 50)).astype(np.float32)
        payload = model.run(x)
        assert payload["ch_names"] == out.ch_names and payload["ch_types"] == ["mag"] * 5
        assert payload["sfreq_hz"] == 250.0
        assert payload["signal"].dtype == np.float32 and payload["signal"].shape == (5, 50)
        assert_allclose(payload["signal"], w @ x, rtol=1e-5, atol=1e-5)
        assert "simulated_training_data" not in payload
    finally:
        release_session(art)


def test_embedding_and_retrieval_payloads(tmp_path: Path) -> None:
    spec = ScalogramSpec(sfreq_hz=200.0, freqs_hz=[10.0, 20.0], n_cycles=3.0)
    inputs = {"sfreq_hz": 200.0, "window_s": 0.1, "scalogram": spec}
    emb = _metadata("embedding", OutputSpec(embedding_size=6), 3, **inputs)
    ret = _metadata("retrieval", OutputSpec(embedding_size=6, gallery="g"), 3, **inputs)
    graph = mean_power_graph(3, 2, 20)
    arts = [save_artifact(graph, m, tmp_path / f"{m.task}.onnx") for m in (emb, ret)]
    try:
        x = np.random.default_rng(3).random((3, 2, 20)).astype(np.float32)
        payload = OnnxWindowModel(arts[0]).run(x)
        assert payload["embedding"].dtype == np.float32
        assert_allclose(payload["embedding"], x.mean(axis=2).ravel(), rtol=1e-5)
        gallery_emb = np.random.default_rng(4).standard_normal((10, 6))
        gallery_emb[7] = x.mean(axis=2).ravel()
        gallery = Gallery(
            [f"img{i}" for i in range(10)], ["a"] * 5 + ["b"] * 5, gallery_emb, name="g"
        )
        retrieval = OnnxWindowModel(arts[1], gallery=gallery, top_k=3)
        assert retrieval.kind == "retrieval"
        payload = retrieval.run(x)
        assert payload["gallery"] == "g" and len(payload["topk"]) == 3
        assert payload["topk"][0]["image_id"] == "img7" and payload["topk"][0]["label"] == "b"
        assert payload["topk"][0]["score"] == pytest.approx(1.0, abs=1e-3)
        assert "topk" not in OnnxWindowModel(arts[1]).run(x)
        with pytest.raises(ValueError, match="galleries are for retrieval"):
            OnnxWindowModel(arts[0], gallery=gallery)
    finally:
        for art in arts:
            release_session(art)


def test_decode_engine_with_a_raw_model(classifier: tuple[Path, np.ndarray, np.ndarray]) -> None:
    path, w, b = classifier
    model = OnnxWindowModel(path)
    names = ["STIM", *channel_names(4)[::-1]]  # other order and an extra channel
    info = stream(names, 100.0)
    data = np.random.default_rng(5).standard_normal((5, 300)).astype(np.float32)
    results = list(decode_array(data, np.arange(300) / 100.0, info, [model], stride_s=0.05))
    assert len(results) == len(range(20, 301, 5))
    last = results[-1]
    assert last.kind == "probabilities" and last.model == "test-classifier"
    x = data[[4, 3, 2, 1], -20:]  # the model's channels, in its order
    assert_allclose(last.payload["probabilities"], _softmax(x.mean(axis=1) @ w + b), rtol=1e-5)
    with pytest.raises(StreamMismatchError, match="lacks"):
        model.preprocessor(stream(names[:3], 100.0))


def test_decode_engine_with_a_scalogram_model(tmp_path: Path) -> None:
    spec = ScalogramSpec(sfreq_hz=250.0, freqs_hz=[8.0, 13.0, 30.0], n_cycles=3.0, decim=2)
    meta = _metadata(
        "embedding",
        OutputSpec(embedding_size=6),
        2,
        sfreq_hz=500.0,
        window_s=0.1,
        preprocess=PreprocessSpec(
            resample_hz=250.0, l_freq_hz=1.0, robust_center=[0.1, -0.2], robust_scale=[2.0, 0.5]
        ),
        scalogram=spec,
    )
    art = save_artifact(mean_power_graph(2, 3, 12), meta, tmp_path / "s.onnx")
    try:
        model = OnnxWindowModel(art, threads=1)
        info = stream(channel_names(2), 500.0)
        data = np.random.default_rng(6).standard_normal((2, 2000)).astype(np.float32)
        results = list(decode_array(data, np.arange(2000) / 500.0, info, [model]))
        assert results and all(r.kind == "embedding" for r in results)
        # the last window: the newest 12 power columns once the stream reached its end, each
        # exactly MNE's scalogram of the preprocessed signal at that column
        end = results[-1].window_end
        signal = preprocess_array(meta.input.preprocess, data, info)
        signal = (signal - np.array([[0.1], [-0.2]])) / np.array([[2.0], [0.5]])
        offline = tfr_array_morlet(
            signal[np.newaxis].astype(np.float64),
            250.0,
            spec.freqs_hz,
            3.0,
            decim=2,
            output="power",
        )[0]
        n_cols = model.preprocessor(info).push(data[:, :end]).shape[1]
        expected = offline[..., n_cols - 12 : n_cols].mean(axis=-1).ravel()
        assert_allclose(results[-1].payload["embedding"], expected, rtol=1e-4)
    finally:
        release_session(art)
