"""FieldTrip buffer: protocol layer, server, asyncio client, blocking writer and source.

Everything runs on loopback against our own server.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from collections.abc import Iterator

import mne
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mne.io.constants import FIFF

from neurocast.streaming.engine.ring import RingBuffer
from neurocast.streaming.sources.base import Marker, SourceError, StreamInfo, local_clock
from neurocast.streaming.sources.fieldtrip.client import FieldTripClient
from neurocast.streaming.sources.fieldtrip.events import Event, pack_events, parse_events
from neurocast.streaming.sources.fieldtrip.header import (
    Header,
    HeaderChunk,
    pack_header,
    parse_header,
)
from neurocast.streaming.sources.fieldtrip.metadata import (
    guess_channel_type,
    header_from_stream_info,
    is_neuromag,
    stream_info_from_header,
)
from neurocast.streaming.sources.fieldtrip.protocol import (
    UNTIL_NEWEST,
    ChunkType,
    Command,
    Counts,
    DataType,
    FieldTripConnectionError,
    FieldTripProtocolError,
    FieldTripRequestError,
    pack_counts,
    pack_data,
    pack_message,
    pack_selection,
    pack_wait_request,
    parse_counts,
    parse_data,
    parse_message_def,
    parse_selection,
    parse_wait_request,
    split_message,
)
from neurocast.streaming.sources.fieldtrip.server import FieldTripServer
from neurocast.streaming.sources.fieldtrip.source import FieldTripSource, _SampleClock
from neurocast.streaming.sources.fieldtrip.writer import FieldTripWriter
from neurocast.streaming.sources.open import open_source
from neurocast.streaming.sources.specs import FieldTripSpec

pytestmark = pytest.mark.timeout(60)

ORDERS = ("<", ">")
ALL_TYPES = list(DataType)


def _example(data_type: DataType, shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if data_type == DataType.CHAR:
        return rng.integers(0, 256, shape).astype(np.uint8).view("S1")
    dtype = data_type.dtype()
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)


def _names(n: int) -> list[str]:
    return [f"EEG {i + 1:03d}" for i in range(n)]


# --------------------------------------------------------------------------- protocol layer


@pytest.mark.parametrize("order", ORDERS)
def test_message_def_detects_byte_order(order):
    msg = pack_message(Command.GET_DAT, b"12345678", order)
    mdef, body = split_message(msg)
    assert (mdef.command, mdef.bufsize, mdef.order, body) == (
        Command.GET_DAT,
        8,
        order,
        b"12345678",
    )


def test_message_def_rejects_other_protocols():
    with pytest.raises(FieldTripProtocolError, match="version field"):
        parse_message_def(b"GET / HTTP/1.1\r\n")
    with pytest.raises(FieldTripProtocolError, match="Truncated"):
        parse_message_def(b"\x01\x00")
    with pytest.raises(FieldTripProtocolError, match="declares 8 payload bytes but 3"):
        split_message(pack_message(Command.GET_DAT, b"12345678")[:11])
    with pytest.raises(FieldTripProtocolError, match="extra bytes"):
        split_message(pack_message(Command.GET_HDR) + b"x")


@pytest.mark.parametrize("order", ORDERS)
def test_header_round_trip_with_chunks(order):
    res = np.array([1e-6, 2e-6, 3e-6])
    header = Header.build(
        512.0,
        DataType.INT16,
        ["Fz", "Cz", "Pz"],
        chunks=[
            HeaderChunk(ChunkType.RESOLUTIONS, res.astype("<f8").tobytes()),
            HeaderChunk(ChunkType.NEUROMAG_HEADER, b"\x00\x01FIF bytes"),
            HeaderChunk(ChunkType.ASCII_KEYVAL, b"key\0value\0\0"),
        ],
    )
    back = parse_header(pack_header(replace_counts(header, 7, 2), order), order)
    assert back.channel_names == ["Fz", "Cz", "Pz"]
    assert (back.nchans, back.fsample, back.data_type) == (3, 512.0, DataType.INT16)
    assert (back.nsamples, back.nevents) == (7, 2)
    assert back.neuromag_header == b"\x00\x01FIF bytes"
    np.testing.assert_array_equal(back.resolutions, res)
    assert back.chunks == header.chunks


def replace_counts(header: Header, nsamples: int, nevents: int) -> Header:
    return Header(header.nchans, header.fsample, header.data_type, nsamples, nevents, header.chunks)


def test_big_endian_resolutions_are_swapped_on_the_wire():
    header = Header.build(
        100.0,
        DataType.FLOAT32,
        ["a"],
        chunks=[HeaderChunk(ChunkType.RESOLUTIONS, np.array([0.5]).astype("<f8").tobytes())],
    )
    wire = pack_header(header, ">")
    assert np.array([0.5]).astype(">f8").tobytes() in wire


def test_header_validation_is_clear():
    with pytest.raises(FieldTripProtocolError, match="2 names but the header declares 3"):
        Header(3, 100.0, DataType.FLOAT32, chunks=(HeaderChunk(1, b"a\0b\0"),))
    with pytest.raises(FieldTripProtocolError, match="at least one channel"):
        Header(0, 100.0, DataType.FLOAT32)
    with pytest.raises(FieldTripProtocolError, match="positive and finite"):
        Header(1, float("nan"), DataType.FLOAT32)
    with pytest.raises(FieldTripProtocolError, match="Unknown data type 11"):
        Header(1, 100.0, 11)


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("data_type", ALL_TYPES)
def test_data_round_trip_every_type(data_type, order):
    x = _example(data_type, (5, 3))
    back = parse_data(pack_data(x, order), order)
    assert back.dtype == data_type.dtype() and back.shape == (5, 3)
    np.testing.assert_array_equal(back, x)


def test_data_type_mapping_refuses_unknown_dtypes():
    with pytest.raises(ValueError, match="no data type for numpy dtype bool"):
        pack_data(np.zeros((2, 2), bool))
    with pytest.raises(ValueError, match="2-D"):
        pack_data(np.zeros(3, np.float32))


@pytest.mark.parametrize("order", ORDERS)
def test_events_round_trip(order):
    events = [
        Event("stim", "face", 10, -5, 20),
        Event("trigger", 5, 11),
        Event(np.array([1.5, 2.5], np.float32), np.array([7], np.uint16), 12),
        Event("", "plain", 0),
        Event("name", "\udcff\udcfe raw bytes", 1),
    ]
    back = parse_events(pack_events(events, order), order)
    assert back == events
    assert back[1].value.dtype == np.int32  # a Python int travels as int32
    assert [e.label for e in back[:2]] == ["stim/face", "trigger/5"]


def test_event_validation():
    with pytest.raises(ValueError, match="bool"):
        Event("t", True)
    with pytest.raises(ValueError, match="int32"):
        Event("t", "v", sample=2**31)
    with pytest.raises(ValueError, match="1-D"):
        Event("t", np.zeros((2, 2)))
    with pytest.raises(ValueError, match="cannot be encoded as UTF-8"):
        pack_events([Event("t", "\ud800")])
    with pytest.raises(ValueError, match="NUL byte"):
        Header.build(100.0, DataType.FLOAT32, ["a\0b"])


@pytest.mark.parametrize("order", ORDERS)
def test_small_bodies_round_trip(order):
    assert parse_counts(pack_counts(Counts(5, 6), order), order) == (5, 6)
    assert parse_wait_request(pack_wait_request(1, 2, 3, order), order) == ((1, 2), 3)
    assert parse_selection(pack_selection(4, UNTIL_NEWEST, order), order) == (4, UNTIL_NEWEST)
    assert parse_selection(b"", order) is None
    with pytest.raises(FieldTripProtocolError, match="12 bytes"):
        parse_wait_request(b"123", order)
    with pytest.raises(FieldTripProtocolError, match="0 or 8 bytes"):
        parse_selection(b"12345", order)


# --------------------------------------------------------------------------- parser fuzzing

PARSERS = [
    parse_header,
    parse_data,
    parse_events,
    parse_counts,
    parse_wait_request,
    parse_selection,
]


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=300), order=st.sampled_from(ORDERS))
def test_fuzz_random_bytes_only_raise_protocol_errors(raw, order):
    for parse in [*PARSERS, lambda b, o: split_message(b), lambda b, o: parse_message_def(b)]:
        with contextlib.suppress(FieldTripProtocolError):
            parse(raw, order)


_headers = st.builds(
    lambda names, fs, dt: Header.build(fs, dt, names),
    st.lists(
        st.text(st.characters(blacklist_characters="\0", blacklist_categories=["Cs"]), max_size=6),
        min_size=1,
        max_size=5,
    ),
    st.floats(1.0, 1e5, width=32),
    st.sampled_from(ALL_TYPES),
)
_events = st.lists(
    st.builds(
        Event,
        st.text(st.characters(blacklist_categories=["Cs"]), max_size=5),
        st.one_of(
            st.text(st.characters(blacklist_categories=["Cs"]), max_size=5),
            st.integers(-(2**31), 2**31 - 1),
            st.floats(width=64),
        ),
        st.integers(-1, 1000),
    ),
    min_size=1,
    max_size=4,
)


def _truncated(wire: bytes, data: st.DataObject) -> bytes:
    """``wire`` cut short at a length drawn by hypothesis."""
    return wire[: data.draw(st.integers(0, len(wire) - 1))]


def _mutated(wire: bytes, data: st.DataObject) -> bytes:
    """``wire`` with one byte, drawn by hypothesis, XOR-ed with a non-zero value."""
    pos = data.draw(st.integers(0, len(wire) - 1))
    mutated = bytearray(wire)
    mutated[pos] ^= data.draw(st.integers(1, 255))
    return bytes(mutated)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(header=_headers, order=st.sampled_from(ORDERS), data=st.data())
def test_fuzz_truncated_and_mutated_headers(header, order, data):
    wire = pack_header(header, order)
    with pytest.raises(FieldTripProtocolError):
        parse_header(_truncated(wire, data), order)
    with contextlib.suppress(FieldTripProtocolError):
        parse_header(_mutated(wire, data), order)


@settings(max_examples=150, deadline=None)
@given(
    data_type=st.sampled_from(ALL_TYPES),
    n=st.integers(0, 6),
    c=st.integers(1, 4),
    order=st.sampled_from(ORDERS),
    data=st.data(),
)
def test_fuzz_truncated_and_mutated_data(data_type, n, c, order, data):
    wire = pack_data(_example(data_type, (n, c)), order)
    with pytest.raises(FieldTripProtocolError):
        parse_data(_truncated(wire, data), order)
    with contextlib.suppress(FieldTripProtocolError):
        parse_data(_mutated(wire, data), order)


@settings(max_examples=150, deadline=None)
@given(events=_events, order=st.sampled_from(ORDERS), data=st.data())
def test_fuzz_truncated_and_mutated_events(events, order, data):
    wire = pack_events(events, order)
    try:
        prefix: list[Event] | None = parse_events(_truncated(wire, data), order)
    except FieldTripProtocolError:
        prefix = None
    if prefix is not None:  # a cut exactly between two events is a shorter valid array
        assert len(prefix) < len(events) and prefix == events[: len(prefix)]
    with contextlib.suppress(FieldTripProtocolError):
        parse_events(_mutated(wire, data), order)


@settings(max_examples=100, deadline=None)
@given(body=st.binary(max_size=40), delta=st.integers(1, 2**32 - 1), order=st.sampled_from(ORDERS))
def test_fuzz_wrong_bufsize(body, delta, order):
    wire = bytearray(pack_message(Command.PUT_DAT, body, order))
    bufsize = (len(body) + delta) % 2**32
    wire[4:8] = struct.pack(order + "I", bufsize)
    with pytest.raises(FieldTripProtocolError, match="payload bytes"):
        split_message(bytes(wire))


# --------------------------------------------------------------------------- server + client


@pytest.fixture
async def server():
    srv = FieldTripServer(max_samples=1000, max_events=10)
    await srv.start()
    yield srv
    await srv.stop()


async def test_every_command_round_trip(server):
    async with FieldTripClient("127.0.0.1", server.port) as ft:
        with pytest.raises(FieldTripRequestError, match="no header has been written"):
            await ft.get_header()
        with pytest.raises(FieldTripRequestError, match="GET_DAT"):
            await ft.get_data()
        with pytest.raises(FieldTripRequestError, match="WAIT_DAT"):
            await ft.wait_data(0, 0, 10)
        with pytest.raises(FieldTripRequestError, match="FLUSH_DAT"):
            await ft.flush_data()
        header = Header.build(250.0, DataType.FLOAT32, ["Fz", "Cz"])
        await ft.put_header(header)
        got = await ft.get_header()
        assert got.channel_names == ["Fz", "Cz"] and (got.nsamples, got.nevents) == (0, 0)
        x = _example(DataType.FLOAT32, (30, 2))
        await ft.put_data(x[:10])
        await ft.put_data(x[10:30], noresponse=True)
        await ft.put_events([Event("stim", "a", 3), Event("stim", "b")])
        await ft.put_events(Event("resp", 2, 5), noresponse=True)
        assert await ft.poll() == (30, 3)
        np.testing.assert_array_equal(await ft.get_data(), x)
        np.testing.assert_array_equal(await ft.get_data(5, 12), x[5:12])
        np.testing.assert_array_equal(await ft.get_data(25), x[25:])
        events = await ft.get_events()
        assert events == [Event("stim", "a", 3), Event("stim", "b", 30), Event("resp", 2, 5)]
        assert await ft.get_events(1, 2) == events[1:2]
        got = await ft.get_header()
        assert (got.nsamples, got.nevents) == (30, 3)
        await ft.flush_events()
        assert await ft.poll() == (30, 0)
        with pytest.raises(FieldTripRequestError, match="GET_EVT"):
            await ft.get_events()
        await ft.flush_data()
        assert await ft.poll() == (0, 0)
        await ft.flush_header()
        with pytest.raises(FieldTripRequestError):
            await ft.get_header()
        with pytest.raises(ValueError, match="end is exclusive"):
            await ft.get_data(5, 5)


@pytest.mark.parametrize("data_type", ALL_TYPES)
async def test_server_stores_every_data_type(server, data_type):
    async with FieldTripClient("127.0.0.1", server.port) as ft:
        await ft.put_header(Header.build(100.0, data_type, _names(3)))
        x = _example(data_type, (7, 3), seed=int(data_type))
        await ft.put_data(x)
        back = await ft.get_data()
        assert back.dtype == data_type.dtype()
        np.testing.assert_array_equal(back, x)


async def test_put_data_mismatch_is_refused_and_loses_nothing(server):
    async with FieldTripClient("127.0.0.1", server.port) as ft:
        await ft.put_header(Header.build(100.0, DataType.FLOAT32, _names(2)))
        await ft.put_data(np.ones((4, 2), np.float32))
        with pytest.raises(FieldTripRequestError, match="channel count or data type"):
            await ft.put_data(np.ones((4, 3), np.float32))
        with pytest.raises(FieldTripRequestError):
            await ft.put_data(np.ones((4, 2), np.float64))
        with pytest.raises(FieldTripRequestError, match="larger than the server's ring"):
            await ft.put_data(np.ones((1001, 2), np.float32))
        assert await ft.poll() == (4, 0)


async def test_wait_dat_returns_as_soon_as_samples_arrive(server):
    async with (
        FieldTripClient("127.0.0.1", server.port) as reader,
        FieldTripClient("127.0.0.1", server.port) as writer,
    ):
        await writer.put_header(Header.build(100.0, DataType.FLOAT32, _names(1)))
        await writer.put_data(np.zeros((5, 1), np.float32))
        # a 60 s timeout: only an early answer lets this test finish
        waiting = asyncio.create_task(reader.wait_data(5, 0, 60_000))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        await writer.put_data(np.zeros((2, 1), np.float32))
        assert await waiting == (7, 0)


async def test_wait_dat_returns_when_events_arrive(server):
    async with (
        FieldTripClient("127.0.0.1", server.port) as reader,
        FieldTripClient("127.0.0.1", server.port) as writer,
    ):
        await writer.put_header(Header.build(100.0, DataType.FLOAT32, _names(1)))
        waiting = asyncio.create_task(reader.wait_data(0, 0, 60_000))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        await writer.put_events(Event("stim", "x"))
        assert await waiting == (0, 1)


async def test_wait_dat_times_out_with_the_current_counts(server):
    async with FieldTripClient("127.0.0.1", server.port) as ft:
        await ft.put_header(Header.build(100.0, DataType.FLOAT32, _names(1)))
        await ft.put_data(np.zeros((3, 1), np.float32))
        assert await ft.wait_data(3, 0, 30) == (3, 0)
        assert await ft.wait_data(2, 0, 60_000) == (3, 0)  # already above: immediate


async def test_many_concurrent_clients(server):
    n_clients, n_chunks = 12, 8
    x = _example(DataType.FLOAT32, (n_chunks * 5, 4))
    async with FieldTripClient("127.0.0.1", server.port) as writer:
        await writer.put_header(Header.build(100.0, DataType.FLOAT32, _names(4)))

        async def follow() -> np.ndarray:
            async with FieldTripClient("127.0.0.1", server.port) as ft:
                have, parts = 0, []
                while have < len(x):
                    counts = await ft.wait_data(have, 2**32 - 1, 10_000)
                    parts.append(await ft.get_data(have, counts.nsamples))
                    have = counts.nsamples
                return np.concatenate(parts)

        readers = [asyncio.create_task(follow()) for _ in range(n_clients)]
        # every reader is connected before the first sample is written (however long the
        # connections take on a busy machine): all of them must see the whole stream
        while server.n_connections < n_clients + 1:
            await asyncio.sleep(0.005)
        assert server.n_connections == n_clients + 1
        for k in range(n_chunks):
            await writer.put_data(x[5 * k : 5 * (k + 1)])
            await asyncio.sleep(0.002)
        for got in await asyncio.gather(*readers):
            np.testing.assert_array_equal(got, x)


async def test_ring_bound_old_samples_and_events_give_errors():
    srv = FieldTripServer(max_samples=100, max_events=5)
    await srv.start()
    try:
        async with FieldTripClient("127.0.0.1", srv.port) as ft:
            await ft.put_header(Header.build(100.0, DataType.INT32, _names(2)))
            x = np.arange(500, dtype=np.int32).reshape(250, 2)
            for a in range(0, 250, 50):
                await ft.put_data(x[a : a + 50])
            assert srv.capacity == 100
            with pytest.raises(FieldTripRequestError, match=r"samples 0\.\.9 are not available"):
                await ft.get_data(0, 10)
            with pytest.raises(FieldTripRequestError):
                await ft.get_data(149, 151)
            np.testing.assert_array_equal(await ft.get_data(150, 250), x[150:])
            np.testing.assert_array_equal(await ft.get_data(), x[150:])
            with pytest.raises(FieldTripRequestError):
                await ft.get_data(240, 251)  # not written yet
            await ft.put_events([Event("n", i, i) for i in range(8)])
            with pytest.raises(FieldTripRequestError):
                await ft.get_events(0, 2)
            assert [int(e.value[0]) for e in await ft.get_events()] == [3, 4, 5, 6, 7]
    finally:
        await srv.stop()


async def test_ring_byte_bound_with_many_channels():
    srv = FieldTripServer(max_samples=1000, max_bytes=4 * 300 * 10)
    await srv.start()
    try:
        async with FieldTripClient("127.0.0.1", srv.port) as ft:
            await ft.put_header(Header.build(100.0, DataType.FLOAT32, nchans=300))
            assert srv.capacity == 10
    finally:
        await srv.stop()


async def test_put_header_resets_data_and_events(server):
    async with FieldTripClient("127.0.0.1", server.port) as ft:
        await ft.put_header(Header.build(100.0, DataType.FLOAT32, _names(2)))
        await ft.put_data(np.ones((10, 2), np.float32))
        await ft.put_events(Event("a", "b"))
        await ft.put_header(Header.build(200.0, DataType.INT16, _names(3)))
        header = await ft.get_header()
        assert (header.nchans, header.fsample, header.nsamples, header.nevents) == (3, 200.0, 0, 0)
        with pytest.raises(FieldTripRequestError):
            await ft.get_data()
        with pytest.raises(FieldTripRequestError):
            await ft.get_events()
        await ft.put_data(np.ones((2, 3), np.int16))
        assert await ft.poll() == (2, 0)


def _raw_request(port: int, message: bytes) -> tuple[int, int, bytes, str]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(message)
        head = _recv_all(sock, 8)
        mdef = parse_message_def(head)
        return mdef.command, mdef.bufsize, _recv_all(sock, mdef.bufsize), mdef.order


def _recv_all(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        part = sock.recv(n - len(out))
        if not part:
            raise EOFError
        out += part
    return out


def test_byte_swapped_client_is_answered_in_its_own_order():
    res = np.array([0.25, 0.5])
    header = Header.build(
        1000.0,
        DataType.FLOAT64,
        ["a", "b"],
        chunks=[HeaderChunk(ChunkType.RESOLUTIONS, res.astype("<f8").tobytes())],
    )
    x = _example(DataType.FLOAT64, (6, 2))
    with FieldTripServer().serve_in_thread() as srv:
        port = srv.port
        cmd, *_ = _raw_request(port, pack_message(Command.PUT_HDR, pack_header(header, ">"), ">"))
        assert cmd == Command.PUT_OK
        cmd, *_ = _raw_request(port, pack_message(Command.PUT_DAT, pack_data(x, ">"), ">"))
        assert cmd == Command.PUT_OK
        ev = pack_events([Event("big", 9, 1)], ">")
        assert _raw_request(port, pack_message(Command.PUT_EVT, ev, ">"))[0] == Command.PUT_OK
        cmd, _, body, order = _raw_request(port, pack_message(Command.GET_DAT, b"", ">"))
        assert (cmd, order) == (Command.GET_OK, ">")
        np.testing.assert_array_equal(parse_data(body, ">"), x)
        # a native client sees the same values
        cmd, _, body, order = _raw_request(port, pack_message(Command.GET_HDR))
        back = parse_header(body, order)
        np.testing.assert_array_equal(back.resolutions, res)
        cmd, _, body, order = _raw_request(port, pack_message(Command.GET_EVT))
        assert parse_events(body, order) == [Event("big", 9, 1)]
        cmd, _, body, order = _raw_request(
            port, pack_message(Command.WAIT_DAT, pack_wait_request(0, 0, 0, ">"), ">")
        )
        assert parse_counts(body, order) == (6, 1) and order == ">"


def test_malformed_bodies_of_known_commands_get_error_replies():
    with FieldTripServer().serve_in_thread() as srv:
        port = srv.port
        good = Header.build(100.0, DataType.FLOAT32, _names(1))
        assert _raw_request(port, pack_message(Command.PUT_HDR, pack_header(good)))[0] == (
            Command.PUT_OK
        )
        for command, body, err in [
            (Command.PUT_HDR, b"\x01\x00", Command.PUT_ERR),
            (Command.PUT_DAT, b"\x00" * 7, Command.PUT_ERR),
            (Command.PUT_EVT, b"\xff" * 40, Command.PUT_ERR),
            (Command.GET_DAT, b"12345", Command.GET_ERR),
            (Command.GET_EVT, b"\x00" * 8, Command.GET_ERR),
            (Command.WAIT_DAT, b"\x00" * 5, Command.WAIT_ERR),
        ]:
            assert _raw_request(port, pack_message(command, body))[0] == err, command.name
        # the header survived all of that
        assert _raw_request(port, pack_message(Command.GET_HDR))[0] == Command.GET_OK


def test_server_sets_tcp_nodelay_and_so_do_clients():
    with FieldTripServer().serve_in_thread() as srv, FieldTripWriter("127.0.0.1", srv.port) as w:
        w.put_header(_stream(["Fz"], "eeg"))  # one exchange: the server has accepted us
        sock = w._conn._sock
        assert sock is not None
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        server_socks = [wr.get_extra_info("socket") for wr in srv._writers]
        assert server_socks
        assert all(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for s in server_socks)


@pytest.fixture(scope="module")
def garbage_server():
    srv = FieldTripServer()
    with srv.serve_in_thread():
        yield srv


_garbage = st.one_of(
    st.binary(min_size=1, max_size=64),
    # well-framed messages of random commands and bodies
    st.builds(
        lambda c, b, o: pack_message(c, b, o),
        st.integers(0, 0xFFFF),
        st.binary(max_size=48),
        st.sampled_from(ORDERS),
    ),
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(garbage=_garbage)
def test_fuzz_server_with_garbage_keeps_serving_others(garbage_server, garbage):
    port = garbage_server.port
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(garbage)
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while part := sock.recv(65536):  # the server answers, then closes on our EOF
            received += part
    while received:  # whatever came back is well-formed replies
        mdef = parse_message_def(received)
        assert Command(mdef.command).name.endswith(("_OK", "_ERR"))
        received = received[8 + mdef.bufsize :]
    cmd, _, _body, _order = _raw_request(port, pack_message(Command.GET_HDR))
    assert cmd in (Command.GET_OK, Command.GET_ERR)


async def test_client_reconnects_after_server_restart():
    first = FieldTripServer()
    await first.start()
    port = first.port
    ft = FieldTripClient("127.0.0.1", port)
    try:
        await ft.put_header(Header.build(100.0, DataType.FLOAT32, _names(1)))
        await first.stop()
        with pytest.raises(FieldTripConnectionError, match="Cannot connect"):
            await ft.get_header()
        second = FieldTripServer(port=port)
        await second.start()
        try:
            with pytest.raises(FieldTripRequestError):
                await ft.get_header()  # reconnected; the new server has no header yet
            await ft.put_header(Header.build(50.0, DataType.FLOAT32, _names(2)))
            assert (await ft.get_header()).nchans == 2
            # a connection dropped while idle is replaced transparently for reads
            await second.stop()
            third = FieldTripServer(port=port)
            await third.start()
            try:
                with pytest.raises(FieldTripRequestError, match="no header"):
                    await ft.get_header()
            finally:
                await third.stop()
        finally:
            await second.stop()
    finally:
        await ft.close()


async def test_server_closes_only_the_offending_connection(server):
    async with FieldTripClient("127.0.0.1", server.port) as good:
        await good.put_header(Header.build(100.0, DataType.FLOAT32, _names(1)))
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"\x07\x07 not the protocol")
        assert await reader.read() == b""  # closed without a reply
        writer.close()
        big = struct.pack("<HHI", 1, Command.PUT_DAT, 2**31)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(big)
        assert await reader.read() == b""
        writer.close()
        assert (await good.get_header()).nchans == 1


# --------------------------------------------------------------------------- writer and metadata


def _stream(names, types, sfreq=250.0, simulated=False) -> StreamInfo:
    return StreamInfo("unit", mne.create_info(names, sfreq, types), simulated=simulated)


def test_writer_checks_its_input():
    with FieldTripServer().serve_in_thread() as srv, FieldTripWriter("127.0.0.1", srv.port) as w:
        with pytest.raises(ValueError, match="before putting samples"):
            w.put_data(np.zeros((2, 2)))
        with pytest.raises(ValueError, match="before putting events"):
            w.put_events([Marker(0.0, "x")])
        w.put_header(_stream(["Fz", "Cz"], "eeg"))
        with pytest.raises(ValueError, match="declares 2 channels"):
            w.put_data(np.zeros((2, 3)))
        assert w.put_data(np.zeros((4, 2))) == 4


def test_writer_places_markers_on_their_samples():
    with FieldTripServer().serve_in_thread() as srv, FieldTripWriter("127.0.0.1", srv.port) as w:
        w.put_header(_stream(["Fz"], "eeg", sfreq=100.0))
        w.put_data(np.zeros((10, 1)), timestamps=5.0 + np.arange(10) / 100.0)
        w.put_data(np.zeros((10, 1)))
        w.put_events([Marker(5.13, "image/42"), Marker(5.0, "start"), Event("raw", 1, 2)])

        async def read() -> list[Event]:
            async with FieldTripClient("127.0.0.1", srv.port) as ft:
                return await ft.get_events()

        events = asyncio.run(read())
    assert events == [Event("image", "42", 13), Event("", "start", 0), Event("raw", 1, 2)]


def test_unreachable_writer_says_what_to_do():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(FieldTripConnectionError, match="Start the buffer server"):
        FieldTripWriter("127.0.0.1", port, timeout_s=1.0).connect()


def _neuromag_like_info() -> mne.Info:
    info = mne.create_info(
        ["MEG 0113", "MEG 0112", "MEG 0111", "EEG 001"], 600.0, ["grad", "grad", "mag", "eeg"]
    )
    coils = [FIFF.FIFFV_COIL_VV_PLANAR_T1, FIFF.FIFFV_COIL_VV_PLANAR_T1, FIFF.FIFFV_COIL_VV_MAG_T3]
    with info._unlock():
        for ch, coil, k in zip(info["chs"], coils, range(3), strict=False):
            ch["coil_type"] = coil
            ch["loc"] = np.arange(12, dtype=float) * 0.01 + k
        info["chs"][3]["loc"][:3] = [0.05, 0.02, 0.09]
        info["bads"] = ["MEG 0112"]
    return info


def test_neuromag_info_travels_exactly_in_chunk_8():
    info = _neuromag_like_info()
    assert is_neuromag(info)
    header = header_from_stream_info(StreamInfo("meg", info, simulated=True))
    assert header.neuromag_header is not None
    stream = stream_info_from_header(parse_header(pack_header(header)), source_id="x")
    assert stream.simulated and stream.name == "meg"
    assert stream.ch_names == info["ch_names"]
    assert stream.info["bads"] == ["MEG 0112"]
    for a, b in zip(stream.info["chs"], info["chs"], strict=True):
        assert a["coil_type"] == b["coil_type"] and a["kind"] == b["kind"]
        np.testing.assert_allclose(a["loc"], b["loc"], rtol=1e-6)


def test_info_without_neuromag_chunk_is_guessed_from_names():
    names = ["MEG 0113", "MEG 0111", "EEG 001", "Fz", "EOG 061", "STI 014", "weird"]
    header = header_from_stream_info(_stream(names, "misc"))
    assert header.neuromag_header is None
    stream = stream_info_from_header(header, source_id="x")
    assert stream.info.get_channel_types() == ["grad", "mag", "eeg", "eeg", "eog", "stim", "misc"]
    assert guess_channel_type("MEG 0122") == "grad"
    nameless = stream_info_from_header(Header(2, 100.0, DataType.FLOAT32), source_id="x")
    assert nameless.ch_names == ["CH001", "CH002"] and not nameless.simulated


def test_unreadable_neuromag_chunk_falls_back_to_names():
    header = Header.build(
        100.0, DataType.FLOAT32, ["EEG 001"], chunks=[HeaderChunk(8, b"not a fif file")]
    )
    stream = stream_info_from_header(header, source_id="x")
    assert stream.ch_names == ["EEG 001"] and stream.info.get_channel_types() == ["eeg"]


# --------------------------------------------------------------------------- source


def _spec(port: int, **kw) -> FieldTripSpec:
    kw.setdefault("open_timeout_s", 2.0)
    return FieldTripSpec(host="127.0.0.1", port=port, **kw)


@contextlib.contextmanager
def _opened_source(
    stream: StreamInfo, **spec_kw
) -> Iterator[tuple[FieldTripServer, FieldTripWriter, FieldTripSource]]:
    """A server in a thread, a writer that put ``stream``'s header, and a source opened on it."""
    with FieldTripServer().serve_in_thread() as srv, FieldTripWriter("127.0.0.1", srv.port) as w:
        w.put_header(stream)
        source = FieldTripSource(_spec(srv.port, **spec_kw))
        source.open()
        yield srv, w, source


