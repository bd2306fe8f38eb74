"""Soak: one simulator session, 20 WebSocket subscribers (one never reads), for 30 minutes.

The server runs in its own process (``python -m neurocast.clients.cli serve``, bearer token
from ``NEUROCAST_TOKEN``) on loopback; one session decodes the SIMULATED stream (modality
"meg": the packaged demo classifier reads the 306 MEG channels) with the demo classifier,
windows every 25 ms. Nineteen subscribers read every probability message; the twentieth
subscribes and never reads, so its queue and socket buffers stay full for the whole run
(the server must drop for it, not grow). Every 5 s the server's resident memory and open
file descriptors are read from ``/proc`` and the session's decoded and skipped window counts
from the REST API.

Figures: ``rss_slope_mb_per_min`` (least-squares slope of the server's RSS after a warm-up
of a fifth of the run, at least 30 s), ``rss_start_mb``/``rss_end_mb``, ``fd_growth`` (open
descriptors at the end minus after warm-up), ``skipped_fraction`` (skipped / (decoded +
skipped) over the run after warm-up) and ``skipped_fraction_by_minute`` (the same per
minute of the run), ``messages_per_reader_min`` (fewest messages any reading subscriber
got) and ``server_alive``. No peer: this is a stability check of one server.

Usage: ``python bench/soak.py [--quick]`` (--quick: 2 minutes instead of 30); the last
stdout line is a JSON object.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import _common
import numpy as np
import websockets

from neurocast.clients.client import Client
from neurocast.streaming.sources.specs import SimulatorSpec

REPO = Path(__file__).resolve().parents[1]
N_SUBSCRIBERS = 20
SAMPLE_EVERY_S = 5.0


def free_port() -> int:
    """A TCP port free on loopback now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def n_fds(pid: int) -> int:
    """Open file descriptors of process ``pid``."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def start_server(port: int, token: str) -> subprocess.Popen[bytes]:
    """The server in a subprocess; returns once it answers."""
    env = {**os.environ, "NEUROCAST_TOKEN": token}
    proc = subprocess.Popen(
        [sys.executable, "-m", "neurocast.clients.cli", "serve", "--port", str(port),
         "--log-level", "warning"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr is not None else ""
            raise RuntimeError(f"server exited: {err[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc
        except OSError:
            time.sleep(0.25)
    proc.kill()
    raise RuntimeError("server did not start within 120 s")


async def subscriber(url: str, token: str, reads: bool, counts: list[int], i: int) -> None:
    """One WebSocket client: subscribes, then reads every message or none at all."""
    async with websockets.connect(
        url, additional_headers={"Authorization": f"Bearer {token}"}, max_size=None
    ) as ws:
        await ws.send(json.dumps({"type": "subscribe", "outputs": ["probabilities", "status"]}))
        if not reads:
            await asyncio.Future()  # holds the connection open, never reading
        async for _ in ws:
            counts[i] += 1


async def soak(duration_s: float, port: int, token: str, pid: int) -> dict[str, Any]:
    client = Client(f"http://127.0.0.1:{port}", token=token)
    model = next(m.id for m in client.models() if m.id.startswith("demo"))
    session = client.create_session(SimulatorSpec(modality="meg", seed=1), [model])
    if session.status != "running":
        raise RuntimeError(f"session did not start: {session.error}")
    url = f"ws://127.0.0.1:{port}/v1/sessions/{session.id}/stream"
    counts = [0] * N_SUBSCRIBERS
    tasks = [
        asyncio.create_task(subscriber(url, token, i != N_SUBSCRIBERS - 1, counts, i))
        for i in range(N_SUBSCRIBERS)
    ]
    samples: list[dict[str, float]] = []
    t0 = time.monotonic()
    while (now := time.monotonic() - t0) < duration_s:
        status = await asyncio.to_thread(client.session, session.id)
        samples.append(
            {
                "t": now,
                "rss": rss_mb(pid),
                "fds": n_fds(pid),
                "decoded": status.n_decoded,
                "skipped": status.n_skipped,
            }
        )
        _common.log(
            f"{now:6.0f} s: rss {samples[-1]['rss']:.0f} MiB, fds {samples[-1]['fds']}, "
            f"decoded {status.n_decoded}, skipped {status.n_skipped}, state {status.status}"
        )
        failed = [t for t in tasks if t.done() and t.exception() is not None]
        if failed:
            raise RuntimeError(f"a subscriber failed: {failed[0].exception()!r}")
        await asyncio.sleep(SAMPLE_EVERY_S)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    client.delete_session(session.id)
    client.close()
    return summarise(samples, duration_s, counts)


def summarise(
    samples: list[dict[str, float]], duration_s: float, counts: list[int]
) -> dict[str, Any]:
    """The soak figures from the periodic samples."""
    t = np.array([s["t"] for s in samples])
    warm = t >= max(30.0, duration_s / 5)
    if warm.sum() < 2:
        raise RuntimeError("too few samples after the warm-up")
    rss = np.array([s["rss"] for s in samples])
    slope_per_s = np.polyfit(t[warm], rss[warm], 1)[0]
    fds = np.array([s["fds"] for s in samples])
    decoded = np.array([s["decoded"] for s in samples])
    skipped = np.array([s["skipped"] for s in samples])
    first = int(np.argmax(warm))

    def fraction(a: int, b: int) -> float:
        d, k = decoded[b] - decoded[a], skipped[b] - skipped[a]
        return float(k / (d + k)) if d + k else float("nan")

    by_minute = []
    edges = [int(np.searchsorted(t, m * 60.0)) for m in range(int(t[-1] // 60) + 1)]
    edges.append(len(t) - 1)
    for a, b in itertools.pairwise(edges):
        if b > a:
            by_minute.append(round(fraction(a, b), 4))
    return {
        "rss_slope_mb_per_min": round(float(slope_per_s * 60), 3),
        "rss_start_mb": round(float(rss[first]), 1),
        "rss_end_mb": round(float(rss[-1]), 1),
        "fd_growth": int(fds[-1] - fds[first]),
        "skipped_fraction": round(fraction(first, len(t) - 1), 4),
        "skipped_fraction_by_minute": by_minute,
        "windows_decoded": int(decoded[-1]),
        "messages_per_reader_min": int(min(counts[:-1])),
        "messages_never_reader": int(counts[-1]),
        "warmup_s": round(float(t[first]), 1),
    }


def main() -> None:
    args = _common.parser(__doc__).parse_args()
    duration_s = 120.0 if args.quick else 1800.0
    token = secrets.token_urlsafe(16)
    port = free_port()
    t_start = time.perf_counter()
    server = start_server(port, token)
    try:
        figures = asyncio.run(soak(duration_s, port, token, server.pid))
        figures["server_alive"] = server.poll() is None
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
    figures.update(
        {
            "subscribers": N_SUBSCRIBERS,
            "never_reading": 1,
            "duration_s": duration_s,
            "simulated": True,
            "quick": args.quick,
            "wall_s": round(time.perf_counter() - t_start, 1),
        }
    )
    _common.emit(figures)


if __name__ == "__main__":
    main()
