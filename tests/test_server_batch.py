"""Batch decoding over REST: uploads, data-root paths, result formats, bad files, parity."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest
import websockets
from test_server_support import AUTH, serve, write_simulated_recording, ws_url

from neurocast.clients.calls import NeurocastError
from neurocast.clients.streams import parse_message
from neurocast.wire.frames import SignalFrame
from neurocast.wire.schemas import ResultMessage, StatusMessage

pytest_plugins = ["test_server_support"]
pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_simulated_recording(root / "sim_raw.fif", 3.0)
    return root


@pytest.fixture(scope="module")
def running(registry, data_root):
    with serve(registry, data_root=data_root, max_upload_bytes=4 * 1024**2) as pair:
        yield pair


def _upload(
    server, recording: Path, models: list[str], name: str | None = None, **form
) -> httpx.Response:
    with recording.open("rb") as fh:
        return httpx.post(
            server.url + "/v1/decode",
            headers=AUTH,
            data={"models": models, **form},
            files={"file": (name or recording.name, fh)},
            timeout=60,
        )


def test_upload_decodes_to_json_npz_and_parquet(running, data_root, model_ids) -> None:
    server, client = running
    clf = model_ids["classifier"]
    r = _upload(server, data_root / "sim_raw.fif", [clf])
    assert r.status_code == 202, r.text
    assert r.headers["location"] == f"/v1/jobs/{r.json()['id']}"
    job = client.wait_job(r.json()["id"], timeout_s=60)
    assert job.status == "done" and job.progress == 1.0 and job.simulated
    assert job.n_windows_done > 50 and job.n_results == job.n_windows_done
    results = client.job_results(job.id)
    assert results.simulated
    ends = [rec.window_end for rec in results.results]
    assert ends == sorted(ends) and all(rec.model == clf for rec in results.results)
    probs = np.array([rec.payload["probabilities"] for rec in results.results])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    assert any(rec.markers for rec in results.results), "the recording's events are attached"

    npz_bytes = httpx.get(f"{server.url}/v1/jobs/{job.id}/results?format=npz", headers=AUTH)
    assert npz_bytes.headers["content-type"] == "application/x-npz"
    npz = np.load(io.BytesIO(npz_bytes.content))
    np.testing.assert_array_equal(npz[f"{clf}/window_end"], ends)
    np.testing.assert_allclose(npz[f"{clf}/probabilities"], probs, rtol=1e-6)
    assert list(npz[f"{clf}/classes"]) == results.results[0].payload["classes"]
    assert bool(npz["simulated"])

    pq_bytes = httpx.get(f"{server.url}/v1/jobs/{job.id}/results?format=parquet", headers=AUTH)
    table = pq.read_table(io.BytesIO(pq_bytes.content))
    assert table.column("window_end").to_pylist() == ends
    np.testing.assert_allclose(
        np.array(table.column("probabilities").to_pylist()), probs, rtol=1e-6
    )
    assert json.loads(table.schema.metadata[b"neurocast"])["simulated"] is True


def test_translation_results_in_npz_keep_their_shape(running, data_root, model_ids) -> None:
    server, client = running
    tr = model_ids["translator"]
    job = client.submit_decode(server_path="sim_raw.fif", models=[tr])
    job = client.wait_job(job.id, timeout_s=60)
    assert job.status == "done", job.error
    npz = np.load(
        io.BytesIO(
            httpx.get(f"{server.url}/v1/jobs/{job.id}/results?format=npz", headers=AUTH).content
        )
    )
    signal = npz[f"{tr}/signal"]
    assert signal.ndim == 3 and signal.shape[0] == job.n_windows_done
    assert len(npz[f"{tr}/ch_names"]) == signal.shape[1]
    table = pq.read_table(
        io.BytesIO(
            httpx.get(f"{server.url}/v1/jobs/{job.id}/results?format=parquet", headers=AUTH).content
        )
    )
    shape = table.column("signal.shape").to_pylist()[0]
    np.testing.assert_allclose(
        np.array(table.column("signal").to_pylist()[0], dtype=np.float32).reshape(shape),
        signal[0],
    )


def test_path_decoding_refuses_traversal(running, model_ids) -> None:
    _, client = running
    for path, status in [("../../etc/passwd", 403), ("/etc/passwd", 403), ("nope_raw.fif", 404)]:
        with pytest.raises(NeurocastError) as err:
            client.submit_decode(server_path=path, models=[model_ids["classifier"]])
        assert err.value.status_code == status, path


def test_corrupt_and_truncated_uploads(running, data_root, tmp_path, model_ids) -> None:
    server, client = running
    clf = model_ids["classifier"]
    junk = tmp_path / "junk_raw.fif"
    junk.write_bytes(np.random.default_rng(0).bytes(5000))
    r = _upload(server, junk, [clf])
    assert r.status_code == 422 and r.json()["code"] == "unreadable_file"
    assert "junk_raw.fif" in r.json()["detail"]

    whole = (data_root / "sim_raw.fif").read_bytes()
    truncated = tmp_path / "cut_raw.fif"
    truncated.write_bytes(whole[: len(whole) // 2])
    r = _upload(server, truncated, [clf])
    # the header lies in the first half of the file: it is accepted, and the job fails while
    # reading the samples that are missing
    assert r.status_code == 202, r.text
    job = client.wait_job(r.json()["id"], timeout_s=60)
    assert job.status == "failed" and job.error and "cut_raw.fif" in job.error
    with pytest.raises(NeurocastError) as err:
        client.job_results(job.id)
    assert err.value.status_code == 409

    edf = tmp_path / "fake.edf"
    edf.write_bytes(b"0       " + b"\x00" * 300)
    r = _upload(server, edf, [clf])
    assert r.status_code == 422


def test_bad_decode_requests(running, data_root, tmp_path, model_ids) -> None:
    server, _ = running
    clf = model_ids["classifier"]
    rec = data_root / "sim_raw.fif"
    cases = [
        (_upload(server, rec, ["no-such-model"]), 422, "unknown_model"),
        (_upload(server, rec, [clf], name="recording"), 422, "filename_needed"),
        (
            httpx.post(server.url + "/v1/decode", headers=AUTH, data={"models": [clf]}),
            400,
            "one_input_needed",
        ),
        (_upload(server, rec, [clf], path="sim_raw.fif"), 400, "one_input_needed"),
        (_upload(server, rec, [clf], stride_s="0"), 422, None),
    ]
    empty = tmp_path / "empty_raw.fif"
    empty.write_bytes(b"")
    cases.append((_upload(server, empty, [clf]), 422, "empty_file"))
    for response, status, code in cases:
        assert response.status_code == status, response.text
        if code:
            assert response.json()["code"] == code
    r = httpx.post(server.url + "/v1/decode", data={"models": [clf], "path": "sim_raw.fif"})
    assert r.status_code == 401


def test_oversize_upload_is_refused(running, model_ids) -> None:
    server, _ = running
    big = b"\0" * (5 * 1024**2)
    r = httpx.post(
        server.url + "/v1/decode",
        headers=AUTH,
        data={"models": [model_ids["classifier"]]},
        files={"file": ("big_raw.fif", big)},
        timeout=60,
    )
    assert r.status_code == 413 and r.json()["code"] == "upload_too_large"
    assert "MiB" in r.json()["detail"]

    def chunks():  # no Content-Length: the limit applies while streaming
        boundary = b"--b0undary"
        yield boundary + b'\r\nContent-Disposition: form-data; name="models"\r\n\r\nx\r\n'
        yield (
            boundary
            + b'\r\nContent-Disposition: form-data; name="file"; filename="a_raw.fif"\r\n\r\n'
        )
        for _ in range(10):
            yield b"\0" * (1024**2)
        yield b"\r\n" + boundary + b"--\r\n"

    r = httpx.post(
        server.url + "/v1/decode",
        headers={**AUTH, "Content-Type": "multipart/form-data; boundary=b0undary"},
        content=chunks(),
        timeout=60,
    )
    assert r.status_code == 413


def test_job_bookkeeping(running, model_ids) -> None:
    server, client = running
    job = client.submit_decode(server_path="sim_raw.fif", models=[model_ids["classifier"]])
    assert job.id in {
        j["id"] for j in httpx.get(server.url + "/v1/jobs", headers=AUTH).json()["jobs"]
    }
    # one long poll is answered once the job has finished
    r = httpx.get(f"{server.url}/v1/jobs/{job.id}", params={"wait_s": 60}, headers=AUTH, timeout=90)
    assert r.status_code == 200 and r.json()["status"] == "done"
    r = httpx.get(f"{server.url}/v1/jobs/{job.id}", params={"wait_s": 61}, headers=AUTH)
    assert r.status_code == 422
    done = client.wait_job(job.id, timeout_s=60)
    assert done.windows_per_s and done.windows_per_s > 0
    assert set(done.results) == {"json", "npz", "parquet"}
    r = httpx.delete(f"{server.url}/v1/jobs/{job.id}", headers=AUTH)
    assert r.status_code == 200
    for method in ("get", "delete"):
        r = getattr(httpx, method)(f"{server.url}/v1/jobs/{job.id}", headers=AUTH)
        assert r.status_code == 404 and r.json()["code"] == "unknown_job"
    r = httpx.get(f"{server.url}/v1/jobs/{job.id}/results?format=csv", headers=AUTH)
    assert r.status_code in (404, 422)


def test_streaming_and_batch_decoding_agree(running, data_root, model_ids) -> None:
    """The same file replayed live through a session and decoded in batch: same windows, same
    outputs."""
    server, client = running
    clf, tr = model_ids["classifier"], model_ids["translator"]
    job = client.submit_decode(server_path="sim_raw.fif", models=[clf, tr])
    session = client.create_session(
        {"kind": "replay", "path": "sim_raw.fif", "speed": 2.0}, [clf, tr]
    )
    assert session.status == "running", session.error

    async def stream() -> dict[tuple[str, int], np.ndarray]:
        live: dict[tuple[str, int], np.ndarray] = {}
        async with websockets.connect(
            ws_url(server, session.id), additional_headers=AUTH, max_size=None
        ) as ws:
            await ws.send(
                json.dumps(
                    {"type": "subscribe", "outputs": ["probabilities", "translation", "status"]}
                )
            )
            while True:
                msg = parse_message(await asyncio.wait_for(ws.recv(), 20))
                if isinstance(msg, ResultMessage):
                    live[(msg.model, msg.window_end)] = np.asarray(msg.payload["probabilities"])
                elif isinstance(msg, SignalFrame):
                    live[(msg.meta["model"], msg.window_end)] = np.array(msg.data)
                elif isinstance(msg, StatusMessage) and msg.session.status == "stopped":
                    return live

    live = asyncio.run(stream())
    client.delete_session(session.id)
    job = client.wait_job(job.id, timeout_s=60)
    batch = {}
    for rec in client.job_results(job.id).results:
        value = (
            rec.payload["probabilities"] if rec.kind == "probabilities" else rec.payload["signal"]
        )
        batch[(rec.model, rec.window_end)] = np.asarray(value, dtype=np.float32)
    common = set(live) & set(batch)
    assert len({k for k in common if k[0] == clf}) > 20
    assert len({k for k in common if k[0] == tr}) > 20
    for key in common:
        # the translator's MEG is in tesla (~1e-13): an absolute tolerance would accept any
        # two outputs, so both are compared relative to the window's largest value
        scale = float(np.abs(batch[key]).max())
        assert scale > 0, key
        np.testing.assert_allclose(
            live[key] / scale, batch[key] / scale, rtol=0, atol=1e-5, err_msg=str(key)
        )
