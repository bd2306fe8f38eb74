"""FieldTrip realtime buffer: asyncio client, blocking writer, asyncio server and a live source.

MEG and EEG acquisition software (Neuromag/MEGIN ``neuromag2ft``, CTF ``acq2ftx``, many EEG
amplifiers) writes into a FieldTrip buffer, a TCP service (port 1972) that analysis programs
read from. The message layer lives in :mod:`.ftprotocol`; this module holds:

- :class:`FieldTripClient`: asyncio client for every command, reconnecting by itself.
- :class:`FieldTripWriter`: blocking writer of a :class:`~.source.StreamInfo` and its samples
  and markers (used by ``neurocast replay --to fieldtrip`` and benchmarks).
- :class:`FieldTripServer`: asyncio server faithful to the reference implementation (bounded
  ring of samples and events, WAIT_DAT that really waits), for tests, the demo and replay.
- :class:`FieldTripSource`: the buffer as a :class:`~.source.Source` (WAIT_DAT then GET_DAT).

Every connection, on both ends, sets ``TCP_NODELAY``: with Nagle's algorithm and delayed
acknowledgements a request-reply exchange can stall about 40 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import socket
import tempfile
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import mne
import numpy as np
from mne.io.constants import FIFF
from numpy.typing import ArrayLike, NDArray

from neurocast.streaming.sources.base import (
    Chunk,
    Marker,
    SourceError,
    SourceStatus,
    StreamInfo,
    local_clock,
    require_open,
)
from neurocast.streaming.sources.fieldtrip.protocol import (
    AUTO_SAMPLE,
    DEFAULT_PORT,
    MESSAGE_DEF_SIZE,
    NORESPONSE,
    REPLIES,
    UNTIL_NEWEST,
    ByteOrder,
    ChunkType,
    Command,
    Counts,
    DataType,
    Event,
    FieldTripConnectionError,
    FieldTripError,
    FieldTripProtocolError,
    FieldTripRequestError,
    Header,
    HeaderChunk,
    MessageDef,
    Operation,
    op_flush,
    op_get_data,
    op_get_events,
    op_get_header,
    op_put_data,
    op_put_events,
    op_put_header,
    op_wait_data,
    pack_counts,
    pack_data,
    pack_events,
    pack_header,
    pack_message,
    parse_data,
    parse_events,
    parse_header,
    parse_message_def,
    parse_selection,
    parse_wait_request,
)
from neurocast.streaming.sources.specs import FieldTripSpec

__all__ = [
    "DEFAULT_PORT",
    "DataType",
    "Event",
    "FieldTripClient",
    "FieldTripConnectionError",
    "FieldTripError",
    "FieldTripProtocolError",
    "FieldTripRequestError",
    "FieldTripServer",
    "FieldTripSource",
    "FieldTripWriter",
    "Header",
    "HeaderChunk",
    "event_to_marker",
    "guess_channel_type",
    "header_from_stream_info",
    "is_neuromag",
    "marker_to_event",
    "stream_info_from_header",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Largest reply a client accepts (the reference server's ring holds at most 512 MiB).
MAX_MESSAGE_BYTES = 1 << 30
#: Keys of the ASCII key/value header chunk that carry neurocast's stream metadata.
KEY_STREAM_NAME = "neurocast_stream_name"
KEY_SIMULATED = "neurocast_simulated"


def _nodelay(sock: socket.socket | Any) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _lost(op: Operation[Any], host: str, port: int, exc: BaseException) -> FieldTripConnectionError:
    what = "did not answer in time" if isinstance(exc, TimeoutError) else "closed the connection"
    extra = (
        " Whether the server stored it is unknown; put the header again if the server restarted."
        if not op.idempotent
        else ""
    )
    return FieldTripConnectionError(
        f"The FieldTrip buffer at {host}:{port} {what} during {op.command.name} "
        f"({type(exc).__name__}: {exc}).{extra}"
    )


def _unreachable(host: str, port: int, exc: BaseException) -> FieldTripConnectionError:
    return FieldTripConnectionError(
        f"Cannot connect to a FieldTrip buffer at {host}:{port} ({type(exc).__name__}: {exc}). "
        "Start the buffer server (or the acquisition software that hosts it) and check the "
        "host and port."
    )


def _check_reply_size(mdef: MessageDef, limit: int) -> None:
    if mdef.bufsize > limit:
        raise FieldTripProtocolError(
            f"The server announces a reply of {mdef.bufsize} bytes, more than the {limit} bytes "
            "accepted; it is not a FieldTrip buffer or it is misbehaving."
        )


# --------------------------------------------------------------------------- asyncio client


class FieldTripClient:
    """Asyncio client of a FieldTrip buffer.

    Requests are sent one at a time over one connection (concurrent calls wait their turn).
    The connection is opened on first use; when it drops (for example because the server
    restarted), GET and WAIT_DAT requests are retried once on a new connection; PUT and FLUSH
    requests raise :class:`FieldTripConnectionError` (the next call reconnects; a restarted
    server needs its header put again).

    Parameters
    ----------
    host : str
        Server address.
    port : int
        Server port (1972 by default).
    timeout_s : float
        Seconds allowed to connect and for each reply (plus a WAIT_DAT's own timeout).

    Examples
    --------
    >>> async with FieldTripClient("127.0.0.1", 1972) as ft:  # doctest: +SKIP
    ...     header = await ft.get_header()
    ...     counts = await ft.wait_data(header.nsamples, header.nevents, timeout_ms=500)
    ...     x = await ft.get_data(header.nsamples, counts.nsamples)  # end exclusive
    """

    def __init__(
        self, host: str = "127.0.0.1", port: int = DEFAULT_PORT, *, timeout_s: float = 5.0
    ) -> None:
        self.host = host
        self.port = int(port)
        self.timeout_s = float(timeout_s)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()

    @property
    def connected(self) -> bool:
        """True while a connection is open."""
        return self._writer is not None

    async def __aenter__(self) -> FieldTripClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        """Open the connection (TCP_NODELAY set); does nothing when already connected.

        Raises
        ------
        FieldTripConnectionError
            If the server cannot be reached within ``timeout_s``.
        """
        if self._writer is not None:
            return
        try:
            async with asyncio.timeout(self.timeout_s):
                reader, writer = await asyncio.open_connection(self.host, self.port)
        except (OSError, TimeoutError) as exc:
            raise _unreachable(self.host, self.port, exc) from exc
        _nodelay(writer.get_extra_info("socket"))
        self._reader, self._writer = reader, writer

    async def close(self) -> None:
        """Close the connection; safe to call twice."""
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _run(self, op: Operation[T]) -> T:
        async with self._lock:
            while True:
                fresh = self._writer is None
                await self.connect()
                try:
                    return await self._exchange(op)
                except FieldTripProtocolError:
                    await self.close()  # the byte stream can no longer be trusted
                    raise
                except (OSError, EOFError, TimeoutError) as exc:
                    await self.close()
                    if fresh or not op.idempotent or isinstance(exc, TimeoutError):
                        raise _lost(op, self.host, self.port, exc) from exc
                    logger.info("FieldTrip connection dropped; retrying %s", op.command.name)

    async def _exchange(self, op: Operation[T]) -> T:
        assert self._reader is not None and self._writer is not None
        async with asyncio.timeout(self.timeout_s + op.wait_s):
            self._writer.write(op.request())
            await self._writer.drain()
            if not op.expects_reply:
                return op.parse(b"", "<")
            head = await self._reader.readexactly(MESSAGE_DEF_SIZE)
            mdef = parse_message_def(head)
            _check_reply_size(mdef, MAX_MESSAGE_BYTES)
            body = await self._reader.readexactly(mdef.bufsize)
        return op.result(mdef, body)

    async def get_header(self) -> Header:
        """The header, with the number of samples and events written so far.

        Raises
        ------
        FieldTripRequestError
            If no header has been put yet.
        """
        return await self._run(op_get_header())

    async def put_header(self, header: Header, *, noresponse: bool = False) -> None:
        """Put a header (see :meth:`Header.build`); the server drops all samples and events."""
        await self._run(op_put_header(header, noresponse=noresponse))

    async def put_data(self, samples: ArrayLike, *, noresponse: bool = False) -> None:
        """Append samples, an array of shape (n_samples, n_channels).

        The array's dtype is sent as is and must match the header's data type.
        """
        await self._run(op_put_data(samples, noresponse=noresponse))

    async def get_data(self, begin: int | None = None, end: int | None = None) -> NDArray[Any]:
        """Samples ``begin`` to ``end - 1`` (0-based, ``end`` exclusive like a slice).

        Parameters
        ----------
        begin : int | None
            First sample; None with ``end`` None means every sample the server still holds.
        end : int | None
            One past the last sample; None means up to the newest.

        Returns
        -------
        samples : ndarray, shape (n_samples, n_channels)
            In the header's data type.
        """
        return await self._run(op_get_data(*_inclusive(begin, end)))

    async def put_events(
        self, events: Event | Iterable[Event], *, noresponse: bool = False
    ) -> None:
        """Append one or several events (``sample=-1`` lets the server fill in its count)."""
        evs = [events] if isinstance(events, Event) else list(events)
        await self._run(op_put_events(evs, noresponse=noresponse))

    async def get_events(self, begin: int | None = None, end: int | None = None) -> list[Event]:
        """Events ``begin`` to ``end - 1`` (``end`` exclusive; both None: all held)."""
        return await self._run(op_get_events(*_inclusive(begin, end)))

    async def wait_data(self, nsamples: int, nevents: int, timeout_ms: int) -> Counts:
        """Wait until more than ``nsamples`` samples or more than ``nevents`` events exist, or
        ``timeout_ms`` milliseconds pass, and return the current counts."""
        return await self._run(op_wait_data(nsamples, nevents, timeout_ms))

    async def poll(self) -> Counts:
        """The current sample and event counts, without waiting."""
        return await self.wait_data(0, 0, 0)

    async def flush_header(self) -> None:
        """Remove the header, all samples and all events."""
        await self._run(op_flush("header"))

    async def flush_data(self) -> None:
        """Remove all samples (the count restarts at 0)."""
        await self._run(op_flush("data"))

    async def flush_events(self) -> None:
        """Remove all events (the count restarts at 0)."""
        await self._run(op_flush("events"))


def _inclusive(begin: int | None, end: int | None) -> tuple[int | None, int | None]:
    if begin is None and end is None:
        return None, None
    first = 0 if begin is None else int(begin)
    if end is None:
        return first, UNTIL_NEWEST
    if end <= first or first < 0:
        raise ValueError(f"Need 0 <= begin < end, got begin={begin}, end={end} (end is exclusive).")
    return first, int(end) - 1


# --------------------------------------------------------------------------- blocking connection


class _BlockingConnection:
    """One blocking socket to a buffer, with the same retry rule as :class:`FieldTripClient`."""

    def __init__(self, host: str, port: int, timeout_s: float) -> None:
        self.host, self.port, self.timeout_s = host, int(port), float(timeout_s)
        self._sock: socket.socket | None = None
        self._closed = False

    def connect(self) -> None:
        if self._closed:
            raise FieldTripConnectionError("This FieldTrip connection was closed.")
        if self._sock is not None:
            return
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout_s)
        except OSError as exc:
            raise _unreachable(self.host, self.port, exc) from exc
        _nodelay(sock)
        self._sock = sock

    def drop(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def close(self) -> None:
        """Close for good; wakes a thread blocked in :meth:`run` (it gets a connection error)."""
        self._closed = True
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.drop()

    def run(self, op: Operation[T]) -> T:
        while True:
            fresh = self._sock is None
            self.connect()
            try:
                return self._exchange(op)
            except FieldTripProtocolError:
                self.drop()
                raise
            except (OSError, EOFError) as exc:  # socket.timeout is an OSError
                self.drop()
                if self._closed:
                    raise FieldTripConnectionError("This FieldTrip connection was closed.") from exc
                if fresh or not op.idempotent or isinstance(exc, TimeoutError):
                    raise _lost(op, self.host, self.port, exc) from exc

    def _exchange(self, op: Operation[T]) -> T:
        sock = self._sock
        assert sock is not None
        sock.settimeout(self.timeout_s + op.wait_s)
        sock.sendall(op.request())
        if not op.expects_reply:
            return op.parse(b"", "<")
        mdef = parse_message_def(self._recv(sock, MESSAGE_DEF_SIZE))
        _check_reply_size(mdef, MAX_MESSAGE_BYTES)
        return op.result(mdef, self._recv(sock, mdef.bufsize))

    @staticmethod
    def _recv(sock: socket.socket, n: int) -> bytes:
        parts = []
        while n > 0:
            part = sock.recv(min(n, 1 << 20))
            if not part:
                raise EOFError("the server closed the connection")
            parts.append(part)
            n -= len(part)
        return b"".join(parts)


# --------------------------------------------------------------------------- stream metadata


_NEUROMAG_COILS = {
    FIFF.FIFFV_COIL_NM_122,
    FIFF.FIFFV_COIL_VV_PLANAR_W,
    FIFF.FIFFV_COIL_VV_PLANAR_T1,
    FIFF.FIFFV_COIL_VV_PLANAR_T2,
    FIFF.FIFFV_COIL_VV_PLANAR_T3,
    FIFF.FIFFV_COIL_VV_MAG_W,
    FIFF.FIFFV_COIL_VV_MAG_T1,
    FIFF.FIFFV_COIL_VV_MAG_T2,
    FIFF.FIFFV_COIL_VV_MAG_T3,
}


def is_neuromag(info: mne.Info) -> bool:
    """True when ``info`` holds Neuromag/MEGIN (VectorView, TRIUX, Neuromag-122) MEG sensors."""
    return any(int(ch["coil_type"]) in _NEUROMAG_COILS for ch in info["chs"])


def _fif_from_info(info: mne.Info) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "header-info.fif"
        mne.io.write_info(path, info, verbose="error")
        return path.read_bytes()


def _info_from_fif(data: bytes) -> mne.Info:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "header-info.fif"
        path.write_bytes(data)
        return mne.io.read_info(path, verbose="error")


def _keyval_chunk(pairs: dict[str, str]) -> HeaderChunk:
    raw = b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in pairs.items()) + b"\0"
    return HeaderChunk(ChunkType.ASCII_KEYVAL, raw)


def _keyvals(header: Header) -> dict[str, str]:
    data = header.chunk(ChunkType.ASCII_KEYVAL)
    if data is None:
        return {}
    parts = [p.decode("utf-8", "replace") for p in data.split(b"\0")]
    out = {}
    for k, v in zip(parts[::2], parts[1::2], strict=False):
        if not k:
            break
        out[k] = v
    return out


def header_from_stream_info(
    stream: StreamInfo, data_type: DataType | int = DataType.FLOAT32
) -> Header:
    """The header a writer puts for ``stream``.

    It holds the channel names (chunk 1), an ASCII key/value chunk (4) with the stream name
    and whether it is simulated, and, when the stream has Neuromag MEG sensors, the whole
    ``mne.Info`` as a FIF file in a Neuromag header chunk (8), as ``neuromag2ft`` provides it,
    so readers recover exact channel types, positions and calibration.

    Parameters
    ----------
    stream : StreamInfo
        The stream's metadata.
    data_type : DataType | int
        Type the samples will be sent as (float32 by default).
    """
    chunks = [
        _keyval_chunk(
            {KEY_STREAM_NAME: stream.name, KEY_SIMULATED: "true" if stream.simulated else "false"}
        )
    ]
    if is_neuromag(stream.info):
        chunks.append(HeaderChunk(ChunkType.NEUROMAG_HEADER, _fif_from_info(stream.info)))
    return Header.build(stream.sfreq, data_type, stream.ch_names, chunks=chunks)


@functools.cache
def _montage_names() -> frozenset[str]:
    # MNE 1.13 renamed the 10-05 template; older versions only know the old name
    name = "colin27_1005"
    if name not in mne.channels.get_builtin_montages():
        name = "standard_1005"
    return frozenset(n.lower() for n in mne.channels.make_standard_montage(name).ch_names)


_PREFIX_TYPES = (
    ("EEG", "eeg"),
    ("EOG", "eog"),
    ("ECG", "ecg"),
    ("EKG", "ecg"),
    ("EMG", "emg"),
    ("STI", "stim"),
    ("TRIG", "stim"),
    ("STATUS", "stim"),
    ("RESP", "resp"),
    ("MISC", "misc"),
)


def guess_channel_type(name: str) -> str:
    """MNE channel type from a channel name alone.

    ``MEG`` names ending in 1 are magnetometers and in 2 or 3 gradiometers (Neuromag naming);
    ``EEG``, ``EOG``, ``ECG``/``EKG``, ``EMG``, ``STI``/``TRIG``/``STATUS``, ``RESP`` and
    ``MISC`` prefixes give their types; names of the 10-05 system are EEG; anything else is
    ``misc``.
    """
    key = name.strip().upper()
    if key.startswith("MEG"):
        return "grad" if key[-1:] in ("2", "3") else "mag"
    for prefix, kind in _PREFIX_TYPES:
        if key.startswith(prefix):
            return kind
    return "eeg" if name.strip().lower() in _montage_names() else "misc"


def stream_info_from_header(header: Header, *, source_id: str) -> StreamInfo:
    """Stream metadata from a buffer header.

    The ``mne.Info`` is the one in the Neuromag header chunk when there is one that matches
    the channels; otherwise it is built from the channel names (``CH001``... when the header
    has none) with types from :func:`guess_channel_type`, without sensor positions.

    Parameters
    ----------
    header : Header
        The header read from the buffer.
    source_id : str
        Identifier of the buffer, e.g. ``"fieldtrip://127.0.0.1:1972"``.
    """
    names = header.channel_names or [f"CH{i + 1:03d}" for i in range(header.nchans)]
    info = None
    fif = header.neuromag_header
    if fif is not None:
        try:
            info = _info_from_fif(fif)
        except Exception as exc:  # a foreign FIF we cannot read: fall back to the names
            logger.warning("Ignoring the unreadable Neuromag header chunk (%s).", exc)
        listed = header.channel_names
        if info is not None and (
            info["nchan"] != header.nchans or (listed is not None and info["ch_names"] != listed)
        ):
            logger.warning(
                "The Neuromag header chunk describes other channels (%d) than the header (%d "
                "channels); building the channel info from the names instead.",
                info["nchan"],
                header.nchans,
            )
            info = None
    if info is None:
        info = mne.create_info(names, header.fsample, [guess_channel_type(n) for n in names])
    keys = _keyvals(header)
    return StreamInfo(
        name=keys.get(KEY_STREAM_NAME, f"FieldTrip buffer {source_id}"),
        info=info,
        simulated=keys.get(KEY_SIMULATED, "false") == "true",
        source_id=source_id,
    )


def marker_to_event(marker: Marker, sample: int = AUTO_SAMPLE) -> Event:
    """A buffer event for a marker: ``"type/value"`` text is split at the first ``/``
    (``"image/42"`` gives type ``"image"`` and value ``"42"``; text without ``/`` gives an
    empty type)."""
    kind, sep, value = marker.value.partition("/")
    return Event(kind, value, sample) if sep else Event("", marker.value, sample)


def event_to_marker(event: Event, timestamp: float) -> Marker:
    """A marker for a buffer event at ``timestamp`` seconds (see :attr:`Event.label`)."""
    return Marker(timestamp, event.label)


# --------------------------------------------------------------------------- blocking writer


class FieldTripWriter:
    """Write a stream into a FieldTrip buffer over a blocking socket (TCP_NODELAY).

    Parameters
    ----------
    host : str
        Server address.
    port : int
        Server port.
    timeout_s : float
        Seconds allowed to connect and for each reply.
    data_type : DataType | int
        Type the samples are sent as (float32 by default, as ``neuromag2ft`` sends them).

    Examples
    --------
    >>> with FieldTripWriter("127.0.0.1", 1972) as ft:  # doctest: +SKIP
    ...     ft.put_header(stream_info)
    ...     ft.put_data(chunk)  # (n_samples, n_channels)
    ...     ft.put_events([Marker(t, "stim/5")])
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        timeout_s: float = 10.0,
        data_type: DataType | int = DataType.FLOAT32,
    ) -> None:
        self.data_type = DataType(data_type)
        self._conn = _BlockingConnection(host, port, timeout_s)
        self.header: Header | None = None
        self.n_samples = 0
        self._t_zero: float | None = None

    def __enter__(self) -> FieldTripWriter:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> None:
        """Open the connection.

        Raises
        ------
        FieldTripConnectionError
            If the server cannot be reached.
        """
        self._conn.connect()

    def close(self) -> None:
        """Close the connection; safe to call twice."""
        self._conn.close()

    def put_header(self, stream_info: StreamInfo) -> Header:
        """Put the header of ``stream_info`` (see :func:`header_from_stream_info`).

        The server drops the samples and events it held. Returns the header sent.
        """
        header = header_from_stream_info(stream_info, self.data_type)
        self._conn.run(op_put_header(header))
        self.header, self.n_samples, self._t_zero = header, 0, None
        return header

    def put_data(self, samples: ArrayLike, timestamps: ArrayLike | None = None) -> int:
        """Append samples.

        Parameters
        ----------
        samples : array, shape (n_samples, n_channels)
            Converted to the writer's data type.
        timestamps : array, shape (n_samples,) | None
            Their times in seconds. The first chunk given with timestamps fixes the time of
            sample 0, which :meth:`put_events` uses to place markers on samples.

        Returns
        -------
        n_samples : int
            Samples written since the header.
        """
        if self.header is None:
            raise ValueError("Put a header (put_header) before putting samples.")
        arr = np.asarray(samples)
        if arr.ndim != 2 or arr.shape[1] != self.header.nchans:
            raise ValueError(
                f"Samples have shape {arr.shape}; the header declares {self.header.nchans} "
                "channels, so give an array of shape (n_samples, n_channels)."
            )
        self._conn.run(op_put_data(arr.astype(self.data_type.dtype(), copy=False)))
        if timestamps is not None and self._t_zero is None and arr.shape[0]:
            first = float(np.asarray(timestamps, dtype=np.float64).reshape(-1)[0])
            self._t_zero = first - self.n_samples / self.header.fsample
        self.n_samples += arr.shape[0]
        return self.n_samples

    def put_events(self, markers: Iterable[Marker | Event]) -> None:
        """Append markers (or buffer events, sent as they are).

        A marker becomes an event (see :func:`marker_to_event`) on the sample at its time when
        :meth:`put_data` received timestamps, otherwise on the server's current sample count.
        """
        if self.header is None:
            raise ValueError("Put a header (put_header) before putting events.")
        events = []
        for m in markers:
            if isinstance(m, Event):
                events.append(m)
                continue
            sample = AUTO_SAMPLE
            if self._t_zero is not None:
                sample = max(0, round((m.timestamp - self._t_zero) * self.header.fsample))
            events.append(marker_to_event(m, sample))
        if events:
            self._conn.run(op_put_events(events))


