"""FieldTrip buffer faults under a live session of a real server: the buffer restarted, and a
header that changes while the session reads. Buffer, device writer, server and subscriber all
talk over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import mne
import numpy as np
import pytest
import websockets
from numpy.typing import NDArray
from test_server_support import AUTH, EEG_PICKS, SIM_SPEC, serve, wait_until, ws_url

from neurocast.clients.client import Client
from neurocast.server.continuity import public_source_id, public_text
from neurocast.server.registry import ModelRegistry
from neurocast.server.runner import ServerThread
from neurocast.streaming.sources.base import StreamInfo
from neurocast.streaming.sources.fieldtrip import FieldTripError, FieldTripServer, FieldTripWriter
from neurocast.streaming.sources.simulator.simulator import Simulator
from neurocast.wire.schemas import SessionStatus

pytest_plugins = ["test_server_support"]
pytestmark = pytest.mark.timeout(120)

Message = dict[str, Any]
Running = tuple[ServerThread, Client]

BLOCK_S = 0.1  # the device writes one block per 100 ms
# 6 samples at 250 Hz, so that the 25-sample windows of the test models put exactly
# (25 - 1) / 6 = 4 window ends on the samples just after any discontinuity
STRIDE_S = 0.024
WINDOW_SAMPLES = round(0.1 * SIM_SPEC.sfreq)
STRIDE_SAMPLES = round(STRIDE_S * SIM_SPEC.sfreq)
SPANNING = (WINDOW_SAMPLES - 1) // STRIDE_SAMPLES
JUMP_S = 1.0  # a timestamp step longer than this is a clock jump, not a gap (RingBuffer)
LOST_AFTER_S = 1.0
LEAD_BLOCKS = 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stream(ch_names: list[str], sfreq: float) -> StreamInfo:
    return StreamInfo("ft-eeg", mne.create_info(ch_names, sfreq, "eeg"), simulated=True)


def _simulated(ch_names: list[str], sfreq: float, seconds: float = 10.0) -> NDArray[np.float32]:
    """Simulated EEG of ``ch_names``, shape (n_samples, n_channels), as a device writes it."""
    raw = Simulator(SIM_SPEC.model_copy(update={"sfreq": sfreq})).simulate_raw(seconds)
    return raw.get_data(picks=ch_names).T.astype(np.float32)


class Acquisition:
    """A device program writing into a FieldTrip buffer in real time, one block per 100 ms.

    Like acquisition software, it keeps its own pace when the buffer goes away (those blocks
    are lost), and once the buffer answers again it puts its header again and goes on.
    """

    def __init__(self, port: int, stream: StreamInfo, data: NDArray[np.float32]) -> None:
        self.port = port
        self.n_headers = 0
        self.n_blocks = 0
        self._layout = (stream, data)
        self._new_layout: tuple[StreamInfo, NDArray[np.float32]] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ft-acquisition", daemon=True)

    def __enter__(self) -> Acquisition:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10.0)

    def change_layout(self, stream: StreamInfo, data: NDArray[np.float32]) -> None:
        """Put ``stream``'s header before the next block and write ``data`` from then on."""
        self._new_layout = (stream, data)

    def _run(self) -> None:
        # the connection is this thread's alone; after a failure it reconnects on the next call
        writer = FieldTripWriter("127.0.0.1", self.port, timeout_s=1.0)
        header_put, position = False, 0
        due = time.monotonic()
        try:
            while not self._stop.is_set():
                if self._new_layout is not None:
                    self._layout, self._new_layout = self._new_layout, None
                    header_put, position = False, 0
                stream, data = self._layout
                n = round(BLOCK_S * stream.sfreq)
                try:
                    if not header_put:
                        writer.put_header(stream)
                        header_put = True
                        self.n_headers += 1
                    if position + n > data.shape[0]:
                        position = 0
                    writer.put_data(data[position : position + n])
                    position += n
                    self.n_blocks += 1
                except FieldTripError:
                    header_put = False  # a restarted buffer holds no header
                # never a burst to catch up: a device delivers at its own pace
                due = max(due + BLOCK_S, time.monotonic())
                self._stop.wait(due - time.monotonic())
        finally:
            writer.close()