def _read_until(source: FieldTripSource, n: int, limit_s: float = 10.0):
    chunks, have = [], 0
    deadline = time.monotonic() + limit_s
    while have < n and time.monotonic() < deadline:
        c = source.read(0.2)
        if c is not None:
            chunks.append(c)
            have += c.data.shape[0]
    assert have >= n, f"only {have} of {n} samples arrived"
    return chunks


def test_source_reads_samples_and_markers():
    x = _example(DataType.FLOAT32, (40, 3))
    with FieldTripServer().serve_in_thread() as srv, FieldTripWriter("127.0.0.1", srv.port) as w:
        w.put_header(_stream(["Fz", "Cz", "STI 014"], ["eeg", "eeg", "stim"], sfreq=200.0))
        w.put_data(x[:10])  # before open: not read, the source starts live
        source = open_source(_spec(srv.port))
        assert isinstance(source, FieldTripSource)
        info = source.open()
        assert info.ch_names == ["Fz", "Cz", "STI 014"] and info.sfreq == 200.0
        assert info.source_id == f"fieldtrip://127.0.0.1:{srv.port}"
        assert source.status == "running"
        w.put_data(x[10:25])
        w.put_events([Event("stim", "face", 12)])
        w.put_data(x[25:])
        chunks = _read_until(source, 30)
        data = np.concatenate([c.data for c in chunks])
        np.testing.assert_array_equal(data, x[10:])
        ts = np.concatenate([c.timestamps for c in chunks])
        np.testing.assert_allclose(np.diff(ts), 1 / 200.0, rtol=0, atol=1e-9)
        markers = [m for c in chunks for m in c.markers]
        assert [m.value for m in markers] == ["stim/face"]
        assert markers[0].timestamp == pytest.approx(ts[12 - 10], abs=1e-9)
        assert all(c.clock_offset == 0.0 for c in chunks)
        assert source.read(0.05) is None
        source.close()
        assert source.status == "stopped" and source.read(0.05) is None


