"""Model artifacts: one ONNX file that carries its own metadata.

An artifact is a single ``.onnx`` file. Its metadata (what the model expects, what it outputs,
how it was trained and how well it did) is one JSON document stored in the ONNX model's
``metadata_props`` under the key ``"neurocast"`` and described by :class:`ArtifactMetadata`.
The metadata also holds a content hash: the SHA-256 of the serialized ONNX model without its
``metadata_props`` (every top-level protobuf field of the file except field 14, in file order),
so editing the graph or its weights is detected on load while the metadata itself stays
readable and editable by any ONNX tool.

:func:`read_metadata` reads only the metadata (a scan of the file's top-level protobuf fields,
no graph parsing); :func:`load_artifact` also verifies the hash and that the graph's input and
output shapes agree with the metadata; :func:`list_artifacts` loads every artifact of a folder
and reports the invalid ones with the reason instead of failing.

This module is on the serving path: it needs onnx and pydantic, never torch.
"""

from __future__ import annotations

import hashlib
import logging
import mmap
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal

import mne
import onnx
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from neurocast.streaming.engine.results import ResultKind
from neurocast.streaming.engine.windows import WindowSpec
from neurocast.streaming.preprocessing.filters import PreprocessSpec
from neurocast.streaming.preprocessing.scalogram import ScalogramSpec
from neurocast.streaming.sources.base import StreamInfo

logger = logging.getLogger(__name__)

METADATA_KEY = "neurocast"
FORMAT_VERSION = 1
ARTIFACT_SUFFIX = ".onnx"

Task = Literal["classification", "retrieval", "translation", "embedding"]
TASK_KINDS: dict[str, ResultKind] = {
    "classification": "probabilities",
    "retrieval": "retrieval",
    "translation": "translation",
    "embedding": "embedding",
}

# protobuf field numbers (onnx.proto): ModelProto.graph, ModelProto.metadata_props,
# GraphProto.initializer / input / output, TensorProto.name, ValueInfoProto
_MODEL_GRAPH, _MODEL_METADATA = 7, 14
_GRAPH_INITIALIZER, _GRAPH_INPUT, _GRAPH_OUTPUT = 5, 11, 12
_TENSOR_NAME = 8
_FLOAT = onnx.TensorProto.FLOAT


class ArtifactError(ValueError):
    """A file is not a valid artifact; the message says why and what to do."""


