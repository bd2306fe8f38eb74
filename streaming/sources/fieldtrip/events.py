"""FieldTrip buffer events: typed type and value fields, packed one after the other."""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from neurocast.streaming.sources.fieldtrip.protocol import (
    AUTO_SAMPLE,
    EVENT_DEF_SIZE,
    I32_MAX,
    I32_MIN,
    NATIVE_ORDER,
    ByteOrder,
    DataType,
    check_order,
    data_type_of,
    encode_text,
    protocol_error,
    unpack_fields,
)

EventField = str | NDArray[Any]


def _event_field(x: Any, what: str) -> EventField:
    if isinstance(x, str):
        return x
    if isinstance(x, bytes):
        return x.decode("utf-8", "surrogateescape")
    if isinstance(x, bool | np.bool_):
        raise ValueError(f"Event {what} {x!r} is a bool; give an int or a string instead.")
    if isinstance(x, int):  # FieldTrip's own clients send Python ints as int32
        arr = np.asarray([x], dtype=np.int32 if I32_MIN <= x <= I32_MAX else np.int64)
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
            if not I32_MIN <= v <= I32_MAX:
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
        raw = encode_text(x, "Event text")
        return DataType.CHAR, len(raw), raw
    dtype = DataType.from_dtype(x.dtype)
    return dtype, x.shape[0], np.ascontiguousarray(x, dtype=dtype.dtype(order)).tobytes()


def pack_events(events: Iterable[Event], order: ByteOrder = NATIVE_ORDER) -> bytes:
    """The payload of PUT_EVT or of a GET_EVT reply: the events one after the other."""
    order = check_order(order)
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
    order = check_order(order)
    events: list[Event] = []
    offset = 0
    while offset < len(body):
        k = len(events)
        tt, tn, vt, vn, sample, ev_offset, duration, bufsize = unpack_fields(
            "IIIIiiiI", order, body, offset, f"event {k}"
        )
        offset += EVENT_DEF_SIZE
        ttype = data_type_of(tt, f"the type of event {k}")
        vtype = data_type_of(vt, f"the value of event {k}")
        st, sv = tn * ttype.wordsize, vn * vtype.wordsize
        if offset + bufsize > len(body) or st + sv > bufsize:
            raise protocol_error(
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