def test_source_is_stalled_while_no_samples_arrive():
    with _opened_source(_stream(["Fz"], "eeg"), stall_after_s=0.1) as (_, w, source):
        assert source.read(0.15) is None
        assert source.status == "stalled"
        w.put_data(np.zeros((3, 1)))
        _read_until(source, 3)
        assert source.status == "running"
        source.close()


def test_source_open_fails_clearly_without_server_or_header():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(SourceError, match=r"No FieldTrip buffer header .* Start the buffer"):
        FieldTripSource(_spec(port, open_timeout_s=0.3)).open()
    with (
        FieldTripServer().serve_in_thread() as srv,
        pytest.raises(SourceError, match="no header has been written"),
    ):
        FieldTripSource(_spec(srv.port, open_timeout_s=0.3)).open()


def test_source_reports_stalled_when_server_restarts_then_resumes():
    x = _example(DataType.FLOAT32, (50, 2))
    stream = _stream(["Fz", "Cz"], "eeg", sfreq=500.0)
    first = FieldTripServer()
    with first.serve_in_thread():
        port = first.port
        with FieldTripWriter("127.0.0.1", port) as w:
            w.put_header(stream)
            source = FieldTripSource(_spec(port))
            source.open()
            w.put_data(x[:30])
            before = _read_until(source, 30)
    # the server is gone
    assert source.read(0.1) is None
    assert source.status == "stalled"
    assert source.read(0.1) is None and source.status == "stalled"
    with FieldTripServer(port=port).serve_in_thread():
        assert source.read(0.1) is None and source.status == "stalled"  # no header yet
        with FieldTripWriter("127.0.0.1", port) as w:
            w.put_header(stream)
            w.put_data(x[30:])
            after = _read_until(source, 20)
            assert source.status == "running"
    np.testing.assert_array_equal(np.concatenate([c.data for c in after]), x[30:])
    t_before = before[-1].timestamps[-1]
    assert after[0].timestamps[0] > t_before  # time never runs backwards across the restart
    source.close()


