"""Reading an artifact's ONNX file without parsing its graph: a scan of protobuf fields.

:func:`content_hash` hashes the serialized model without its ``metadata_props`` (every
top-level protobuf field except field 14, in file order); :func:`read_metadata` reads the
metadata document alone; :func:`value_infos` lists the graph's inputs and outputs.
"""

from __future__ import annotations

import hashlib
import mmap
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import onnx
from pydantic import ValidationError

from neurocast.models.serving.schema import METADATA_KEY, ArtifactError, ArtifactMetadata

# protobuf field numbers (onnx.proto): ModelProto.graph, ModelProto.metadata_props,
# GraphProto.initializer / input / output, TensorProto.name, ValueInfoProto
MODEL_GRAPH, MODEL_METADATA = 7, 14
GRAPH_INITIALIZER, GRAPH_INPUT, GRAPH_OUTPUT = 5, 11, 12
TENSOR_NAME = 8
FLOAT = onnx.TensorProto.FLOAT


@dataclass(frozen=True)
class TensorSpec:
    """A graph input or output: name and shape (a string or None for a free dimension)."""

    name: str
    shape: tuple[int | str | None, ...]
    elem_type: int


def open_file(path: Path) -> BinaryIO:
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise ArtifactError(f"No artifact at {path}: check the path.") from None
    except IsADirectoryError:
        raise ArtifactError(f"{path} is a folder, not an artifact file.") from None


def read_file(path: Path) -> bytes:
    with open_file(path) as f:
        return f.read()


# --- protobuf wire format: just enough to split a message into its top-level fields ---


class CorruptFile(Exception):
    pass


def _varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise CorruptFile(f"truncated or malformed varint at byte {pos}")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def scan_fields(buf: bytes | memoryview) -> Iterator[tuple[int, int, int, int]]:
    """Yield ``(field_number, start, payload_start, end)`` of each top-level field."""
    pos, n = 0, len(buf)
    while pos < n:
        start = pos
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise CorruptFile(f"field number 0 at byte {start}")
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
            raise CorruptFile(f"unsupported wire type {wire} at byte {start}")
        if pos > n:
            raise CorruptFile(f"field {number} at byte {start} runs past the end of the file")
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
        for number, start, _, end in scan_fields(view):
            if number != MODEL_METADATA:
                digest.update(view[start:end])
    except CorruptFile as err:
        raise ArtifactError(f"Not a valid ONNX file ({err}).") from None
    return digest.hexdigest()


def metadata_json(data: bytes | mmap.mmap, where: str) -> str:
    view = memoryview(data)
    found = None
    has_graph = False
    try:
        for number, _, payload, end in scan_fields(view):
            if number == MODEL_GRAPH:
                has_graph = True
            elif number == MODEL_METADATA:
                entry = onnx.StringStringEntryProto.FromString(bytes(view[payload:end]))
                if entry.key == METADATA_KEY:
                    found = entry.value
    except Exception as err:  # CorruptFile, or protobuf's DecodeError
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


def parse_metadata(text: str, where: str) -> ArtifactMetadata:
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
    with open_file(p) as f:
        if os.fstat(f.fileno()).st_size == 0:
            text = metadata_json(b"", where)
        else:
            # the graph is skipped, not read: only the pages holding field headers and the
            # metadata are touched
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                text = metadata_json(mapped, where)
    return parse_metadata(text, where)


def value_infos(graph: memoryview) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The graph's inputs (initializers excluded) and outputs, parsing only those fields."""
    initializers: set[str] = set()
    inputs: list[TensorSpec] = []
    outputs: list[TensorSpec] = []
    for number, _, payload, end in scan_fields(graph):
        if number == GRAPH_INITIALIZER:
            for n2, _, p2, e2 in scan_fields(graph[payload:end]):
                if n2 == TENSOR_NAME:
                    initializers.add(bytes(graph[payload + p2 : payload + e2]).decode())
        elif number in (GRAPH_INPUT, GRAPH_OUTPUT):
            info = onnx.ValueInfoProto.FromString(bytes(graph[payload:end]))
            tt = info.type.tensor_type
            shape = tuple(
                d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                for d in tt.shape.dim
            )
            spec = TensorSpec(info.name, shape, tt.elem_type)
            (inputs if number == GRAPH_INPUT else outputs).append(spec)
    return [t for t in inputs if t.name not in initializers], outputs
