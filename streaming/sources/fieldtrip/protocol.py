"""The FieldTrip realtime buffer protocol (version 1): framing and payloads, without any I/O.

Every request and reply is an 8-byte message definition (``version u16, command u16,
bufsize u32``) followed by ``bufsize`` bytes, all packed in the sender's byte order. A version
field that reads ``0x0100`` marks a byte-swapped peer: parsers detect it and every function
here takes the byte order (``"<"`` little-endian, ``">"`` big-endian) to read or write.

The payloads (header with its chunks, data blocks, events, WAIT_DAT thresholds and sample or
event selections) are packed by ``pack_*`` and parsed by ``parse_*``. Parsers accept only
well-formed bytes: anything truncated, inconsistent or of an unknown type raises
:class:`FieldTripProtocolError` saying what is wrong, and nothing else.

:class:`Operation` pairs a request with the reply it expects and the parser of that reply, so
the asyncio client, the blocking writer and the source share one definition of each command.
"""

from __future__ import annotations

import math
import struct
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Generic, Literal, NamedTuple, TypeVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

ByteOrder = Literal["<", ">"]
NATIVE_ORDER: ByteOrder = "<" if sys.byteorder == "little" else ">"

DEFAULT_PORT = 1972
VERSION = 1
MESSAGE_DEF_SIZE = 8
HEADER_DEF_SIZE = 24
DATA_DEF_SIZE = 16
EVENT_DEF_SIZE = 32
CHUNK_DEF_SIZE = 8
#: ``endsample`` (or ``endevent``) meaning "up to the newest one" in a selection.
UNTIL_NEWEST = 0xFFFFFFFF
#: ``sample`` of an event asking the server to fill in its current sample count.
AUTO_SAMPLE = -1
_U32_MAX = 0xFFFFFFFF
_I32_MIN, _I32_MAX = -(2**31), 2**31 - 1
_F32_MAX = float(np.finfo(np.float32).max)


class Command(IntEnum):
    """Request and reply codes of the message definition."""

    PUT_HDR = 0x0101
    PUT_DAT = 0x0102
    PUT_EVT = 0x0103
    PUT_OK = 0x0104
    PUT_ERR = 0x0105
    GET_HDR = 0x0201
    GET_DAT = 0x0202
    GET_EVT = 0x0203
    GET_OK = 0x0204
    GET_ERR = 0x0205
    FLUSH_HDR = 0x0301
    FLUSH_DAT = 0x0302
    FLUSH_EVT = 0x0303
    FLUSH_OK = 0x0304
    FLUSH_ERR = 0x0305
    WAIT_DAT = 0x0402
    WAIT_OK = 0x0404
    WAIT_ERR = 0x0405
    PUT_HDR_NORESPONSE = 0x0501
    PUT_DAT_NORESPONSE = 0x0502
    PUT_EVT_NORESPONSE = 0x0503


#: The request each ``*_NORESPONSE`` variant stands for.
NORESPONSE = {
    Command.PUT_HDR_NORESPONSE: Command.PUT_HDR,
    Command.PUT_DAT_NORESPONSE: Command.PUT_DAT,
    Command.PUT_EVT_NORESPONSE: Command.PUT_EVT,
}

#: (success, error) reply codes of each request.
REPLIES: dict[Command, tuple[Command, Command]] = {
    Command.PUT_HDR: (Command.PUT_OK, Command.PUT_ERR),
    Command.PUT_DAT: (Command.PUT_OK, Command.PUT_ERR),
    Command.PUT_EVT: (Command.PUT_OK, Command.PUT_ERR),
    Command.GET_HDR: (Command.GET_OK, Command.GET_ERR),
    Command.GET_DAT: (Command.GET_OK, Command.GET_ERR),
    Command.GET_EVT: (Command.GET_OK, Command.GET_ERR),
    Command.FLUSH_HDR: (Command.FLUSH_OK, Command.FLUSH_ERR),
    Command.FLUSH_DAT: (Command.FLUSH_OK, Command.FLUSH_ERR),
    Command.FLUSH_EVT: (Command.FLUSH_OK, Command.FLUSH_ERR),
    Command.WAIT_DAT: (Command.WAIT_OK, Command.WAIT_ERR),
}