def test_source_fails_clearly_when_channel_count_changes():
    with _opened_source(_stream(["Fz", "Cz"], "eeg")) as (_, w, source):
        w.put_data(np.ones((5, 2)))
        _read_until(source, 5)
        w.put_header(_stream(["Fz", "Cz", "Pz"], "eeg"))
        w.put_data(np.ones((3, 3)))
        with pytest.raises(SourceError, match=r"2 -> 3 channels.*restart the session"):
            for _ in range(20):
                source.read(0.2)
        assert source.status == "failed"
        with pytest.raises(SourceError, match="2 -> 3 channels"):
            source.read(0.1)
        source.close()


def test_source_fails_when_a_new_rate_overtook_its_position():
    # same channels, another rate, more samples than were read: the counts never drop and the
    # blocks keep their width, so only reading the header again tells the streams apart
    with _opened_source(_stream(["Fz", "Cz"], "eeg")) as (_, w, source):
        w.put_data(np.ones((100, 2)))
        _read_until(source, 100)
        w.put_header(_stream(["Fz", "Cz"], "eeg", sfreq=500.0))
        w.put_data(np.ones((150, 2)))
        with pytest.raises(SourceError, match=r"250 -> 500 Hz.*restart the session"):
            deadline = time.monotonic() + 10.0
            while time.monotonic() < deadline:  # the header is read again within a second
                source.read(0.2)
        assert source.status == "failed"
        source.close()


