"""The FieldTrip realtime buffer protocol (version 1): framing, data blocks and small bodies.

Every request and reply is an 8-byte message definition (``version u16, command u16,
bufsize u32``) followed by ``bufsize`` bytes, all packed in the sender's byte order. A version
field that reads ``0x0100`` marks a byte-swapped peer: parsers detect it and every function
here takes the byte order (``"<"`` little-endian, ``">"`` big-endian) to read or write.

This module holds the codes, the errors, the message framing, data blocks and the WAIT_DAT
and selection bodies; headers are in :mod:`.header`, events in :mod:`.events` and the
request/reply pairs in :mod:`.operations`. Payloads are packed by ``pack_*`` and parsed by
``parse_*``, without any I/O. Parsers accept only well-formed bytes: anything truncated,
inconsistent or of an unknown type raises :class:`FieldTripProtocolError` saying what is
wrong, and nothing else.
"""

from __future__ import annotations

import struct
import sys
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Literal, NamedTuple

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
U32_MAX = 0xFFFFFFFF
I32_MIN, I32_MAX = -(2**31), 2**31 - 1
F32_MAX = float(np.finfo(np.float32).max)


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


def protocol_error(message: str) -> FieldTripProtocolError:
    """The error to raise for malformed bytes, with ``message`` saying what is wrong."""
    return FieldTripProtocolError(message)


def unpack_fields(
    fmt: str, order: ByteOrder, raw: bytes | memoryview, offset: int, what: str
) -> Any:
    """``struct.unpack_from`` that names ``what`` was truncated instead of a bare struct error."""
    size = struct.calcsize(fmt)
    if offset + size > len(raw):
        raise protocol_error(
            f"Truncated {what}: it needs {size} bytes at offset {offset} but only "
            f"{max(len(raw) - offset, 0)} are there."
        )
    return struct.unpack_from(order + fmt, raw, offset)


def check_order(order: str) -> ByteOrder:
    """``order`` itself when it is ``"<"`` or ``">"``; a ValueError otherwise."""
    if order not in ("<", ">"):
        raise ValueError(
            f'Byte order must be "<" (little-endian) or ">" (big-endian), got {order!r}.'
        )
    return order  # type: ignore[return-value]


def data_type_of(code: int, what: str) -> DataType:
    """The data type of a code read from ``what``, or a protocol error for unknown codes."""
    try:
        return DataType(code)
    except ValueError:
        raise protocol_error(
            f"Unknown data type {code} in {what}; the protocol defines 0 to 10."
        ) from None


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
    return MessageDef(int(command), len(body), check_order(order)).pack() + body


