"""The service on a Ray cluster: session actors, the relay, restarts, the decoder pool, Ray
Data batch decoding and the KubeRay manifest.

One local cluster (2 CPUs, no dashboard) serves the whole module; everything skips, saying why,
when Ray is not installed (``pip install 'neurocast[ray]'``; the dev extra includes it).
"""

from __future__ import annotations

import asyncio
import importlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

ray = pytest.importorskip(
    "ray", reason="Ray is not installed; `pip install 'neurocast[ray]'` runs the cluster tests"
)

from neurocast.catalog import load_models  # noqa: E402
from neurocast.server.cluster.actor import SessionActor  # noqa: E402
from neurocast.server.cluster.batch import decode_recordings, output_path  # noqa: E402
from neurocast.server.cluster.remote import RemoteLoop  # noqa: E402
from neurocast.server.cluster.settings import ClusterSettings, PoolModel  # noqa: E402
from neurocast.streaming.engine.batch import decode_recording, load_recording  # noqa: E402
from neurocast.streaming.engine.results import Result  # noqa: E402
from neurocast.streaming.sources.simulator import Simulator  # noqa: E402
from neurocast.streaming.sources.specs import SimulatorSpec  # noqa: E402
from neurocast.wire.tables import to_parquet  # noqa: E402

pytestmark = pytest.mark.ray

MODEL = "demo-classifier"  # reads the simulator's MEG channels
SPEC = SimulatorSpec(seed=3, modality="meg")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def ray_cluster() -> Iterator[None]:
    """A local Ray cluster for the module (shut down after it)."""
    ray.init(num_cpus=2, include_dashboard=False, namespace="neurocast-tests")
    yield
    from ray import serve

    serve.shutdown()
    ray.shutdown()


def settings(**kw: object) -> ClusterSettings:
    """Small actors so that a session, the pool and the batch workers fit in 2 CPUs."""
    base: dict[str, object] = {"session_num_cpus": 0.5, "relay_wait_s": 0.05}
    base.update(kw)
    return ClusterSettings.model_validate(base)


async def wait_for(cond: object, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.05)
    return False


async def test_session_actor_relays_live_results() -> None:
    got: list[Result] = []
    loop = RemoteLoop(
        SPEC, [MODEL], got.append, loop=asyncio.get_running_loop(), settings=settings()
    )
    await asyncio.to_thread(loop.start)
    try:
        assert loop.engine is not None and loop.engine.stream.simulated
        assert loop.engine.stream.n_channels == 306
        assert await wait_for(lambda: len(got) >= 20 and loop.stats().n_decoded >= 20, 10)
        ends = [r.window_end for r in got]
        assert ends == sorted(ends) and len(set(ends)) == len(ends)
        assert all(r.model == MODEL and r.simulated for r in got)
        probs = np.array([r.payload["probabilities"] for r in got])
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
        # same node, same monotonic clock: the relay delivers within a few stride periods
        delay_ms = [(r.ready_time - (r.t_window_end + r.clock_offset)) * 1e3 for r in got]
        assert 0 <= float(np.median(delay_ms)) < 200
        stats = loop.stats()
        assert stats.status == "running" and loop.running
        assert "inference_ms" in stats.latency_p50_ms
    finally:
        await asyncio.to_thread(loop.stop)
    assert loop.stats().status == "stopped" and not loop.running


def test_actor_queue_drops_oldest_and_counts() -> None:
    actor = (
        ray.remote(SessionActor)
        .options(num_cpus=0.5, max_concurrency=4)
        .remote(SPEC.model_dump(mode="json"), [MODEL], queue_size=5)
    )
    try:
        assert ray.get(actor.start.remote())["error"] is None
        time.sleep(1.5)  # tens of windows decoded, nobody pulling
        batch = ray.get(actor.next_results.remote(100, 0.1))
        ends = [r["window_end"] for r in batch["results"]]
        assert len(ends) == 5 and batch["dropped"] >= 10
        assert np.diff(ends).tolist() == [25] * 4  # the newest five, in order
        stats = ray.get(actor.stats.remote())
        assert stats["dropped_total"] >= batch["dropped"]
        assert stats["n_decoded"] >= batch["dropped"] + 5
        later = ray.get(actor.next_results.remote(100, 1.0))
        assert later["results"] and later["results"][0]["window_end"] > ends[-1]
    finally:
        ray.get(actor.stop.remote())
        ray.kill(actor)