class StreamMismatchError(ValueError):
    """A stream does not fit a model (channels, types or rate); the message says what to do."""


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSpec(_Spec):
    """What a model reads: channels, rate, window and preprocessing.

    Parameters
    ----------
    ch_names : list of str
        The model's input channels, in the order of the input tensor. Streams are matched by
        name; extra stream channels are ignored.
    ch_types : list of str
        MNE channel type of each (``"mag"``, ``"grad"``, ``"eeg"``, ...).
    sfreq_hz : float
        Sampling rate in Hz of the recordings the model was trained on. Streams must run at
        this rate unless ``preprocess.resample_hz`` is set.
    window_s : float
        Window length in seconds.
    context_s : float
        History before the window that the model also reads, in seconds.
    stride_s : float
        Stride in seconds between windows when the model was trained and evaluated (sessions
        choose their own).
    preprocess : PreprocessSpec
        Online preprocessing; ``picks`` is None or equal to ``ch_names``.
    scalogram : ScalogramSpec | None
        When set, the model reads Morlet wavelet power (channels × frequencies × time,
        computed by :class:`~neurocast.streaming.preprocessing.scalogram.StreamingMorlet` from the
        preprocessed signal) instead of the signal itself. Its ``sfreq_hz`` is the
        preprocessing output rate and its ``latency_s`` the scalogram's delay. The
        preprocessing's robust scaling then applies to the continuous signal before the
        wavelets (recommended for MEG in tesla, whose power underflows float32); baseline
        and clipping are not allowed.
    """

    ch_names: list[str] = Field(min_length=1)
    ch_types: list[str] = Field(min_length=1)
    sfreq_hz: float = Field(gt=0)
    window_s: float = Field(gt=0)
    context_s: float = Field(0.0, ge=0)
    stride_s: float = Field(0.025, gt=0)
    preprocess: PreprocessSpec = Field(default_factory=PreprocessSpec)
    scalogram: ScalogramSpec | None = None

    @model_validator(mode="after")
    def _check(self) -> InputSpec:
        if len(self.ch_types) != len(self.ch_names):
            raise ValueError(
                f"ch_types has {len(self.ch_types)} entries for {len(self.ch_names)} channels."
            )
        dupes = sorted({c for c in self.ch_names if self.ch_names.count(c) > 1})
        if dupes:
            raise ValueError(f"ch_names lists channels more than once: {dupes}.")
        picks = self.preprocess.picks
        if picks is not None and picks != self.ch_names:
            raise ValueError(
                "preprocess.picks must be None or equal to ch_names (the model's channels in "
                "its order)."
            )
        if self.scalogram is not None:
            if not _same_rate(self.scalogram.sfreq_hz, self.model_sfreq_hz):
                raise ValueError(
                    f"scalogram.sfreq_hz={self.scalogram.sfreq_hz} must be the preprocessing "
                    f"output rate ({self.model_sfreq_hz} Hz)."
                )
            pre = self.preprocess
            if pre.baseline_s is not None or pre.clip is not None:
                raise ValueError(
                    "Baseline and clipping act on signal windows, not on wavelet power: scale "
                    "the power inside the exported graph instead (robust scaling is allowed: it "
                    "scales the continuous signal before the wavelets)."
                )
        return self

    @property
    def model_sfreq_hz(self) -> float:
        """Rate in Hz of the preprocessed signal (``resample_hz`` or ``sfreq_hz``)."""
        return self.preprocess.resample_hz or self.sfreq_hz

    @property
    def window(self) -> WindowSpec:
        """The window as the decode engine takes it."""
        return WindowSpec(window_s=self.window_s, stride_s=self.stride_s, context_s=self.context_s)

    @property
    def n_times(self) -> int:
        """Time samples of one model input (scalogram columns for scalogram inputs)."""
        rate = self.model_sfreq_hz
        if self.scalogram is not None:
            rate = self.scalogram.sfreq_out_hz
        return self.window.in_samples(rate).total

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one input, without the batch dimension."""
        if self.scalogram is not None:
            return (len(self.ch_names), self.scalogram.n_freqs, self.n_times)
        return (len(self.ch_names), self.n_times)


class OutputSpec(_Spec):
    """What a model outputs; which fields are needed depends on the task.

    Parameters
    ----------
    tensor : str | None
        Name of the graph output to use; None for the first.
    class_names : list of str | None
        Classification: the class of each output column.
    logits : bool
        Classification: the graph outputs logits (softmax is applied by the runtime) rather
        than probabilities.
    embedding_size : int | None
        Retrieval and embedding: length of the output vector.
    gallery : str | None
        Retrieval: name of the image gallery the embedding is searched in.
    ch_names, ch_types : list of str | None
        Translation: the output channels and their MNE types.
    sfreq_hz : float | None
        Translation: rate of the output signal in Hz.
    """

    tensor: str | None = None
    class_names: list[str] | None = None
    logits: bool = True
    embedding_size: int | None = Field(None, ge=1)
    gallery: str | None = None
    ch_names: list[str] | None = None
    ch_types: list[str] | None = None
    sfreq_hz: float | None = Field(None, gt=0)


class Provenance(_Spec):
    """Where a model comes from.

    Parameters
    ----------
    data : str
        The training data (dataset, subjects, runs, or "simulated ..." for simulated data).
    split : str
        How data were split into training, validation and test sets.
    seed : int | None
        Random seed of the training run.
    git_commit : str | None
        Commit of the code that trained and exported the model.
    """

    data: str
    split: str
    seed: int | None = None
    git_commit: str | None = None


class Metrics(_Spec):
    """Measured quality of a model.

    Parameters
    ----------
    values : dict of str to float
        Named figures, e.g. ``{"test_balanced_accuracy": 0.81}``.
    note : str
        How and on what they were measured.
    """

    values: dict[str, float] = Field(default_factory=dict)
    note: str = ""


class ArtifactMetadata(_Spec):
    """Everything stored with a model (the JSON document in the ONNX file).

    Parameters
    ----------
    name : str
        Model name (letters, digits, ``.``, ``_``, ``-``).
    version : str
        Model version.
    task : str
        ``"classification"``, ``"retrieval"``, ``"translation"`` or ``"embedding"``.
    input : InputSpec
        What the model reads.
    output : OutputSpec
        What it outputs.
    provenance : Provenance
        Training data, split, seed and code commit.
    simulated_training_data : bool
        True when the model was trained on simulated data; every output says so.
    metrics : Metrics
        Measured quality.
    description : str
        Free text.
    content_sha256 : str | None
        Hash of the ONNX model without its metadata; set by :func:`save_artifact`.
    format_version : int
        Version of this metadata layout.
    """

    format_version: Literal[1] = 1
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=128)
    version: str = Field(min_length=1, max_length=64)
    task: Task
    input: InputSpec
    output: OutputSpec
    provenance: Provenance
    simulated_training_data: bool
    metrics: Metrics = Field(default_factory=Metrics)
    description: str = ""
    content_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")

    @model_validator(mode="after")
    def _check_outputs(self) -> ArtifactMetadata:
        out = self.output
        if self.task == "classification":
            if not out.class_names or len(out.class_names) < 2:
                raise ValueError("A classification model needs output.class_names (two or more).")
        elif self.task in ("retrieval", "embedding"):
            if out.embedding_size is None:
                raise ValueError(f"A {self.task} model needs output.embedding_size.")
            if self.task == "retrieval" and not out.gallery:
                raise ValueError("A retrieval model needs output.gallery (the gallery's name).")
        else:
            if not out.ch_names or out.ch_types is None or out.sfreq_hz is None:
                raise ValueError(
                    "A translation model needs output.ch_names, output.ch_types and "
                    "output.sfreq_hz."
                )
            if len(out.ch_types) != len(out.ch_names):
                raise ValueError(
                    f"output.ch_types has {len(out.ch_types)} entries for "
                    f"{len(out.ch_names)} output channels."
                )
        return self

    @property
    def kind(self) -> ResultKind:
        """The kind of result the model produces (``classification`` → ``probabilities``)."""
        return TASK_KINDS[self.task]


@dataclass(frozen=True)
class TensorSpec:
    """A graph input or output: name and shape (a string or None for a free dimension)."""

    name: str
    shape: tuple[int | str | None, ...]
    elem_type: int


@dataclass(frozen=True)
class Artifact:
    """A validated artifact file.

    Attributes
    ----------
    path : Path
        The ``.onnx`` file.
    metadata : ArtifactMetadata
        Its metadata (``content_sha256`` verified).
    input : TensorSpec
        The graph's input (batch dimension first).
    output : TensorSpec
        The graph output the model's result comes from.
    size_bytes : int
        File size.
    """

    path: Path
    metadata: ArtifactMetadata
    input: TensorSpec
    output: TensorSpec
    size_bytes: int

    @property
    def name(self) -> str:
        """The model's name."""
        return self.metadata.name

    @property
    def sha256(self) -> str:
        """The content hash (identifies the model's graph and weights)."""
        assert self.metadata.content_sha256 is not None
        return self.metadata.content_sha256

    @property
    def batch_dynamic(self) -> bool:
        """True when the graph accepts any batch size (else it takes one window per call)."""
        return not isinstance(self.input.shape[0], int)

    def read_bytes(self) -> bytes:
        """The file's bytes, after checking that they still match the content hash.

        Raises
        ------
        ArtifactError
            If the file changed since it was loaded.
        """
        data = _read(self.path)
        actual = content_hash(data)
        if actual != self.sha256:
            raise ArtifactError(
                f"{self.path} changed since it was loaded (content hash {actual[:12]}..., "
                f"expected {self.sha256[:12]}...); reload it."
            )
        return data

    def check_stream(self, stream: StreamInfo) -> None:
        """Refuse a stream that does not fit the model.

        Parameters
        ----------
        stream : StreamInfo
            The stream to decode.

        Raises
        ------
        StreamMismatchError
            If channels the model needs are missing (by name) or of another type, or the rate
            differs while the model does not resample, or the stream's rate cannot carry the
            scalogram's frequencies. The message says what to do.
        """
        spec = self.metadata.input
        label = f"Model {self.name!r}"
        names = stream.ch_names
        index = {c: i for i, c in enumerate(names)}
        missing = [c for c in spec.ch_names if c not in index]
        if missing:
            shown = ", ".join(missing[:8]) + (" ..." if len(missing) > 8 else "")
            raise StreamMismatchError(
                f"{label} needs {len(spec.ch_names)} channels; stream {stream.name!r} lacks "
                f"{len(missing)} of them ({shown}). Rename the stream's channels to the "
                "model's names (mne.rename_channels) or choose a model trained on this "
                "montage; GET the model's metadata for its channel list."
            )
        wrong = []
        for c, t in zip(spec.ch_names, spec.ch_types, strict=True):
            have = mne.channel_type(stream.info, index[c])
            if have != t:
                wrong.append(f"{c} is {have!r}, expected {t!r}")
        if wrong:
            shown = "; ".join(wrong[:5]) + (" ..." if len(wrong) > 5 else "")
            raise StreamMismatchError(
                f"{label}: {len(wrong)} channels of stream {stream.name!r} have another type "
                f"than the model was trained on ({shown}). Fix the stream's channel types "
                "(set_channel_types) or choose a model for these sensors."
            )
        resample = spec.preprocess.resample_hz
        if resample is None and not _same_rate(stream.sfreq, spec.sfreq_hz):
            raise StreamMismatchError(
                f"{label} expects {spec.sfreq_hz:g} Hz and does not resample, but stream "
                f"{stream.name!r} runs at {stream.sfreq:g} Hz. Resample the stream at the "
                f"source, or re-export the model with preprocess.resample_hz={spec.sfreq_hz:g} "
                "so that it resamples any stream."
            )
        if spec.scalogram is not None:
            top = max(spec.scalogram.freqs_hz)
            if top >= stream.sfreq / 2:
                raise StreamMismatchError(
                    f"{label} reads wavelet power up to {top:g} Hz, but stream {stream.name!r} "
                    f"at {stream.sfreq:g} Hz carries nothing above {stream.sfreq / 2:g} Hz. "
                    "Record at a higher rate or choose a model with lower frequencies."
                )


