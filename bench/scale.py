"""Sessions as Ray actors and batch decoding on Ray Data against the same work in one process.

Runs on a local Ray cluster started here (``ray.init(num_cpus=2)``), with the packaged demo
classifier (306 MEG channels) on the embedded simulator (real-time pacing, 1 kHz, 100 ms
windows every 25 ms):

- ``ray_session_overhead_ms_p50`` / ``_p99``: latency added by a session actor and the
  gateway's relay, over an in-process ``DecodeLoop`` on the same simulator stream. Latency of a
  window is the local clock when its result reaches the gateway's callback minus the time of
  its last sample; both runs last equally long, one after the other; the figures are the
  differences of the two runs' percentiles (the raw ones are printed too).
- ``sessions_without_skips_inprocess`` / ``_ray``: the largest of 1, 2, 4 concurrent sessions
  (distinct seeds) in which no session skipped a window (0 when even one skipped), tried
  from the largest down. Ray
  sessions declare 0.5 CPU each so that four fit the 2-CPU cluster.
- ``ray_windows_per_s_1w`` / ``_2w``: batch decoding of simulated recordings with Ray Data
  over 1 and 2 pool workers, windows per second of the whole call (worker start-up included;
  ``ray_batch_wall_s_*`` gives the wall time); ``local_windows_per_s``: the same recordings
  read and decoded one after the other in this process. One intra-op thread per model
  everywhere, so that two workers do not oversubscribe two cores.

Usage: ``python bench/scale.py [--quick]`` (needs the ``ray`` extra).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import _common

os.environ.setdefault("NEUROCAST_THREADS", "1")  # before any ONNX session exists

import ray

from neurocast.catalog import load_models
from neurocast.server.cluster.batch import decode_recordings
from neurocast.server.cluster.remote import RemoteLoop
from neurocast.server.cluster.settings import ClusterSettings
from neurocast.streaming.engine.batch import decode_recording, load_recording
from neurocast.streaming.engine.loop import DecodeLoop
from neurocast.streaming.engine.results import Result
from neurocast.streaming.sources.base import local_clock
from neurocast.streaming.sources.simulator import Simulator
from neurocast.streaming.sources.simulator.source import SimulatorSource
from neurocast.streaming.sources.specs import SimulatorSpec

MODEL = "demo-classifier"
SETTINGS = ClusterSettings(session_num_cpus=0.5, relay_wait_s=0.05)
SESSION_COUNTS = (1, 2, 4)


def spec(seed: int) -> SimulatorSpec:
    """The simulator stream of session ``seed`` (MEG, real time)."""
    return SimulatorSpec(seed=seed, modality="meg")


def arrival_ms(result: Result) -> float:
    """From the window's last sample to now, in milliseconds (local clock)."""
    return (local_clock() - (result.t_window_end + result.clock_offset)) * 1e3


def run_inprocess(seeds: Sequence[int], seconds: float) -> tuple[list[float], list[int]]:
    """Concurrent in-process sessions; arrival latencies of the first and skips of each."""
    models = load_models([MODEL], None)
    lat: list[float] = []
    loops = []
    for i, seed in enumerate(seeds):
        sink = (lambda r: lat.append(arrival_ms(r))) if i == 0 else (lambda r: None)
        loops.append(DecodeLoop(SimulatorSource(spec(seed)), models, sink))
    for loop in loops:
        loop.start()
    time.sleep(seconds)
    for loop in loops:
        loop.stop()
    return lat, [loop.stats().n_skipped for loop in loops]


def run_ray(seeds: Sequence[int], seconds: float) -> tuple[list[float], list[int]]:
    """The same with each session in an actor, relayed to callbacks on an asyncio loop."""

    async def main() -> tuple[list[float], list[int]]:
        lat: list[float] = []
        loops = []
        for i, seed in enumerate(seeds):
            sink = (lambda r: lat.append(arrival_ms(r))) if i == 0 else (lambda r: None)
            loops.append(
                RemoteLoop(
                    spec(seed),
                    [MODEL],
                    sink,
                    loop=asyncio.get_running_loop(),
                    settings=SETTINGS,
                    threads=1,
                )
            )
        await asyncio.gather(*(asyncio.to_thread(loop.start) for loop in loops))
        await asyncio.sleep(seconds)
        await asyncio.gather(*(asyncio.to_thread(loop.stop) for loop in loops))
        return lat, [loop.stats().n_skipped for loop in loops]

    return asyncio.run(main())