class Buffer:
    """A FieldTrip server in its own thread on a fixed port. Starting it and joining its thread
    block, so both run off the event loop that serves the WebSocket client."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._served: contextlib.AbstractContextManager[FieldTripServer] | None = None

    async def start(self) -> None:
        self._served = FieldTripServer(port=self.port).serve_in_thread()
        await asyncio.to_thread(self._served.__enter__)

    async def stop(self) -> None:
        served, self._served = self._served, None
        if served is not None:
            await asyncio.to_thread(served.__exit__, None, None, None)


class Subscriber:
    """A plain WebSocket client of a session's results and status that keeps what it got."""

    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self.messages: list[Message] = []

    async def subscribe(self) -> None:
        await self.ws.send(
            json.dumps({"type": "subscribe", "outputs": ["probabilities", "status"]})
        )

    async def until(self, check: Callable[[Message], Any], timeout_s: float = 20.0) -> Message:
        """The next message that passes ``check``; every message on the way is kept."""
        async with asyncio.timeout(timeout_s):
            while True:
                message = json.loads(await self.ws.recv())
                self.messages.append(message)
                if check(message):
                    return message

    def results(self) -> list[Message]:
        return [m for m in self.messages if m["type"] == "result"]

    def states(self) -> list[str]:
        return [m["session"]["status"] for m in self.messages if m["type"] == "status"]


def _is_result(message: Message) -> bool:
    return message["type"] == "result"


def _status_is(state: str) -> Callable[[Message], bool]:
    return lambda m: m["type"] == "status" and m["session"]["status"] == state


async def _lead(acquisition: Acquisition) -> None:
    """Wait until the buffer holds LEAD_BLOCKS blocks.

    A session starts reading at the newest sample, and it notices a reset of the buffer by
    the sample count going below its position. A new stream that overtakes that position
    before the session polls again goes unnoticed (a different rate then passes for the old
    one), so the session starts well ahead: the reset is caught even on a busy machine.
    """
    await asyncio.to_thread(
        wait_until, lambda: acquisition.n_blocks >= LEAD_BLOCKS, what="the first blocks"
    )


def _create(client: Client, model: str, port: int, **source: Any) -> SessionStatus:
    """POST /v1/sessions for the buffer at ``port``.

    The latency budget is generous so that the burst read after a reconnection is decoded
    whole: every window spanning the restart is delivered rather than skipped as over budget.
    """
    spec = {"kind": "fieldtrip", "host": "127.0.0.1", "port": port, **source}
    return client.create_session(spec, [model], stride_s=STRIDE_S, max_lag_ms=5000.0)


@pytest.fixture(scope="module")
def running(registry: ModelRegistry) -> Iterator[Running]:
    with serve(registry, status_interval_s=0.25, source_lost_after_s=LOST_AFTER_S) as pair:
        yield pair


async def test_buffer_restarted_under_a_running_session(
    running: Running, model_ids: dict[str, str]
) -> None:
    server, client = running
    port = _free_port()
    buffer = Buffer(port)
    await buffer.start()
    acquisition = Acquisition(
        port, _stream(EEG_PICKS, SIM_SPEC.sfreq), _simulated(EEG_PICKS, SIM_SPEC.sfreq)
    )
    with acquisition:
        await _lead(acquisition)
        s = await asyncio.to_thread(
            _create, client, model_ids["classifier"], port, stall_after_s=0.3
        )
        try:
            assert s.status == "running", s.error
            async with websockets.connect(ws_url(server, s.id), additional_headers=AUTH) as ws:
                sub = Subscriber(ws)
                await sub.subscribe()
                for _ in range(10):
                    await sub.until(_is_result)
                await buffer.stop()
                stalled = await sub.until(_status_is("stalled"))
                assert stalled["session"]["error"] is None
                # gone longer than NEUROCAST_SOURCE_LOST_AFTER_S: still stalled, with a reason
                lost = await sub.until(lambda m: m["type"] == "status" and m["session"]["error"])
                assert lost["session"]["status"] == "stalled"
                error = lost["session"]["error"]
                assert error.startswith(f"No samples from the FieldTrip buffer at 127.0.0.1:{port}")
                assert "the session keeps waiting and resumes when the source delivers" in error
                assert "Check that the device or its streaming program is running" in error
                # the silence is then at least LOST_AFTER_S; this wait makes the timestamp step
                # across the restart exceed JUMP_S even though the new data's clock is anchored
                # up to one block (0.1 s) before its first sample reached the buffer
                await asyncio.sleep(0.2)
                await buffer.start()  # the writer puts its header again and goes on
                back = await sub.until(_status_is("running"))
                assert back["session"]["error"] is None
                n_back = back["session"]["n_decoded"]
                resumed = len(sub.results())
                await sub.until(lambda _: sum(r["valid"] for r in sub.results()[resumed:]) >= 10)
            status = await asyncio.to_thread(client.session, s.id)
        finally:
            await asyncio.to_thread(client.delete_session, s.id)
            await buffer.stop()
    assert acquisition.n_headers == 2
    assert status.status == "running" and status.error is None
    assert status.n_decoded > n_back and status.n_skipped == 0

    # each change of state is told once the tick sees it, and the periodic status repeats it
    states = sub.states()
    assert [state for state, _ in itertools.groupby(states)] == ["running", "stalled", "running"]

    results = sub.results()
    assert all(r["model"] == model_ids["classifier"] and r["skipped"] == 0 for r in results)
    ends = [r["window_end"] for r in results]
    # every window decoded once, in order, across the restart: sample indices run on
    assert np.diff(ends).tolist() == [STRIDE_SAMPLES] * (len(ends) - 1)
    times = np.array([r["t_window_end"] for r in results])
    (restart,) = np.flatnonzero(np.diff(times) > JUMP_S) + 1
    assert 10 <= restart < len(results) - SPANNING
    spanning = results[restart : restart + SPANNING]
    assert [(r["valid"], r["issues"]) for r in spanning] == [(False, ["clock_jump_forward"])] * 4
    others = results[:restart] + results[restart + SPANNING :]
    for r in others:
        # the source anchors its clock again on the first read after the restart, which may
        # come a little after the device wrote: the clock then steps back once, to the
        # device's pace, and the windows spanning that step say so (scheduling jitter can do
        # the same); nothing else may invalidate a window
        assert r["issues"] in ([], ["clock_jump_backward"]), r
        assert r["valid"] == (not r["issues"]), r