def test_source_fails_when_a_new_header_was_filled_past_its_position():
    # the reset is invisible in the counts: the new block's width gives it away
    with _opened_source(_stream(["Fz", "Cz"], "eeg")) as (_, w, source):
        w.put_header(_stream(["Fz", "Cz", "Pz"], "eeg"))
        w.put_data(np.ones((3, 3)))
        with pytest.raises(SourceError, match="channels"):
            for _ in range(20):
                source.read(0.2)
        source.close()


def test_source_goes_on_after_a_reset_with_the_same_layout():
    stream = _stream(["Fz"], "eeg", sfreq=100.0)
    with _opened_source(stream) as (_, w, source):
        w.put_data(np.zeros((20, 1)))
        first = _read_until(source, 20)
        w.put_header(stream)  # the writer restarted its stream
        w.put_data(np.ones((5, 1)))
        second = _read_until(source, 5)
        np.testing.assert_array_equal(np.concatenate([c.data for c in second]), np.ones((5, 1)))
        assert second[0].timestamps[0] > first[-1].timestamps[-1]
        source.close()


def test_source_follows_flushed_events_and_samples():
    async def flush(port: int, what: str) -> None:
        async with FieldTripClient("127.0.0.1", port) as ft:
            await (ft.flush_events() if what == "events" else ft.flush_data())

    with _opened_source(_stream(["Fz"], "eeg", sfreq=100.0)) as (srv, w, source):
        w.put_events([Event("a", "1", 2)])
        w.put_data(np.zeros((5, 1)))
        assert [m.value for c in _read_until(source, 5) for m in c.markers] == ["a/1"]
        asyncio.run(flush(srv.port, "events"))
        assert source.read(0.05) is None  # notices the event count went down
        w.put_events([Event("b", "2", 6)])
        w.put_data(np.zeros((3, 1)))
        chunks = _read_until(source, 3)
        assert [m.value for c in chunks for m in c.markers] == ["b/2"]
        asyncio.run(flush(srv.port, "data"))
        assert source.read(0.05) is None  # notices the sample count went down
        w.put_data(np.ones((4, 1)))
        chunks = _read_until(source, 4)
        np.testing.assert_array_equal(np.concatenate([c.data for c in chunks]), np.ones((4, 1)))
        assert source.status == "running"
        source.close()


