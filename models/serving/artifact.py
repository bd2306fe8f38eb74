"""Model artifacts: one ONNX file that carries its own metadata.

An artifact is a single ``.onnx`` file. Its metadata (what the model expects, what it outputs,
how it was trained and how well it did) is one JSON document stored in the ONNX model's
``metadata_props`` under the key ``"neurocast"`` and described by :class:`ArtifactMetadata`.
The metadata also holds a content hash: the SHA-256 of the serialized ONNX model without its
``metadata_props`` (every top-level protobuf field of the file except field 14, in file order),
so editing the graph or its weights is detected on load while the metadata itself stays
readable and editable by any ONNX tool.

:func:`~.onnx_file.read_metadata` reads only the metadata (a scan of the file's top-level
protobuf fields, no graph parsing); :func:`load_artifact` also verifies the hash and that the
graph's input and output shapes agree with the metadata (:mod:`.compat`);
:func:`~.listing.list_artifacts` loads every artifact of a folder and reports the invalid ones
with the reason instead of failing.

This module is on the serving path: it needs onnx and pydantic, never torch.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import onnx

from neurocast.models.serving.compat import check_graph, check_stream
from neurocast.models.serving.onnx_file import (
    TensorSpec,
    content_hash,
    metadata_json,
    parse_metadata,
    read_file,
)
from neurocast.models.serving.schema import (
    ARTIFACT_SUFFIX,
    METADATA_KEY,
    ArtifactError,
    ArtifactMetadata,
)
from neurocast.streaming.io import safe_name
from neurocast.streaming.sources.base import StreamInfo

logger = logging.getLogger(__name__)


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
        data = read_file(self.path)
        actual = content_hash(data)
        if actual != self.sha256:
            raise ArtifactError(
                f"{self.path} changed since it was loaded (content hash {actual[:12]}..., "
                f"expected {self.sha256[:12]}...); reload it."
            )
        return data

    def check_stream(self, stream: StreamInfo) -> None:
        """Refuse a stream that does not fit the model (:func:`.compat.check_stream`).

        Raises
        ------
        StreamMismatchError
            If the stream's channels, types or rate do not fit; the message says what to do.
        """
        check_stream(self.metadata, stream)


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
    data = read_file(p)
    meta = parse_metadata(metadata_json(data, where), where)
    if meta.content_sha256 is None:
        raise ArtifactError(f"{where} has no content hash; write it with save_artifact.")
    actual = content_hash(data)
    if actual != meta.content_sha256:
        raise ArtifactError(
            f"{where}: content hash mismatch (stored {meta.content_sha256[:12]}..., actual "
            f"{actual[:12]}...): the graph or its weights were modified after the artifact "
            "was saved. Export it again with save_artifact (or restore the original file)."
        )
    inp, out = check_graph(data, meta, where)
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
    check_graph(data, meta, "the model")
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


def artifact_filename(metadata: ArtifactMetadata) -> str:
    """A file name for an artifact: ``<name>-<version>.onnx`` with unsafe characters replaced."""
    return f"{metadata.name}-{safe_name(metadata.version)}{ARTIFACT_SUFFIX}"
