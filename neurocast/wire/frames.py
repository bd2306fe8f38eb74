"""Binary WebSocket frames for signal payloads (translated MEG and other channels × time data).

A frame is a fixed 56-byte little-endian header, a UTF-8 JSON block of metadata, zero padding to
a multiple of 8 bytes, then the samples as float32, channels × samples, row-major:

====== ====== =========== ===============================================================
offset bytes  type        field
====== ====== =========== ===============================================================
0      4      char[4]     magic ``b"NCF1"``
4      1      uint8       format version (1)
5      1      uint8       sample type: 1 = float32
6      2      uint16      flags: bit 0 simulated, bit 1 valid
8      4      uint32      ``n_channels``
12     4      uint32      ``n_samples``
16     8      int64       ``window_end`` (exclusive sample index, stream rate)
24     8      float64     ``t_window_end`` (source clock, seconds)
32     8      float64     ``sfreq_hz`` of the signal
40     8      float64     ``ready_time`` (server monotonic clock, seconds)
48     4      uint32      ``meta_len``: bytes of JSON metadata at offset 56
52     4      uint32      ``data_offset``: where the samples start (multiple of 8)
====== ====== =========== ===============================================================

The JSON metadata holds ``type`` (``"signal"``), ``session_id``, ``kind``, ``model``,
``ch_names``, ``ch_types``, ``latency`` (milliseconds per stage), ``issues``, ``skipped`` and
``markers``. In numpy: ``np.frombuffer(buf, "<f4", n_channels * n_samples, data_offset)``.
"""

from __future__ import annotations

import json
import struct
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from neurocast.streaming.engine.results import Result
from neurocast.wire.records import marker_records

MAGIC = b"NCF1"
VERSION = 1
DTYPE_FLOAT32 = 1
FLAG_SIMULATED = 1
FLAG_VALID = 2
_HEADER = struct.Struct("<4sBBHIIqdddII")
HEADER_SIZE = _HEADER.size  # 56


class FrameError(ValueError):
    """Bytes that are not a valid frame; the message says which part is wrong."""


@dataclass(frozen=True)
class SignalFrame:
    """A decoded binary frame.

    Attributes
    ----------
    window_end : int
        Exclusive sample index of the window end, at the stream's rate.
    t_window_end : float
        Source-clock time of the window's last sample, in seconds.
    sfreq_hz : float
        Sampling rate of ``data`` in Hz.
    ready_time : float
        Server monotonic clock when the result was ready, in seconds.
    simulated, valid : bool
        Whether the stream is simulated and the window free of issues.
    meta : dict
        The JSON metadata (model, kind, channel names and types, latency, ...).
    data : ndarray, shape (n_channels, n_samples), float32
        The signal, in the unit of the channel types (tesla for magnetometers, T/m for
        gradiometers, volts for EEG).
    """

    window_end: int
    t_window_end: float
    sfreq_hz: float
    ready_time: float
    simulated: bool
    valid: bool
    meta: dict[str, Any]
    data: NDArray[np.float32]


def encode_signal_frame(result: Result, session_id: str) -> bytes:
    """Encode a result whose payload carries a ``signal`` array as one binary frame.

    Parameters
    ----------
    result : Result
        A translation (or other signal) result; its payload needs ``signal``
        (channels × samples) and ``sfreq_hz``, and may carry ``ch_names`` and ``ch_types``.
    session_id : str
        The session the result belongs to.

    Returns
    -------
    frame : bytes
        Header, metadata and samples (see the module docstring for the layout).
    """
    payload = result.payload
    signal = np.ascontiguousarray(payload["signal"], dtype="<f4")
    if signal.ndim != 2:
        raise ValueError(f"A signal payload must be channels × samples, got shape {signal.shape}.")
    meta = {
        "type": "signal",
        "session_id": session_id,
        "kind": result.kind,
        "model": result.model,
        "ch_names": list(payload.get("ch_names", [])),
        "ch_types": list(payload.get("ch_types", [])),
        "latency": asdict(result.latency),
        "issues": list(result.issues),
        "skipped": result.skipped,
        "markers": marker_records(result.markers),
    }
    meta_bytes = json.dumps(meta, separators=(",", ":")).encode()
    data_offset = -(-(HEADER_SIZE + len(meta_bytes)) // 8) * 8
    flags = (FLAG_SIMULATED if result.simulated else 0) | (FLAG_VALID if result.valid else 0)
    header = _HEADER.pack(
        MAGIC,
        VERSION,
        DTYPE_FLOAT32,
        flags,
        signal.shape[0],
        signal.shape[1],
        result.window_end,
        result.t_window_end,
        float(payload.get("sfreq_hz", 0.0)),
        result.ready_time,
        len(meta_bytes),
        data_offset,
    )
    pad = b"\0" * (data_offset - HEADER_SIZE - len(meta_bytes))
    return b"".join((header, meta_bytes, pad, signal.tobytes()))


def decode_signal_frame(buf: bytes | bytearray | memoryview) -> SignalFrame:
    """Decode a frame made by :func:`encode_signal_frame`.

    Parameters
    ----------
    buf : bytes-like
        One binary WebSocket message.

    Returns
    -------
    frame : SignalFrame
        The header fields, metadata and a read-only float32 view of the samples.

    Raises
    ------
    FrameError
        If the bytes are truncated, have the wrong magic or version, or sizes that disagree.
    """
    buf = memoryview(buf).cast("B")
    if len(buf) < HEADER_SIZE:
        raise FrameError(f"A frame needs at least {HEADER_SIZE} header bytes, got {len(buf)}.")
    (magic, version, dtype, flags, n_ch, n_s, end, t_end, sfreq, ready, meta_len, offset) = (
        _HEADER.unpack_from(buf)
    )
    if magic != MAGIC:
        raise FrameError(f"Not a neurocast frame: magic is {bytes(magic)!r}, expected {MAGIC!r}.")
    if version != VERSION or dtype != DTYPE_FLOAT32:
        raise FrameError(
            f"Unsupported frame version {version} / sample type {dtype}; this client reads "
            f"version {VERSION} with float32 samples: upgrade the client."
        )
    if offset < HEADER_SIZE + meta_len or offset % 8:
        raise FrameError(f"Inconsistent frame: data_offset {offset} with {meta_len} meta bytes.")
    expected = offset + 4 * n_ch * n_s
    if len(buf) != expected:
        raise FrameError(
            f"Truncated or oversized frame: {len(buf)} bytes, header says {expected} "
            f"({n_ch} channels × {n_s} samples)."
        )
    try:
        meta = json.loads(bytes(buf[HEADER_SIZE : HEADER_SIZE + meta_len]))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FrameError(f"Frame metadata is not valid JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise FrameError("Frame metadata must be a JSON object.")
    data = np.frombuffer(buf, dtype="<f4", count=n_ch * n_s, offset=offset).reshape(n_ch, n_s)
    return SignalFrame(
        window_end=int(end),
        t_window_end=float(t_end),
        sfreq_hz=float(sfreq),
        ready_time=float(ready),
        simulated=bool(flags & FLAG_SIMULATED),
        valid=bool(flags & FLAG_VALID),
        meta=meta,
        data=data,
    )