@dataclass
class InvalidArtifact:
    """A file in an artifact folder that could not be loaded, and why."""

    path: Path
    reason: str


@dataclass
class ArtifactListing:
    """The artifacts of a folder: the valid ones and the files refused, with reasons."""

    artifacts: list[Artifact] = field(default_factory=list)
    invalid: list[InvalidArtifact] = field(default_factory=list)


def _same_rate(a: float, b: float) -> bool:
    # rational resampling reaches the requested rate within 1e-5 (see streaming.preprocess)
    return abs(a - b) <= 1e-4 * max(a, b)


def _open(path: Path) -> BinaryIO:
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise ArtifactError(f"No artifact at {path}: check the path.") from None
    except IsADirectoryError:
        raise ArtifactError(f"{path} is a folder, not an artifact file.") from None


def _read(path: Path) -> bytes:
    with _open(path) as f:
        return f.read()


# --- protobuf wire format: just enough to split a message into its top-level fields ---


class _Corrupt(Exception):
    pass


def _varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise _Corrupt(f"truncated or malformed varint at byte {pos}")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes | memoryview) -> Iterator[tuple[int, int, int, int]]:
    """Yield ``(field_number, start, payload_start, end)`` of each top-level field."""
    pos, n = 0, len(buf)
    while pos < n:
        start = pos
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _Corrupt(f"field number 0 at byte {start}")
        if wire == 0:
            _, pos = _varint(buf, pos)
            payload = start
        elif wire == 1:
            payload, pos = pos, pos + 8
        elif wire == 2:
            length, payload = _varint(buf, pos)
            pos = payload + length
        elif wire == 5:
            payload, pos = pos, pos + 4
        else:
            raise _Corrupt(f"unsupported wire type {wire} at byte {start}")
        if pos > n:
            raise _Corrupt(f"field {number} at byte {start} runs past the end of the file")
        yield number, start, payload, pos