# --------------------------------------------------------------------------- server


class _Refused(Exception):
    """A request the server answers with its error reply; the message says why."""


class FieldTripServer:
    """An asyncio FieldTrip buffer server (protocol version 1).

    Behaves as the reference C server: one header, a ring of samples and a ring of events;
    PUT_HDR replaces the header and drops all samples and events; requests for samples or
    events no longer held get an error reply; events put with ``sample=-1`` get the current
    sample count; WAIT_DAT answers as soon as the sample count exceeds its threshold or the
    event count exceeds its threshold, or at its timeout; the ``*_NORESPONSE`` variants are not
    answered. Byte-swapped clients are answered in their own byte order. Every connection
    sets TCP_NODELAY.

    A malformed request of a known command gets the command's error reply; a message that is
    not the protocol (wrong version, unknown command, absurd size) closes that connection
    only.

    Parameters
    ----------
    host : str
        Address to listen on (loopback by default).
    port : int
        Port; 0 picks a free one (see :attr:`port`).
    max_samples : int
        Samples held at most (the reference holds 600,000).
    max_events : int
        Events held at most (the reference holds 100).
    max_bytes : int
        Bytes of samples held at most (the reference holds 512 MiB): with many channels the
        ring holds ``max_bytes // (nchans * wordsize)`` samples when that is fewer.
    max_message_bytes : int
        Largest request accepted; a larger one closes the connection.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        max_samples: int = 600_000,
        max_events: int = 100,
        *,
        max_bytes: int = 512 * 1024 * 1024,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
    ) -> None:
        if max_samples < 1 or max_events < 1 or max_bytes < 1:
            raise ValueError("max_samples, max_events and max_bytes must be at least 1.")
        self.host = host
        self._requested_port = int(port)
        self.max_samples = int(max_samples)
        self.max_events = int(max_events)
        self.max_bytes = int(max_bytes)
        self.max_message_bytes = int(max_message_bytes)
        self._server: asyncio.Server | None = None
        self._header: Header | None = None
        self._ring: NDArray[Any] | None = None
        self._nsamples = 0
        self._events: deque[Event] = deque(maxlen=self.max_events)
        self._nevents = 0
        self._cond: asyncio.Condition | None = None
        self._stopping = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._handlers: dict[
            Command, Callable[[bytes, ByteOrder, asyncio.StreamReader], Awaitable[bytes]]
        ] = {
            Command.PUT_HDR: self._put_hdr,
            Command.PUT_DAT: self._put_dat,
            Command.PUT_EVT: self._put_evt,
            Command.GET_HDR: self._get_hdr,
            Command.GET_DAT: self._get_dat,
            Command.GET_EVT: self._get_evt,
            Command.FLUSH_HDR: self._flush_hdr,
            Command.FLUSH_DAT: self._flush_dat,
            Command.FLUSH_EVT: self._flush_evt,
            Command.WAIT_DAT: self._wait_dat,
        }

    @property
    def port(self) -> int:
        """The port the server listens on."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("The server is not started; call start() or serve_in_thread().")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def capacity(self) -> int:
        """Samples the ring holds for the current header (0 without a header)."""
        return 0 if self._ring is None else self._ring.shape[0]

    @property
    def n_connections(self) -> int:
        """Clients connected now."""
        return len(self._writers)

    async def start(self) -> None:
        """Start listening.

        Raises
        ------
        OSError
            If the address cannot be bound (for example, the port is taken).
        """
        # like a restarted reference server, a (re)started server holds nothing
        self._header, self._ring, self._nsamples, self._nevents = None, None, 0, 0
        self._events.clear()
        self._cond = asyncio.Condition()
        self._stopping = False
        self._server = await asyncio.start_server(
            self._serve, self.host, self._requested_port, reuse_address=True
        )
        logger.info("FieldTrip buffer listening on %s:%d", self.host, self.port)

    async def stop(self) -> None:
        """Stop listening and close every connection; safe to call twice."""
        self._stopping = True
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            w.close()
        if self._cond is not None:
            async with self._cond:
                self._cond.notify_all()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2.0)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    @contextlib.contextmanager
    def serve_in_thread(self) -> Iterator[FieldTripServer]:
        """Run the server on its own event loop in a background thread.

        Yields
        ------
        server : FieldTripServer
            This server, started (its :attr:`port` is bound); it is stopped on exit.
        """
        loop = asyncio.new_event_loop()
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start())
            except BaseException as exc:
                failure.append(exc)
                started.set()
                loop.close()
                return
            started.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self.stop())
                loop.close()

        thread = threading.Thread(target=run, name="fieldtrip-server", daemon=True)
        thread.start()
        started.wait()
        if failure:
            raise failure[0]
        try:
            yield self
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _nodelay(writer.get_extra_info("socket"))
        peer = writer.get_extra_info("peername")
        task = asyncio.current_task()
        assert task is not None
        self._writers.add(writer)
        self._tasks.add(task)
        try:
            while not self._stopping:
                head = await reader.readexactly(MESSAGE_DEF_SIZE)
                try:
                    mdef = parse_message_def(head)
                    if mdef.bufsize > self.max_message_bytes:
                        raise FieldTripProtocolError(
                            f"request of {mdef.bufsize} bytes exceeds {self.max_message_bytes}"
                        )
                    command = Command(mdef.command)
                    if command not in self._handlers and command not in NORESPONSE:
                        raise FieldTripProtocolError(f"{command.name} is a reply, not a request")
                except (FieldTripProtocolError, ValueError) as exc:
                    logger.warning("Closing FieldTrip connection from %s: %s", peer, exc)
                    return
                body = await reader.readexactly(mdef.bufsize)
                reply = await self._handle(command, body, mdef.order, reader)
                if reply is not None:
                    writer.write(reply)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client went away
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)
            writer.close()

    async def _handle(
        self, command: Command, body: bytes, order: ByteOrder, reader: asyncio.StreamReader
    ) -> bytes | None:
        request = NORESPONSE.get(command, command)
        ok, err = REPLIES[request]
        try:
            payload = await self._handlers[request](body, order, reader)
            code = ok
        except (_Refused, FieldTripProtocolError) as exc:
            logger.debug("Refused %s: %s", request.name, exc)
            payload, code = b"", err
        if self._stopping and request == Command.WAIT_DAT:
            return None
        return None if command in NORESPONSE else pack_message(code, payload, order)

    async def _notify(self) -> None:
        assert self._cond is not None
        async with self._cond:
            self._cond.notify_all()

    def _need_header(self) -> Header:
        if self._header is None:
            raise _Refused("no header has been put")
        return self._header

    async def _put_hdr(self, body: bytes, order: ByteOrder, _: asyncio.StreamReader) -> bytes:
        header = parse_header(body, order)
        per_sample = header.nchans * header.data_type.wordsize
        capacity = min(self.max_samples, self.max_bytes // per_sample)
        if capacity < 1:
            raise _Refused(f"one sample of {header.nchans} channels exceeds {self.max_bytes} bytes")
        self._header = replace(header, nsamples=0, nevents=0)
        # np.zeros maps untouched pages lazily: memory grows with what is written
        self._ring = np.zeros((capacity, header.nchans), dtype=header.dtype)
        self._nsamples = 0
        self._events.clear()
        self._nevents = 0
        await self._notify()
        return b""

    async def _put_dat(self, body: bytes, order: ByteOrder, _: asyncio.StreamReader) -> bytes:
        header = self._need_header()
        block = parse_data(body, order)
        assert self._ring is not None
        if block.shape[1] != header.nchans or block.dtype != header.dtype:
            raise _Refused(
                f"block of {block.shape[1]} channels of {block.dtype} does not match the "
                f"header's {header.nchans} channels of {header.dtype}"
            )
        n, cap = block.shape[0], self._ring.shape[0]
        if n > cap:
            raise _Refused(f"block of {n} samples exceeds the ring of {cap}")
        if self._nsamples + n > 0xFFFFFFFF:
            raise _Refused("the sample count would overflow uint32; put a new header")
        start = self._nsamples % cap
        first = min(n, cap - start)
        self._ring[start : start + first] = block[:first]
        self._ring[: n - first] = block[first:]
        self._nsamples += n
        await self._notify()
        return b""

    async def _put_evt(self, body: bytes, order: ByteOrder, _: asyncio.StreamReader) -> bytes:
        self._need_header()
        events = parse_events(body, order)
        self._events.extend(
            replace(e, sample=self._nsamples) if e.sample == AUTO_SAMPLE else e for e in events
        )
        self._nevents += len(events)
        await self._notify()
        return b""

    async def _get_hdr(self, body: bytes, order: ByteOrder, _: asyncio.StreamReader) -> bytes:
        header = self._need_header()
        return pack_header(replace(header, nsamples=self._nsamples, nevents=self._nevents), order)

    def _select(self, body: bytes, order: ByteOrder, total: int, held: int, what: str) -> range:
        sel = parse_selection(body, order)
        if sel is None:
            if total == 0:
                raise _Refused(f"no {what} written yet")
            return range(total - held, total)
        first, last = sel
        if last == UNTIL_NEWEST:
            last = total - 1
        if not first <= last < total:
            raise _Refused(f"{what} {first}..{last} requested, {total} written")
        if first < total - held:
            raise _Refused(f"{what} before {total - held} are no longer held")
        return range(first, last + 1)

    async def _get_dat(self, body: bytes, order: ByteOrder, _: asyncio.StreamReader) -> bytes:
        self._need_header()
        assert self._ring is not None
        cap = self._ring.shape[0]
        sel = self._select(body, order, self._nsamples, min(self._nsamples, cap), "samples")
        idx = np.arange(sel.start, sel.stop) % cap
        return pack_data(self._ring[idx], order)

    async def _get_evt(self, body: bytes, order: ByteOrder, _: asyncio.StreamReader) -> bytes:
        self._need_header()
        sel = self._select(body, order, self._nevents, len(self._events), "events")
        oldest = self._nevents - len(self._events)
        return pack_events([self._events[i - oldest] for i in sel], order)

    async def _flush_hdr(self, body: bytes, order: ByteOrder, _: asyncio.StreamReader) -> bytes:
        self._need_header()
        self._header, self._ring = None, None
        self._nsamples, self._nevents = 0, 0
        self._events.clear()
        await self._notify()
        return b""

    async def _flush_dat(self, body: bytes, order: ByteOrder, _: asyncio.StreamReader) -> bytes:
        self._need_header()
        self._nsamples = 0
        await self._notify()
        return b""

    async def _flush_evt(self, body: bytes, order: ByteOrder, _: asyncio.StreamReader) -> bytes:
        self._need_header()
        self._events.clear()
        self._nevents = 0
        await self._notify()
        return b""

    async def _wait_dat(self, body: bytes, order: ByteOrder, reader: asyncio.StreamReader) -> bytes:
        self._need_header()
        threshold, timeout_ms = parse_wait_request(body, order)
        assert self._cond is not None

        def done() -> bool:
            return (
                self._stopping
                or self._header is None
                or self._nsamples > threshold.nsamples
                or self._nevents > threshold.nevents
            )

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_ms / 1000.0
        async with self._cond:
            while not done():
                remaining = deadline - loop.time()
                if remaining <= 0 or reader.at_eof():
                    break
                # wake at least every second to notice a client that went away meanwhile
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._cond.wait(), min(remaining, 1.0))
        self._need_header()
        return pack_counts(Counts(self._nsamples, self._nevents), order)


