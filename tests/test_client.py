"""Python clients (async and sync) and the serve / decode / watch / demo commands."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from test_server_support import SIM_SPEC, TOKEN, server_fixture, write_simulated_recording

from neurocast.clients.calls import NeurocastError
from neurocast.clients.cli import main
from neurocast.clients.client import AsyncClient
from neurocast.wire.frames import SignalFrame
from neurocast.wire.schemas import ResultMessage, StatusMessage, Subscribed

pytest_plugins = ["test_server_support"]
pytestmark = pytest.mark.timeout(120)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> Path:
    return write_simulated_recording(tmp_path_factory.mktemp("rec") / "sim_raw.fif", 2.0)


running = server_fixture()


async def test_async_client_session_and_stream(running, model_ids) -> None:
    server, _ = running
    async with AsyncClient(server.url, token=TOKEN) as nc:
        assert (await nc.health()).status == "ok"
        assert model_ids["classifier"] in {m.id for m in await nc.models()}
        session = await nc.create_session(
            SIM_SPEC, [model_ids["classifier"], model_ids["translator"]], name="async"
        )
        assert session.status == "running" and session.simulated
        got: list = []
        async with nc.stream(session.id, ["probabilities", "translation", "status"]) as stream:
            async for message in stream:
                got.append(message)
                if len(got) == 3:
                    await stream.subscribe(["probabilities"], decimate=2)
                if sum(isinstance(m, ResultMessage) for m in got) >= 6:
                    break
        assert isinstance(got[0], Subscribed)
        assert any(isinstance(m, SignalFrame) for m in got)
        assert any(isinstance(m, StatusMessage) for m in got)
        assert all(m.simulated for m in got if isinstance(m, ResultMessage))
        final = await nc.delete_session(session.id)
        assert final.status == "stopped"
        with pytest.raises(NeurocastError) as err:
            await nc.session(session.id)
        assert err.value.code == "unknown_session"


async def test_async_client_batch_decode(running, recording, model_ids) -> None:
    server, _ = running
    async with AsyncClient(server.url, token=TOKEN) as nc:
        results = await nc.decode(recording, models=[model_ids["classifier"]])
        assert results.simulated and len(results.results) > 20
        with pytest.raises(NeurocastError) as err:
            await nc.decode(recording, models=["unknown"])
        assert err.value.status_code == 422 and err.value.code == "unknown_model"


def test_sync_client(running, recording, model_ids, tmp_path) -> None:
    _, nc = running
    session = nc.create_session(SIM_SPEC, [model_ids["classifier"]])
    with nc.stream(session.id, ["probabilities"]) as stream:
        first = stream.receive(timeout=10)
        results = [stream.receive(timeout=10) for _ in range(3)]
    assert isinstance(first, Subscribed)
    assert all(isinstance(r, ResultMessage) for r in results)
    nc.delete_session(session.id)
    job = nc.submit_decode(recording, models=[model_ids["classifier"]])
    job = nc.wait_job(job.id, timeout_s=60)
    out = nc.download_results(job.id, "npz", tmp_path / "r.npz")
    npz = np.load(out)
    assert len(npz[f"{model_ids['classifier']}/window_end"]) == job.n_windows_done


def test_wrong_token_raises_a_clear_error(running) -> None:
    from neurocast.clients.client import Client

    server, _ = running
    with Client(server.url, token="wrong") as nc, pytest.raises(NeurocastError) as err:
        nc.sessions()
    assert err.value.status_code == 401 and "bearer token" in err.value.detail


def test_cli_decode_against_a_server(running, recording, model_ids, tmp_path, capsys) -> None:
    server, _ = running
    out = tmp_path / "results.parquet"
    args = ["decode", str(recording), "--out", str(out), "--url", server.url, "--token", TOKEN]
    code = main([*args, "--model", model_ids["classifier"]])
    assert code == 0
    table = pq.read_table(out)
    assert table.num_rows > 20 and set(table.column("model").to_pylist()) == {
        model_ids["classifier"]
    }
    assert "SIMULATED" in capsys.readouterr().out
    code = main([*args, "--model", "nope"])
    assert code == 2
    assert "nope" in capsys.readouterr().err


def test_cli_decode_in_process(recording, models_dir, model_ids, tmp_path, capsys) -> None:
    out = tmp_path / "results.npz"
    clf, tr = model_ids["classifier"], model_ids["translator"]
    args = ["decode", str(recording), "-m", clf, "-m", tr, "-o", str(out)]
    assert main([*args, "--models-dir", str(models_dir)]) == 0
    npz = np.load(out)
    assert len(npz[f"{clf}/window_end"]) == len(npz[f"{tr}/window_end"]) > 20
    assert npz[f"{tr}/signal"].shape[1] == 306 and bool(npz["simulated"])
    assert "SIMULATED" in capsys.readouterr().out
    # the model is unknown without its folder: a usage error naming it
    assert main(args) == 2
    assert clf in capsys.readouterr().err


def test_cli_decode_rejects_bad_arguments(tmp_path, recording, capsys) -> None:
    assert main(["decode", str(recording), "--model", "m", "--out", str(tmp_path / "r.csv")]) == 2
    assert ".parquet" in capsys.readouterr().err
    assert (
        main(
            [
                "decode",
                str(tmp_path / "none.fif"),
                "--model",
                "m",
                "--out",
                str(tmp_path / "r.json"),
            ]
        )
        == 2
    )


def test_cli_watch_prints_live_results(running, model_ids, capsys) -> None:
    server, nc = running
    session = nc.create_session(SIM_SPEC, [model_ids["classifier"]])
    try:
        code = main(
            [
                "watch",
                session.id,
                "--url",
                server.url,
                "--token",
                TOKEN,
                "--count",
                "5",
                "--outputs",
                "probabilities,status",
            ]
        )
        assert code == 0
        lines = [ln for ln in capsys.readouterr().out.splitlines() if model_ids["classifier"] in ln]
        assert len(lines) == 5
        assert all(
            ln.startswith("SIMULATED ") and "latency" in ln and "delivery" in ln for ln in lines
        )
        assert all(name in lines[0] for name in ("rest", "speech", "motor"))
    finally:
        nc.delete_session(session.id)
    assert main(["watch", "nosuch", "--url", server.url, "--token", TOKEN]) == 2
    assert main(["watch", session.id, "--url", server.url, "--outputs", "bogus"]) == 2


def test_cli_serve_refuses_auth_off_on_all_interfaces(monkeypatch, capsys) -> None:
    monkeypatch.setenv("NEUROCAST_AUTH", "off")
    assert main(["serve", "--host", "0.0.0.0"]) == 2
    assert "loopback" in capsys.readouterr().err


def test_demo_headless_prints_simulated_results() -> None:
    from neurocast.server.registry import ModelRegistry

    env = {**os.environ, "DISPLAY": "", "WAYLAND_DISPLAY": ""}
    # the demo classifier ships with the package: without it the demo cannot run, which is a
    # packaging fault, not a reason to skip
    assert any(m.id.startswith("demo") for m in ModelRegistry.discover(None).infos())
    run = subprocess.run(
        [sys.executable, "-m", "neurocast.clients.cli", "demo", "--headless", "--seconds", "6"],
        capture_output=True,
        text=True,
        timeout=110,
        env=env,
        cwd=REPO,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    lines = [ln for ln in run.stdout.splitlines() if "latency" in ln]
    assert lines, run.stdout
    assert all(ln.startswith("SIMULATED ") for ln in lines)
    assert any(" | " in ln for ln in lines)  # class probabilities
