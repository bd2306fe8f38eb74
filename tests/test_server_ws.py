"""WebSocket result streams against the real server: protocol, auth, slow and broken clients."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
import websockets
from test_server_support import (
    AUTH,
    SIM_SPEC,
    TOKEN,
    raw_websocket,
    server_fixture,
    subscribe_frame,
    wait_until,
    ws_url,
)

from neurocast.clients.streams import Message, parse_message
from neurocast.wire.frames import SignalFrame
from neurocast.wire.schemas import ResultMessage

pytest_plugins = ["test_server_support"]
pytestmark = pytest.mark.timeout(120)

running = server_fixture(ws_queue_size=8, status_interval_s=0.5)


@pytest.fixture(scope="module")
def session(running, model_ids):
    _, client = running
    s = client.create_session(SIM_SPEC, [model_ids["classifier"], model_ids["translator"]])
    assert s.status == "running", s.error
    yield s
    if s.id in {x.id for x in client.sessions()}:
        client.delete_session(s.id)


async def _collect(url: str, subscribe: dict, n: int, *, headers=AUTH) -> list[Message]:
    out: list[Message] = []
    async with websockets.connect(url, additional_headers=headers, max_size=None) as ws:
        await ws.send(json.dumps({"type": "subscribe", **subscribe}))
        while len(out) < n:
            out.append(parse_message(await asyncio.wait_for(ws.recv(), 20)))
    return out


async def test_subscribe_then_results_events_and_status(running, session, model_ids) -> None:
    server, _ = running
    messages = await _collect(
        ws_url(server, session.id), {"outputs": ["probabilities", "status", "events"]}, 40
    )
    assert messages[0].type == "subscribed" and messages[0].simulated
    results = [m for m in messages if isinstance(m, ResultMessage)]
    assert results and all(r.model == model_ids["classifier"] for r in results)
    ends = [r.window_end for r in results]
    assert ends == sorted(ends) and len(set(ends)) == len(ends)
    for r in results:
        assert r.simulated and r.kind == "probabilities"
        assert np.isclose(sum(r.payload["probabilities"]), 1.0, atol=1e-4)
        assert len(r.payload["classes"]) == len(r.payload["probabilities"])
        assert r.latency.inference_ms >= 0
    assert any(m.type == "status" and m.session.status == "running" for m in messages)


async def test_decimation_and_model_filter(running, session, model_ids) -> None:
    server, _ = running
    messages = await _collect(
        ws_url(server, session.id),
        {
            "outputs": ["probabilities", "translation"],
            "decimate": 3,
            "models": [model_ids["classifier"]],
        },
        8,
    )
    results = [m for m in messages if isinstance(m, ResultMessage)]
    assert not any(isinstance(m, SignalFrame) for m in messages)
    stride = round(session.stride_s * SIM_SPEC.sfreq)
    gaps = np.diff([r.window_end for r in results])
    assert len(gaps) >= 4 and (gaps >= 3 * stride).all() and (gaps % stride == 0).all()


async def test_translation_arrives_as_binary_frames(running, session, model_ids) -> None:
    server, _ = running
    messages = await _collect(ws_url(server, session.id), {"outputs": ["translation"]}, 5)
    frames = [m for m in messages if isinstance(m, SignalFrame)]
    assert len(frames) == 4
    for f in frames:
        assert f.meta["model"] == model_ids["translator"] and f.simulated
        assert f.data.dtype == np.float32 and f.data.ndim == 2
        assert len(f.meta["ch_names"]) == f.data.shape[0] and f.sfreq_hz > 0
        assert np.isfinite(f.data).all()


async def test_wrong_token_and_unknown_session_are_refused(running, session) -> None:
    server, _ = running
    for headers in ({}, {"Authorization": "Bearer nope"}):
        with pytest.raises(websockets.InvalidStatus) as err:
            async with websockets.connect(ws_url(server, session.id), additional_headers=headers):
                pass
        assert err.value.response.status_code == 401
    with pytest.raises(websockets.InvalidStatus) as err:
        async with websockets.connect(ws_url(server, "nosuchsession"), additional_headers=AUTH):
            pass
    assert err.value.response.status_code == 404
    # browsers cannot set headers: the token may come as a query parameter
    async with websockets.connect(ws_url(server, session.id) + f"?token={TOKEN}") as ws:
        await ws.send(json.dumps({"type": "subscribe", "outputs": ["status"]}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "subscribed"


async def test_bad_first_message_closes_with_a_reason(running, session) -> None:
    server, _ = running
    async with websockets.connect(ws_url(server, session.id), additional_headers=AUTH) as ws:
        await ws.send(json.dumps({"type": "subscribe", "outputs": ["brainwaves"]}))
        error = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert error["type"] == "error" and error["code"] == "bad_message"
        assert "outputs" in error["detail"]
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


async def test_bad_resubscribe_keeps_the_connection(running, session) -> None:
    server, _ = running
    async with websockets.connect(ws_url(server, session.id), additional_headers=AUTH) as ws:
        await ws.send(json.dumps({"type": "subscribe", "outputs": ["probabilities"]}))
        await ws.send("this is not json")
        await ws.send(b"\x00\x01")
        seen: list[dict] = []
        errors = 0
        while errors < 2 or not any(m.get("type") == "result" for m in seen[-3:]):
            msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
            seen.append(msg)
            errors += msg["type"] == "error"
        await ws.send(json.dumps({"type": "subscribe", "outputs": ["status"]}))
        while (msg := json.loads(await asyncio.wait_for(ws.recv(), 10)))["type"] != "subscribed":
            pass
        assert msg["outputs"] == ["status"]


async def test_client_that_never_reads_loses_only_its_own_messages(running, session) -> None:
    server, client = running
    stalled = raw_websocket(server, session.id, rcvbuf=4096)
    try:
        stalled.sendall(subscribe_frame(outputs=["probabilities", "translation", "events"]))
        before = client.session(session.id).dropped_messages
        url = ws_url(server, session.id)
        async with websockets.connect(url, additional_headers=AUTH) as ws:
            await ws.send(json.dumps({"type": "subscribe", "outputs": ["probabilities"]}))
            ends = []
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
                assert msg["type"] != "dropped", "the reading client must not lose messages"
                if msg["type"] == "result":
                    ends.append(msg["window_end"])
                status = client.session(session.id)
                if len(ends) > 40 and status.dropped_messages > before:
                    break
        assert status.dropped_messages > before, "the stalled client's queue never overflowed"
        stride = round(session.stride_s * SIM_SPEC.sfreq)
        assert len(ends) > 40
        # every window the decoder produced reached the reading client, in order
        assert set(np.diff(ends)) <= {stride * k for k in range(1, 1 + 1 + status.n_skipped)}
    finally:
        stalled.close()


async def test_client_disconnecting_mid_message(running, session) -> None:
    server, client = running
    base = client.session(session.id).subscribers
    # a client that sends half a frame and hangs up
    half = raw_websocket(server, session.id)
    frame = subscribe_frame(outputs=["probabilities"])
    half.sendall(frame[: len(frame) // 2])
    half.close()
    # a client that takes part of a large binary frame and hangs up while it is being sent
    partial = raw_websocket(server, session.id, rcvbuf=2048)
    partial.sendall(subscribe_frame(outputs=["translation"]))
    partial.recv(1000)
    partial.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    partial.close()  # RST while the server writes
    # a client with a clean close in the middle of the stream
    async with websockets.connect(ws_url(server, session.id), additional_headers=AUTH) as ws:
        await ws.send(json.dumps({"type": "subscribe"}))
        await ws.recv()
    wait_until(lambda: client.session(session.id).subscribers == base, what="subscribers gone")
    messages = await _collect(ws_url(server, session.id), {"outputs": ["probabilities"]}, 5)
    assert sum(isinstance(m, ResultMessage) for m in messages) == 4
    assert client.session(session.id).status == "running"


async def test_deleting_the_session_closes_its_streams(running, model_ids) -> None:
    server, client = running
    s = client.create_session(SIM_SPEC, [model_ids["classifier"]])
    async with websockets.connect(ws_url(server, s.id), additional_headers=AUTH) as ws:
        await ws.send(json.dumps({"type": "subscribe", "outputs": ["probabilities"]}))
        await asyncio.wait_for(ws.recv(), 10)
        await asyncio.to_thread(client.delete_session, s.id)
        last = None
        with pytest.raises(websockets.ConnectionClosedOK):
            while True:
                last = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert last is not None and last["type"] == "status"
        assert last["session"]["status"] == "stopped"


def test_server_shutdown_with_sessions_running(tmp_path, models_dir, model_ids) -> None:
    """SIGTERM with live sessions and subscribers: each subscriber gets a last status and
    close code 1012, everything stops, the process exits 0."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "NEUROCAST_TOKEN": TOKEN,
        "NEUROCAST_PACKAGED_MODELS": "off",
        "NEUROCAST_STATE_DIR": str(tmp_path / "state"),
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "neurocast.clients.cli",
            "serve",
            "--port",
            str(port),
            "--models-dir",
            str(models_dir),
            "--log-level",
            "info",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _up(url), timeout_s=60, what="server up")
        ids = []
        for seed in (1, 2):
            r = httpx.post(
                url + "/v1/sessions",
                headers=AUTH,
                timeout=30,
                json={
                    "source": SIM_SPEC.model_copy(update={"seed": seed}).model_dump(),
                    "models": [model_ids["classifier"]],
                },
            )
            assert r.status_code == 201 and r.json()["status"] == "running", r.text
            ids.append(r.json()["id"])

        async def subscriber() -> tuple[int, dict]:
            last: dict = {}
            async with websockets.connect(
                f"ws://127.0.0.1:{port}/v1/sessions/{ids[0]}/stream", additional_headers=AUTH
            ) as ws:
                await ws.send(json.dumps({"type": "subscribe", "outputs": ["status"]}))
                await asyncio.wait_for(ws.recv(), 10)
                proc.send_signal(signal.SIGTERM)
                try:
                    while True:
                        last = json.loads(await asyncio.wait_for(ws.recv(), 20))
                except websockets.ConnectionClosed as exc:
                    return (exc.rcvd.code if exc.rcvd else -1), last

        code, last = asyncio.run(subscriber())
        # the README's promise: a last status, then 1012 (service restart)
        assert code == 1012
        assert last["type"] == "status" and last["session"]["status"] == "stopped"
        out, _ = proc.communicate(timeout=30)
        log = out.decode()
        # uvicorn re-raises the signal once its graceful shutdown is complete
        assert proc.returncode in (0, -signal.SIGTERM), log[-2000:]
        assert "Application shutdown complete" in log and "Traceback" not in log, log[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _up(url: str) -> bool:
    try:
        return httpx.get(url + "/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


async def test_session_budget_skips_and_end_to_end_latency_in_status(running, model_ids) -> None:
    server, client = running
    s = client.create_session(SIM_SPEC, [model_ids["classifier"]], max_lag_ms=400.0)
    try:
        assert s.max_lag_ms == 400.0
        messages = await _collect(ws_url(server, s.id), {"outputs": ["probabilities"]}, 30)
        ends = [m.window_end for m in messages if isinstance(m, ResultMessage)]
        status = client.session(s.id)
        # the simulator delivers in real time and the decoder keeps up: nothing is skipped
        assert status.n_skipped == 0 and status.skipped_by_reason == {}
        stride = round(SIM_SPEC.sfreq * 0.025)
        assert np.all(np.diff(ends) == stride)
        # measured from the sample (simulator clock = server clock) to the socket write
        e2e = status.latency["end_to_end"]
        total = status.latency["total"]
        assert e2e.p50_ms > 0 and total.p50_ms <= e2e.p50_ms + 1e-6
        assert status.clock_ahead_ms == 0.0
    finally:
        client.delete_session(s.id)
    with pytest.raises(ValueError, match="max_lag_ms"):  # refused before it is sent
        client.create_session(SIM_SPEC, [model_ids["classifier"]], max_lag_ms=0.0)