_NUMPY_CODES = {0: "S1", 1: "u1", 2: "u2", 3: "u4", 4: "u8", 5: "i1", 6: "i2", 7: "i4", 8: "i8"}
_NUMPY_CODES.update({9: "f4", 10: "f8"})


class DataType(IntEnum):
    """Sample and event element types of the protocol."""

    CHAR = 0
    UINT8 = 1
    UINT16 = 2
    UINT32 = 3
    UINT64 = 4
    INT8 = 5
    INT16 = 6
    INT32 = 7
    INT64 = 8
    FLOAT32 = 9
    FLOAT64 = 10

    def dtype(self, order: ByteOrder = NATIVE_ORDER) -> np.dtype[Any]:
        """The numpy dtype of this type in byte order ``order`` (``CHAR`` is ``"S1"``)."""
        return np.dtype(_NUMPY_CODES[int(self)]).newbyteorder(order)

    @property
    def wordsize(self) -> int:
        """Bytes per element."""
        return np.dtype(_NUMPY_CODES[int(self)]).itemsize

    @classmethod
    def from_dtype(cls, dtype: Any) -> DataType:
        """The protocol type of a numpy dtype.

        Raises
        ------
        ValueError
            If the protocol has no such type (bool, complex, strings longer than one byte...).
        """
        dt = np.dtype(dtype)
        for code, name in _NUMPY_CODES.items():
            if np.dtype(name).kind == dt.kind and np.dtype(name).itemsize == dt.itemsize:
                return cls(code)
        raise ValueError(
            f"The FieldTrip buffer has no data type for numpy dtype {dt}; convert the samples "
            "to one of int8/16/32/64, uint8/16/32/64, float32, float64 or S1 (char) first."
        )


class ChunkType(IntEnum):
    """Types of the chunks that follow the fixed part of a header."""

    UNSPECIFIED = 0
    CHANNEL_NAMES = 1
    CHANNEL_FLAGS = 2
    RESOLUTIONS = 3
    ASCII_KEYVAL = 4
    NIFTI1 = 5
    SIEMENS_AP = 6
    CTF_RES4 = 7
    NEUROMAG_HEADER = 8
    NEUROMAG_ISOTRAK = 9
    NEUROMAG_HPIRESULT = 10


class FieldTripError(RuntimeError):
    """Anything that went wrong talking to a FieldTrip buffer."""


class FieldTripProtocolError(FieldTripError, ValueError):
    """Bytes that are not a well-formed message of the protocol (truncated, inconsistent sizes,
    unknown version or type)."""


class FieldTripRequestError(FieldTripError):
    """The server answered a request with its error reply (``PUT_ERR``, ``GET_ERR``, ...).

    Attributes
    ----------
    request : Command
        The request that was refused.
    reply : int
        The reply code received.
    """

    def __init__(self, message: str, request: Command, reply: int) -> None:
        super().__init__(message)
        self.request = request
        self.reply = reply


class FieldTripConnectionError(FieldTripError, ConnectionError):
    """The server cannot be reached, closed the connection or did not answer in time."""


def _fail(message: str) -> FieldTripProtocolError:
    return FieldTripProtocolError(message)


def _unpack(fmt: str, order: ByteOrder, raw: bytes | memoryview, offset: int, what: str) -> Any:
    size = struct.calcsize(fmt)
    if offset + size > len(raw):
        raise _fail(
            f"Truncated {what}: it needs {size} bytes at offset {offset} but only "
            f"{max(len(raw) - offset, 0)} are there."
        )
    return struct.unpack_from(order + fmt, raw, offset)


def _check_order(order: str) -> ByteOrder:
    if order not in ("<", ">"):
        raise ValueError(
            f'Byte order must be "<" (little-endian) or ">" (big-endian), got {order!r}.'
        )
    return order  # type: ignore[return-value]


def _data_type(code: int, what: str) -> DataType:
    try:
        return DataType(code)
    except ValueError:
        raise _fail(f"Unknown data type {code} in {what}; the protocol defines 0 to 10.") from None


# --------------------------------------------------------------------------- framing