def content_hash(data: bytes) -> str:
    """SHA-256 (hex) of a serialized ONNX model without its ``metadata_props``.

    Parameters
    ----------
    data : bytes
        The ``.onnx`` file's bytes.

    Returns
    -------
    sha256 : str
        Hash of every top-level protobuf field except ``metadata_props``, in file order.
    """
    view = memoryview(data)
    digest = hashlib.sha256()
    try:
        for number, start, _, end in _fields(view):
            if number != _MODEL_METADATA:
                digest.update(view[start:end])
    except _Corrupt as err:
        raise ArtifactError(f"Not a valid ONNX file ({err}).") from None
    return digest.hexdigest()


def _metadata_json(data: bytes | mmap.mmap, where: str) -> str:
    view = memoryview(data)
    found = None
    has_graph = False
    try:
        for number, _, payload, end in _fields(view):
            if number == _MODEL_GRAPH:
                has_graph = True
            elif number == _MODEL_METADATA:
                entry = onnx.StringStringEntryProto.FromString(bytes(view[payload:end]))
                if entry.key == METADATA_KEY:
                    found = entry.value
    except Exception as err:  # _Corrupt, or protobuf's DecodeError
        raise ArtifactError(
            f"{where} is not a valid ONNX file (truncated or corrupt: {err}); export it again "
            "or copy it again."
        ) from None
    finally:
        view.release()  # a mapped file can only be closed once no view is left
    if not has_graph:
        raise ArtifactError(
            f"{where} is not an ONNX model (no graph found; truncated or another file type)."
        )
    if found is None:
        raise ArtifactError(
            f"{where} is an ONNX model without neurocast metadata (no {METADATA_KEY!r} entry "
            "in metadata_props); write it with neurocast.models.serving.artifact.save_artifact."
        )
    return found


