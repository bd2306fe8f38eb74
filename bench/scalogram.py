"""Streaming Morlet scalogram: cost per 25 ms hop, 306 channels x 96 frequencies at 1 kHz.

Each hop pushes 25 new samples of 306 channels into
:class:`neurocast.streaming.preprocessing.scalogram.StreamingMorlet` (96 frequencies from
2 to 100 Hz, linearly spaced, ``n_cycles = freqs / 2``: every wavelet spans 795 taps, 0.4 s
either side of its centre, as in MNE's time-frequency tutorials) and gets the 25 new columns of
wavelet power.
The peer is ``mne.time_frequency.tfr_array_morlet(..., output="power")`` recomputing, at each
of a few hops, the same 25 columns from the history they depend on (the last
``25 + 2 * latency`` samples); the columns of both are compared (``max_rel_err_vs_mne``).

The signal is the 306 MEG channels of the MNE sample recording (``../shared/data``) resampled
to 1 kHz, looped, and robust-scaled per channel (median and interquartile range, as the
preprocessing of scalogram models does, so that the power stays far from float32's smallest
numbers), or seeded white noise when that folder is absent (the cost does not depend on the
values). Figures: ``hop_ms_p50`` and ``hop_ms_p99`` (wall clock per hop; percentiles
over the hops of a run, medians over runs), ``hop_cpu_ms_p50`` (CPU time of the process per
hop), ``mne_hop_ms_p50``, ``speedup_vs_mne`` (ratio of the medians). Also measured in the same
run: ``decim4_*`` (output columns every 4 ms, i.e. MNE's ``decim=4``) and, without
``--quick``, ``ncycles7_*`` (``n_cycles = 7``, MNE's default: wavelets up to 5571 taps).
Targets: ``speedup_vs_mne >= 100`` and ``hop_ms_p99 <= 10``, judged on a full run (not
``--quick``) with one thread. Both sides get the same number of threads (``--threads``,
default 1): ours as worker threads, MNE as its BLAS/FFT thread limit (threadpoolctl).

Usage: ``python bench/scalogram.py [--quick] [--threads N]``; the last stdout line is JSON.
"""

from __future__ import annotations

import os
import time
from typing import Any

import _common
import numpy as np
from mne.time_frequency import tfr_array_morlet
from numpy.typing import NDArray
from threadpoolctl import threadpool_limits

from neurocast.streaming.preprocessing.filters import fit_robust_scaler
from neurocast.streaming.preprocessing.scalogram import ScalogramSpec, StreamingMorlet

SFREQ = 1000.0
HOP = 25
N_CHANNELS = 306
FREQS = np.linspace(2.0, 100.0, 96)