# --------------------------------------------------------------------------- source


class _SampleClock:
    """Local-clock time of buffer sample indices.

    The buffer carries no timestamps, so sample ``i`` is given time ``origin + i / sfreq``,
    with ``origin`` chosen at the first chunk so that its newest sample falls on its local
    receipt time. A later chunk that arrives earlier than this predicts (the first one was
    late, or the device clock runs faster than ours) moves ``origin`` back at once, so no
    sample is ever stamped later than its receipt; a move of more than a sample period makes
    the timestamps step back once, which the ring buffer reports as a backward clock jump.
    """

    def __init__(self, sfreq: float) -> None:
        self.period = 1.0 / sfreq
        self.origin: float | None = None

    def restart(self) -> None:
        """Sample indices restart at 0 (the buffer was reset): anchor again."""
        self.origin = None

    def time_of(self, index: int) -> float:
        """Time of sample ``index`` in seconds (the clock must be anchored)."""
        assert self.origin is not None
        return self.origin + index * self.period

    def stamp(self, first: int, n: int, receipt: float) -> NDArray[np.float64]:
        """Timestamps of samples ``first`` to ``first + n - 1`` received at ``receipt``."""
        estimate = receipt - (first + n - 1) * self.period
        if self.origin is None or estimate < self.origin:
            self.origin = estimate
        return self.origin + (first + np.arange(n, dtype=np.float64)) * self.period