def test_unopenable_source_reports_reason() -> None:
    bad = SimulatorSpec(seed=0, modality="eeg")  # the MEG classifier cannot read EEG
    event_loop = asyncio.new_event_loop()
    try:
        loop = RemoteLoop(bad, [MODEL], lambda r: None, loop=event_loop, settings=settings())
        with pytest.raises(RuntimeError, match=r"(?i)channel|meg|stream"):
            loop.start()
        assert loop.actor is None
    finally:
        event_loop.close()


async def test_killed_actor_fails_session_without_restart() -> None:
    loop = RemoteLoop(
        SPEC,
        [MODEL],
        lambda r: None,
        loop=asyncio.get_running_loop(),
        settings=settings(restart="never"),
    )
    await asyncio.to_thread(loop.start)
    assert await wait_for(lambda: loop.stats().n_decoded > 0, 10)
    ray.kill(loop.actor)
    assert await wait_for(lambda: loop.stats().status == "failed", 10)
    stats = loop.stats()
    assert stats.error is not None and "ActorDiedError" in stats.error
    assert "ray.kill" in stats.error and loop.restarts == 0
    await asyncio.to_thread(loop.stop)


async def test_killed_actor_restarts_and_resumes_live() -> None:
    got: list[Result] = []
    loop = RemoteLoop(
        SPEC,
        [MODEL],
        got.append,
        loop=asyncio.get_running_loop(),
        settings=settings(restart="on_failure", max_restarts=1),
    )
    await asyncio.to_thread(loop.start)
    try:
        assert await wait_for(lambda: len(got) >= 5, 10)
        first = loop.actor
        ray.kill(first)
        killed_at = time.monotonic()
        assert await wait_for(
            lambda: loop.restarts == 1 and any(r.ready_time > killed_at for r in got), 30
        )
        assert loop.actor is not None and loop.actor != first
        fresh = [r for r in got if r.ready_time > killed_at]
        # resumed on the live stream: the new results are of samples taken after the kill
        assert min(r.t_window_end + r.clock_offset for r in fresh) > killed_at - 0.5
        assert loop.stats().status == "running" and loop.error is None
    finally:
        await asyncio.to_thread(loop.stop)