@dataclass(frozen=True)
class MessageDef:
    """The 8-byte definition that starts every message.

    Attributes
    ----------
    command : int
        Request or reply code (see :class:`Command`; unknown codes are kept as they are so a
        server can refuse them).
    bufsize : int
        Number of payload bytes that follow.
    order : str
        Byte order the sender used, ``"<"`` or ``">"``.
    """

    command: int
    bufsize: int
    order: ByteOrder = NATIVE_ORDER

    def pack(self) -> bytes:
        """The 8 bytes of this definition."""
        return struct.pack(self.order + "HHI", VERSION, self.command, self.bufsize)


def pack_message(command: int, body: bytes = b"", order: ByteOrder = NATIVE_ORDER) -> bytes:
    """A complete message: definition then ``body``."""
    return MessageDef(int(command), len(body), _check_order(order)).pack() + body


def parse_message_def(raw: bytes | memoryview) -> MessageDef:
    """Parse the first 8 bytes of a message and detect the sender's byte order.

    Raises
    ------
    FieldTripProtocolError
        If fewer than 8 bytes are given or the version field is neither 1 nor 1 byte-swapped.
    """
    if len(raw) < MESSAGE_DEF_SIZE:
        raise _fail(f"Truncated message definition: {len(raw)} of {MESSAGE_DEF_SIZE} bytes.")
    orders: tuple[ByteOrder, ...] = ("<", ">")
    for order in orders:
        version, command, bufsize = struct.unpack_from(order + "HHI", raw, 0)
        if version == VERSION:
            return MessageDef(command, bufsize, order)
    raise _fail(
        f"Not a FieldTrip buffer message: version field is 0x{bytes(raw[:2]).hex()} (expected "
        "0x0100 or 0x0001). The peer does not speak the FieldTrip buffer protocol version 1."
    )


def split_message(raw: bytes | memoryview) -> tuple[MessageDef, bytes]:
    """Parse one complete message held in ``raw`` into its definition and body.

    Raises
    ------
    FieldTripProtocolError
        If the message is truncated, or bytes follow the declared body.
    """
    mdef = parse_message_def(raw)
    have = len(raw) - MESSAGE_DEF_SIZE
    if have != mdef.bufsize:
        state = "truncated" if have < mdef.bufsize else "followed by extra bytes"
        raise _fail(
            f"Message {state}: the definition declares {mdef.bufsize} payload bytes but "
            f"{have} are there."
        )
    return mdef, bytes(raw[MESSAGE_DEF_SIZE:])


# --------------------------------------------------------------------------- header


def _encode_text(text: str, what: str) -> bytes:
    # surrogateescape gives back the exact bytes of text that was decoded from non-UTF-8
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{what} {text!r} cannot be encoded as UTF-8: {exc.reason}.") from None