def parse_message_def(raw: bytes | memoryview) -> MessageDef:
    """Parse the first 8 bytes of a message and detect the sender's byte order.

    Raises
    ------
    FieldTripProtocolError
        If fewer than 8 bytes are given or the version field is neither 1 nor 1 byte-swapped.
    """
    if len(raw) < MESSAGE_DEF_SIZE:
        raise protocol_error(
            f"Truncated message definition: {len(raw)} of {MESSAGE_DEF_SIZE} bytes."
        )
    orders: tuple[ByteOrder, ...] = ("<", ">")
    for order in orders:
        version, command, bufsize = struct.unpack_from(order + "HHI", raw, 0)
        if version == VERSION:
            return MessageDef(command, bufsize, order)
    raise protocol_error(
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
        raise protocol_error(
            f"Message {state}: the definition declares {mdef.bufsize} payload bytes but "
            f"{have} are there."
        )
    return mdef, bytes(raw[MESSAGE_DEF_SIZE:])


# --------------------------------------------------------------------------- text


def encode_text(text: str, what: str) -> bytes:
    """UTF-8 bytes of ``text`` (a channel name or event field named by ``what``)."""
    # surrogateescape gives back the exact bytes of text that was decoded from non-UTF-8
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{what} {text!r} cannot be encoded as UTF-8: {exc.reason}.") from None


# --------------------------------------------------------------------------- data


def pack_data(samples: ArrayLike, order: ByteOrder = NATIVE_ORDER) -> bytes:
    """The payload of PUT_DAT or of a GET_DAT reply.

    Parameters
    ----------
    samples : array, shape (n_samples, n_channels)
        Samples in sample-major order; their dtype sets the data type.
    """
    order = check_order(order)
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
    order = check_order(order)
    nchans, nsamples, code, bufsize = unpack_fields("IIII", order, body, 0, "data block")
    dtype = data_type_of(code, "the data block")
    need = nchans * nsamples * dtype.wordsize
    # as the reference server does, a block may carry padding after its samples
    if need > bufsize or DATA_DEF_SIZE + bufsize > len(body):
        raise protocol_error(
            f"Data block of {nsamples} samples x {nchans} channels of {dtype.name} needs "
            f"{need} bytes; it declares {bufsize} and {len(body) - DATA_DEF_SIZE} follow."
        )
    if nchans == 0 and nsamples:
        raise protocol_error(f"Data block of {nsamples} samples has no channels.")
    arr = np.frombuffer(body, dtype.dtype(order), nchans * nsamples, DATA_DEF_SIZE)
    return arr.reshape(nsamples, nchans).astype(dtype.dtype(), copy=True)


# --------------------------------------------------------------------------- small bodies


class Counts(NamedTuple):
    """Samples and events written so far (the reply to WAIT_DAT)."""

    nsamples: int
    nevents: int


def _u32(x: int, what: str) -> int:
    if not 0 <= x <= U32_MAX:
        raise ValueError(f"{what}={x} does not fit in uint32 (0 to {U32_MAX}).")
    return int(x)


def pack_counts(counts: Counts, order: ByteOrder = NATIVE_ORDER) -> bytes:
    """The payload of a WAIT_DAT reply."""
    return struct.pack(
        check_order(order) + "II",
        _u32(counts.nsamples, "nsamples"),
        _u32(counts.nevents, "nevents"),
    )


def parse_counts(body: bytes | memoryview, order: ByteOrder = NATIVE_ORDER) -> Counts:
    """Parse a WAIT_DAT reply (8 bytes)."""
    if len(body) != 8:
        raise protocol_error(f"A WAIT_DAT reply holds 8 bytes, got {len(body)}.")
    return Counts(*unpack_fields("II", check_order(order), body, 0, "WAIT_DAT reply"))


def pack_wait_request(
    nsamples: int, nevents: int, timeout_ms: int, order: ByteOrder = NATIVE_ORDER
) -> bytes:
    """The payload of WAIT_DAT: answer when more than ``nsamples`` samples or more than
    ``nevents`` events exist, or after ``timeout_ms`` milliseconds."""
    return struct.pack(
        check_order(order) + "III",
        _u32(nsamples, "nsamples"),
        _u32(nevents, "nevents"),
        _u32(timeout_ms, "timeout_ms"),
    )


def parse_wait_request(
    body: bytes | memoryview, order: ByteOrder = NATIVE_ORDER
) -> tuple[Counts, int]:
    """Parse a WAIT_DAT request: the thresholds and the timeout in milliseconds."""
    if len(body) != 12:
        raise protocol_error(f"A WAIT_DAT request holds 12 bytes, got {len(body)}.")
    ns, ne, ms = unpack_fields("III", check_order(order), body, 0, "WAIT_DAT request")
    return Counts(ns, ne), ms


def pack_selection(first: int, last: int, order: ByteOrder = NATIVE_ORDER) -> bytes:
    """The payload of GET_DAT or GET_EVT: ``first`` to ``last`` inclusive, 0-based
    (``last=UNTIL_NEWEST`` means up to the newest)."""
    return struct.pack(check_order(order) + "II", _u32(first, "first"), _u32(last, "last"))


def parse_selection(
    body: bytes | memoryview, order: ByteOrder = NATIVE_ORDER
) -> tuple[int, int] | None:
    """Parse a GET_DAT or GET_EVT request: ``(first, last)`` inclusive, or None (all held)."""
    if len(body) == 0:
        return None
    if len(body) != 8:
        raise protocol_error(f"A selection holds 0 or 8 bytes, got {len(body)}.")
    first, last = unpack_fields("II", check_order(order), body, 0, "selection")
    return int(first), int(last)