@pytest.mark.parametrize(
    ("ch_names", "sfreq", "change", "restarted"),
    [
        pytest.param(
            [*EEG_PICKS, "Cz"],
            SIM_SPEC.sfreq,
            "8 -> 9 channels, 250 -> 250 Hz, other channel names",
            None,
            id="channel-count",
        ),
        pytest.param(
            EEG_PICKS,
            2 * SIM_SPEC.sfreq,
            "8 -> 8 channels, 250 -> 500 Hz",
            "StreamMismatchError: Model 'test-classifier' expects 250 Hz and does not resample",
            id="rate",
        ),
        pytest.param(
            [*EEG_PICKS[:-1], "Cz"],
            SIM_SPEC.sfreq,
            "8 -> 8 channels, 250 -> 250 Hz, other channel names",
            "StreamMismatchError: Model 'test-classifier' needs 8 channels; stream 'ft-eeg' "
            "lacks 1 of them (AF8).",
            id="channel-names",
        ),
    ],
)
async def test_header_changed_under_a_running_session(
    running: Running,
    model_ids: dict[str, str],
    ch_names: list[str],
    sfreq: float,
    change: str,
    restarted: str | None,
) -> None:
    server, client = running
    clf = model_ids["classifier"]
    port = _free_port()
    buffer = Buffer(port)
    await buffer.start()
    acquisition = Acquisition(
        port, _stream(EEG_PICKS, SIM_SPEC.sfreq), _simulated(EEG_PICKS, SIM_SPEC.sfreq)
    )
    with acquisition:
        await _lead(acquisition)
        s = await asyncio.to_thread(_create, client, clf, port)
        again: SessionStatus | None = None
        try:
            assert s.status == "running", s.error
            async with websockets.connect(ws_url(server, s.id), additional_headers=AUTH) as ws:
                sub = Subscriber(ws)
                await sub.subscribe()
                for _ in range(5):
                    await sub.until(_is_result)
                acquisition.change_layout(_stream(ch_names, sfreq), _simulated(ch_names, sfreq))
                failed = await sub.until(_status_is("failed"))
            # the pipeline was built for the old layout: the session fails and says why and
            # what to do, instead of decoding samples it would misread
            error = failed["session"]["error"]
            assert error.startswith("SourceError: The FieldTrip buffer at ")
            assert error.endswith(
                f"127.0.0.1:{port} got a new header: {change}. The pipeline was built for the "
                "old layout; restart the session to decode the new stream."
            )
            assert failed["session"]["stream"]["n_channels"] == len(EEG_PICKS)
            # the failed session stays listed with its reason; the server serves on
            listed = await asyncio.to_thread(client.session, s.id)
            assert listed.status == "failed" and listed.error == error
            assert (await asyncio.to_thread(client.health)).status == "ok"
            # doing what the message says: a new session on the new stream decodes it when the
            # model fits it, and otherwise says why not
            again = await asyncio.to_thread(_create, client, clf, port)
            if restarted is None:
                assert again.status == "running", again.error
                assert again.stream is not None
                assert again.stream.n_channels == len(ch_names)
                new_id = again.id
                await asyncio.to_thread(
                    wait_until,
                    lambda: client.session(new_id).n_decoded > 0,
                    what="results of the new session",
                )
            else:
                assert again.status == "failed" and (again.error or "").startswith(restarted)
        finally:
            for session in (s, again):
                if session is not None:
                    await asyncio.to_thread(client.delete_session, session.id)
            await buffer.stop()


def test_buffer_address_is_shown_whole() -> None:
    source_id = "fieldtrip://127.0.0.1:1972"
    text = f"The FieldTrip buffer at {source_id} got a new header"
    assert public_text(text, None) == text
    assert public_source_id(source_id, None) == source_id
