"""Session recordings through the real server, read back with pyxdf (the reference reader)."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import pyxdf
from test_server_support import AUTH, SIM_SPEC, serve, wait_until

from neurocast.server.recordings import RecordingManager
from neurocast.wire.recordings import RecordingStatus

pytest_plugins = ["test_server_support"]
pytestmark = pytest.mark.timeout(120)


def _load(content: bytes) -> list[dict]:
    streams, _header = pyxdf.load_xdf(io.BytesIO(content), synchronize_clocks=False)
    return streams


def _by_type(streams: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for s in streams:
        out.setdefault(s["info"]["type"][0], []).append(s)
    return out


def test_recorded_at_creation_holds_stream_markers_and_outputs(registry, model_ids, tmp_path):
    models = [model_ids["classifier"], model_ids["translator"]]
    with serve(registry, state_dir=tmp_path) as (server, client):
        body = {"source": SIM_SPEC.model_dump(), "models": models, "record": True}
        r = httpx.post(f"{server.url}/v1/sessions", json=body, headers=AUTH)
        assert r.status_code == 201, r.text
        session = r.json()["id"]
        wait_until(lambda: client.session(session).n_decoded >= 40, what="40 decoded windows")
        listed = httpx.get(f"{server.url}/v1/recordings", headers=AUTH).json()["recordings"]
        assert [(x["session_id"], x["state"]) for x in listed] == [(session, "recording")]
        final = client.delete_session(session)  # stops the recording first: footers written
        rec = RecordingStatus.model_validate(
            httpx.get(f"{server.url}/v1/recordings", headers=AUTH).json()["recordings"][0]
        )
        assert rec.state == "stopped" and rec.stopped_at is not None and rec.reason is None
        assert rec.n_samples == rec.n_samples_durable > 0
        content = httpx.get(f"{server.url}{rec.download}", headers=AUTH).content
    assert len(content) == rec.bytes_written
    streams = _by_type(_load(content))
    (raw,) = streams["EEG"]
    labels = [c["label"][0] for c in raw["info"]["desc"][0]["channels"][0]["channel"]]
    assert final.stream is not None and len(labels) == final.stream.n_channels
    ts = raw["time_stamps"]
    assert len(ts) == rec.n_samples and np.all(np.diff(ts) > 0)
    assert float(raw["info"]["nominal_srate"][0]) == SIM_SPEC.sfreq
    assert raw["footer"]["info"]["sample_count"][0] == str(len(ts))
    (probs,) = streams["Probabilities"]
    (translated,) = streams["Translation"]
    # one probability row per decoded window, classes as channels, summing to one
    np.testing.assert_allclose(probs["time_series"].sum(axis=1), 1.0, atol=1e-4)
    assert probs["time_series"].shape[0] >= 40
    # window ends on the stream's clock, a whole number of strides apart: one, or more where
    # the session skipped windows (counted in its status)
    stride = round(0.025 * SIM_SPEC.sfreq) / SIM_SPEC.sfreq
    strides = np.diff(probs["time_stamps"]) / stride
    np.testing.assert_allclose(strides, np.round(strides), atol=0.05)
    assert np.all(np.round(strides) >= 1)
    assert int(np.round(strides).sum()) - len(strides) <= final.n_skipped
    assert translated["time_series"].ndim == 2 and np.all(np.diff(translated["time_stamps"]) > 0)


def test_start_stop_conflicts_and_listing_after_restart(registry, model_ids, tmp_path):
    with serve(registry, state_dir=tmp_path) as (server, client):
        session = client.create_session(SIM_SPEC, [model_ids["classifier"]]).id
        url = f"{server.url}/v1/sessions/{session}/recording"
        r = httpx.post(url, json={"raw": False, "outputs": ["probabilities"]}, headers=AUTH)
        assert r.status_code == 201, r.text
        first = RecordingStatus.model_validate(r.json())
        again = httpx.post(url, headers=AUTH)
        assert again.status_code == 409 and again.json()["code"] == "already_recording"
        wait_until(lambda: client.session(session).n_decoded >= 20, what="20 decoded windows")
        stopped = httpx.delete(url, headers=AUTH)
        assert stopped.status_code == 200 and stopped.json()["state"] == "stopped"
        gone = httpx.delete(url, headers=AUTH)
        assert gone.status_code == 404 and gone.json()["code"] == "not_recording"
        unknown = httpx.post(f"{server.url}/v1/sessions/nope/recording", headers=AUTH)
        assert unknown.status_code == 404 and unknown.json()["code"] == "unknown_session"
        missing = httpx.get(f"{server.url}/v1/recordings/nope", headers=AUTH)
        assert missing.status_code == 404 and missing.json()["code"] == "unknown_recording"
        content = httpx.get(f"{server.url}{first.download}", headers=AUTH).content
        client.delete_session(session)
    streams = _by_type(_load(content))
    assert set(streams) == {"Probabilities"}  # no raw stream asked for, one output kind
    # a new server on the same state directory lists the recording and serves its file
    with serve(registry, state_dir=tmp_path) as (server, _):
        listed = httpx.get(f"{server.url}/v1/recordings", headers=AUTH).json()["recordings"]
        assert [x["id"] for x in listed] == [first.id]
        again = httpx.get(f"{server.url}{first.download}", headers=AUTH)
        assert again.content == content


def test_a_recording_left_open_is_listed_as_stopped_with_the_reason(tmp_path: Path) -> None:
    folder = tmp_path / "recordings"
    folder.mkdir()
    status = RecordingStatus(
        id="abc",
        session_id="s1",
        state="recording",
        started_at=time.time(),
        raw=True,
        outputs=None,
        bytes_written=0,
        n_samples=0,
        n_samples_durable=0,
        n_results=0,
        download="/v1/recordings/abc",
    )
    (folder / "abc.json").write_text(status.model_dump_json())
    (folder / "abc.xdf").write_bytes(b"XDF:" + b"\0" * 96)
    manager = RecordingManager(tmp_path)
    listed = manager.statuses()
    assert [(s.id, s.state, s.bytes_written) for s in listed] == [("abc", "stopped", 100)]
    assert "last flush" in (listed[0].reason or "")
    assert json.loads((folder / "abc.json").read_text())["state"] == "stopped"


def test_shutdown_writes_the_footers(registry, model_ids, tmp_path):
    with serve(registry, state_dir=tmp_path) as (server, client):
        session = client.create_session(SIM_SPEC, [model_ids["classifier"]]).id
        r = httpx.post(f"{server.url}/v1/sessions/{session}/recording", headers=AUTH)
        rec = RecordingStatus.model_validate(r.json())
        wait_until(lambda: client.session(session).n_decoded >= 10, what="10 decoded windows")
    # the server stopped (as on SIGTERM) with the recording still running
    content = (tmp_path / "recordings" / f"{rec.id}.xdf").read_bytes()
    streams = _load(content)
    assert streams and all("footer" in s for s in streams)
    meta = json.loads((tmp_path / "recordings" / f"{rec.id}.json").read_text())
    assert meta["state"] == "stopped" and meta["stopped_at"] is not None