def sessions_without_skips(run: Any, seconds: float, label: str) -> int:
    """Largest session count of :data:`SESSION_COUNTS` where no session skipped.

    Counts are tried from the largest down: when it passes, the smaller ones need no run.
    """
    for k in sorted(SESSION_COUNTS, reverse=True):
        _, skipped = run(list(range(k)), seconds)
        _common.log(f"{label}: {k} session(s), skipped per session {skipped}")
        if not any(skipped):
            return k
    return 0


def simulate(folder: Path, n: int, seconds: float) -> list[Path]:
    """``n`` simulated MEG recordings of ``seconds`` each."""
    paths = []
    for seed in range(n):
        path = folder / f"scale{seed}_raw.fif"
        Simulator(seed=seed, modality="meg").simulate_raw(seconds).save(path, verbose="error")
        paths.append(path)
    return paths


def batch_figures(paths: list[Path], folder: Path) -> dict[str, float]:
    """Windows per second: in this process, and with Ray Data over 1 and 2 workers."""
    models = load_models([MODEL], None)
    t0 = time.perf_counter()
    n_local = sum(len(decode_recording(load_recording(p), models)) for p in paths)
    local_s = time.perf_counter() - t0
    figures = {"local_windows_per_s": n_local / local_s}
    for workers in (1, 2):
        t0 = time.perf_counter()
        outcomes = decode_recordings(
            paths,
            [MODEL],
            folder / f"out{workers}",
            workers=workers,
            threads=1,
            on_done=lambda o, k, n: _common.log(f"  {k}/{n} {Path(o.path).name}"),
        )
        wall = time.perf_counter() - t0
        n = sum(o.n_windows for o in outcomes)
        if n != n_local:
            raise RuntimeError(f"Ray Data decoded {n} windows, one process {n_local}.")
        figures[f"ray_windows_per_s_{workers}w"] = n / wall
        figures[f"ray_batch_wall_s_{workers}w"] = wall
    return figures


def main() -> None:
    """Run every measurement and print the figures."""
    args = _common.parser(__doc__).parse_args()
    latency_s = 3.0 if args.quick else 20.0
    sessions_s = 3.0 if args.quick else 10.0
    n_rec, rec_s = (2, 4.0) if args.quick else (8, 20.0)
    t_start = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        _common.log("in-process session latency ...")
        local_lat, _ = run_inprocess([0], latency_s)
        _common.log("actor session latency ...")
        ray_lat, _ = run_ray([0], latency_s)
        local_p50, local_p99 = _common.percentiles(local_lat)
        ray_p50, ray_p99 = _common.percentiles(ray_lat)
        figures: dict[str, Any] = {
            "ray_session_overhead_ms_p50": ray_p50 - local_p50,
            "ray_session_overhead_ms_p99": ray_p99 - local_p99,
            "inprocess_latency_ms_p50": local_p50,
            "inprocess_latency_ms_p99": local_p99,
            "ray_latency_ms_p50": ray_p50,
            "ray_latency_ms_p99": ray_p99,
            "latency_windows": [len(local_lat), len(ray_lat)],
        }
        figures["sessions_without_skips_inprocess"] = sessions_without_skips(
            run_inprocess, sessions_s, "in process"
        )
        figures["sessions_without_skips_ray"] = sessions_without_skips(run_ray, sessions_s, "ray")
        with tempfile.TemporaryDirectory() as tmp:
            _common.log(f"simulating {n_rec} recordings of {rec_s:g} s ...")
            paths = simulate(Path(tmp), n_rec, rec_s)
            figures.update(batch_figures(paths, Path(tmp)))
        figures["n_recordings"] = n_rec
        figures["recording_s"] = rec_s
    finally:
        ray.shutdown()
    figures["cpus"] = os.cpu_count()
    figures["threads_per_model"] = 1
    figures["elapsed_s"] = time.perf_counter() - t_start
    _common.emit({k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()})


if __name__ == "__main__":
    main()