#: After a buffer reset or a reconnection, at most this much backlog is read (seconds).
MAX_BACKLOG_S = 10.0


class FieldTripSource:
    """A FieldTrip buffer as a live :class:`~neurocast.streaming.sources.base.Source`.

    ``open()`` reads the header: channel names from the channel-names chunk, the exact
    ``mne.Info`` from a Neuromag header chunk when present (see :func:`stream_info_from_header`),
    and starts at the newest sample. Each ``read()`` sends WAIT_DAT for anything newer, then
    GET_EVT and GET_DAT for what arrived. Samples are returned as written (float types as they
    are, integer types as float64); a resolutions chunk is not applied.

    Timestamps: the buffer has none. Sample ``i`` is stamped ``origin + i / fsample`` on the
    local clock (``clock_offset`` is 0), where ``origin`` is anchored at the local receipt
    time of the newest sample of the first chunk, and moved earlier, never later, when a
    chunk arrives earlier than predicted (see :class:`_SampleClock`): no sample is stamped
    later than its receipt. Latencies computed from these timestamps therefore count from the
    fastest delivery observed, not from acquisition, and the device's clock drift is followed
    only when it runs faster than the local clock.
    Events become :class:`~.source.Marker` objects (``"type/value"``) at their sample's time
    and are attached to the next chunk of samples.

    Faults: when the server goes away (or has no header) the status is ``"stalled"`` and
    ``read`` returns None; the source reconnects by itself. When the sample count goes down
    (a new header was put, the data were flushed, or the server restarted) the header is read
    again: with the same channels and rate, reading goes on from the new data (at most
    :data:`MAX_BACKLOG_S` of backlog, on a clock anchored again, so windows spanning the reset
    are flagged as a gap or clock jump); with a different channel count, channel names or
    rate, ``read`` raises
    :class:`~.source.SourceError` and the status is ``"failed"``: the pipeline was built for
    the old layout, so the session must be restarted. A restart that the reader misses
    entirely (the server came back and received more samples than this reader had read
    before it reconnected) cannot be told apart from a dropped connection.

    Parameters
    ----------
    spec : FieldTripSpec
        Host, port and timeouts.
    """

    def __init__(self, spec: FieldTripSpec) -> None:
        self.spec = spec
        self.source_id = f"fieldtrip://{spec.host}:{spec.port}"
        self._conn = _BlockingConnection(spec.host, spec.port, spec.reply_timeout_s)
        self._status: SourceStatus = "starting"
        self._stream: StreamInfo | None = None
        self._header: Header | None = None
        self._clock: _SampleClock | None = None
        self._next_sample = 0
        self._next_event = 0
        self._pending: deque[Event] = deque(maxlen=4096)  # events waiting for samples
        self._last_data = 0.0
        self._resync = False
        self._closed = False
        self._failure: str | None = None

    @property
    def stream_info(self) -> StreamInfo:
        """The stream's metadata (after :meth:`open`)."""
        return require_open(self._stream, "FieldTrip")

    @property
    def status(self) -> SourceStatus:
        """``starting``, ``running``, ``stalled`` (server gone, no header or no samples for
        ``spec.stall_after_s``), ``stopped`` or ``failed``."""
        if self._status == "running" and local_clock() - self._last_data > self.spec.stall_after_s:
            return "stalled"
        return self._status

    def open(self) -> StreamInfo:
        """Connect and read the header, waiting up to ``spec.open_timeout_s`` for both.

        Raises
        ------
        SourceError
            If no server answers or no header is put in time.
        """
        deadline = local_clock() + self.spec.open_timeout_s
        while True:
            try:
                header = self._conn.run(op_get_header())
                break
            except (FieldTripConnectionError, FieldTripRequestError) as exc:
                if local_clock() >= deadline:
                    self._status = "failed"
                    raise SourceError(
                        f"No FieldTrip buffer header at {self.spec.host}:{self.spec.port} after "
                        f"{self.spec.open_timeout_s:g} s: {exc} Start the buffer and its writer "
                        "(e.g. `neurocast replay FILE --to fieldtrip`), or check host and port."
                    ) from exc
                time.sleep(0.05)
            except FieldTripProtocolError as exc:
                self._status = "failed"
                raise SourceError(
                    f"{self.spec.host}:{self.spec.port} does not speak the FieldTrip buffer "
                    f"protocol: {exc}"
                ) from exc
        self._stream = stream_info_from_header(header, source_id=self.source_id)
        self._header = header
        self._clock = _SampleClock(header.fsample)
        self._next_sample, self._next_event = header.nsamples, header.nevents
        self._status, self._last_data = "running", local_clock()
        return self._stream

    def close(self) -> None:
        """Close the connection (wakes a concurrent :meth:`read`); safe to call twice."""
        self._closed = True
        self._status = "stopped"
        self._conn.close()

    def read(self, timeout: float) -> Chunk | None:
        """The samples (and events) that arrived, or None if none arrived within ``timeout``
        seconds or the server is unreachable (then the status is ``"stalled"``).

        Raises
        ------
        SourceError
            If the header changed its channel count, names or rate, or the peer broke the
            protocol.
        """
        if self._closed:
            return None
        if self._failure is not None:
            raise SourceError(self._failure)
        require_open(self._stream, "FieldTrip")
        started = local_clock()
        try:
            chunk = self._read(timeout)
        except (FieldTripConnectionError, FieldTripRequestError) as exc:
            if self._closed:
                return None
            if self._status != "stalled":
                logger.warning("FieldTrip source %s stalled: %s", self.source_id, exc)
            self._status, self._resync = "stalled", True
            time.sleep(max(0.0, min(timeout, 0.25) - (local_clock() - started)))
            return None
        except FieldTripProtocolError as exc:
            self._fail(f"The FieldTrip buffer at {self.source_id} broke the protocol: {exc}")
        if self._status == "stalled" and not self._resync:
            logger.info("FieldTrip source %s running again", self.source_id)
            self._status = "running"
        return chunk

    def _fail(self, message: str) -> NoReturn:
        self._failure, self._status = message, "failed"
        raise SourceError(message)

    def _read(self, timeout: float) -> Chunk | None:
        if self._resync:
            self._reread_header(self._conn.run(op_get_header()))
            self._resync = False
        counts = self._conn.run(
            op_wait_data(self._next_sample, self._next_event, max(0, round(timeout * 1000)))
        )
        if counts.nsamples < self._next_sample or counts.nevents < self._next_event:
            self._reread_header(self._conn.run(op_get_header()))
            return None
        if counts.nevents > self._next_event:
            self._pending.extend(self._events_until(counts.nevents))
        if counts.nsamples <= self._next_sample:
            return None
        first = self._next_sample
        try:
            block = self._conn.run(op_get_data(first, counts.nsamples - 1))
        except FieldTripRequestError:
            # the server's ring dropped them before we asked (we fell far behind): skip ahead,
            # the timestamps show the gap
            logger.warning(
                "FieldTrip samples %d..%d were dropped by the server before they could be read.",
                first,
                counts.nsamples - 1,
            )
            self._next_sample = counts.nsamples
            return None
        receipt = local_clock()
        assert self._clock is not None and self._header is not None
        if block.shape[1] != self._header.nchans:
            # a new header was put and filled past our position before we noticed the reset
            self._reread_header(self._conn.run(op_get_header()))
            self._fail(
                f"The FieldTrip buffer at {self.source_id} now sends {block.shape[1]} channels "
                f"instead of {self._header.nchans}. Restart the session to decode the new stream."
            )
        ts = self._clock.stamp(first, block.shape[0], receipt)
        self._next_sample = first + block.shape[0]
        self._last_data = receipt
        markers = [
            event_to_marker(e, self._clock.time_of(e.sample if e.sample >= 0 else first))
            for e in self._pending
        ]
        self._pending.clear()
        data = block if block.dtype.kind == "f" else block.astype(np.float64)
        return Chunk(data, ts, receipt, 0.0, markers)

    def _events_until(self, nevents: int) -> list[Event]:
        try:
            events = self._conn.run(op_get_events(self._next_event, nevents - 1))
        except FieldTripRequestError:
            logger.warning(
                "FieldTrip events %d..%d were dropped by the server before they could be read.",
                self._next_event,
                nevents - 1,
            )
            events = []
        self._next_event = nevents
        return events

    def _reread_header(self, header: Header) -> None:
        old = self._header
        assert old is not None and self._clock is not None
        was = (old.nchans, old.channel_names, old.fsample)
        now = (header.nchans, header.channel_names, header.fsample)
        if was != now:
            self._fail(
                f"The FieldTrip buffer at {self.source_id} got a new header: "
                f"{old.nchans} -> {header.nchans} channels, {old.fsample:g} -> "
                f"{header.fsample:g} Hz{'' if was[1] == now[1] else ', other channel names'}. "
                "The pipeline was built for the old layout; restart the session to decode the "
                "new stream."
            )
        if header.nsamples < self._next_sample:
            logger.warning(
                "FieldTrip buffer at %s was reset (new header, flush or restart); reading on "
                "from the new samples.",
                self.source_id,
            )
            self._clock.restart()
            backlog = math.ceil(MAX_BACKLOG_S * header.fsample)
            self._next_sample = max(0, header.nsamples - backlog)
            self._pending.clear()  # their sample numbers belong to the old data
        if header.nevents < self._next_event:
            self._next_event = 0
        self._header = header