def pack_channel_names(names: Sequence[str]) -> bytes:
    """The data of a channel-names chunk: each name UTF-8 encoded and 0-terminated."""
    out = bytearray()
    for name in names:
        raw = _encode_text(name, "Channel name")
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
        raise _fail(
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
        if not 1 <= self.nchans <= _U32_MAX:
            raise _fail(f"A header needs at least one channel, got nchans={self.nchans}.")
        if not (math.isfinite(self.fsample) and 0 < self.fsample <= _F32_MAX):
            raise _fail(f"The sampling rate must be positive and finite, got {self.fsample} Hz.")
        object.__setattr__(self, "data_type", _data_type(int(self.data_type), "the header"))
        for count in (self.nsamples, self.nevents):
            if not 0 <= count <= _U32_MAX:
                raise _fail(f"Sample and event counts must fit in uint32, got {count}.")
        for chunk in self.chunks:
            if not 0 <= chunk.type <= _U32_MAX:
                raise _fail(f"Chunk type {chunk.type} does not fit in uint32.")
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
    order = _check_order(order)
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
    order = _check_order(order)
    nchans, nsamples, nevents, fsample, data_type, bufsize = _unpack(
        "IIIfII", order, body, 0, "header"
    )
    if HEADER_DEF_SIZE + bufsize != len(body):
        raise _fail(
            f"The header declares {bufsize} bytes of chunks but {len(body) - HEADER_DEF_SIZE} "
            "follow its fixed part."
        )
    chunks = []
    offset = HEADER_DEF_SIZE
    while offset < len(body):
        ctype, size = _unpack("II", order, body, offset, "header chunk definition")
        offset += CHUNK_DEF_SIZE
        if offset + size > len(body):
            raise _fail(
                f"Header chunk of type {ctype} declares {size} bytes but only "
                f"{len(body) - offset} remain."
            )
        data = bytes(body[offset : offset + size])
        if order == ">":
            data = _swap_resolutions(ctype, data, nchans)
        chunks.append(HeaderChunk(ctype, data))
        offset += size
    return Header(nchans, float(fsample), data_type, nsamples, nevents, tuple(chunks))


# --------------------------------------------------------------------------- data


def pack_data(samples: ArrayLike, order: ByteOrder = NATIVE_ORDER) -> bytes:
    """The payload of PUT_DAT or of a GET_DAT reply.

    Parameters
    ----------
    samples : array, shape (n_samples, n_channels)
        Samples in sample-major order; their dtype sets the data type.
    """
    order = _check_order(order)
    arr = np.asarray(samples)
    if arr.ndim != 2:
        raise ValueError(
            f"Samples must be a 2-D array (samples x channels), got shape {arr.shape}."
        )
    dtype = DataType.from_dtype(arr.dtype)
    raw = np.ascontiguousarray(arr, dtype=dtype.dtype(order)).tobytes()
    return struct.pack(order + "IIII", arr.shape[1], arr.shape[0], int(dtype), len(raw)) + raw


def parse_data(body: bytes | memoryview, order: ByteOrder = NATIVE_ORDER) -> NDArray[Any]:
    """Parse a PUT_DAT payload or a GET_DAT reply.

    Returns
    -------
    samples : ndarray, shape (n_samples, n_channels)
        A native-order copy, of the dtype matching the data type (``"S1"`` for char).

    Raises
    ------
    FieldTripProtocolError
        If the block is truncated, its sizes disagree or its data type is unknown.
    """
    order = _check_order(order)
    nchans, nsamples, code, bufsize = _unpack("IIII", order, body, 0, "data block")
    dtype = _data_type(code, "the data block")
    need = nchans * nsamples * dtype.wordsize
    # as the reference server does, a block may carry padding after its samples
    if need > bufsize or DATA_DEF_SIZE + bufsize > len(body):
        raise _fail(
            f"Data block of {nsamples} samples x {nchans} channels of {dtype.name} needs "
            f"{need} bytes; it declares {bufsize} and {len(body) - DATA_DEF_SIZE} follow."
        )
    if nchans == 0 and nsamples:
        raise _fail(f"Data block of {nsamples} samples has no channels.")
    arr = np.frombuffer(body, dtype.dtype(order), nchans * nsamples, DATA_DEF_SIZE)
    return arr.reshape(nsamples, nchans).astype(dtype.dtype(), copy=True)


# --------------------------------------------------------------------------- events

EventField = str | NDArray[Any]


def _event_field(x: Any, what: str) -> EventField:
    if isinstance(x, str):
        return x
    if isinstance(x, bytes):
        return x.decode("utf-8", "surrogateescape")
    if isinstance(x, bool | np.bool_):
        raise ValueError(f"Event {what} {x!r} is a bool; give an int or a string instead.")
    if isinstance(x, int):  # FieldTrip's own clients send Python ints as int32
        arr = np.asarray([x], dtype=np.int32 if _I32_MIN <= x <= _I32_MAX else np.int64)
    elif isinstance(x, float):
        arr = np.asarray([x], dtype=np.float64)
    else:
        arr = np.atleast_1d(np.asarray(x))
    if arr.ndim != 1:
        raise ValueError(f"Event {what} must be a string or a 1-D array, got shape {arr.shape}.")
    DataType.from_dtype(arr.dtype)
    return arr.astype(arr.dtype.newbyteorder("="), copy=False)


def _field_text(x: EventField) -> str:
    if isinstance(x, str):
        return x
    return ",".join(str(v) for v in x.tolist())


def _field_equal(a: EventField, b: EventField) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    return a.dtype == b.dtype and np.array_equal(a, b)


@dataclass(frozen=True, eq=False)
class Event:
    """A buffer event.

    Attributes
    ----------
    type, value : str | ndarray
        Strings travel as char arrays; numbers as 1-D arrays of their dtype (a Python ``int``
        becomes int32 and a ``float`` float64, as FieldTrip's own clients send them).
    sample : int
        0-based sample index the event belongs to; ``-1`` on PUT_EVT asks the server to use
        its current sample count.
    offset, duration : int
        In samples, as in FieldTrip.
    """

    type: EventField
    value: EventField
    sample: int = AUTO_SAMPLE
    offset: int = 0
    duration: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "type", _event_field(self.type, "type"))
        object.__setattr__(self, "value", _event_field(self.value, "value"))
        for name in ("sample", "offset", "duration"):
            v = int(getattr(self, name))
            if not _I32_MIN <= v <= _I32_MAX:
                raise ValueError(f"Event {name}={v} does not fit in int32.")
            object.__setattr__(self, name, v)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        return (
            _field_equal(self.type, other.type)
            and _field_equal(self.value, other.value)
            and (self.sample, self.offset, self.duration)
            == (other.sample, other.offset, other.duration)
        )

    __hash__ = None  # type: ignore[assignment]

    @property
    def label(self) -> str:
        """``"type/value"`` as text (just the value when the type is empty)."""
        t, v = _field_text(self.type), _field_text(self.value)
        return f"{t}/{v}" if t else v