def _parse_metadata(text: str, where: str) -> ArtifactMetadata:
    try:
        return ArtifactMetadata.model_validate_json(text)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}"
            for e in err.errors()[:5]
        )
        raise ArtifactError(
            f"{where} has invalid metadata ({err.error_count()} problems: {problems}); "
            "re-export it with save_artifact."
        ) from None


def read_metadata(path: str | Path) -> ArtifactMetadata:
    """Read an artifact's metadata without parsing its graph or checking its hash.

    Parameters
    ----------
    path : str | Path
        The ``.onnx`` file.

    Returns
    -------
    metadata : ArtifactMetadata
        The metadata as stored (not verified against the graph: use :func:`load_artifact`
        before running the model).
    """
    p = Path(path)
    where = str(p)
    with _open(p) as f:
        if os.fstat(f.fileno()).st_size == 0:
            text = _metadata_json(b"", where)
        else:
            # the graph is skipped, not read: only the pages holding field headers and the
            # metadata are touched
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                text = _metadata_json(mapped, where)
    return _parse_metadata(text, where)


def _value_infos(graph: memoryview) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The graph's inputs (initializers excluded) and outputs, parsing only those fields."""
    initializers: set[str] = set()
    inputs: list[TensorSpec] = []
    outputs: list[TensorSpec] = []
    for number, _, payload, end in _fields(graph):
        if number == _GRAPH_INITIALIZER:
            for n2, _, p2, e2 in _fields(graph[payload:end]):
                if n2 == _TENSOR_NAME:
                    initializers.add(bytes(graph[payload + p2 : payload + e2]).decode())
        elif number in (_GRAPH_INPUT, _GRAPH_OUTPUT):
            info = onnx.ValueInfoProto.FromString(bytes(graph[payload:end]))
            tt = info.type.tensor_type
            shape = tuple(
                d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                for d in tt.shape.dim
            )
            spec = TensorSpec(info.name, shape, tt.elem_type)
            (inputs if number == _GRAPH_INPUT else outputs).append(spec)
    return [t for t in inputs if t.name not in initializers], outputs


