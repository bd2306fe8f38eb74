"""Ring buffer: write and newest-window read cost at 306 channels / 1 kHz, against MNE-LSL.

Our side: a writer thread writes 25-sample chunks of 306 channels into a
:class:`~neurocast.streaming.engine.ring.RingBuffer` (30 s, as the decode engine sizes it) every
25 ms; the main thread reads the newest 100 ms window (``RingBuffer.latest(100)``) every
25 ms, half a period after the writes. Each call is timed with ``perf_counter_ns``.

MNE-LSL side, in the same run: a child process pushes the same chunks through a real LSL
outlet on loopback (``pylsl.StreamOutlet``, 25 ms pacing); the main process connects
``mne_lsl.stream.StreamLSL(bufsize=5).connect()`` and times ``get_data(0.1)`` every 25 ms.

The two sides alternate for a few rounds; each figure is the median over rounds of that
round's percentile. Figures: ``write_us_p50``, ``read_us_p50``, ``read_us_p99``,
``mnelsl_read_us_p50``, ``read_speedup_vs_mnelsl`` (= mnelsl p50 / ours p50). Target: >= 20.

Reads 25 ms apart find cold caches when other processes run in between (both sides alike);
for context each round also times reads back to back (warm caches, the writer still
running): the ``*_back_to_back`` figures.

Usage: ``python bench/ring.py [--quick]``; the last stdout line is a JSON object.
"""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
import uuid
import warnings
from typing import Any

import _common
import numpy as np
from numpy.typing import NDArray

N_CHANNELS = 306
SFREQ = 1000.0
CHUNK = 25  # samples per write: 25 ms
WINDOW = 100  # samples per read: 100 ms
PERIOD_S = CHUNK / SFREQ
WARMUP_READS = 20  # the first reads of a round (connection set-up, cold caches) are ignored
BACK_TO_BACK = 200  # reads timed back to back after the paced ones


def _signal(seconds: float) -> tuple[NDArray[np.float32], str]:
    """Real MEG when ../shared/data is there, otherwise Gaussian noise (labelled so)."""
    real = _common.real_meg_306(SFREQ)
    if real is not None:
        return real
    rng = np.random.default_rng(0)
    noise = (rng.standard_normal((N_CHANNELS, int(seconds * SFREQ))) * 1e-12).astype(np.float32)
    return noise, "Gaussian noise (simulated; ../shared/data absent)"


def _chunks(data: NDArray[np.float32], k: int) -> NDArray[np.float32]:
    """Chunk ``k`` of the looped recording, sample-major (as LSL delivers it)."""
    n = data.shape[1] // CHUNK
    a = (k % n) * CHUNK
    return np.ascontiguousarray(data[:, a : a + CHUNK].T)


def _pusher(name: str, source_id: str, data: NDArray[np.float32], stop: Any, ready: Any) -> None:
    """Child process: an LSL outlet pushing 25-sample chunks every 25 ms until ``stop``."""
    import pylsl

    info = pylsl.StreamInfo(name, "MEG", N_CHANNELS, SFREQ, "float32", source_id)
    outlet = pylsl.StreamOutlet(info, chunk_size=CHUNK, max_buffered=10)
    ready.set()
    k = 0
    deadline = time.perf_counter()
    while not stop.is_set():
        while (wait := deadline - time.perf_counter()) > 0:
            time.sleep(wait)
        outlet.push_chunk(_chunks(data, k))
        k += 1
        deadline += PERIOD_S


def _run_ours(data: NDArray[np.float32], n_reads: int) -> tuple[NDArray, NDArray, NDArray]:
    """One round of our ring buffer; write, paced read and back-to-back read times in µs."""
    from neurocast.streaming.engine.ring import RingBuffer

    ring = RingBuffer(N_CHANNELS, int(30 * SFREQ), SFREQ)
    writes: list[int] = []
    stop = threading.Event()

    def writer() -> None:
        k = 0
        deadline = time.perf_counter()
        while not stop.is_set():
            while (wait := deadline - time.perf_counter()) > 0:
                time.sleep(wait)
            chunk = _chunks(data, k)
            ts = (k * CHUNK + np.arange(CHUNK)) / SFREQ
            t0 = time.perf_counter_ns()
            ring.write(chunk, ts)
            writes.append(time.perf_counter_ns() - t0)
            k += 1
            deadline += PERIOD_S

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    ring.wait_for(WINDOW, timeout=5.0)
    time.sleep(PERIOD_S / 2)  # read half a period after each write
    reads = []
    for _ in _common.paced(PERIOD_S, n_reads + WARMUP_READS):
        t0 = time.perf_counter_ns()
        window = ring.latest(WINDOW)
        reads.append(time.perf_counter_ns() - t0)
        assert window.data.shape == (N_CHANNELS, WINDOW)
    hot = []
    for _ in range(BACK_TO_BACK):
        t0 = time.perf_counter_ns()
        ring.latest(WINDOW)
        hot.append(time.perf_counter_ns() - t0)
    stop.set()
    thread.join()
    return (
        np.array(writes[WARMUP_READS:]) / 1e3,
        np.array(reads[WARMUP_READS:]) / 1e3,
        np.array(hot) / 1e3,
    )