def _pack_field(x: EventField, order: ByteOrder) -> tuple[int, int, bytes]:
    if isinstance(x, str):
        raw = _encode_text(x, "Event text")
        return DataType.CHAR, len(raw), raw
    dtype = DataType.from_dtype(x.dtype)
    return dtype, x.shape[0], np.ascontiguousarray(x, dtype=dtype.dtype(order)).tobytes()


def pack_events(events: Iterable[Event], order: ByteOrder = NATIVE_ORDER) -> bytes:
    """The payload of PUT_EVT or of a GET_EVT reply: the events one after the other."""
    order = _check_order(order)
    out = bytearray()
    for ev in events:
        tt, tn, traw = _pack_field(ev.type, order)
        vt, vn, vraw = _pack_field(ev.value, order)
        out += struct.pack(
            order + "IIIIiiiI", tt, tn, vt, vn, ev.sample, ev.offset, ev.duration, len(traw + vraw)
        )
        out += traw + vraw
    return bytes(out)


def _parse_field(raw: bytes, code: int, order: ByteOrder) -> EventField:
    dtype = DataType(code)
    if dtype == DataType.CHAR:
        return raw.decode("utf-8", "surrogateescape")
    return np.frombuffer(raw, dtype.dtype(order)).astype(dtype.dtype())


def parse_events(body: bytes | memoryview, order: ByteOrder = NATIVE_ORDER) -> list[Event]:
    """Parse a PUT_EVT payload or a GET_EVT reply (any number of events).

    Raises
    ------
    FieldTripProtocolError
        If an event is truncated, its type or value does not fit its declared size, an
        element type is unknown, or bytes are left over after the last event.
    """
    order = _check_order(order)
    events: list[Event] = []
    offset = 0
    while offset < len(body):
        k = len(events)
        tt, tn, vt, vn, sample, ev_offset, duration, bufsize = _unpack(
            "IIIIiiiI", order, body, offset, f"event {k}"
        )
        offset += EVENT_DEF_SIZE
        ttype = _data_type(tt, f"the type of event {k}")
        vtype = _data_type(vt, f"the value of event {k}")
        st, sv = tn * ttype.wordsize, vn * vtype.wordsize
        if offset + bufsize > len(body) or st + sv > bufsize:
            raise _fail(
                f"Event {k} declares {bufsize} bytes for a type of {st} and a value of {sv} "
                f"bytes, but {len(body) - offset} bytes remain."
            )
        raw = bytes(body[offset : offset + st + sv])
        events.append(
            Event(
                _parse_field(raw[:st], tt, order),
                _parse_field(raw[st:], vt, order),
                sample,
                ev_offset,
                duration,
            )
        )
        offset += bufsize
    return events


# --------------------------------------------------------------------------- small bodies


class Counts(NamedTuple):
    """Samples and events written so far (the reply to WAIT_DAT)."""

    nsamples: int
    nevents: int