def test_source_clock_with_bursts_is_regular_and_never_ahead_of_receipt():
    sfreq, block, n_blocks = 1000.0, 10, 5
    with _opened_source(_stream(["Fz", "Cz"], "eeg", sfreq=sfreq)) as (_, w, source):
        chunks = []
        for burst in range(4):
            # 50 ms of samples delivered at once, 60 ms or more after the previous burst was
            # received: each burst arrives after the clock predicts, however the threads are
            # scheduled, so the clock never has to move back
            if chunks:
                time.sleep(max(0.0, chunks[-1].receipt_time + 0.06 - local_clock()))
            for _ in range(n_blocks):
                w.put_data(np.full((block, 2), burst, np.float32))
            got = _read_until(source, block * n_blocks)
            # every block was written before the read: the burst comes as one chunk
            assert [c.data.shape[0] for c in got] == [block * n_blocks]
            chunks += got
        source.close()
    ring = RingBuffer(2, 1000, sfreq)
    for c in chunks:
        assert c.timestamps[-1] <= c.receipt_time
        np.testing.assert_allclose(np.diff(c.timestamps), 1 / sfreq, rtol=0, atol=1e-9)
        ring.write(c.data, c.timestamps)
    ts = np.concatenate([c.timestamps for c in chunks])
    assert ts.shape == (200,)
    # one regular clock across the bursts: no backward step, no gap, nothing for the ring
    # to report
    np.testing.assert_allclose(np.diff(ts), 1 / sfreq, rtol=0, atol=1e-9)
    assert ring.issues == []


