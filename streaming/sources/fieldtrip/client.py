"""Clients of a FieldTrip buffer: an asyncio client and a blocking connection.

Both send one request at a time over one connection, set ``TCP_NODELAY`` (with Nagle's
algorithm and delayed acknowledgements a request-reply exchange can stall about 40 ms) and
share one retry rule: when the connection drops, GET and WAIT_DAT requests are retried once
on a new connection; PUT and FLUSH requests raise :class:`FieldTripConnectionError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

from numpy.typing import ArrayLike, NDArray

from neurocast.streaming.sources.fieldtrip.events import Event
from neurocast.streaming.sources.fieldtrip.header import Header
from neurocast.streaming.sources.fieldtrip.operations import (
    Operation,
    op_flush,
    op_get_data,
    op_get_events,
    op_get_header,
    op_put_data,
    op_put_events,
    op_put_header,
    op_wait_data,
)
from neurocast.streaming.sources.fieldtrip.protocol import (
    DEFAULT_PORT,
    MESSAGE_DEF_SIZE,
    UNTIL_NEWEST,
    Counts,
    FieldTripConnectionError,
    FieldTripProtocolError,
    FieldTripRequestError,
    MessageDef,
    parse_message_def,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Largest reply a client accepts (the reference server's ring holds at most 512 MiB).
MAX_MESSAGE_BYTES = 1 << 30


def set_nodelay(sock: socket.socket | Any) -> None:
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
        set_nodelay(writer.get_extra_info("socket"))
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


class BlockingConnection:
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
        set_nodelay(sock)
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

    def run_pipelined(self, ops: Sequence[Operation[Any]]) -> list[Any | FieldTripRequestError]:
        """Send several idempotent requests at once, then read their replies in order.

        The server answers them one after the other without waiting for this client, which
        saves a round trip per extra request (e.g. WAIT_DAT then GET_DAT up to the newest
        sample: the data leave as soon as the wait ends).

        Returns
        -------
        results : list
            Per request, its result or the :class:`FieldTripRequestError` of its error reply
            (returned, not raised, so that one refusal does not hide the other replies).

        Raises
        ------
        FieldTripConnectionError
            If the connection drops twice, or times out.
        FieldTripProtocolError
            If a reply is malformed.
        """
        if not all(op.idempotent and op.expects_reply for op in ops):
            raise ValueError("Only idempotent requests that expect a reply can be pipelined.")
        while True:
            fresh = self._sock is None
            self.connect()
            try:
                return self._exchange_all(ops)
            except FieldTripProtocolError:
                self.drop()
                raise
            except (OSError, EOFError) as exc:
                self.drop()
                if self._closed:
                    raise FieldTripConnectionError("This FieldTrip connection was closed.") from exc
                if fresh or isinstance(exc, TimeoutError):
                    raise _lost(ops[0], self.host, self.port, exc) from exc

    def _exchange_all(self, ops: Sequence[Operation[Any]]) -> list[Any | FieldTripRequestError]:
        sock = self._sock
        assert sock is not None
        sock.settimeout(self.timeout_s + max(op.wait_s for op in ops))
        sock.sendall(b"".join(op.request() for op in ops))
        results: list[Any | FieldTripRequestError] = []
        for op in ops:
            mdef = parse_message_def(self._recv(sock, MESSAGE_DEF_SIZE))
            _check_reply_size(mdef, MAX_MESSAGE_BYTES)
            body = self._recv(sock, mdef.bufsize)
            try:
                results.append(op.result(mdef, body))
            except FieldTripRequestError as exc:
                results.append(exc)
        return results

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