def _u32(x: int, what: str) -> int:
    if not 0 <= x <= _U32_MAX:
        raise ValueError(f"{what}={x} does not fit in uint32 (0 to {_U32_MAX}).")
    return int(x)


def pack_counts(counts: Counts, order: ByteOrder = NATIVE_ORDER) -> bytes:
    """The payload of a WAIT_DAT reply."""
    return struct.pack(
        _check_order(order) + "II",
        _u32(counts.nsamples, "nsamples"),
        _u32(counts.nevents, "nevents"),
    )


def parse_counts(body: bytes | memoryview, order: ByteOrder = NATIVE_ORDER) -> Counts:
    """Parse a WAIT_DAT reply (8 bytes)."""
    if len(body) != 8:
        raise _fail(f"A WAIT_DAT reply holds 8 bytes, got {len(body)}.")
    return Counts(*_unpack("II", _check_order(order), body, 0, "WAIT_DAT reply"))


def pack_wait_request(
    nsamples: int, nevents: int, timeout_ms: int, order: ByteOrder = NATIVE_ORDER
) -> bytes:
    """The payload of WAIT_DAT: answer when more than ``nsamples`` samples or more than
    ``nevents`` events exist, or after ``timeout_ms`` milliseconds."""
    return struct.pack(
        _check_order(order) + "III",
        _u32(nsamples, "nsamples"),
        _u32(nevents, "nevents"),
        _u32(timeout_ms, "timeout_ms"),
    )


def parse_wait_request(
    body: bytes | memoryview, order: ByteOrder = NATIVE_ORDER
) -> tuple[Counts, int]:
    """Parse a WAIT_DAT request: the thresholds and the timeout in milliseconds."""
    if len(body) != 12:
        raise _fail(f"A WAIT_DAT request holds 12 bytes, got {len(body)}.")
    ns, ne, ms = _unpack("III", _check_order(order), body, 0, "WAIT_DAT request")
    return Counts(ns, ne), ms


def pack_selection(first: int, last: int, order: ByteOrder = NATIVE_ORDER) -> bytes:
    """The payload of GET_DAT or GET_EVT: ``first`` to ``last`` inclusive, 0-based
    (``last=UNTIL_NEWEST`` means up to the newest)."""
    return struct.pack(_check_order(order) + "II", _u32(first, "first"), _u32(last, "last"))


def parse_selection(
    body: bytes | memoryview, order: ByteOrder = NATIVE_ORDER
) -> tuple[int, int] | None:
    """Parse a GET_DAT or GET_EVT request: ``(first, last)`` inclusive, or None (all held)."""
    if len(body) == 0:
        return None
    if len(body) != 8:
        raise _fail(f"A selection holds 0 or 8 bytes, got {len(body)}.")
    first, last = _unpack("II", _check_order(order), body, 0, "selection")
    return int(first), int(last)


# --------------------------------------------------------------------------- operations

T = TypeVar("T")


def _no_payload(body: bytes, order: ByteOrder) -> None:
    return None


@dataclass(frozen=True)
class Operation(Generic[T]):
    """One request, the reply it expects and how to read that reply.

    Attributes
    ----------
    command : Command
        The request code.
    body : bytes
        The request payload, native byte order.
    parse : callable
        ``parse(reply_body, reply_order)`` gives the result.
    idempotent : bool
        Repeating it on a new connection cannot change the buffer (safe to retry after a
        dropped connection).
    wait_s : float
        How long the server may legitimately take before answering (WAIT_DAT's timeout).
    refused : str
        What an error reply most likely means, for the error message.
    """

    command: Command
    body: bytes
    parse: Callable[[bytes, ByteOrder], T]
    idempotent: bool
    refused: str
    wait_s: float = 0.0

    @property
    def expects_reply(self) -> bool:
        """False for the ``*_NORESPONSE`` variants."""
        return self.command not in NORESPONSE

    def request(self) -> bytes:
        """The complete request message."""
        return pack_message(self.command, self.body)

    def result(self, reply: MessageDef, body: bytes) -> T:
        """Check the reply code and parse the reply.

        Raises
        ------
        FieldTripRequestError
            If the server answered with its error reply.
        FieldTripProtocolError
            If the reply is not the one this request expects, or is malformed.
        """
        ok, err = REPLIES[NORESPONSE.get(self.command, self.command)]
        if reply.command == err:
            raise FieldTripRequestError(
                f"The FieldTrip buffer refused {self.command.name}: {self.refused}",
                self.command,
                reply.command,
            )
        if reply.command != ok:
            raise _fail(
                f"Expected {ok.name} or {err.name} in reply to {self.command.name}, got "
                f"command 0x{reply.command:04x}."
            )
        return self.parse(body, reply.order)


