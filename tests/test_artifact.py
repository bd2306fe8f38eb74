"""Model artifacts: save/load round trip, integrity, schema and stream checks.

The small ONNX graphs used here and in ``test_runtime.py`` are built with ``onnx.helper``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mne
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from pydantic import ValidationError

from neurocast.models.serving import (
    METADATA_KEY,
    ArtifactError,
    ArtifactMetadata,
    InputSpec,
    Metrics,
    OutputSpec,
    Provenance,
    StreamMismatchError,
    content_hash,
    list_artifacts,
    load_artifact,
    read_metadata,
    save_artifact,
)
from neurocast.streaming.preprocessing.filters import PreprocessSpec
from neurocast.streaming.preprocessing.scalogram import ScalogramSpec
from neurocast.streaming.sources.base import StreamInfo

pytestmark = pytest.mark.timeout(60)

OPSET = 17


def _model(nodes: list, inp: Any, out: Any, inits: list) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [inp], [out], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8  # readable by every onnxruntime in use
    return model


def classifier_graph(
    n_channels: int, n_times: int, n_classes: int, *, batch: int | str = "batch", seed: int = 0
) -> tuple[onnx.ModelProto, np.ndarray, np.ndarray]:
    """Logits = mean over time of the input @ W + b; returns the model, W and b."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((n_channels, n_classes)).astype(np.float32)
    b = rng.standard_normal(n_classes).astype(np.float32)
    inp = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, n_channels, n_times])
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, n_classes])
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["m"], axes=[2], keepdims=0),
        helper.make_node("MatMul", ["m", "W"], ["z"]),
        helper.make_node("Add", ["z", "b"], ["logits"]),
    ]
    inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")]
    return _model(nodes, inp, out, inits), w, b


def mean_power_graph(n_channels: int, n_freqs: int, n_times: int) -> onnx.ModelProto:
    """Embedding = mean over time of a scalogram, flattened (channel-major)."""
    inp = helper.make_tensor_value_info(
        "power", TensorProto.FLOAT, ["batch", n_channels, n_freqs, n_times]
    )
    out = helper.make_tensor_value_info("emb", TensorProto.FLOAT, ["batch", n_channels * n_freqs])
    shape = numpy_helper.from_array(np.array([0, -1], dtype=np.int64), "shape")
    nodes = [
        helper.make_node("ReduceMean", ["power"], ["m"], axes=[3], keepdims=0),
        helper.make_node("Reshape", ["m", "shape"], ["emb"]),
    ]
    return _model(nodes, inp, out, [shape])


def linear_map_graph(
    n_in: int, n_out: int, n_times: int, *, seed: int = 0
) -> tuple[onnx.ModelProto, np.ndarray]:
    """Output channels = W @ input channels (translation); returns the model and W."""
    w = np.random.default_rng(seed).standard_normal((n_out, n_in)).astype(np.float32)
    inp = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", n_in, n_times])
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", n_out, n_times])
    nodes = [helper.make_node("MatMul", ["W", "x"], ["y"])]
    return _model(nodes, inp, out, [numpy_helper.from_array(w, "W")]), w


def channel_names(n: int) -> list[str]:
    return [f"EEG{i:03d}" for i in range(n)]


def classifier_metadata(
    n_channels: int = 4,
    *,
    sfreq: float = 100.0,
    window_s: float = 0.2,
    classes: tuple[str, ...] = ("left", "right", "rest"),
    **input_fields: Any,
) -> ArtifactMetadata:
    return ArtifactMetadata(
        name="test-classifier",
        version="1.0",
        task="classification",
        input=InputSpec(
            ch_names=channel_names(n_channels),
            ch_types=["eeg"] * n_channels,
            sfreq_hz=sfreq,
            window_s=window_s,
            **input_fields,
        ),
        output=OutputSpec(class_names=list(classes)),
        provenance=Provenance(data="random weights", split="none", seed=0, git_commit=None),
        metrics=Metrics(values={"test_balanced_accuracy": 0.5}, note="chance by construction"),
        simulated_training_data=True,
    )


def stream(names: list[str], sfreq: float, ch_type: str = "eeg") -> StreamInfo:
    return StreamInfo("test-stream", mne.create_info(names, sfreq, ch_type))


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    model, _, _ = classifier_graph(4, 20, 3)
    path = tmp_path / "clf.onnx"
    save_artifact(model, classifier_metadata(), path)
    return path