def _check_graph(data: bytes, meta: ArtifactMetadata, where: str) -> tuple[TensorSpec, TensorSpec]:
    view = memoryview(data)
    graph = None
    try:
        for number, _, payload, end in _fields(view):
            if number == _MODEL_GRAPH:
                graph = view[payload:end]
        if graph is None:
            raise _Corrupt("no graph")
        inputs, outputs = _value_infos(graph)
    except Exception as err:  # _Corrupt, or protobuf's DecodeError
        raise ArtifactError(f"{where} has a corrupt graph ({err}); export it again.") from None
    if len(inputs) != 1:
        raise ArtifactError(
            f"{where}: the graph has {len(inputs)} inputs ({[t.name for t in inputs]}); a "
            "window model takes exactly one (batch, channels, [frequencies,] times) tensor."
        )
    (inp,) = inputs
    expected = meta.input.shape
    axes = ("channels", "frequencies", "times") if meta.input.scalogram else ("channels", "times")
    problems = []
    if inp.elem_type != _FLOAT:
        problems.append(f"input {inp.name!r} is not float32")
    if len(inp.shape) != len(expected) + 1:
        problems.append(
            f"input {inp.name!r} has rank {len(inp.shape)}, the metadata implies "
            f"{len(expected) + 1} (batch, {', '.join(axes)})"
        )
    else:
        batch = inp.shape[0]
        if isinstance(batch, int) and batch != 1:
            problems.append(f"input {inp.name!r} has a fixed batch of {batch} (use 1 or dynamic)")
        for dim, want, what in zip(
            inp.shape[1:],
            expected,
            axes,
            strict=True,
        ):
            if isinstance(dim, int) and dim != want:
                problems.append(f"input {inp.name!r} has {dim} {what}, the metadata implies {want}")
    out_name = meta.output.tensor
    chosen = [t for t in outputs if out_name is None or t.name == out_name][:1]
    if not chosen:
        names = [t.name for t in outputs]
        raise ArtifactError(f"{where}: output.tensor={out_name!r} is not among outputs {names}.")
    (out,) = chosen
    out_meta = meta.output
    want_out: tuple[int | None, ...]
    if meta.task == "classification":
        want_out = (len(out_meta.class_names or ()),)
    elif meta.task == "translation":
        want_out = (len(out_meta.ch_names or ()), None)
    else:
        want_out = (out_meta.embedding_size,)
    if out.elem_type != _FLOAT:
        problems.append(f"output {out.name!r} is not float32")
    if len(out.shape) != len(want_out) + 1:
        problems.append(
            f"output {out.name!r} has rank {len(out.shape)}, a {meta.task} model needs "
            f"{len(want_out) + 1}"
        )
    else:
        for dim, size in zip(out.shape[1:], want_out, strict=True):
            if isinstance(dim, int) and size is not None and dim != size:
                problems.append(
                    f"output {out.name!r} has size {dim} where the metadata implies {size}"
                )
    if problems:
        raise ArtifactError(
            f"{where}: the graph disagrees with its metadata: {'; '.join(problems)}. Export "
            "the model again with metadata that describes it."
        )
    return inp, out