def _selection(first: int | None, last: int | None) -> bytes:
    if first is None and last is None:
        return b""
    return pack_selection(first or 0, UNTIL_NEWEST if last is None else last)


def op_put_header(header: Header, *, noresponse: bool = False) -> Operation[None]:
    """PUT_HDR: replace the header; the server drops all samples and events."""
    cmd = Command.PUT_HDR_NORESPONSE if noresponse else Command.PUT_HDR
    return Operation(cmd, pack_header(header), _no_payload, False, "the header was not stored.")


def op_put_data(samples: ArrayLike, *, noresponse: bool = False) -> Operation[None]:
    """PUT_DAT: append samples (samples x channels)."""
    cmd = Command.PUT_DAT_NORESPONSE if noresponse else Command.PUT_DAT
    return Operation(
        cmd,
        pack_data(samples),
        _no_payload,
        False,
        "no header exists yet, or the samples' channel count or data type differs from the "
        "header's, or the block is larger than the server's ring. Put a matching header first.",
    )


def op_put_events(events: Iterable[Event], *, noresponse: bool = False) -> Operation[None]:
    """PUT_EVT: append events."""
    cmd = Command.PUT_EVT_NORESPONSE if noresponse else Command.PUT_EVT
    return Operation(
        cmd,
        pack_events(events),
        _no_payload,
        False,
        "no header exists yet, or an event is malformed.",
    )


def op_get_header() -> Operation[Header]:
    """GET_HDR: the header with the current sample and event counts."""
    return Operation(
        Command.GET_HDR,
        b"",
        parse_header,
        True,
        "no header has been written yet (a writer must put one first).",
    )


def _op_get_range(
    command: Command,
    parse: Callable[[bytes, ByteOrder], T],
    what: str,
    first: int | None,
    last: int | None,
) -> Operation[T]:
    """GET_DAT or GET_EVT of ``what`` (samples or events) ``first`` to ``last`` inclusive."""
    span = f"all held {what}" if first is None and last is None else f"{what} {first}..{last}"
    return Operation(
        command,
        _selection(first, last),
        parse,
        True,
        f"{span} are not available: not written yet, dropped from the server's ring, or no "
        "header exists.",
    )


def op_get_data(first: int | None = None, last: int | None = None) -> Operation[NDArray[Any]]:
    """GET_DAT: samples ``first`` to ``last`` inclusive (all held samples when both are None)."""
    return _op_get_range(Command.GET_DAT, parse_data, "samples", first, last)


def op_get_events(first: int | None = None, last: int | None = None) -> Operation[list[Event]]:
    """GET_EVT: events ``first`` to ``last`` inclusive (all held events when both are None)."""
    return _op_get_range(Command.GET_EVT, parse_events, "events", first, last)


def op_flush(what: Literal["header", "data", "events"]) -> Operation[None]:
    """FLUSH_HDR (header, samples and events), FLUSH_DAT or FLUSH_EVT."""
    cmd = {"header": Command.FLUSH_HDR, "data": Command.FLUSH_DAT, "events": Command.FLUSH_EVT}
    return Operation(cmd[what], b"", _no_payload, False, "there is no header to flush.")


def op_wait_data(nsamples: int, nevents: int, timeout_ms: int) -> Operation[Counts]:
    """WAIT_DAT: block until more than ``nsamples`` samples or ``nevents`` events exist, or
    ``timeout_ms`` milliseconds pass; returns the current counts."""
    return Operation(
        Command.WAIT_DAT,
        pack_wait_request(nsamples, nevents, timeout_ms),
        parse_counts,
        True,
        "no header has been written yet.",
        wait_s=timeout_ms / 1000.0,
    )
