"""Restarting a real ``neurocast serve`` process: killed (-9) and stopped (SIGTERM).

Finished jobs and their results survive, jobs that were running are failed with the reason
"server restarted", sessions start again with their ids and mark their first results, and the
logs never carry the token.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import websockets
from test_server_support import AUTH, SIM_SPEC, TOKEN, wait_until, write_simulated_recording

pytest_plugins = ["test_server_support"]
pytestmark = pytest.mark.timeout(180)


class Served:
    """``neurocast serve`` in a subprocess on a free port, its output in a file."""

    def __init__(self, models_dir: Path, state_dir: Path, data_root: Path, log: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "NEUROCAST_TOKEN": TOKEN,
            "NEUROCAST_PACKAGED_MODELS": "off",
            "NEUROCAST_STATE_DIR": str(state_dir),
        }
        self.log = log
        self._out = log.open("ab")
        self.proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "neurocast.clients.cli", "serve", "--port", str(self.port)),
                *("--models-dir", str(models_dir), "--data-root", str(data_root)),
                *("--log-level", "info"),
            ],
            env=env,
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )
        wait_until(self._up, timeout_s=60, what="server up")

    def _up(self) -> bool:
        assert self.proc.poll() is None, self.log.read_text()[-2000:]
        try:
            return httpx.get(self.url + "/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, headers=AUTH, timeout=30)

    def stop(self, sig: int) -> int:
        self.proc.send_signal(sig)
        code = self.proc.wait(30)
        self._out.close()
        return code


def _first_results(port: int, session_id: str, n: int) -> list[dict]:
    async def collect() -> list[dict]:
        url = f"ws://127.0.0.1:{port}/v1/sessions/{session_id}/stream?token={TOKEN}"
        out: list[dict] = []
        async with websockets.connect(url) as ws:
            await ws.send(json.dumps({"type": "subscribe", "outputs": ["probabilities"]}))
            while len(out) < n:
                message = json.loads(await asyncio.wait_for(ws.recv(), 20))
                if message["type"] == "result":
                    out.append(message)
        return out

    return asyncio.run(collect())


def test_jobs_and_sessions_survive_kill_and_sigterm(tmp_path, models_dir, model_ids) -> None:
    data_root, state_dir, log = tmp_path / "data", tmp_path / "state", tmp_path / "serve.log"
    data_root.mkdir()
    write_simulated_recording(data_root / "short_raw.fif", 4.0)
    write_simulated_recording(data_root / "long_raw.fif", 120.0)
    clf = model_ids["classifier"]
    slow_job = {"models": [clf, model_ids["retrieval"]], "path": "long_raw.fif", "stride_s": 0.005}

    first = Served(models_dir, state_dir, data_root, log)
    try:
        r = httpx.post(
            first.url + "/v1/decode", headers=AUTH, data={"models": [clf], "path": "short_raw.fif"}
        )
        done_id = r.json()["id"]
        assert first.get(f"/v1/jobs/{done_id}?wait_s=60").json()["status"] == "done"
        results = {
            f: first.get(f"/v1/jobs/{done_id}/results?format={f}").content
            for f in ("json", "npz", "parquet")
        }
        r = httpx.post(
            first.url + "/v1/sessions",
            headers=AUTH,
            timeout=30,
            json={"source": SIM_SPEC.model_dump(), "models": [clf]},
        )
        session_id = r.json()["id"]
        assert r.json()["status"] == "running"
        assert _first_results(first.port, session_id, 2)[0]["issues"] == []  # token in the URL
        running_id = httpx.post(first.url + "/v1/decode", headers=AUTH, data=slow_job).json()["id"]
        wait_until(lambda: first.get(f"/v1/jobs/{running_id}").json()["status"] == "running")
    finally:
        assert first.stop(signal.SIGKILL) == -signal.SIGKILL

    second = Served(models_dir, state_dir, data_root, log)
    try:
        jobs = {j["id"]: j for j in second.get("/v1/jobs").json()["jobs"]}
        assert jobs[done_id]["status"] == "done"
        assert (
            jobs[running_id]["status"] == "failed"
            and jobs[running_id]["error"] == "server restarted"
        )
        for fmt, body in results.items():
            assert second.get(f"/v1/jobs/{done_id}/results?format={fmt}").content == body, fmt
        # the session is back under its id; its first results mark the gap
        wait_until(lambda: second.get(f"/v1/sessions/{session_id}").json()["status"] == "running")
        assert "restarted" in _first_results(second.port, session_id, 1)[0]["issues"]
        running_id = httpx.post(second.url + "/v1/decode", headers=AUTH, data=slow_job).json()["id"]
        wait_until(lambda: second.get(f"/v1/jobs/{running_id}").json()["status"] == "running")
    finally:
        assert second.stop(signal.SIGTERM) in (0, -signal.SIGTERM)

    third = Served(models_dir, state_dir, data_root, log)
    try:
        jobs = {j["id"]: j for j in third.get("/v1/jobs").json()["jobs"]}
        assert jobs[done_id]["status"] == "done"
        assert (
            jobs[running_id]["status"] == "failed"
            and jobs[running_id]["error"] == "server restarted"
        )
        assert third.get(f"/v1/jobs/{done_id}/results?format=npz").content == results["npz"]
        assert [s["id"] for s in third.get("/v1/sessions").json()["sessions"]] == [session_id]
        assert (
            httpx.delete(
                f"{third.url}/v1/sessions/{session_id}", headers=AUTH, timeout=30
            ).status_code
            == 200
        )
    finally:
        third.stop(signal.SIGTERM)
    text = log.read_text()
    assert "WebSocket /v1/sessions" in text and "token=***" in text
    assert TOKEN not in text
    assert not list((state_dir / "sessions").iterdir())  # deleted: not started again