def test_sample_clock_moves_origin_back_when_samples_arrive_early():
    clock = _SampleClock(100.0)
    p = 0.01
    a = clock.stamp(0, 10, receipt=1.0)  # the first chunk arrived late
    assert a[-1] == pytest.approx(1.0)
    b = clock.stamp(10, 10, receipt=1.0 + 5 * p)  # its successor arrives "too early"
    assert b[-1] == pytest.approx(1.0 + 5 * p)  # never stamped after its receipt
    assert b[0] < a[-1]  # the one backward step the ring buffer reports
    c = clock.stamp(20, 10, receipt=1.0 + 30 * p)  # late again: the origin stays
    np.testing.assert_allclose(np.diff(np.concatenate([b, c])), p)
    assert clock.time_of(25) == pytest.approx(c[5])
    clock.restart()
    d = clock.stamp(0, 5, receipt=3.0)
    assert d[-1] == pytest.approx(3.0)


def test_source_close_wakes_a_blocked_read():
    with _opened_source(_stream(["Fz"], "eeg")) as (_, _, source):
        result: list[object] = []
        t = threading.Thread(target=lambda: result.append(source.read(30.0)))
        t.start()
        time.sleep(0.1)
        source.close()
        t.join(5.0)
        assert not t.is_alive() and result == [None]
