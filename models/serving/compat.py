"""Whether a graph fits its metadata, and whether a stream fits a model.

:func:`check_graph` compares the graph's input and output with what the metadata describes
(on load and before writing); :func:`check_stream` refuses a stream whose channels, types or
rate do not fit the model, saying what to do.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import mne

from neurocast.models.serving.onnx_file import (
    FLOAT,
    MODEL_GRAPH,
    CorruptFile,
    TensorSpec,
    scan_fields,
    value_infos,
)
from neurocast.models.serving.schema import (
    ArtifactError,
    ArtifactMetadata,
    StreamMismatchError,
    same_rate,
)
from neurocast.streaming.sources.base import StreamInfo


def check_stream(metadata: ArtifactMetadata, stream: StreamInfo) -> None:
    """Refuse a stream that does not fit the model.

    Parameters
    ----------
    metadata : ArtifactMetadata
        The model's metadata.
    stream : StreamInfo
        The stream to decode.

    Raises
    ------
    StreamMismatchError
        If channels the model needs are missing (by name) or of another type, or the rate
        differs while the model does not resample, or the stream's rate cannot carry the
        scalogram's frequencies. The message says what to do.
    """
    spec = metadata.input
    label = f"Model {metadata.name!r}"
    stream = aliased_stream(metadata, stream)
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
    if resample is None and not same_rate(stream.sfreq, spec.sfreq_hz):
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


def aliased_stream(metadata: ArtifactMetadata, stream: StreamInfo) -> StreamInfo:
    """``stream`` with its channels renamed by the model's ``input.ch_aliases``.

    A channel is renamed only when the stream lacks the target name, so a stream that already
    uses the model's names is returned unchanged.

    Parameters
    ----------
    metadata : ArtifactMetadata
        The model's metadata.
    stream : StreamInfo
        The stream to decode.

    Returns
    -------
    stream : StreamInfo
        The same object when nothing is renamed, else a copy with renamed channels.
    """
    aliases = metadata.input.ch_aliases
    names = set(stream.ch_names)
    mapping = {s: m for s, m in aliases.items() if s in names and m not in names}
    if not mapping:
        return stream
    info = stream.info.copy()
    mne.rename_channels(info, mapping)
    return dataclasses.replace(stream, info=info)


def _tensor_problems(
    tensor: TensorSpec,
    role: str,
    want: Sequence[int | None],
    rank_note: str,
    dim_notes: Sequence[str],
) -> list[str]:
    """How a graph tensor differs from the float32 ``(batch, *want)`` the metadata imply.

    Parameters
    ----------
    tensor : TensorSpec
        The graph's input or output.
    role : str
        ``"input"`` or ``"output"``, for the messages.
    want : sequence of int or None
        Sizes after the batch axis; None accepts any size. Dynamic graph dimensions accept
        any size too.
    rank_note : str
        What the rank should be, ending the rank message.
    dim_notes : sequence of str
        Per axis, the end of its message, with ``{dim}`` (the graph's size) and ``{want}``.

    Returns
    -------
    problems : list of str
        One sentence per disagreement, empty if the tensor fits.
    """
    where = f"{role} {tensor.name!r}"
    problems = []
    if tensor.elem_type != FLOAT:
        problems.append(f"{where} is not float32")
    if len(tensor.shape) != len(want) + 1:
        problems.append(f"{where} has rank {len(tensor.shape)}, {rank_note}")
        return problems
    for dim, size, note in zip(tensor.shape[1:], want, dim_notes, strict=True):
        if isinstance(dim, int) and size is not None and dim != size:
            problems.append(f"{where} has " + note.format(dim=dim, want=size))
    return problems


def check_graph(data: bytes, meta: ArtifactMetadata, where: str) -> tuple[TensorSpec, TensorSpec]:
    view = memoryview(data)
    graph = None
    try:
        for number, _, payload, end in scan_fields(view):
            if number == MODEL_GRAPH:
                graph = view[payload:end]
        if graph is None:
            raise CorruptFile("no graph")
        inputs, outputs = value_infos(graph)
    except Exception as err:  # CorruptFile, or protobuf's DecodeError
        raise ArtifactError(f"{where} has a corrupt graph ({err}); export it again.") from None
    if len(inputs) != 1:
        raise ArtifactError(
            f"{where}: the graph has {len(inputs)} inputs ({[t.name for t in inputs]}); a "
            "window model takes exactly one (batch, channels, [frequencies,] times) tensor."
        )
    (inp,) = inputs
    expected = meta.input.shape
    axes = meta.input.axes
    problems = _tensor_problems(
        inp,
        "input",
        expected,
        f"the metadata implies {len(expected) + 1} (batch, {', '.join(axes)})",
        [f"{{dim}} {what}, the metadata implies {{want}}" for what in axes],
    )
    batch = inp.shape[0] if len(inp.shape) == len(expected) + 1 else None
    if isinstance(batch, int) and batch != 1:
        problems.append(f"input {inp.name!r} has a fixed batch of {batch} (use 1 or dynamic)")
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
    problems += _tensor_problems(
        out,
        "output",
        want_out,
        f"a {meta.task} model needs {len(want_out) + 1}",
        ["size {dim} where the metadata implies {want}"] * len(want_out),
    )
    if problems:
        raise ArtifactError(
            f"{where}: the graph disagrees with its metadata: {'; '.join(problems)}. Export "
            "the model again with metadata that describes it."
        )
    return inp, out