def load_artifact(path: str | Path) -> Artifact:
    """Load and validate an artifact.

    Parameters
    ----------
    path : str | Path
        The ``.onnx`` file.

    Returns
    -------
    artifact : Artifact
        The validated artifact (the graph is not loaded into a runtime; see
        :mod:`neurocast.models.serving.runtime`).

    Raises
    ------
    ArtifactError
        If the file is missing, not ONNX, corrupt, without metadata, with metadata that fail
        the schema, modified after it was saved (hash mismatch), or with a graph whose input
        or output shapes disagree with the metadata.
    """
    p = Path(path)
    where = str(p)
    data = _read(p)
    meta = _parse_metadata(_metadata_json(data, where), where)
    if meta.content_sha256 is None:
        raise ArtifactError(f"{where} has no content hash; write it with save_artifact.")
    actual = content_hash(data)
    if actual != meta.content_sha256:
        raise ArtifactError(
            f"{where}: content hash mismatch (stored {meta.content_sha256[:12]}..., actual "
            f"{actual[:12]}...): the graph or its weights were modified after the artifact "
            "was saved. Export it again with save_artifact (or restore the original file)."
        )
    inp, out = _check_graph(data, meta, where)
    return Artifact(p, meta, inp, out, len(data))


def save_artifact(
    model: onnx.ModelProto | bytes, metadata: ArtifactMetadata, path: str | Path
) -> Artifact:
    """Write an ONNX model with its metadata as one artifact file.

    Parameters
    ----------
    model : onnx.ModelProto | bytes
        The exported model (a proto or its serialized bytes), weights inside (no external
        data).
    metadata : ArtifactMetadata
        Its description; ``content_sha256`` is computed here.
    path : str | Path
        Destination, normally ending in ``.onnx``; parent folders are created. An existing
        file is replaced atomically.

    Returns
    -------
    artifact : Artifact
        The written file, loaded back and validated.

    Raises
    ------
    ArtifactError
        If the model is not valid ONNX or its input/output shapes disagree with the metadata.
    """
    try:
        proto = (
            onnx.load_model_from_string(bytes(model))
            if isinstance(model, bytes | bytearray)
            else onnx.ModelProto.FromString(model.SerializeToString())
        )
        onnx.checker.check_model(proto)
    except Exception as err:
        raise ArtifactError(f"The model is not valid ONNX: {err}") from None
    kept = [e for e in proto.metadata_props if e.key != METADATA_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    data = proto.SerializeToString()
    meta = metadata.model_copy(update={"content_sha256": content_hash(data)})
    # validate the copy (model_copy does not) and the graph against it before writing
    meta = ArtifactMetadata.model_validate_json(meta.model_dump_json())
    _check_graph(data, meta, "the model")
    proto.metadata_props.add(key=METADATA_KEY, value=meta.model_dump_json())
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(proto.SerializeToString())
        # mkstemp creates 0600; an artifact is shared like any model file
        os.chmod(tmp, 0o644)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return load_artifact(p)


def list_artifacts(directory: str | Path) -> ArtifactListing:
    """Load every ``*.onnx`` file of a folder (not recursive), keeping going past bad ones.

    Parameters
    ----------
    directory : str | Path
        The folder.

    Returns
    -------
    listing : ArtifactListing
        ``artifacts``: the valid ones, sorted by file name; ``invalid``: every other
        ``.onnx`` file with the reason it was refused (also logged as a warning).

    Raises
    ------
    ArtifactError
        If ``directory`` is not a folder.
    """
    d = Path(directory)
    if not d.is_dir():
        raise ArtifactError(
            f"Artifact folder {d} does not exist or is not a folder; create it or point the "
            "setting at the folder that holds the .onnx files."
        )
    listing = ArtifactListing()
    for p in sorted(d.glob(f"*{ARTIFACT_SUFFIX}")):
        try:
            listing.artifacts.append(load_artifact(p))
        except (ArtifactError, OSError) as err:
            reason = str(err)
            logger.warning("Skipping %s: %s", p, reason)
            listing.invalid.append(InvalidArtifact(p, reason))
    return listing


_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def artifact_filename(metadata: ArtifactMetadata) -> str:
    """A file name for an artifact: ``<name>-<version>.onnx`` with unsafe characters replaced."""
    return f"{metadata.name}-{_SAFE.sub('_', metadata.version)}{ARTIFACT_SUFFIX}"
