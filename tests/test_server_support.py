"""Helpers shared by the service tests: real models, a real server, misbehaving clients.

Nothing here is a test; the service test modules import it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from neurocast.clients.client import Client
from neurocast.server.app import create_app
from neurocast.server.config import Settings
from neurocast.server.registry import ModelRegistry
from neurocast.server.runner import ServerThread
from neurocast.streaming.simulate import Simulator
from neurocast.streaming.spec import SimulatorSpec

TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# a light simulator stream: EEG only, so the sessions of the tests stay cheap
SIM_SPEC = SimulatorSpec(modality="eeg", sfreq=250.0, seed=3)


def wait_until(predicate: Callable[[], Any], timeout_s: float = 20.0, what: str = "") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(0.05)


@contextlib.contextmanager
def serve(
    registry: ModelRegistry, **settings: Any
) -> Iterator[tuple[ServerThread, Client]]:
    """A real server under uvicorn on a free loopback port, and a client for it."""
    app = create_app(Settings(token=TOKEN, **settings), registry)
    server = ServerThread(app)
    with server, Client(server.url, token=TOKEN) as client:
        yield server, client


def write_simulated_recording(path: Path, seconds: float, **spec: Any) -> Path:
    """A simulated recording saved as FIF (its info says SIMULATED)."""
    sim = Simulator(SIM_SPEC.model_copy(update=spec))
    sim.simulate_raw(seconds).save(path, overwrite=True, verbose="error")
    return path


def ws_url(server: ServerThread, session_id: str) -> str:
    return f"ws://{server.host}:{server.port}/v1/sessions/{session_id}/stream"


def raw_websocket(
    server: ServerThread, session_id: str, *, rcvbuf: int | None = None, token: str = TOKEN
) -> socket.socket:
    """A hand-made WebSocket client socket after a successful handshake (for fault tests)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(10)
    sock.connect((server.host, server.port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /v1/sessions/{session_id}/stream HTTP/1.1\r\nHost: {server.host}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert b" 101 " in head.split(b"\r\n")[0], head
    return sock


def client_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """A masked client → server WebSocket frame."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    else:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def subscribe_frame(**fields: Any) -> bytes:
    """A subscribe message as a client frame."""
    return client_frame(json.dumps({"type": "subscribe", **fields}).encode())


# ---- DEV FIXTURES: replaced by real artifacts once models/runtime.py exists ----
import sys as _sys  # noqa: E402

import pytest  # noqa: E402

_sys.path.insert(0, "/tmp/ncdev")


@pytest.fixture(scope="session")
def registry():
    import devmodel

    return devmodel.registry()


@pytest.fixture(scope="session")
def model_ids():
    return {"classifier": "dev-probabilities", "translator": "dev-translation"}
