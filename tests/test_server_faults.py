"""Faults against a real server: clients that stop reading, sources that go away, inputs that
cannot be used, a full job queue. Every exchange goes over real sockets."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
import subprocess
import sys
import uuid

import httpx
import mne
import numpy as np
import onnx
import pytest
import websockets
from test_server_support import (
    AUTH,
    EEG_PICKS,
    SIM_SPEC,
    TOKEN,
    raw_websocket,
    serve,
    subscribe_frame,
    wait_until,
    write_simulated_recording,
    ws_url,
)

from neurocast.models.serving import Provenance, load_artifact, save_artifact
from neurocast.server.registry import ModelRegistry
from neurocast.streaming.sources.lsl import use_loopback_config

# liblsl reads its configuration once per process: keep discovery on this machine
if "LSLAPICFG" not in os.environ:
    use_loopback_config(f"nc-test-{uuid.uuid4().hex[:8]}")

pytest_plugins = ["test_server_support"]
pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("fault-data")
    write_simulated_recording(root / "sim_raw.fif", 6.0)
    (root / "sub").mkdir()
    write_simulated_recording(root / "sub" / "rec_raw.fif", 6.0)
    write_simulated_recording(root / "long_raw.fif", 120.0)
    return root


@pytest.fixture(scope="module")
def running(registry, data_root):
    with serve(
        registry,
        data_root=data_root,
        ws_queue_size=8,
        status_interval_s=0.25,
        ws_idle_timeout_s=1.0,
        ws_subscribe_timeout_s=0.5,
        source_lost_after_s=1.0,
        job_workers=1,
        max_queued_jobs=1,
    ) as pair:
        yield pair


def read_frames(sock: socket.socket, *, until_type: str | None = None) -> list[tuple[int, bytes]]:
    """Server frames (opcode, payload) until a close frame, EOF, or a text message of
    ``until_type``."""
    sock.settimeout(20)
    buf = b""
    frames: list[tuple[int, bytes]] = []

    def need(n: int) -> bool:
        nonlocal buf
        while len(buf) < n:
            chunk = sock.recv(65536)
            if not chunk:
                return False
            buf += chunk
        return True

    while need(2):
        opcode, length = buf[0] & 0x0F, buf[1] & 0x7F
        head = 2
        if length == 126:
            if not need(4):
                break
            length, head = struct.unpack("!H", buf[2:4])[0], 4
        elif length == 127:
            if not need(10):
                break
            length, head = struct.unpack("!Q", buf[2:10])[0], 10
        if not need(head + length):
            break
        frames.append((opcode, buf[head : head + length]))
        buf = buf[head + length :]
        if opcode == 0x8:
            break
        if until_type and opcode == 0x1 and json.loads(frames[-1][1])["type"] == until_type:
            break
    return frames


def _texts(frames: list[tuple[int, bytes]]) -> list[dict]:
    return [json.loads(p) for op, p in frames if op == 0x1]


def test_client_that_never_reads_loses_oldest_then_is_closed(running, model_ids) -> None:
    server, client = running
    s = client.create_session(SIM_SPEC, [model_ids["classifier"], model_ids["translator"]])
    try:
        stalled = raw_websocket(server, s.id, rcvbuf=4096)
        stalled.sendall(subscribe_frame(outputs=["translation", "probabilities"]))
        # it loses its oldest messages, then the server gives up on it after the idle limit
        status = wait_until(
            lambda: (
                (st := client.session(s.id)).dropped_messages > 0 and st.subscribers == 0 and st
            ),
            what="the stalled client dropped and closed",
        )
        assert status.status == "running"
        frames = read_frames(stalled)
        stalled.close()
        dropped = [m for m in _texts(frames) if m["type"] == "dropped"]
        assert dropped and dropped[-1]["total_dropped"] >= dropped[-1]["dropped"] > 0
        opcode, payload = frames[-1]
        assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] == 1008
        assert b"accepted nothing" in payload[2:]
    finally:
        client.delete_session(s.id)


def test_slow_client_is_told_what_it_lost(registry, model_ids) -> None:
    with serve(registry, ws_queue_size=4) as (server, client):
        s = client.create_session(SIM_SPEC, [model_ids["translator"]])
        slow = raw_websocket(server, s.id, rcvbuf=4096)
        try:
            slow.sendall(subscribe_frame(outputs=["translation"]))
            wait_until(lambda: client.session(s.id).dropped_messages > 0, what="drops")
            # it reads again: a dropped message says how much it lost, then the stream goes on
            frames = read_frames(slow, until_type="dropped")
            report = _texts(frames)[-1]
            assert report["type"] == "dropped" and report["dropped"] >= 1
            assert report["total_dropped"] >= report["dropped"]
            slow.settimeout(10)
            assert slow.recv(1)  # still open, still sending
            assert client.session(s.id).subscribers == 1
        finally:
            slow.close()


async def test_wrong_query_token_and_silent_client(running, model_ids) -> None:
    server, client = running
    s = await asyncio.to_thread(client.create_session, SIM_SPEC, [model_ids["classifier"]])
    try:
        with pytest.raises(websockets.InvalidStatus) as err:
            async with websockets.connect(ws_url(server, s.id) + "?token=wrong-token"):
                pass
        assert err.value.response.status_code == 401
        # a client that never subscribes gets the reason, then 1008
        async with websockets.connect(ws_url(server, s.id) + f"?token={TOKEN}") as ws:
            message = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert message["type"] == "error" and message["code"] == "subscribe_timeout"
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    finally:
        await asyncio.to_thread(client.delete_session, s.id)


def test_huge_invalid_body_is_not_echoed(running) -> None:
    server, _ = running
    body = {"source": {"kind": "simulator"}, "models": ["x"], "name": "n" * (5 * 1024**2)}
    r = httpx.post(server.url + "/v1/sessions", headers=AUTH, json=body, timeout=60)
    assert r.status_code == 422
    assert len(r.content) < 2000, len(r.content)
    error = r.json()["detail"][0]
    assert error["loc"][-1] == "name" and "characters in all" in error["input"]


def test_full_job_queue_and_cancelling_a_running_job(running, model_ids) -> None:
    server, client = running
    models = [model_ids["classifier"], model_ids["retrieval"]]

    def submit() -> httpx.Response:
        data = {"models": models, "path": "long_raw.fif", "stride_s": "0.005"}
        return httpx.post(server.url + "/v1/decode", headers=AUTH, data=data, timeout=30)

    first = submit().json()["id"]
    wait_until(
        lambda: (j := client.job(first)).status == "running" and j.n_windows_done > 0,
        what="the first job running",
    )
    second = submit()
    assert second.status_code == 202 and second.json()["status"] == "queued"
    refused = submit()
    assert refused.status_code == 429 and refused.json()["code"] == "job_queue_full"
    assert int(refused.headers["Retry-After"]) >= 1
    # cancelling the running job stops it and frees the worker for the queued one
    r = httpx.delete(f"{server.url}/v1/jobs/{first}", headers=AUTH, timeout=30)
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert httpx.get(f"{server.url}/v1/jobs/{first}", headers=AUTH).status_code == 404
    queued = second.json()["id"]
    wait_until(lambda: client.job(queued).status == "running", what="the queued job starting")
    assert httpx.delete(f"{server.url}/v1/jobs/{queued}", headers=AUTH).json()["status"] in (
        "cancelled",
        "done",
    )


def test_nan_samples_are_one_issue_per_window(running, data_root, model_ids) -> None:
    _, client = running
    raw = mne.io.read_raw_fif(data_root / "sim_raw.fif", preload=True, verbose="error")
    raw._data[2, 500:560] = np.nan
    raw.save(data_root / "nan_raw.fif", overwrite=True, verbose="error")
    job = client.submit_decode(server_path="nan_raw.fif", models=[model_ids["classifier"]])
    job = client.wait_job(job.id, timeout_s=60)
    assert job.status == "done", job.error
    records = client.job_results(job.id).results
    hit = [r for r in records if "non_finite" in r.issues]
    assert hit and all(not r.valid for r in hit)
    for r in records:
        assert len(r.issues) == len(set(r.issues)), r.issues
    assert len({r.window_end for r in hit}) == len(hit)  # one record per window and model


def test_unreadable_files_say_what_was_expected(running, data_root, tmp_path, model_ids) -> None:
    server, client = running
    clf = model_ids["classifier"]
    raw = mne.io.read_raw_fif(data_root / "sim_raw.fif", preload=True, verbose="error")
    edf = tmp_path / "whole.edf"
    mne.export.export_raw(edf, raw.copy().pick(EEG_PICKS), overwrite=True, verbose="error")
    cut = edf.read_bytes()[:1500]
    r = httpx.post(
        server.url + "/v1/decode",
        headers=AUTH,
        data={"models": [clf]},
        files={"file": ("cut.edf", cut)},
        timeout=30,
    )
    assert r.status_code == 422 and r.json()["code"] == "unreadable_file"
    detail = r.json()["detail"]
    assert detail.startswith("Cannot decode 'cut.edf'") and "EDF" in detail
    assert "expected" in detail and "found 1,500 bytes" in detail
    assert "IndexError" not in detail and str(tmp_path) not in detail
    # the same file replayed: the verb is the session's
    (data_root / "cut.edf").write_bytes(cut)
    s = client.create_session({"kind": "replay", "path": "cut.edf"}, [clf])
    try:
        assert s.status == "failed" and "Cannot replay 'cut.edf'" in (s.error or "")
        assert str(data_root) not in (s.error or "")
    finally:
        client.delete_session(s.id)


def test_no_server_paths_in_responses(running, data_root, model_ids) -> None:
    server, client = running
    spec = {"kind": "replay", "path": "sub/rec_raw.fif", "loop": True}
    s = client.create_session(spec, [model_ids["classifier"]])
    try:
        assert s.status == "running", s.error
        assert s.stream is not None and s.stream.source_id == "replay:sub/rec_raw.fif"
        listing = httpx.get(server.url + "/v1/sessions", headers=AUTH).text
        assert str(data_root) not in listing
    finally:
        client.delete_session(s.id)


def test_model_provenance_shows_file_names_only(models_dir, tmp_path) -> None:
    artifact = load_artifact(models_dir / "classifier.onnx")
    meta = artifact.metadata.model_copy(
        update={
            "name": "trained-elsewhere",
            "provenance": Provenance(
                data="/home/someone/data/sub-01_raw.fif; /home/someone/data/sub-02_raw.fif",
                split="train/validation: trials; test: /mnt/lab/sub-03_raw.fif",
            ),
        }
    )
    model = onnx.load(models_dir / "classifier.onnx")
    del model.metadata_props[:]
    save_artifact(model, meta, tmp_path / "elsewhere.onnx")
    with serve(ModelRegistry.discover(tmp_path, packaged=False)) as (server, _):
        r = httpx.get(server.url + "/v1/models/trained-elsewhere", headers=AUTH)
    assert r.status_code == 200
    provenance = r.json()["metadata"]["provenance"]
    assert provenance["data"] == "sub-01_raw.fif; sub-02_raw.fif"
    assert provenance["split"] == "train/validation: trials; test: sub-03_raw.fif"
    assert "/home" not in r.text and "/mnt" not in r.text


_PUSHER = """
import sys, time, numpy as np, pylsl
name, sid = sys.argv[1], sys.argv[2]
labels = sys.argv[3].split(",")
info = pylsl.StreamInfo(name, "EEG", len(labels), 250.0, "float32", sid)
info.set_channel_labels(labels)
info.set_channel_types(["EEG"] * len(labels))
info.set_channel_units(["microvolts"] * len(labels))
out = pylsl.StreamOutlet(info)
print("ready", flush=True)
rng = np.random.default_rng(0)
while True:
    out.push_chunk((rng.standard_normal((5, len(labels))) * 10).astype(np.float32))
    time.sleep(0.02)
