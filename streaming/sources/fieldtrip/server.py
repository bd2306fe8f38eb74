"""An asyncio FieldTrip buffer server faithful to the reference implementation.

It holds a bounded ring of samples and of events and answers WAIT_DAT only when there is
something new (or at its timeout); tests, the demo and ``neurocast buffer`` use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from neurocast.streaming.sources.fieldtrip.client import MAX_MESSAGE_BYTES, set_nodelay
from neurocast.streaming.sources.fieldtrip.events import Event, pack_events, parse_events
from neurocast.streaming.sources.fieldtrip.header import Header, pack_header, parse_header
from neurocast.streaming.sources.fieldtrip.protocol import (
    AUTO_SAMPLE,
    MESSAGE_DEF_SIZE,
    NORESPONSE,
    REPLIES,
    UNTIL_NEWEST,
    ByteOrder,
    Command,
    Counts,
    FieldTripProtocolError,
    pack_counts,
    pack_data,
    pack_message,
    parse_data,
    parse_message_def,
    parse_selection,
    parse_wait_request,
)

logger = logging.getLogger(__name__)


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
        set_nodelay(writer.get_extra_info("socket"))
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
        # let the woken WAIT_DAT requests answer (and any GET_DAT pipelined behind them) before
        # the writer's own reply: the readers' latency is what the buffer is for
        await asyncio.sleep(0)

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
        a, n = sel.start % cap, len(sel)
        if a + n <= cap:  # one slice, no index array: the usual newest-chunk read
            return pack_data(self._ring[a : a + n], order)
        return pack_data(np.concatenate([self._ring[a:], self._ring[: a + n - cap]]), order)

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
                # wake at least every second to notice a client that went away meanwhile;
                # asyncio.timeout, unlike wait_for, adds no task per wait
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(remaining, 1.0)):
                        await self._cond.wait()
        self._need_header()
        return pack_counts(Counts(self._nsamples, self._nevents), order)
