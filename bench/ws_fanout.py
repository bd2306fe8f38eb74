"""WebSocket fan-out: latency from a result being ready to a subscriber receiving it.

A real server (uvicorn, in this process) runs one session decoding the embedded simulator
(64 EEG channels at 250 Hz, real time) every 25 ms with two small ONNX models built here: a
classifier (log band power → linear → softmax) and an EEG→MEG translator (a linear map to 306
channels). They are cheap on purpose, so the figures are about delivery.

1, 10 or 100 WebSocket clients on loopback, spread over a few processes, subscribe to the
classifier's probabilities; each measures, for every result, its monotonic clock on receipt
minus the result's ``ready_time`` (the server's monotonic clock when the decoder finished the
window; every process reads the same CLOCK_MONOTONIC). The last case adds one client that
completes the handshake, subscribes to everything (the translated MEG too: 30 kB per window)
and never reads: its queue overflows and drops, and the other 100 clients' figures must not
change.

Figures (milliseconds): ``ws_1_p99_ms``, ``ws_10_p99_ms``, ``ws_100_p99_ms``,
``ws_100_with_stalled_p99_ms`` (p99 over all clients and results of a run, median over runs),
the matching ``..._p50_ms``, ``..._drop_fraction`` per case (messages the clients were told
they lost / messages sent to them), ``stalled_client_dropped`` and the server's own delivery
percentiles (ready → written to the socket). Target: p99 <= 5 ms at 100 subscribers.

Usage: ``python bench/ws_fanout.py [--quick]``; the last stdout line is a JSON object.
"""

from __future__ import annotations

import asyncio
import base64
import json
import multiprocessing as mp
import os
import socket
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common
import numpy as np

TOKEN = "bench-token"
# the subscribers are spread over a few processes: one Python process reading 100 sockets
# would add its own queueing to what is measured
CLIENT_PROCESSES = 2
QUEUE_SIZE = 32
WARMUP_S = 0.5  # latencies of each client's first half second (connection set-up) are ignored


def _ready_time(text: str) -> float | None:
    """The ``ready_time`` of a result message (its last field: no full JSON parse needed)."""
    i = text.rfind('"ready_time":')
    return float(text[i + 13 : -1]) if i >= 0 and text.startswith('{"kind"') else None


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
            assert isinstance(data, str)
            ready = _ready_time(data)
            if ready is not None:
                received += 1
                if now - start > WARMUP_S:
                    latencies.append((now - ready) * 1e3)
            elif data.startswith('{"type":"dropped"'):
                dropped += json.loads(data)["dropped"]
    out["latencies"].extend(latencies)
    out["received"] += received
    out["dropped"] += dropped


def _clients_main(url: str, n_clients: int, seconds: float, queue: Any) -> None:
    """Child process: ``n_clients`` concurrent subscribers for ``seconds``."""
    out: dict[str, Any] = {"latencies": [], "received": 0, "dropped": 0}

    async def run() -> None:
        await asyncio.gather(*(_one_client(url, seconds, out) for _ in range(n_clients)))

    asyncio.run(run())
    queue.put(out)