def test_decoder_pool_batches_across_callers() -> None:
    from ray import serve

    from neurocast.server.cluster.pool import PooledWindowModel, deploy_pool, pool_info

    pool = PoolModel(model=MODEL, num_cpus=0, max_batch_size=8, batch_wait_timeout_s=0.05)
    handles = deploy_pool([pool])
    try:
        pooled = PooledWindowModel.connect(MODEL, pool.app_name)
        (local,) = load_models([MODEL], None)
        shape = pooled.local.metadata.input.shape
        rng = np.random.default_rng(0)
        windows = rng.standard_normal((16, *shape)).astype(np.float32)
        out: dict[int, dict[str, object]] = {}

        def call(i: int) -> None:
            out[i] = pooled.run(windows[i])

        threads = [threading.Thread(target=call, args=(i,)) for i in range(len(windows))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(out) == len(windows)
        for i, w in enumerate(windows):
            want = local.run(w)
            assert out[i]["classes"] == want["classes"]
            np.testing.assert_allclose(out[i]["probabilities"], want["probabilities"], rtol=1e-4)
        (info,) = pool_info(handles[MODEL])
        assert info["provider"] == "CPUExecutionProvider" and info["model"] == MODEL
        assert sum(info["batch_sizes"].values()) < len(windows)  # some calls shared a batch
        assert max(info["batch_sizes"]) > 1
        # a live session whose decoder is the pool
        got: list[Result] = []

        async def session() -> None:
            loop = RemoteLoop(
                SPEC,
                [MODEL],
                got.append,
                loop=asyncio.get_running_loop(),
                settings=settings(pool=[pool.model_dump()]),
            )
            await asyncio.to_thread(loop.start)
            try:
                assert await wait_for(lambda: len(got) >= 10, 15)
            finally:
                await asyncio.to_thread(loop.stop)

        n_before = sum(pool_info(handles[MODEL])[0]["batch_sizes"].values())
        asyncio.run(session())
        assert sum(pool_info(handles[MODEL])[0]["batch_sizes"].values()) >= n_before + 10
        assert all(abs(sum(r.payload["probabilities"]) - 1) < 1e-5 for r in got)
    finally:
        serve.delete(pool.app_name)


@pytest.fixture(scope="module")
def recordings(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("recordings")
    paths = []
    for seed in range(3):
        path = folder / f"sim{seed}_raw.fif"
        Simulator(seed=seed, modality="meg").simulate_raw(3.0).save(path, verbose="error")
        paths.append(path)
    return paths


_TIMING = {"acquisition_ms", "preprocessing_ms", "inference_ms"}


def _table(data: bytes | Path) -> dict[str, list[object]]:
    table = pq.read_table(data if isinstance(data, Path) else pa_buffer(data))
    return {k: v for k, v in table.to_pydict().items() if k not in _TIMING}


def pa_buffer(data: bytes) -> object:
    import pyarrow as pa

    return pa.BufferReader(data)


def _worker_pids(busy: bool) -> list[int]:
    """Ray Data workers of the decoding pool (``busy``: those running a task now)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                title = f.read().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        if "RecordingDecoder" in title and (not busy or title.endswith(".submit")):
            pids.append(int(entry))
    return pids


def test_batch_decoding_survives_a_killed_worker(recordings: list[Path], tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    killed: list[tuple[int, int]] = []  # (pid, recordings finished at the time)
    stop = threading.Event()

    def killer() -> None:
        while not stop.is_set() and not killed:
            for pid in _worker_pids(busy=True):
                done = len(list(out_dir.glob("*.parquet"))) if out_dir.exists() else 0
                os.kill(pid, signal.SIGKILL)
                killed.append((pid, done))
                return
            time.sleep(0.005)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    progress: list[tuple[int, int]] = []
    try:
        outcomes = decode_recordings(
            recordings,
            [MODEL],
            out_dir,
            workers=1,
            on_done=lambda o, k, n: progress.append((k, n)),
        )
    finally:
        stop.set()
        thread.join(5)
    assert killed, "the worker was never seen decoding"
    assert killed[0][1] < len(recordings)  # killed before the job was done
    assert progress == [(k, len(recordings)) for k in range(1, len(recordings) + 1)]
    # nothing lost, nothing duplicated
    assert [o.path for o in outcomes] == [str(p.resolve()) for p in recordings]
    assert all(o.error is None for o in outcomes)
    assert sorted(out_dir.iterdir()) == sorted(output_path(p, out_dir) for p in recordings)
    assert any(o.worker_pid != killed[0][0] for o in outcomes)
    # equal to single-process batch decoding
    (model,) = load_models([MODEL], None)
    for path, outcome in zip(recordings, outcomes, strict=True):
        recording = load_recording(path)
        local = decode_recording(recording, [model])
        assert outcome.n_results == len(local) and outcome.n_windows == len(local)
        assert outcome.out is not None
        got = _table(Path(outcome.out))
        want = _table(to_parquet(local, recording.stream.simulated))
        assert got.keys() == want.keys()
        for key in want:
            if key == "probabilities":
                np.testing.assert_allclose(got[key], want[key], rtol=1e-5)
            else:
                assert got[key] == want[key], key


def test_rayservice_manifest_references_real_code() -> None:
    from neurocast.catalog import PACKAGED_DIR
    from neurocast.server.cluster.settings import ClusterSettings as Cluster

    manifest = yaml.safe_load((ROOT / "deploy" / "ray" / "rayservice.yaml").read_text())
    assert manifest["apiVersion"].startswith("ray.io/") and manifest["kind"] == "RayService"
    spec = manifest["spec"]
    serve_config = yaml.safe_load(spec["serveConfigV2"])
    apps = {a["name"]: a for a in serve_config["applications"]}
    assert "gateway" in apps and any(n.startswith("decoder-") for n in apps)
    packaged = {p.stem for p in PACKAGED_DIR.glob("*.onnx")}
    for name, app in apps.items():
        module, _, attr = app["import_path"].partition(":")
        target = getattr(importlib.import_module(module), attr)
        assert callable(target), app["import_path"]
        if name.startswith("decoder-"):
            args = app["args"]
            pool = PoolModel(**{k: v for k, v in args.items() if k != "models_dir"})
            assert pool.app_name == name and pool.model in packaged
    gateway_env = {
        e["name"]: e.get("value")
        for e in spec["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0][
            "env"
        ]
    }
    # the gateway's environment must be settings the service reads
    cluster_fields = {f"NEUROCAST_RAY_{f.upper()}" for f in Cluster.model_fields}
    for key in gateway_env:
        if key.startswith("NEUROCAST_RAY_"):
            assert key in cluster_fields, key
    pooled = Cluster.model_validate_json(
        '{"pool": ' + gateway_env["NEUROCAST_RAY_POOL"] + "}"
    ).pooled()
    assert set(pooled.values()) <= set(apps)
    workers = spec["rayClusterConfig"]["workerGroupSpecs"]
    assert workers and all(w["template"]["spec"]["containers"][0]["image"] for w in workers)


def test_job_decoding_in_a_task_equals_local(recordings: list[Path], tmp_path: Path) -> None:
    from neurocast.server.cluster.batch import decode_file_on_cluster
    from neurocast.streaming.engine.batch import RecordingError

    seen: list[Result] = []
    got = decode_file_on_cluster(recordings[0], [MODEL], on_result=seen.append)
    (model,) = load_models([MODEL], None)
    want = decode_recording(load_recording(recordings[0]), [model])
    assert [r.window_end for r in got] == [r.window_end for r in want] and seen == got
    for a, b in zip(got, want, strict=True):
        # float32 graphs: thread counts change the summation order in the last bits
        np.testing.assert_allclose(
            a.payload["probabilities"], b.payload["probabilities"], rtol=1e-5
        )
        assert a.markers == b.markers and a.valid == b.valid
    junk = tmp_path / "junk_raw.fif"
    junk.write_bytes(b"not a recording")
    with pytest.raises(RecordingError, match=r"junk_raw\.fif"):
        decode_file_on_cluster(junk, [MODEL])


def test_cli_decodes_many_recordings_on_the_cluster(
    recordings: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from neurocast.clients.cli import main

    out = tmp_path / "results"
    files = [str(p) for p in recordings[:2]]
    code = main(["decode", "--ray", *files, "-m", MODEL, "--out", str(out), "--workers", "1"])
    assert code == 0, capsys.readouterr().err
    assert sorted(out.iterdir()) == sorted(output_path(p, out) for p in recordings[:2])
    assert "2 of 2 recordings decoded" in capsys.readouterr().out
    # several files without --ray, or a file name as the --out folder, are usage errors
    assert main(["decode", *files, "-m", MODEL, "--out", str(tmp_path / "r.parquet")]) == 2
    assert main(["decode", "--ray", *files, "-m", MODEL, "--out", str(tmp_path / "r.npz")]) == 2


def test_gateway_runs_sessions_on_actors_and_jobs_on_the_cluster(
    recordings: list[Path], tmp_path: Path
) -> None:
    """`neurocast serve --ray`: the REST API and WebSocket as usual, decoding on the cluster."""
    import httpx

    from neurocast.clients.client import Client
    from neurocast.server.app import create_app
    from neurocast.server.config import Settings
    from neurocast.server.runner import ServerThread

    token = "t" * 24
    auth = {"Authorization": f"Bearer {token}"}
    app = create_app(Settings(token=token, ray=True, state_dir=tmp_path, restore_sessions=False))
    with ServerThread(app) as server, Client(server.url, token=token) as client:
        session = client.create_session(SPEC, [MODEL])
        deadline = time.monotonic() + 30
        while client.session(session.id).n_decoded < 20 and time.monotonic() < deadline:
            time.sleep(0.1)
        status = client.session(session.id)
        assert status.status == "running" and status.n_decoded >= 20 and status.simulated
        assert status.stream is not None and status.stream.n_channels == 306
        # the gateway cannot record a stream that never reaches it: a clear refusal
        refused = httpx.post(f"{server.url}/v1/sessions/{session.id}/recording", headers=auth)
        assert refused.status_code == 422 and refused.json()["code"] == "recording_unsupported"
        client.delete_session(session.id)
        # a batch job on the cluster equals the local one
        with recordings[0].open("rb") as fh:
            r = httpx.post(
                f"{server.url}/v1/decode",
                headers=auth,
                data={"models": [MODEL], "engine": "ray"},
                files={"file": (recordings[0].name, fh)},
                timeout=60,
            )
        assert r.status_code == 202, r.text
        job = client.wait_job(r.json()["id"], timeout_s=90)
        assert job.status == "done", job.error
        got = client.job_results(job.id).results
    (model,) = load_models([MODEL], None)
    want = decode_recording(load_recording(recordings[0]), [model])
    assert [g.window_end for g in got] == [w.window_end for w in want]
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(
            g.payload["probabilities"], w.payload["probabilities"], rtol=1e-5
        )


def test_a_server_without_ray_refuses_ray_jobs(recordings: list[Path], tmp_path: Path) -> None:
    import httpx

    from neurocast.server.app import create_app
    from neurocast.server.config import Settings
    from neurocast.server.runner import ServerThread

    token = "t" * 24
    app = create_app(Settings(token=token, state_dir=tmp_path, restore_sessions=False))
    with ServerThread(app) as server, recordings[0].open("rb") as fh:
        r = httpx.post(
            f"{server.url}/v1/decode",
            headers={"Authorization": f"Bearer {token}"},
            data={"models": [MODEL], "engine": "ray"},
            files={"file": (recordings[0].name, fh)},
        )
    assert r.status_code == 422 and r.json()["code"] == "ray_unavailable"