def _run_mnelsl(name: str, source_id: str, n_reads: int) -> tuple[NDArray, NDArray]:
    """One round of MNE-LSL's ``get_data(0.1)`` on the live outlet; paced and back-to-back
    read times in µs."""
    from mne_lsl.stream import StreamLSL

    with warnings.catch_warnings():
        # the outlet sends no channel description; MNE-LSL names channels by index then
        warnings.filterwarnings("ignore", "Something went wrong while reading the channel")
        stream = StreamLSL(bufsize=5.0, name=name, source_id=source_id).connect(timeout=10.0)
    try:
        deadline = time.monotonic() + 10.0
        while stream.n_new_samples < WINDOW and time.monotonic() < deadline:
            time.sleep(PERIOD_S)  # until the buffer holds a full window of real samples
        reads = []
        for _ in _common.paced(PERIOD_S, n_reads + WARMUP_READS):
            t0 = time.perf_counter_ns()
            data, _ts = stream.get_data(winsize=WINDOW / SFREQ)
            reads.append(time.perf_counter_ns() - t0)
            assert data.shape == (N_CHANNELS, WINDOW)
        hot = []
        for _ in range(BACK_TO_BACK):
            t0 = time.perf_counter_ns()
            stream.get_data(winsize=WINDOW / SFREQ)
            hot.append(time.perf_counter_ns() - t0)
    finally:
        stream.disconnect()
    return np.array(reads[WARMUP_READS:]) / 1e3, np.array(hot) / 1e3


def main() -> None:
    args = _common.parser(__doc__).parse_args()
    rounds, seconds = (2, 6.0) if args.quick else (5, 20.0)
    n_reads = int(seconds / PERIOD_S)

    from neurocast.streaming.sources.lsl import use_loopback_config

    session = f"nc-bench-ring-{uuid.uuid4().hex}"
    # loopback only, and a session of our own so concurrent LSL users do not interfere
    use_loopback_config(session)

    data, label = _signal(10.0)
    name, source_id = f"nc-ring-{uuid.uuid4().hex[:8]}", session
    ctx = mp.get_context("spawn")
    stop, ready = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_pusher, args=(name, source_id, data, stop, ready), daemon=True)
    child.start()
    if not ready.wait(30):
        raise RuntimeError("The LSL outlet process did not start within 30 s.")
    write_runs, read_runs, mne_runs, hot_runs, mne_hot_runs = [], [], [], [], []
    try:
        for r in range(rounds):
            writes, reads, hot = _run_ours(data, n_reads)
            write_runs.append(writes)
            read_runs.append(reads)
            hot_runs.append(hot)
            mne_reads, mne_hot = _run_mnelsl(name, source_id, n_reads)
            mne_runs.append(mne_reads)
            mne_hot_runs.append(mne_hot)
            _common.log(
                f"round {r + 1}/{rounds}: write p50 {np.median(writes):.1f} µs, read p50 "
                f"{np.median(reads):.1f} µs, MNE-LSL get_data p50 {np.median(mne_runs[-1]):.1f} µs"
            )
    finally:
        stop.set()
        child.join(5)
        if child.is_alive():
            child.terminate()
    write_p50, write_p99 = _common.median_of_runs(write_runs)
    read_p50, read_p99 = _common.median_of_runs(read_runs)
    mne_p50, mne_p99 = _common.median_of_runs(mne_runs)
    hot_p50, _ = _common.median_of_runs(hot_runs)
    mne_hot_p50, _ = _common.median_of_runs(mne_hot_runs)
    _common.emit(
        {
            "write_us_p50": round(write_p50, 2),
            "write_us_p99": round(write_p99, 2),
            "read_us_p50": round(read_p50, 2),
            "read_us_p99": round(read_p99, 2),
            "mnelsl_read_us_p50": round(mne_p50, 2),
            "mnelsl_read_us_p99": round(mne_p99, 2),
            "read_speedup_vs_mnelsl": round(mne_p50 / read_p50, 1),
            "read_us_p50_back_to_back": round(hot_p50, 2),
            "mnelsl_read_us_p50_back_to_back": round(mne_hot_p50, 2),
            "read_speedup_vs_mnelsl_back_to_back": round(mne_hot_p50 / hot_p50, 1),
            "rounds": rounds,
            "reads_per_round": n_reads,
            "data": label,
            "quick": args.quick,
        }
    )


if __name__ == "__main__":
    main()