"""


def _pusher(name: str, sid: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _PUSHER, name, sid, ",".join(EEG_PICKS)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


async def test_lsl_outlet_killed_and_restarted(running, model_ids) -> None:
    server, client = running
    name, sid = f"nc-{uuid.uuid4().hex[:8]}", f"sid-{uuid.uuid4().hex[:8]}"
    proc = _pusher(name, sid)
    spec = {"kind": "lsl", "source_id": sid, "stall_after_s": 0.3}
    s = await asyncio.to_thread(client.create_session, spec, [model_ids["classifier"]])
    try:
        assert s.status == "running", s.error
        async with websockets.connect(ws_url(server, s.id), additional_headers=AUTH) as ws:
            await ws.send(json.dumps({"type": "subscribe", "outputs": ["probabilities", "status"]}))

            async def until(check) -> dict:
                while True:
                    message = json.loads(await asyncio.wait_for(ws.recv(), 30))
                    if check(message):
                        return message

            await until(lambda m: m["type"] == "result")
            proc.kill()
            proc.wait()
            stalled = await until(
                lambda m: m["type"] == "status" and m["session"]["status"] == "stalled"
            )
            assert stalled["session"]["error"] is None
            # gone longer than NEUROCAST_SOURCE_LOST_AFTER_S: a reason, still waiting
            lost = await until(lambda m: m["type"] == "status" and m["session"]["error"])
            assert lost["session"]["status"] == "stalled"
            assert sid in lost["session"]["error"] and "waiting" in lost["session"]["error"]
            proc = _pusher(name, sid)  # the device comes back with the same source id
            back = await until(
                lambda m: m["type"] == "status" and m["session"]["status"] == "running"
            )
            assert back["session"]["error"] is None
            last_end = back["session"]["n_decoded"]
            result = await until(lambda m: m["type"] == "result")
            assert result["model"] == model_ids["classifier"]
        status = await asyncio.to_thread(client.session, s.id)
        assert status.status == "running" and status.n_decoded > last_end
    finally:
        proc.kill()
        proc.wait()
        await asyncio.to_thread(client.delete_session, s.id)
