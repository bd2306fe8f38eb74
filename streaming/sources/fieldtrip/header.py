"""FieldTrip buffer headers: the fixed part, its chunks and the channel-names chunk."""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from neurocast.streaming.sources.fieldtrip.protocol import (
    CHUNK_DEF_SIZE,
    F32_MAX,
    HEADER_DEF_SIZE,
    NATIVE_ORDER,
    U32_MAX,
    ByteOrder,
    ChunkType,
    DataType,
    check_order,
    data_type_of,
    encode_text,
    protocol_error,
    unpack_fields,
)


def pack_channel_names(names: Sequence[str]) -> bytes:
    """The data of a channel-names chunk: each name UTF-8 encoded and 0-terminated."""
    out = bytearray()
    for name in names:
        raw = encode_text(name, "Channel name")
        if b"\0" in raw:
            raise ValueError(f"Channel name {name!r} contains a NUL byte, which ends names here.")
        out += raw + b"\0"
    return bytes(out)


def parse_channel_names(data: bytes, nchans: int) -> list[str]:
    """Channel names from a channel-names chunk, which must hold exactly ``nchans`` of them.

    Raises
    ------
    FieldTripProtocolError
        If the chunk holds a different number of names.
    """
    parts = data.split(b"\0")
    if data.endswith(b"\0"):
        parts = parts[:-1]
    if len(parts) != nchans:
        raise protocol_error(
            f"The channel-names chunk holds {len(parts)} names but the header declares "
            f"{nchans} channels."
        )
    return [p.decode("utf-8", "surrogateescape") for p in parts]


@dataclass(frozen=True)
class HeaderChunk:
    """One chunk of a header: a type (see :class:`ChunkType`) and its raw data.

    The data of a resolutions chunk is kept little-endian whatever order it was sent in.
    """

    type: int
    data: bytes

    def __repr__(self) -> str:  # a Neuromag header chunk holds megabytes
        try:
            name = ChunkType(self.type).name
        except ValueError:
            name = str(self.type)
        return f"HeaderChunk({name}, {len(self.data)} bytes)"


@dataclass(frozen=True)
class Header:
    """A buffer header: the stream's layout and its chunks.

    Attributes
    ----------
    nchans : int
        Number of channels.
    fsample : float
        Sampling rate in Hz (sent as float32).
    data_type : DataType
        Type of the samples.
    nsamples, nevents : int
        In a reply to GET_HDR, the samples and events written since this header was put.
    chunks : tuple of HeaderChunk
        Channel names, resolutions, a Neuromag FIF header, ... in the order they were sent.
    """

    nchans: int
    fsample: float
    data_type: DataType
    nsamples: int = 0
    nevents: int = 0
    chunks: tuple[HeaderChunk, ...] = field(default=())

    def __post_init__(self) -> None:
        if not 1 <= self.nchans <= U32_MAX:
            raise protocol_error(f"A header needs at least one channel, got nchans={self.nchans}.")
        if not (math.isfinite(self.fsample) and 0 < self.fsample <= F32_MAX):
            raise protocol_error(
                f"The sampling rate must be positive and finite, got {self.fsample} Hz."
            )
        object.__setattr__(self, "data_type", data_type_of(int(self.data_type), "the header"))
        for count in (self.nsamples, self.nevents):
            if not 0 <= count <= U32_MAX:
                raise protocol_error(f"Sample and event counts must fit in uint32, got {count}.")
        for chunk in self.chunks:
            if not 0 <= chunk.type <= U32_MAX:
                raise protocol_error(f"Chunk type {chunk.type} does not fit in uint32.")
        names = self.chunk(ChunkType.CHANNEL_NAMES)
        if names is not None:
            parse_channel_names(names, self.nchans)

    @classmethod
    def build(
        cls,
        fsample: float,
        data_type: DataType | int,
        channel_names: Sequence[str] | None = None,
        *,
        nchans: int | None = None,
        chunks: Iterable[HeaderChunk] = (),
    ) -> Header:
        """A header with a channel-names chunk (when names are given) before ``chunks``.

        Parameters
        ----------
        fsample : float
            Sampling rate in Hz.
        data_type : DataType | int
            Type of the samples.
        channel_names : sequence of str | None
            Channel names; their number sets ``nchans`` unless ``nchans`` is given.
        nchans : int | None
            Number of channels, needed when no names are given.
        chunks : iterable of HeaderChunk
            Further chunks (a channel-names chunk among them is dropped when names are given).
        """
        extra = tuple(chunks)
        if channel_names is not None:
            names = list(channel_names)
            if nchans is not None and nchans != len(names):
                raise ValueError(f"{len(names)} channel names given for nchans={nchans}.")
            nchans = len(names)
            extra = (
                HeaderChunk(ChunkType.CHANNEL_NAMES, pack_channel_names(names)),
                *(c for c in extra if c.type != ChunkType.CHANNEL_NAMES),
            )
        if nchans is None:
            raise ValueError("Give channel_names or nchans.")
        return cls(nchans, float(fsample), DataType(data_type), chunks=extra)

    def chunk(self, chunk_type: int) -> bytes | None:
        """Data of the first chunk of ``chunk_type``, or None."""
        for c in self.chunks:
            if c.type == chunk_type:
                return c.data
        return None

    @property
    def channel_names(self) -> list[str] | None:
        """Names from the channel-names chunk, or None when the header has none."""
        data = self.chunk(ChunkType.CHANNEL_NAMES)
        return None if data is None else parse_channel_names(data, self.nchans)

    @property
    def neuromag_header(self) -> bytes | None:
        """The FIF file of a Neuromag header chunk, or None."""
        return self.chunk(ChunkType.NEUROMAG_HEADER)

    @property
    def resolutions(self) -> NDArray[np.float64] | None:
        """Per-channel resolutions (physical unit per A/D unit), or None."""
        data = self.chunk(ChunkType.RESOLUTIONS)
        if data is None or len(data) < 8 * self.nchans:
            return None
        return np.frombuffer(data, "<f8", count=self.nchans).astype(np.float64)

    @property
    def dtype(self) -> np.dtype[Any]:
        """Native numpy dtype of the samples."""
        return self.data_type.dtype()