def _signal(n_times: int) -> tuple[NDArray[np.float32], str]:
    real = _common.real_meg_306(SFREQ)
    if real is None:
        rng = np.random.default_rng(0)
        data = rng.standard_normal((N_CHANNELS, n_times)).astype(np.float32)
        return data, "synthetic white noise (../shared/data absent)"
    data, label = real
    center, scale = fit_robust_scaler(data)
    data = ((data - center[:, None]) / scale[:, None]).astype(np.float32)
    reps = -(-n_times // data.shape[1])
    return np.tile(data, reps)[:, :n_times], label + ", robust-scaled"


def _fill(engine: StreamingMorlet) -> int:
    """Samples pushed before timing: whole hops, so that every timed column sees real data."""
    return -(-(2 * engine.latency_samples + HOP) // HOP) * HOP


def _hops(
    spec: ScalogramSpec, x: NDArray[np.float32], n_hops: int, threads: int
) -> tuple[NDArray[np.float64], NDArray[np.float64], StreamingMorlet, list[NDArray[np.float32]]]:
    """Push ``n_hops`` hops after :func:`_fill`; wall and CPU ms per hop, and the columns."""
    engine = StreamingMorlet(spec, N_CHANNELS, block=HOP, n_threads=threads)
    fill = _fill(engine)
    engine.push(x[:, :fill])
    wall, cpu, cols = [], [], []
    for h in range(n_hops):
        a = fill + h * HOP
        t0, c0 = time.perf_counter(), time.process_time()
        cols.append(engine.push(x[:, a : a + HOP]))
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    engine.close()
    return np.array(wall) * 1e3, np.array(cpu) * 1e3, engine, cols


def _measure(
    spec: ScalogramSpec, x: NDArray[np.float32], n_runs: int, n_hops: int, threads: int
) -> dict[str, float]:
    walls, cpus = [], []
    for _ in range(n_runs):
        wall, cpu, _, _ = _hops(spec, x, n_hops, threads)
        walls.append(wall)
        cpus.append(cpu)
    p50, p99 = _common.median_of_runs(walls)
    return {
        "hop_ms_p50": p50,
        "hop_ms_p99": p99,
        "hop_cpu_ms_p50": float(np.median([np.median(c) for c in cpus])),
    }


def _mne_hops(
    spec: ScalogramSpec, x: NDArray[np.float32], n_mne: int, threads: int
) -> tuple[list[float], float]:
    """MNE on the history of a few hops; its time per hop and its largest deviation from ours."""
    n_hops = 4 * n_mne
    _, _, engine, cols = _hops(spec, x, n_hops, threads)
    k_ours = engine.latency_samples
    k = (max(w.size for w in spec.wavelets()) - 1) // 2
    fill = _fill(engine)
    times, worst = [], 0.0
    for h in range(0, n_hops, 4):
        end = fill + (h + 1) * HOP  # samples pushed when hop h returned
        first = end - HOP - k_ours  # its first column
        history = x[np.newaxis, :, first - k : end].astype(np.float64)
        t0 = time.perf_counter()
        # the same thread count as ours: MNE's FFTs and products may use every BLAS thread
        with threadpool_limits(limits=threads):
            power = tfr_array_morlet(
                history, SFREQ, FREQS, n_cycles=spec.n_cycles, output="power", n_jobs=None
            )[0]
        times.append((time.perf_counter() - t0) * 1e3)
        ref = power[..., k : k + HOP]
        worst = max(worst, float(np.max(np.abs(cols[h] - ref) / ref)))
        _common.log(f"  MNE hop {h}: {times[-1]:.0f} ms")
    return times, worst


def main() -> None:
    p = _common.parser(__doc__)
    p.add_argument(
        "--threads", type=int, default=1, help="threads for ours and for MNE (default 1)"
    )
    args = p.parse_args()
    n_runs, n_hops, n_mne = (2, 120, 3) if args.quick else (3, 400, 12)
    x, label = _signal(12_000 + n_hops * HOP)
    spec = ScalogramSpec(sfreq_hz=SFREQ, freqs_hz=FREQS, n_cycles=FREQS / 2)
    t_start = time.perf_counter()
    load = os.getloadavg()[0]
    _common.log(f"signal: {label}; threads {args.threads}; latency {spec.latency_s} s")
    figures: dict[str, Any] = _measure(spec, x, n_runs, n_hops, args.threads)
    _common.log(f"ours: {figures}")
    mne_times, worst = _mne_hops(spec, x, n_mne, args.threads)
    mne_p50 = float(np.median(mne_times))
    figures.update(
        mne_hop_ms_p50=mne_p50,
        speedup_vs_mne=mne_p50 / figures["hop_ms_p50"],
        max_rel_err_vs_mne=worst,
    )
    decim = spec.model_copy(update={"decim": 4})
    for key, value in _measure(decim, x, n_runs, n_hops, args.threads).items():
        figures[f"decim4_{key}"] = value
    if not args.quick:
        seven = ScalogramSpec(sfreq_hz=SFREQ, freqs_hz=FREQS, n_cycles=7.0)
        for key, value in _measure(seven, x, n_runs, n_hops, args.threads).items():
            figures[f"ncycles7_{key}"] = value
    figures.update(
        latency_s=spec.latency_s,
        n_channels=N_CHANNELS,
        n_freqs=FREQS.size,
        hop_samples=HOP,
        threads=args.threads,
        n_runs=n_runs,
        n_hops_per_run=n_hops,
        n_mne_hops=len(mne_times),
        signal=label,
        simulated="synthetic" in label,
        load_avg_1min_start=load,
        load_avg_1min_end=os.getloadavg()[0],
        wall_s=time.perf_counter() - t_start,
    )
    _common.emit(figures)


if __name__ == "__main__":
    main()
