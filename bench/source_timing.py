"""Source timing: simulator pacing against the sample clock and LSL's clock offset on loopback.

Two measurements the tests leave to this benchmark, because their size depends on the
machine and its load (tests/test_simulate.py and tests/test_lsl.py check only what holds
everywhere: chunks are never early, and an offset is carried on every chunk):

- **Simulator pacing.** A real-time :class:`~neurocast.streaming.sources.simulator.source.
  SimulatorSource` (370 channels, 1 kHz, 25 ms chunks) runs for N seconds; each chunk's lag is
  its ``receipt_time`` minus the time stamp of its last sample (how late after the sample was
  due the reader got it). Figures: ``sim_lag_ms_p50`` / ``sim_lag_ms_p99`` (median over runs of
  each run's median / 99th percentile), ``sim_lag_ms_max``, ``sim_elapsed_s`` (last receipt
  minus the first sample's time stamp, median over runs) against ``sim_expected_s`` (the span
  of the samples, (n - 1) / sfreq).
- **LSL clock offset.** A pylsl outlet (64 channels, 250 Hz, 10-sample chunks pushed on their
  schedule) read by :class:`~neurocast.streaming.sources.lsl.source.LSLSource` in the same
  process, on a private loopback configuration; both sides use the same clock, so the
  ``time_correction`` estimate should be close to zero. Figures: ``lsl_abs_offset_us_p50`` /
  ``lsl_abs_offset_us_max`` (|``Chunk.clock_offset``| over all chunks), ``lsl_lag_ms_p50`` /
  ``lsl_lag_ms_p99`` (receipt time minus the last sample's time stamp, offset applied).

Usage: ``python bench/source_timing.py [--quick]`` (simulator 3 x 20 s, LSL 20 s; ``--quick``:
1 x 5 s and 5 s).
"""

from __future__ import annotations

import threading
import uuid

import _common
import numpy as np
from numpy.typing import NDArray

from neurocast.streaming.sources.lsl import use_loopback_config

# liblsl reads its configuration at the first LSL call of the process: keep discovery on this
# machine and away from any other LSL user before anything touches pylsl
use_loopback_config(f"nc-bench-{uuid.uuid4().hex[:8]}")

import pylsl  # noqa: E402  (after the loopback configuration)

from neurocast.streaming.sources.base import Chunk  # noqa: E402
from neurocast.streaming.sources.lsl import LSLSource  # noqa: E402
from neurocast.streaming.sources.simulator.source import SimulatorSource  # noqa: E402
from neurocast.streaming.sources.specs import LSLSpec, SimulatorSpec  # noqa: E402

SIM_SFREQ = 1000.0
SIM_CHUNK_S = 0.025
LSL_SFREQ = 250.0
LSL_CHUNK = 10
LSL_CHANNELS = 64


def simulator_run(seconds: float) -> tuple[NDArray[np.float64], float, float]:
    """Read a real-time simulator source to its end.

    Parameters
    ----------
    seconds : float
        Duration of the simulated stream.

    Returns
    -------
    lags_s : ndarray
        Receipt time minus the last sample's time stamp, per chunk, in seconds.
    elapsed_s : float
        Last receipt minus the first sample's time stamp.
    expected_s : float
        Span of the sample time stamps.
    """
    spec = SimulatorSpec(
        sfreq=SIM_SFREQ, chunk_s=SIM_CHUNK_S, duration_s=seconds, realtime=True, seed=1
    )
    source = SimulatorSource(spec)
    source.open()
    chunks: list[Chunk] = []
    try:
        while source.status == "running":
            chunk = source.read(timeout=0.5)
            if chunk is not None:
                chunks.append(chunk)
    finally:
        source.close()
    first, last = chunks[0].timestamps[0], chunks[-1].timestamps[-1]
    lags = np.array([c.receipt_time - c.timestamps[-1] for c in chunks])
    return lags, chunks[-1].receipt_time - first, float(last - first)