def _run_case(url: str, n_clients: int, seconds: float) -> dict[str, Any]:
    """Run the subscribers in up to CLIENT_PROCESSES processes and pool what they measured."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    n_procs = min(CLIENT_PROCESSES, n_clients)
    shares = [n_clients // n_procs + (i < n_clients % n_procs) for i in range(n_procs)]
    procs = [ctx.Process(target=_clients_main, args=(url, n, seconds, queue)) for n in shares]
    for p in procs:
        p.start()
    outs = [queue.get(timeout=seconds + 120) for _ in procs]
    for p in procs:
        p.join(30)
    return {
        "latencies": [x for o in outs for x in o["latencies"]],
        "received": sum(o["received"] for o in outs),
        "dropped": sum(o["dropped"] for o in outs),
    }


def _stalled_client(host: str, port: int, path: str) -> socket.socket:
    """A WebSocket client that subscribes to everything and then never reads."""
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
    payload = json.dumps({"type": "subscribe"}).encode()
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    sock.sendall(struct.pack("!BB", 0x81, 0x80 | len(payload)) + mask + masked)
    return sock


def _build_translator(ch_names: list[str], sfreq: float, folder: Path) -> None:
    """A linear EEG → 306-channel MEG translator artifact (a real ONNX graph)."""
    from onnx import TensorProto, helper, numpy_helper

    from neurocast.models.serving import (
        ArtifactMetadata,
        InputSpec,
        OutputSpec,
        Provenance,
        save_artifact,
    )

    n_t, n_meg = round(0.1 * sfreq), 306
    w = np.random.default_rng(1).normal(0, 1e-8, (n_meg, len(ch_names))).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["w", "x"], ["y"])],
        "bench-translator",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", len(ch_names), n_t])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", n_meg, n_t])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    meta = ArtifactMetadata(
        name="bench-translator",
        version="1",
        task="translation",
        input=InputSpec(
            ch_names=ch_names, ch_types=["eeg"] * len(ch_names), sfreq_hz=sfreq, window_s=0.1
        ),
        output=OutputSpec(
            ch_names=[f"MEG{i:04d}" for i in range(n_meg)], ch_types=["mag"] * n_meg, sfreq_hz=sfreq
        ),
        provenance=Provenance(data="none: fixed random weights (delivery benchmark)", split="none"),
        simulated_training_data=False,
    )
    save_artifact(model, meta, folder / "bench-translator.onnx")


def main() -> None:
    args = _common.parser(__doc__).parse_args()
    seconds, repeats = (4.0, 1) if args.quick else (15.0, 3)

    from batch_decode import build_eeg_classifier

    from neurocast.clients.client import Client
    from neurocast.server.app import create_app
    from neurocast.server.config import Settings
    from neurocast.server.registry import ModelRegistry
    from neurocast.server.runner import ServerThread
    from neurocast.streaming.sources.simulator.simulator import Simulator
    from neurocast.streaming.sources.specs import SimulatorSpec

    spec = SimulatorSpec(modality="eeg", sfreq=250.0)
    stream = Simulator(spec).stream_info
    folder = Path(tempfile.mkdtemp(prefix="ws-fanout-"))
    build_eeg_classifier(stream.ch_names, stream.sfreq, folder)
    _build_translator(stream.ch_names, stream.sfreq, folder)
    registry = ModelRegistry.discover(folder, packaged=False)
    # a short per-client queue, so that the stalled client starts dropping within a quick run
    settings = Settings(token=TOKEN, ws_queue_size=QUEUE_SIZE)
    server = ServerThread(create_app(settings, registry))
    with server, Client(server.url, token=TOKEN) as client:
        session = client.create_session(spec, registry.ids(), name="bench ws_fanout")
        if session.status != "running":
            sys.exit(f"The session did not start: {session.status} {session.error}")
        while client.session(session.id).n_decoded < 40:
            time.sleep(0.1)
        path = f"/v1/sessions/{session.id}/stream"
        url = server.url.replace("http", "ws", 1) + path
        figures: dict[str, Any] = {}
        cases = [
            ("ws_1", 1, False),
            ("ws_10", 10, False),
            ("ws_100", 100, False),
            ("ws_100_with_stalled", 100, True),
        ]
        stalled_dropped = 0
        for name, n_clients, stalled in cases:
            runs, received, dropped = [], 0, 0
            for _ in range(repeats):
                before = client.session(session.id).dropped_messages
                sock = _stalled_client(server.host, server.port, path) if stalled else None
                out = _run_case(url, n_clients, seconds)
                if sock is not None:
                    stalled_dropped += client.session(session.id).dropped_messages - before
                    sock.close()
                runs.append(out["latencies"])
                received += out["received"]
                dropped += out["dropped"]
            p50, p99 = _common.median_of_runs(runs)
            figures[f"{name}_p50_ms"] = round(p50, 3)
            figures[f"{name}_p99_ms"] = round(p99, 3)
            figures[f"{name}_drop_fraction"] = round(dropped / max(1, received + dropped), 5)
            _common.log(
                f"{name}: p50 {p50:.3f} ms, p99 {p99:.3f} ms, {received} received, "
                f"{dropped} dropped"
            )
        final = client.session(session.id)
        figures["stalled_client_dropped"] = stalled_dropped
        delivery = final.latency.get("delivery")
        if delivery is not None:  # server side, recent messages: ready → written to the socket
            figures["server_delivery_p50_ms"] = round(delivery.p50_ms, 3)
            figures["server_delivery_p99_ms"] = round(delivery.p99_ms, 3)
        figures["decode_rate_hz"] = round(final.decode_rate_hz, 2)
        figures["n_skipped"] = final.n_skipped
        figures["results_per_s"] = round(1 / final.stride_s, 1)
        figures["client_processes"] = CLIENT_PROCESSES
        figures["queue_size"] = QUEUE_SIZE
        figures["seconds_per_run"] = seconds
        figures["runs"] = repeats
        figures["quick"] = args.quick
        client.delete_session(session.id)
    _common.emit(figures)


if __name__ == "__main__":
    main()