def test_round_trip(saved: Path) -> None:
    art = load_artifact(saved)
    meta = art.metadata
    assert meta == classifier_metadata().model_copy(update={"content_sha256": art.sha256})
    assert meta.kind == "probabilities"
    assert art.input.name == "x" and art.input.shape == ("batch", 4, 20)
    assert art.output.name == "logits" and art.batch_dynamic
    assert art.sha256 == content_hash(saved.read_bytes())
    assert read_metadata(saved) == meta
    assert meta.input.window.window_s == 0.2 and meta.input.shape == (4, 20)
    # saving a loaded artifact again replaces the metadata and keeps the hash
    again = save_artifact(onnx.load(saved), meta.model_copy(update={"version": "1.1"}), saved)
    assert again.sha256 == art.sha256 and again.metadata.version == "1.1"
    entries = [e.key for e in onnx.load(saved).metadata_props]
    assert entries.count(METADATA_KEY) == 1


def test_metadata_edit_keeps_hash_valid_graph_edit_does_not(saved: Path, tmp_path: Path) -> None:
    proto = onnx.load(saved)
    w = proto.graph.initializer[0]
    values = numpy_helper.to_array(w).copy()
    values[0, 0] += 1.0
    w.CopyFrom(numpy_helper.from_array(values, w.name))
    tampered = tmp_path / "tampered.onnx"
    onnx.save(proto, tampered)
    with pytest.raises(ArtifactError, match=r"content hash mismatch.*modified"):
        load_artifact(tampered)
    # the metadata stays readable without the check (listing what a file claims to be)
    assert read_metadata(tampered).name == "test-classifier"


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "not an ONNX model"),
        (b"\xff\xff\xff\xff", "not a valid ONNX file"),
        (b"definitely not a model", "not a valid ONNX file|not an ONNX model"),
    ],
)
def test_garbage_files_give_clear_errors(tmp_path: Path, content: bytes, match: str) -> None:
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(ArtifactError, match=match):
        load_artifact(path)
    with pytest.raises(ArtifactError, match=match):
        read_metadata(path)


def test_truncated_file(saved: Path, tmp_path: Path) -> None:
    data = saved.read_bytes()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match=r"truncated or corrupt|not an ONNX model"):
        load_artifact(path)


def test_missing_file_and_plain_onnx(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="No artifact at"):
        load_artifact(tmp_path / "nope.onnx")
    with pytest.raises(ArtifactError, match="No artifact at"):
        read_metadata(tmp_path / "nope.onnx")
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(ArtifactError, match="not an ONNX model"):
        read_metadata(tmp_path / "empty.onnx")
    with pytest.raises(ArtifactError, match="folder"):
        read_metadata(tmp_path)
    plain = tmp_path / "plain.onnx"
    onnx.save(classifier_graph(4, 20, 3)[0], plain)
    with pytest.raises(ArtifactError, match=r"without neurocast metadata.*save_artifact"):
        load_artifact(plain)


def test_invalid_metadata_json(saved: Path, tmp_path: Path) -> None:
    proto = onnx.load(saved)
    for entry in proto.metadata_props:
        if entry.key == METADATA_KEY:
            entry.value = '{"name": "x", "task": "dance"}'
    path = tmp_path / "badmeta.onnx"
    onnx.save(proto, path)
    with pytest.raises(ArtifactError, match=r"invalid metadata.*task"):
        load_artifact(path)


def test_graph_must_agree_with_metadata(tmp_path: Path) -> None:
    model, _, _ = classifier_graph(5, 20, 3)  # five channels, metadata says four
    with pytest.raises(ArtifactError, match="5 channels, the metadata implies 4"):
        save_artifact(model, classifier_metadata(4), tmp_path / "a.onnx")
    model, _, _ = classifier_graph(4, 30, 3)  # 30 samples, 0.2 s at 100 Hz is 20
    with pytest.raises(ArtifactError, match="30 times, the metadata implies 20"):
        save_artifact(model, classifier_metadata(4), tmp_path / "b.onnx")
    model, _, _ = classifier_graph(4, 20, 2)
    with pytest.raises(ArtifactError, match="size 2 where the metadata implies 3"):
        save_artifact(model, classifier_metadata(4), tmp_path / "c.onnx")
    assert not list(tmp_path.iterdir())  # nothing written


def test_invalid_onnx_is_refused_before_writing(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="not valid ONNX"):
        save_artifact(b"not onnx at all", classifier_metadata(), tmp_path / "x.onnx")
    assert not list(tmp_path.iterdir())


