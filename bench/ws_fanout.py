"""WebSocket fan-out: latency from a result being ready to a subscriber receiving it.

A real server (uvicorn, in this process) runs one simulator session decoding every 25 ms with
the packaged demo classifier. In a separate process, 1, 10 or 100 WebSocket clients on loopback
subscribe to its probabilities; each measures, for every result, its local monotonic clock on
receipt minus the result's ``ready_time`` (the server's monotonic clock when the decoder
finished the window; both processes read the same CLOCK_MONOTONIC). A last case adds one
client that completes the handshake, subscribes and never reads: its queue fills and drops,
and the other 100 clients' figures must not change.

Figures (milliseconds): ``ws_1_p99_ms``, ``ws_10_p99_ms``, ``ws_100_p99_ms``,
``ws_100_with_stalled_p99_ms`` (p99 over all clients and results of a run, median over runs),
the matching ``..._p50_ms``, and ``drop_fraction`` per case (messages the clients were told
they lost / messages sent to them). Target: p99 <= 5 ms at 100 subscribers.

Usage: ``python bench/ws_fanout.py [--quick]``; the last stdout line is a JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing as mp
import os
import socket
import statistics
import struct
import sys
import time
from typing import Any

import numpy as np

TOKEN = "bench-token"
WARMUP_S = 0.5  # latencies of each client's first half second (connection set-up) are ignored


async def _one_client(url: str, seconds: float, out: dict[str, Any]) -> None:
    import websockets

    latencies: list[float] = []
    received = dropped = 0
    async with websockets.connect(
        url, additional_headers={"Authorization": f"Bearer {TOKEN}"}, compression=None
    ) as ws:
        await ws.send(json.dumps({"type": "subscribe", "outputs": ["probabilities"]}))
        start = time.monotonic()
        deadline = start + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                data = await asyncio.wait_for(ws.recv(), remaining)
            except TimeoutError:
                break
            now = time.monotonic()
            msg = json.loads(data)
            if msg["type"] == "result":
                received += 1
                if now - start > WARMUP_S:
                    latencies.append((now - msg["ready_time"]) * 1e3)
            elif msg["type"] == "dropped":
                dropped += msg["dropped"]
    out["latencies"].extend(latencies)
    out["received"] += received
    out["dropped"] += dropped


def _clients_main(url: str, n_clients: int, seconds: float, queue: Any) -> None:
    """Child process: ``n_clients`` concurrent subscribers for ``seconds``."""
    out: dict[str, Any] = {"latencies": [], "received": 0, "dropped": 0}

    async def main() -> None:
        await asyncio.gather(*(_one_client(url, seconds, out) for _ in range(n_clients)))

    asyncio.run(main())
    queue.put(out)


def _stalled_client(host: str, port: int, path: str) -> socket.socket:
    """A WebSocket client that subscribes and then never reads (a tiny receive buffer)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Authorization: Bearer {TOKEN}\r\n\r\n"
        ).encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(1024)
    if b" 101 " not in response.split(b"\r\n")[0]:
        raise RuntimeError(f"stalled client handshake failed: {response[:80]!r}")
    payload = json.dumps({"type": "subscribe", "outputs": ["probabilities", "events"]}).encode()
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    sock.sendall(struct.pack("!BB", 0x81, 0x80 | len(payload)) + mask + masked)
    return sock


def _run_case(url: str, n_clients: int, seconds: float) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_clients_main, args=(url, n_clients, seconds, queue))
    proc.start()
    out = queue.get(timeout=seconds + 120)
    proc.join(30)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs (under 60 s in all)")
    args = parser.parse_args()
    seconds, repeats = (4.0, 1) if args.quick else (15.0, 3)

    from neurocast.clients.client import Client
    from neurocast.server.app import create_app
    from neurocast.server.config import Settings
    from neurocast.server.registry import ModelRegistry
    from neurocast.server.runner import ServerThread
    from neurocast.streaming.spec import SimulatorSpec

    registry = ModelRegistry.discover(None)
    demo = [m.id for m in registry.infos() if m.packaged and m.id.startswith("demo")]
    if not demo:
        sys.exit("No packaged demo model: build it with `neurocast train demo` first.")
    settings = Settings(token=TOKEN, ws_queue_size=256)
    server = ServerThread(create_app(settings, registry))
    with server, Client(server.url, token=TOKEN) as client:
        session = client.create_session(SimulatorSpec(), demo[:1], name="bench ws_fanout")
        if session.status != "running":
            sys.exit(f"The session did not start: {session.status} {session.error}")
        while client.session(session.id).n_decoded < 40:
            time.sleep(0.1)
        url = server.url.replace("http", "ws", 1) + f"/v1/sessions/{session.id}/stream"
        figures: dict[str, Any] = {}
        cases = [("ws_1", 1, False), ("ws_10", 10, False), ("ws_100", 100, False),
                 ("ws_100_with_stalled", 100, True)]
        for name, n_clients, stalled in cases:
            p50s, p99s, received, dropped = [], [], 0, 0
            for _ in range(repeats):
                sock = None
                if stalled:
                    sock = _stalled_client(server.host, server.port, f"/v1/sessions/{session.id}/stream")
                out = _run_case(url, n_clients, seconds)
                if sock is not None:
                    sock.close()
                lat = np.asarray(out["latencies"])
                p50s.append(float(np.percentile(lat, 50)))
                p99s.append(float(np.percentile(lat, 99)))
                received += out["received"]
                dropped += out["dropped"]
            figures[f"{name}_p50_ms"] = round(statistics.median(p50s), 3)
            figures[f"{name}_p99_ms"] = round(statistics.median(p99s), 3)
            figures[f"{name}_drop_fraction"] = round(dropped / max(1, received + dropped), 5)
            print(f"{name}: p50 {figures[f'{name}_p50_ms']} ms, p99 {figures[f'{name}_p99_ms']} ms, "
                  f"{received} received, {dropped} dropped", flush=True)
        final = client.session(session.id)
        figures["stalled_client_dropped"] = final.dropped_messages
        figures["decode_rate_hz"] = round(final.decode_rate_hz, 2)
        figures["n_skipped"] = final.n_skipped
        figures["results_per_s"] = round(1 / final.stride_s, 1)
        figures["quick"] = args.quick
        figures["seconds_per_run"] = seconds
        figures["runs"] = repeats
        client.delete_session(session.id)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