def _push(outlet: pylsl.StreamOutlet, n_chunks: int, stop: threading.Event) -> None:
    """Push ``n_chunks`` chunks, each when its last sample is due."""
    rng = np.random.default_rng(0)
    block = rng.standard_normal((LSL_CHUNK, LSL_CHANNELS)).astype(np.float32)
    # stamped so that each chunk's last sample falls due when the chunk is pushed
    t0 = pylsl.local_clock() - (LSL_CHUNK - 1) / LSL_SFREQ
    for i in _common.paced(LSL_CHUNK / LSL_SFREQ, n_chunks):
        if stop.is_set():
            return
        stamps = t0 + (i * LSL_CHUNK + np.arange(LSL_CHUNK)) / LSL_SFREQ
        outlet.push_chunk(block, stamps.tolist())


def lsl_run(seconds: float) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Stream ``seconds`` of data from an outlet into an LSLSource in this process.

    Returns
    -------
    offsets_s : ndarray
        ``clock_offset`` of every chunk read, in seconds.
    lags_s : ndarray
        Receipt time minus the last sample's time stamp (offset applied), in seconds.
    """
    name = f"bench-{uuid.uuid4().hex[:8]}"
    info = pylsl.StreamInfo(
        name, "EEG", LSL_CHANNELS, LSL_SFREQ, "float32", f"sid-{uuid.uuid4().hex[:8]}"
    )
    info.set_channel_labels([f"E{i:02d}" for i in range(LSL_CHANNELS)])
    info.set_channel_types(["eeg"] * LSL_CHANNELS)
    outlet = pylsl.StreamOutlet(info)
    source = LSLSource(LSLSpec(name=name, resolve_timeout_s=5.0))
    source.open()
    n_chunks = round(seconds * LSL_SFREQ / LSL_CHUNK)
    stop = threading.Event()
    pusher = threading.Thread(target=_push, args=(outlet, n_chunks, stop), daemon=True)
    chunks: list[Chunk] = []
    try:
        pusher.start()
        n = 0
        # a generous deadline in chunks read, not in time: a stalled inlet ends the run
        misses = 0
        while n < n_chunks * LSL_CHUNK and misses < 20:
            chunk = source.read(0.25)
            if chunk is None:
                misses += 1
                continue
            misses = 0
            chunks.append(chunk)
            n += len(chunk.timestamps)
    finally:
        stop.set()
        pusher.join(timeout=5.0)
        source.close()
        del outlet
    if not chunks:
        raise RuntimeError("The LSL source delivered no chunk.")
    offsets = np.array([c.clock_offset for c in chunks])
    lags = np.array([c.receipt_time - (c.timestamps[-1] + c.clock_offset) for c in chunks])
    return offsets, lags


def main() -> None:
    """Run both measurements and print the figures."""
    args = _common.parser(__doc__).parse_args()
    n_runs, sim_s, lsl_s = (1, 5.0, 5.0) if args.quick else (3, 20.0, 20.0)
    lag_runs, elapsed, expected = [], [], []
    for r in range(n_runs):
        _common.log(f"simulator run {r + 1}/{n_runs}: {sim_s:g} s at {SIM_SFREQ:g} Hz")
        lags, e, x = simulator_run(sim_s)
        lag_runs.append(lags * 1e3)
        elapsed.append(e)
        expected.append(x)
    sim_p50, sim_p99 = _common.median_of_runs(lag_runs)
    _common.log(f"LSL loopback: {lsl_s:g} s at {LSL_SFREQ:g} Hz")
    offsets, lsl_lags = lsl_run(lsl_s)
    abs_us = np.abs(offsets) * 1e6
    lsl_p50, lsl_p99 = _common.percentiles(lsl_lags * 1e3)
    _common.emit(
        {
            "sim_lag_ms_p50": round(sim_p50, 3),
            "sim_lag_ms_p99": round(sim_p99, 3),
            "sim_lag_ms_max": round(float(max(r.max() for r in lag_runs)), 3),
            "sim_elapsed_s": round(float(np.median(elapsed)), 4),
            "sim_expected_s": round(float(np.median(expected)), 4),
            "sim_seconds": sim_s,
            "sim_runs": n_runs,
            "sim_chunks_per_run": len(lag_runs[0]),
            "lsl_abs_offset_us_p50": round(float(np.median(abs_us)), 2),
            "lsl_abs_offset_us_max": round(float(abs_us.max()), 2),
            "lsl_lag_ms_p50": round(lsl_p50, 3),
            "lsl_lag_ms_p99": round(lsl_p99, 3),
            "lsl_chunks": len(offsets),
            "lsl_seconds": lsl_s,
        }
    )


if __name__ == "__main__":
    main()