def _swap_resolutions(chunk_type: int, data: bytes, nchans: int) -> bytes:
    # the only chunk with multi-byte numbers, as in the reference server
    if chunk_type == ChunkType.RESOLUTIONS and len(data) >= 8 * nchans:
        swapped = np.frombuffer(data, "u8", count=nchans).byteswap().tobytes()
        return swapped + data[8 * nchans :]
    return data


def pack_header(header: Header, order: ByteOrder = NATIVE_ORDER) -> bytes:
    """The payload of PUT_HDR or of a GET_HDR reply."""
    order = check_order(order)
    body = bytearray()
    for c in header.chunks:
        data = c.data if order == "<" else _swap_resolutions(c.type, c.data, header.nchans)
        body += struct.pack(order + "II", c.type, len(data)) + data
    fixed = struct.pack(
        order + "IIIfII",
        header.nchans,
        header.nsamples,
        header.nevents,
        header.fsample,
        int(header.data_type),
        len(body),
    )
    return fixed + bytes(body)


def parse_header(body: bytes | memoryview, order: ByteOrder = NATIVE_ORDER) -> Header:
    """Parse a PUT_HDR payload or a GET_HDR reply.

    Raises
    ------
    FieldTripProtocolError
        If the fixed part or a chunk is truncated, the chunk sizes do not add up to the
        declared size, the data type is unknown or the channel names do not match ``nchans``.
    """
    order = check_order(order)
    nchans, nsamples, nevents, fsample, data_type, bufsize = unpack_fields(
        "IIIfII", order, body, 0, "header"
    )
    if HEADER_DEF_SIZE + bufsize != len(body):
        raise protocol_error(
            f"The header declares {bufsize} bytes of chunks but {len(body) - HEADER_DEF_SIZE} "
            "follow its fixed part."
        )
    chunks = []
    offset = HEADER_DEF_SIZE
    while offset < len(body):
        ctype, size = unpack_fields("II", order, body, offset, "header chunk definition")
        offset += CHUNK_DEF_SIZE
        if offset + size > len(body):
            raise protocol_error(
                f"Header chunk of type {ctype} declares {size} bytes but only "
                f"{len(body) - offset} remain."
            )
        data = bytes(body[offset : offset + size])
        if order == ">":
            data = _swap_resolutions(ctype, data, nchans)
        chunks.append(HeaderChunk(ctype, data))
        offset += size
    return Header(nchans, float(fsample), data_type, nsamples, nevents, tuple(chunks))