def test_schema_rules() -> None:
    with pytest.raises(ValidationError, match="class_names"):
        ArtifactMetadata.model_validate(
            {**classifier_metadata().model_dump(), "output": {"class_names": ["only"]}}
        )
    with pytest.raises(ValidationError, match="embedding_size"):
        ArtifactMetadata.model_validate({**classifier_metadata().model_dump(), "task": "embedding"})
    with pytest.raises(ValidationError, match="picks must be None or equal to ch_names"):
        classifier_metadata(preprocess=PreprocessSpec(picks=["EEG001", "EEG000"]))
    with pytest.raises(ValidationError, match="Baseline and clipping"):
        classifier_metadata(
            sfreq=250.0,
            preprocess=PreprocessSpec(clip=20.0),
            scalogram=ScalogramSpec(sfreq_hz=250.0, freqs_hz=[10.0]),
        )
    with pytest.raises(ValidationError, match="preprocessing output rate"):
        classifier_metadata(sfreq=250.0, scalogram=ScalogramSpec(sfreq_hz=500.0, freqs_hz=[10.0]))


def test_scalogram_input_shape_and_latency(tmp_path: Path) -> None:
    spec = ScalogramSpec(sfreq_hz=250.0, freqs_hz=[8.0, 16.0, 32.0], n_cycles=3.0, decim=5)
    meta = ArtifactMetadata(
        name="scalo",
        version="1",
        task="embedding",
        input=InputSpec(
            ch_names=channel_names(2),
            ch_types=["eeg", "eeg"],
            sfreq_hz=1000.0,
            window_s=0.2,
            preprocess=PreprocessSpec(resample_hz=250.0),
            scalogram=spec,
        ),
        output=OutputSpec(embedding_size=6),
        provenance=Provenance(data="none", split="none"),
        simulated_training_data=False,
    )
    assert meta.input.shape == (2, 3, 10)  # 0.2 s at 250 / 5 = 50 Hz
    art = save_artifact(mean_power_graph(2, 3, 10), meta, tmp_path / "s.onnx")
    stored = art.metadata.input.scalogram
    assert stored is not None and stored.latency_s == pytest.approx(spec.latency_s)
    assert stored.latency_s == pytest.approx((max(w.size for w in spec.wavelets()) - 1) / 2 / 250.0)


def test_check_stream(saved: Path) -> None:
    art = load_artifact(saved)
    names = channel_names(4)
    art.check_stream(stream(names, 100.0))
    art.check_stream(stream(["STIM", *reversed(names), "EXTRA"], 100.0))  # order and extras
    with pytest.raises(StreamMismatchError, match=r"lacks 1 of them \(EEG002\).*[Rr]ename"):
        art.check_stream(stream([n for n in names if n != "EEG002"], 100.0))
    with pytest.raises(StreamMismatchError, match=r"expects 100 Hz.*250 Hz.*[Rr]esample"):
        art.check_stream(stream(names, 250.0))
    with pytest.raises(StreamMismatchError, match=r"another type.*set_channel_types"):
        art.check_stream(stream(names, 100.0, "mag"))


def test_check_stream_with_resampling(tmp_path: Path) -> None:
    meta = classifier_metadata(preprocess=PreprocessSpec(resample_hz=100.0))
    art = save_artifact(classifier_graph(4, 20, 3)[0], meta, tmp_path / "r.onnx")
    for rate in (160.0, 250.0, 1000.0):
        art.check_stream(stream(channel_names(4), rate))


def test_list_artifacts_reports_bad_files(saved: Path, tmp_path: Path) -> None:
    (tmp_path / "corrupt.onnx").write_bytes(saved.read_bytes()[:100])
    onnx.save(classifier_graph(4, 20, 3)[0], tmp_path / "plain.onnx")
    (tmp_path / "notes.txt").write_text("not an artifact")
    (tmp_path / "folder.onnx").mkdir()
    listing = list_artifacts(tmp_path)
    assert [a.path.name for a in listing.artifacts] == ["clf.onnx"]
    reasons = {i.path.name: i.reason for i in listing.invalid}
    assert set(reasons) == {"corrupt.onnx", "plain.onnx", "folder.onnx"}
    assert "without neurocast metadata" in reasons["plain.onnx"]
    assert "folder" in reasons["folder.onnx"]
    with pytest.raises(ArtifactError, match="does not exist"):
        list_artifacts(tmp_path / "missing")
