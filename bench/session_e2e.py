"""The demo configuration through the real server: per-model latency, skips, CPU, capacity.

A ``neurocast serve`` process (uvicorn, its own process so its CPU time is its own) runs N
sessions, each decoding the embedded simulator's 1 kHz EEG+MEG stream (SIMULATED; 306 MEG and
64 EEG channels, ``n_channels`` in the output) with the demo models (classifier, image
retrieval, EEG→MEG translation; whichever of them are installed is said in the output). One
plain ``websockets`` client per session, in this process, subscribes to every result.

Per model (at N = 1): ``<model>_p50_ms`` / ``<model>_p99_ms``, the time from the window's last
sample to the result being ready (acquisition + preprocessing + inference, as the server
reports it), and ``e2e_<model>_p99_ms``, from the window's last sample (simulator clock = this
machine's monotonic clock) to the message being received by the client. ``total_p50_ms`` /
``total_p99_ms``: over every result of every model. ``skipped_fraction``: windows skipped
over windows due (target 0). ``server_cpu_s_per_decoded_s``: server CPU seconds (user +
system, from ``/proc``) per second of stream decoded. For N = 1, 2, 4, 8 (``--quick``: 1, 2):
``skipped_fraction_n{N}`` and ``total_p99_ms_n{N}``; ``sessions_without_skips`` is the largest
N tried with no skipped window.

Each N is measured over ``SECONDS`` (``--quick``: 8 s) after a warm-up; the session counters
are differences over that span.

Usage: ``python bench/session_e2e.py [--quick]``; the last stdout line is a JSON object.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common
import httpx
import websockets

TOKEN = "bench-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DEMO_MODELS = ("demo-classifier", "demo-retrieval", "demo-translator")
WARM_UP_S = 4.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _start_server(port: int, state_dir: str) -> subprocess.Popen[bytes]:
    # a state directory of its own: no session of another run is restored into the figures
    env = {
        **os.environ,
        "NEUROCAST_TOKEN": TOKEN,
        "NEUROCAST_STATE_DIR": state_dir,
        "NEUROCAST_RESTORE_SESSIONS": "false",
    }
    cmd = [sys.executable, "-m", "neurocast.clients.cli", "serve", "--port", str(port)]
    cmd += ["--log-level", "warning"]
    proc = subprocess.Popen(cmd, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("neurocast serve did not answer /health within 60 s")


def _latency(message: dict[str, Any]) -> float:
    lat = message["latency"]
    return float(lat["acquisition_ms"] + lat["preprocessing_ms"] + lat["inference_ms"])


async def _collect(url: str, seconds: float, out: list[tuple[str, float, float]]) -> None:
    """Receive results for ``seconds``: (model, ready latency ms, end-to-end ms)."""
    from neurocast.wire.frames import decode_signal_frame

    async with websockets.connect(url, additional_headers=AUTH, max_size=2**24) as ws:
        outputs = ["probabilities", "retrieval", "translation"]
        await ws.send(json.dumps({"type": "subscribe", "outputs": outputs}))
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                raw = await asyncio.wait_for(ws.recv(), timeout=left)
            except TimeoutError:
                break
            received = time.monotonic()
            if isinstance(raw, bytes):
                frame = decode_signal_frame(raw)
                meta: dict[str, Any] = {**frame.meta, "t_window_end": frame.t_window_end}
            else:
                meta = json.loads(raw)
                if meta.get("type") != "result":
                    continue
            e2e = (received - float(meta["t_window_end"])) * 1e3
            out.append((str(meta["model"]), _latency(meta), e2e))


def _run(base: str, models: list[str], n_sessions: int, seconds: float, pid: int) -> dict:
    with httpx.Client(base_url=base, headers=AUTH, timeout=30) as http:
        ids = []
        for k in range(n_sessions):
            body = {
                "source": {"kind": "simulator", "modality": "both", "seed": k},
                "models": models,
                "name": f"e2e-{k}",
            }
            r = http.post("/v1/sessions", json=body)
            r.raise_for_status()
            ids.append(r.json()["id"])
        time.sleep(WARM_UP_S)
        before = [http.get(f"/v1/sessions/{i}").json() for i in ids]
        cpu0 = _cpu_seconds(pid)
        samples: list[tuple[str, float, float]] = []
        ws_base = base.replace("http", "ws", 1)

        async def all_clients() -> None:
            await asyncio.gather(
                *(_collect(f"{ws_base}/v1/sessions/{i}/stream", seconds, samples) for i in ids)
            )

        t0 = time.monotonic()
        asyncio.run(all_clients())
        elapsed = time.monotonic() - t0
        cpu = _cpu_seconds(pid) - cpu0
        after = [http.get(f"/v1/sessions/{i}").json() for i in ids]
        for i in ids:
            http.delete(f"/v1/sessions/{i}")
    decoded = sum(a["n_decoded"] - b["n_decoded"] for a, b in zip(after, before, strict=True))
    skipped = sum(a["n_skipped"] - b["n_skipped"] for a, b in zip(after, before, strict=True))
    return {
        "samples": samples,
        "decoded": decoded,
        "skipped": skipped,
        "skipped_fraction": skipped / max(decoded + skipped, 1),
        "cpu_s_per_decoded_s": cpu / (elapsed * n_sessions),
        "failed": [a.get("error") for a in after if a["status"] == "failed"],
        "n_channels": (after[0].get("stream") or {}).get("n_channels"),
    }


def _single_session_figures(run: dict, models: list[str], seconds: float) -> dict[str, Any]:
    """Per-model and total latency, skips and CPU of the one-session run."""
    out: dict[str, Any] = {}
    for model in models:
        mine = [s for s in run["samples"] if s[0] == model]
        p50, p99 = _common.percentiles([s[1] for s in mine])
        out[f"{model}_p50_ms"], out[f"{model}_p99_ms"] = round(p50, 2), round(p99, 2)
        out[f"e2e_{model}_p99_ms"] = round(_common.percentiles([s[2] for s in mine])[1], 2)
    p50, p99 = _common.percentiles([s[1] for s in run["samples"]])
    out["total_p50_ms"], out["total_p99_ms"] = round(p50, 2), round(p99, 2)
    e2e = _common.percentiles([s[2] for s in run["samples"]])
    out["e2e_p50_ms"], out["e2e_p99_ms"] = round(e2e[0], 2), round(e2e[1], 2)
    out["skipped_fraction"] = round(run["skipped_fraction"], 4)
    out["server_cpu_s_per_decoded_s"] = round(run["cpu_s_per_decoded_s"], 3)
    out["results_per_s"] = round(len(run["samples"]) / seconds, 1)
    return out


def main() -> None:
    args = _common.parser(__doc__).parse_args()
    seconds = 8.0 if args.quick else 30.0
    counts = (1, 2) if args.quick else (1, 2, 4, 8)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    state = tempfile.TemporaryDirectory(prefix="neurocast-e2e-")
    server = _start_server(port, state.name)
    figures: dict[str, Any] = {"data": "SIMULATED (embedded simulator, EEG+MEG, 1 kHz)"}
    try:
        listing = httpx.get(f"{base}/v1/models", headers=AUTH).json()
        available = {m["id"] for m in listing["models"]}
        models = [m for m in DEMO_MODELS if m in available]
        figures["models"] = models
        figures["models_missing"] = [m for m in DEMO_MODELS if m not in available]
        without_skips, clean = 0, True
        for n in counts:
            _common.log(f"{n} session(s), {seconds:g} s")
            run = _run(base, models, n, seconds, server.pid)
            if run["failed"]:
                raise RuntimeError(f"sessions failed: {run['failed']}")
            lat = [s[1] for s in run["samples"]]
            figures[f"skipped_fraction_n{n}"] = round(run["skipped_fraction"], 4)
            figures[f"total_p99_ms_n{n}"] = round(_common.percentiles(lat)[1], 2)
            clean = clean and run["skipped"] == 0
            if clean:
                without_skips = n
            if n == 1:
                figures["n_channels"] = run["n_channels"]
                figures.update(_single_session_figures(run, models, seconds))
        figures["sessions_without_skips"] = without_skips
        figures["sessions_tried"] = list(counts)
    finally:
        server.terminate()
        server.wait(20)
        state.cleanup()
    _common.emit(figures)


if __name__ == "__main__":
    main()
