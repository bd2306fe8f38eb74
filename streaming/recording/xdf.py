"""A small XDF writer: file header, stream headers, samples, clock offsets, boundaries, footers.

XDF (https://github.com/sccn/xdf/wiki/Specifications) is the file format of Lab Streaming
Layer recordings. A file is the magic ``XDF:`` followed by chunks::

    [NumLengthBytes: 1, 4 or 8][Length: that many bytes, little-endian][Tag: uint16][Content]

where ``Length`` counts the tag and the content. Tags: 1 FileHeader (XML), 2 StreamHeader
(uint32 stream id + XML), 3 Samples (stream id + variable-length sample count + per sample
``[8][float64 timestamp]`` or ``[0]`` and the values; a string value is a variable-length
byte count then UTF-8), 4 ClockOffset (stream id, float64 collection time, float64 offset),
5 Boundary (a fixed 16-byte UUID), 6 StreamFooter (stream id + XML). Numbers are
little-endian.

Durability
----------
Chunks are serialised into memory and reach the file in batches (:meth:`XDFWriter.flush`),
each followed by ``fsync``. A batch is written from its second byte on and its first byte
last: the first byte is the length-size byte of its first chunk, which is never 0, so until
the batch is complete the file holds a 0 byte there and readers see no chunk beyond the
previous batch (pyxdf reads the 0 as an invalid length and scans for the next boundary chunk,
and the writer puts boundary chunks only at the very end of a batch). A process killed
mid-batch (``kill -9``) therefore leaves a file that pyxdf reads up to the previous batch.
When a write fails (disk full, file size limit) the file is cut back to the end of the last
complete batch and the error is raised.

The writer is not thread-safe: one thread owns it (see
:class:`~neurocast.streaming.recording.recorder.SessionRecorder`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import socket
import struct
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

MAGIC = b"XDF:"

TAG_FILE_HEADER = 1
TAG_STREAM_HEADER = 2
TAG_SAMPLES = 3
TAG_CLOCK_OFFSET = 4
TAG_BOUNDARY = 5
TAG_STREAM_FOOTER = 6

#: Content of every Boundary chunk (fixed by the specification).
BOUNDARY_UUID = bytes.fromhex("43A546DCCBF5410FB30ED5467383CBE4")

ChannelFormat = Literal["float32", "double64", "int8", "int16", "int32", "int64", "string"]

#: Little-endian numpy type of each numeric channel format.
NUMERIC_FORMATS: dict[str, np.dtype] = {
    "float32": np.dtype("<f4"),
    "double64": np.dtype("<f8"),
    "int8": np.dtype("<i1"),
    "int16": np.dtype("<i2"),
    "int32": np.dtype("<i4"),
    "int64": np.dtype("<i8"),
}


def varlen(n: int) -> bytes:
    """Encode a non-negative integer as an XDF variable-length integer.

    Parameters
    ----------
    n : int
        The value.

    Returns
    -------
    encoded : bytes
        ``[1][uint8]``, ``[4][uint32]`` or ``[8][uint64]``, whichever is shortest.
    """
    if n < 0:
        raise ValueError(f"XDF lengths are non-negative, got {n}.")
    if n < 1 << 8:
        return bytes((1, n))
    if n < 1 << 32:
        return b"\x04" + struct.pack("<I", n)
    return b"\x08" + struct.pack("<Q", n)


def encode_chunk(tag: int, content: bytes) -> bytes:
    """One XDF chunk: variable-length length (tag + content), the uint16 tag, the content."""
    return varlen(len(content) + 2) + struct.pack("<H", tag) + content


@dataclass(frozen=True)
class ChannelMeta:
    """How one channel is described in a stream header (``desc/channels/channel``).

    Attributes
    ----------
    label : str
        Channel name.
    type : str
        Channel type (MNE names such as ``eeg``, ``mag``, ``grad``, or a free word for model
        outputs such as ``probability``).
    unit : str
        Unit of the stored values (``V``, ``T``, ``T/m``, ``none``, ...).
    location_mm : tuple of float | None
        Sensor position (X, Y, Z) in millimetres, the XDF convention; None when unknown.
    extra : dict
        Further child elements of the channel (text values), e.g. MNE's coil type.
    """

    label: str
    type: str = ""
    unit: str = ""
    location_mm: tuple[float, float, float] | None = None
    extra: Mapping[str, str] = field(default_factory=dict)


@dataclass
class _StreamState:
    """What the footer of a stream needs."""

    name: str
    fmt: str
    n_channels: int
    first_timestamp: float | None = None
    last_timestamp: float | None = None
    sample_count: int = 0
    clock_offsets: list[tuple[float, float]] = field(default_factory=list)


def _num(v: float) -> str:
    # repr gives the shortest text that reads back as the same float64
    return repr(float(v))


def _xml(root: ET.Element) -> bytes:
    return b'<?xml version="1.0"?>' + ET.tostring(root, encoding="utf-8", xml_declaration=False)


def _append_desc(parent: ET.Element, value: object) -> None:
    """Append a nested mapping as XML children (str values become text)."""
    if isinstance(value, Mapping):
        for key, sub in value.items():
            _append_desc(ET.SubElement(parent, str(key)), sub)
    else:
        parent.text = str(value)


def stream_header_xml(
    *,
    name: str,
    type: str,
    channel_count: int,
    nominal_srate: float,
    channel_format: str,
    source_id: str = "",
    created_at: float = 0.0,
    channels: Sequence[ChannelMeta] = (),
    desc: Mapping[str, object] | None = None,
) -> bytes:
    """The XML of a StreamHeader chunk, laid out as LSL's ``StreamInfo.as_xml()``.

    Parameters
    ----------
    name, type : str
        Stream name and content type (``EEG``, ``MEG``, ``Markers``, ...).
    channel_count : int
        Values per sample.
    nominal_srate : float
        Nominal sampling rate in Hz; 0 for irregular streams.
    channel_format : str
        ``float32``, ``double64``, ``int8`` ... ``int64`` or ``string``.
    source_id : str
        The stream's source identifier.
    created_at : float
        Source-clock time in seconds at which the stream was created.
    channels : sequence of ChannelMeta
        Channel descriptions (``desc/channels/channel``), empty for none.
    desc : mapping | None
        Further ``desc`` children (nested mappings become nested elements).

    Returns
    -------
    xml : bytes
        UTF-8 XML with declaration.
    """
    root = ET.Element("info")
    for tag, text in (
        ("name", name),
        ("type", type),
        ("channel_count", str(int(channel_count))),
        ("nominal_srate", _num(nominal_srate)),
        ("channel_format", channel_format),
        ("source_id", source_id),
        ("version", "1.1"),
        ("created_at", _num(created_at)),
        ("uid", str(uuid.uuid4())),
        ("session_id", "default"),
        ("hostname", socket.gethostname()),
    ):
        ET.SubElement(root, tag).text = text
    desc_el = ET.SubElement(root, "desc")
    if channels:
        chans = ET.SubElement(desc_el, "channels")
        for ch in channels:
            c = ET.SubElement(chans, "channel")
            ET.SubElement(c, "label").text = ch.label
            ET.SubElement(c, "type").text = ch.type
            ET.SubElement(c, "unit").text = ch.unit
            if ch.location_mm is not None:
                loc = ET.SubElement(c, "location")
                for axis, v in zip("XYZ", ch.location_mm, strict=True):
                    ET.SubElement(loc, axis).text = _num(v)
            for key, text in ch.extra.items():
                ET.SubElement(c, key).text = text
    if desc:
        _append_desc(desc_el, desc)
    return _xml(root)


class XDFWriter:
    """Write an XDF file chunk by chunk, durably in batches.

    Parameters
    ----------
    path : str | Path
        The file to create.
    overwrite : bool
        Replace an existing file (default: refuse, so that no recording is lost).
    header : mapping | None
        Extra FileHeader fields (text values), besides ``version`` and ``datetime``.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is False.
    OSError
        If the file cannot be created or its header cannot be written.

    Notes
    -----
    Nothing reaches the file before :meth:`flush` (or :meth:`close`); :attr:`pending_bytes`
    says how much waits. Not thread-safe.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        overwrite: bool = False,
        header: Mapping[str, str] | None = None,
    ) -> None:
        self.path = Path(path)
        flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
        self._fd: int | None = os.open(self.path, flags, 0o644)
        self._size = 0  # bytes on disk, always at a chunk boundary
        self._pending = bytearray()
        self._streams: dict[int, _StreamState] = {}
        self._next_id = 1
        root = ET.Element("info")
        ET.SubElement(root, "version").text = "1.0"
        now = dt.datetime.now(dt.UTC).astimezone()
        ET.SubElement(root, "datetime").text = now.isoformat()
        for key, text in (header or {}).items():
            ET.SubElement(root, key).text = text
        self._pending += MAGIC
        self._pending += encode_chunk(TAG_FILE_HEADER, _xml(root))
        try:
            self.flush()
        except OSError:
            self._close_fd()
            raise

    @property
    def closed(self) -> bool:
        """True once :meth:`close` or :meth:`abandon` has run."""
        return self._fd is None

    @property
    def bytes_written(self) -> int:
        """Bytes in the file so far (complete chunks only)."""
        return self._size

    @property
    def pending_bytes(self) -> int:
        """Bytes serialised but not yet written."""
        return len(self._pending)

    def add_stream(
        self,
        *,
        name: str,
        type: str,
        channel_count: int,
        nominal_srate: float,
        channel_format: ChannelFormat,
        source_id: str = "",
        created_at: float = 0.0,
        channels: Sequence[ChannelMeta] = (),
        desc: Mapping[str, object] | None = None,
    ) -> int:
        """Declare a stream (a StreamHeader chunk); returns its stream id.

        Parameters are those of :func:`stream_header_xml`.

        Returns
        -------
        stream_id : int
            The id to pass to :meth:`write_samples` and :meth:`write_clock_offset` (1, 2, ...).
        """
        if channel_format != "string" and channel_format not in NUMERIC_FORMATS:
            raise ValueError(f"Unknown XDF channel format {channel_format!r}.")
        if channels and len(channels) != channel_count:
            raise ValueError(
                f"Stream {name!r} has {channel_count} channels but {len(channels)} descriptions."
            )
        stream_id = self._next_id
        self._next_id += 1
        xml = stream_header_xml(
            name=name,
            type=type,
            channel_count=channel_count,
            nominal_srate=nominal_srate,
            channel_format=channel_format,
            source_id=source_id,
            created_at=created_at,
            channels=channels,
            desc=desc,
        )
        self._streams[stream_id] = _StreamState(name, channel_format, channel_count)
        self._pending += encode_chunk(TAG_STREAM_HEADER, struct.pack("<I", stream_id) + xml)
        return stream_id

    def write_samples(
        self,
        stream_id: int,
        timestamps: ArrayLike,
        values: ArrayLike | Sequence[Sequence[str]],
    ) -> None:
        """Append a Samples chunk; every sample keeps its own float64 timestamp.

        Parameters
        ----------
        stream_id : int
            From :meth:`add_stream`.
        timestamps : array, shape (n_samples,)
            Time of each sample in seconds (the stream's own clock).
        values : array, shape (n_samples, n_channels) | list of list of str
            The samples: numbers (cast to the stream's format) or, for string streams, one
            list of ``n_channels`` strings per sample.
        """
        state = self._streams[stream_id]
        ts = np.ascontiguousarray(timestamps, dtype="<f8").reshape(-1)
        n = ts.size
        if n == 0:
            return
        head = struct.pack("<I", stream_id) + varlen(n)
        if state.fmt == "string":
            rows: list[Sequence[str]] = list(values)  # type: ignore[arg-type]
            if len(rows) != n:
                raise ValueError(f"{len(rows)} string samples for {n} timestamps.")
            out = bytearray(head)
            for t, row in zip(ts.tolist(), rows, strict=True):
                if len(row) != state.n_channels:
                    raise ValueError(
                        f"Stream {state.name!r} has {state.n_channels} channels, "
                        f"got a sample of {len(row)}."
                    )
                out += b"\x08" + struct.pack("<d", t)
                for text in row:
                    raw = str(text).encode("utf-8")
                    out += varlen(len(raw)) + raw
            content = bytes(out)
        else:
            arr = np.asarray(values)
            if arr.shape != (n, state.n_channels):
                raise ValueError(
                    f"Stream {state.name!r} expects ({n}, {state.n_channels}) values, "
                    f"got {arr.shape}."
                )
            # one packed record per sample: [8][timestamp][values], serialised in one go
            rec = np.dtype(
                [("nb", "u1"), ("t", "<f8"), ("v", NUMERIC_FORMATS[state.fmt], state.n_channels)]
            )
            packed = np.empty(n, dtype=rec)
            packed["nb"] = 8
            packed["t"] = ts
            packed["v"] = arr
            content = head + packed.tobytes()
        self._pending += encode_chunk(TAG_SAMPLES, content)
        if state.first_timestamp is None:
            state.first_timestamp = float(ts[0])
        state.last_timestamp = float(ts[-1])
        state.sample_count += n

    def write_clock_offset(self, stream_id: int, collection_time: float, offset: float) -> None:
        """Append a ClockOffset chunk.

        Parameters
        ----------
        stream_id : int
            From :meth:`add_stream`.
        collection_time : float
            When the offset was measured, on the stream's (remote) clock, in seconds: as
            LabRecorder writes it, local time minus the offset.
        offset : float
            Add to the stream's timestamps to get the recording machine's clock, in seconds
            (LSL's ``time_correction()``).
        """
        state = self._streams[stream_id]
        state.clock_offsets.append((float(collection_time), float(offset)))
        self._pending += encode_chunk(
            TAG_CLOCK_OFFSET, struct.pack("<Idd", stream_id, collection_time, offset)
        )

    def write_boundary(self) -> None:
        """Append a Boundary chunk (readers resynchronise on it after a damaged chunk)."""
        self._pending += encode_chunk(TAG_BOUNDARY, BOUNDARY_UUID)

    def flush(self) -> None:
        """Write every pending chunk and ``fsync`` the file.

        Raises
        ------
        OSError
            If the write fails (``ENOSPC``, ``EFBIG``, ...): the file is cut back to its
            last complete batch and the pending chunks stay pending.
        """
        fd = self._require_fd()
        if self._pending:
            # an immutable copy: views of the bytearray would block its later resizing
            data = memoryview(bytes(self._pending))
            start = self._size
            try:
                # the first byte goes last: until it is there, readers see no part of the batch
                self._pwrite_all(fd, data[1:], start + 1)
                self._pwrite_all(fd, data[:1], start)
            except OSError:
                with contextlib.suppress(OSError):  # the original error is the one to report
                    os.ftruncate(fd, start)
                raise
            self._size += len(self._pending)
            self._pending.clear()
        os.fsync(fd)

    @staticmethod
    def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
        done = 0
        while done < len(data):
            done += os.pwrite(fd, data[done:], offset + done)

    def close(self) -> None:
        """Write every stream's footer and a final boundary, flush and close the file.

        Safe to call twice.

        Raises
        ------
        OSError
            If the final write fails; the file is closed anyway and readable up to its last
            complete batch.
        """
        if self._fd is None:
            return
        try:
            for stream_id, state in self._streams.items():
                self._pending += encode_chunk(
                    TAG_STREAM_FOOTER, struct.pack("<I", stream_id) + _footer_xml(state)
                )
            self.write_boundary()
            self.flush()
        finally:
            self._close_fd()

    def abandon(self) -> None:
        """Close the file without writing what is pending (after a failed write)."""
        self._pending.clear()
        self._close_fd()

    def _require_fd(self) -> int:
        if self._fd is None:
            raise ValueError(f"The XDF file {self.path} is closed.")
        return self._fd

    def _close_fd(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


def _footer_xml(state: _StreamState) -> bytes:
    root = ET.Element("info")
    first = state.first_timestamp if state.first_timestamp is not None else 0.0
    last = state.last_timestamp if state.last_timestamp is not None else 0.0
    ET.SubElement(root, "first_timestamp").text = _num(first)
    ET.SubElement(root, "last_timestamp").text = _num(last)
    ET.SubElement(root, "sample_count").text = str(state.sample_count)
    offsets = ET.SubElement(root, "clock_offsets")
    for time, value in state.clock_offsets:
        o = ET.SubElement(offsets, "offset")
        ET.SubElement(o, "time").text = _num(time)
        ET.SubElement(o, "value").text = _num(value)
    return _xml(root)
