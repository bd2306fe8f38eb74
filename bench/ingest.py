"""Ingest latency: from a sample being pushed to it being readable in a neurocast window.

A separate process pushes 306 channels at 1 kHz in chunks of 1, 10 or 25 samples. Channel 0
carries the sample counter; just before each push the process writes its
:func:`~neurocast.streaming.sources.base.local_clock` into a shared array at the counters of the
chunk (both processes read the same CLOCK_MONOTONIC). The latency of a pushed chunk is the
time its last sample became readable minus its push time.

- ``lsl``: a real :class:`~neurocast.streaming.engine.loop.DecodeLoop` fed by
  :class:`~neurocast.streaming.sources.lsl.LSLSource` (with a small channel-mean model decoding
  every 25 ms alongside); a sample is readable once ``DecodeEngine.write`` has published it
  in the ring buffer (timed by a thin wrapper around that call, on the acquisition thread).
- ``pylsl``: a bare ``pylsl.StreamInlet`` pulling in a tight loop, in the same way
  :class:`~neurocast.streaming.sources.lsl.LSLSource` pulls (blocking ``pull_chunk`` into a
  preallocated buffer, returning at the first sample); readable once ``pull_chunk`` returns.
- ``ft``: the writer process also hosts a
  :class:`~neurocast.streaming.sources.fieldtrip.FieldTripServer` (as acquisition software
  such as ``neuromag2ft`` hosts its buffer) and writes chunks of 25 samples with
  :class:`~neurocast.streaming.sources.fieldtrip.FieldTripWriter`; a DecodeLoop fed by
  :class:`~neurocast.streaming.sources.fieldtrip.FieldTripSource` reads them.

The ``lsl`` and ``pylsl`` runs alternate against the same pushing process. Figures
(milliseconds): ``{lsl,pylsl}_c{1,10,25}_{p50,p99}_ms`` and ``ft_c25_{p50,p99}_ms`` (the
percentile over the chunks of one run, median over runs), and ``lsl_overhead_c*_p99_ms``
(lsl minus pylsl). Targets: our LSL path adds at most 1 ms at p99 over bare pylsl; FieldTrip
p99 <= 2 ms.

Usage: ``python bench/ingest.py [--quick]``; the last stdout line is a JSON object.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import _common
import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from neurocast.streaming.engine.results import ResultKind

N_CHANNELS = 306
SFREQ = 1000.0
MAX_SECONDS = 600  # the shared push-time array covers this long a pushing process
WARMUP_S = 0.3  # latencies of each run's first moments (connection set-up) are ignored


def _lsl_config() -> None:
    from neurocast.streaming.sources.lsl import use_loopback_config

    # loopback discovery, and a session id of our own so concurrent LSL users do not interfere
    use_loopback_config(f"nc-bench-{uuid.uuid4().hex}")


def _pace(
    chunk: int, push: Callable[[NDArray[np.float32], float], object], push_times: Any, stop: Any
) -> None:
    """Push ``chunk`` samples every ``chunk`` ms until ``stop``, recording push times."""
    from neurocast.streaming.sources.base import local_clock

    times = np.frombuffer(push_times, dtype=np.float64)
    buf = np.zeros((chunk, N_CHANNELS), dtype=np.float32)
    k = 0
    t_next = local_clock()
    while not stop.is_set() and k + chunk <= times.shape[0]:
        t_next += chunk / SFREQ
        while (wait := t_next - local_clock()) > 0:
            time.sleep(wait)
        buf[:, 0] = np.arange(k, k + chunk)
        t = local_clock()
        times[k : k + chunk] = t  # written before the push, so a reader never sees it unset
        push(buf, t)
        k += chunk


def _lsl_pusher(name: str, chunk: int, push_times: Any, stop: Any, ready: Any) -> None:
    """Child process: an LSL outlet pushing chunks of ``chunk`` samples at 1 kHz."""
    import pylsl

    info = pylsl.StreamInfo(name, "MEG", N_CHANNELS, SFREQ, "float32", f"{name}-sid")
    outlet = pylsl.StreamOutlet(info, max_buffered=10)
    ready.set()
    _pace(chunk, lambda buf, t: outlet.push_chunk(buf, t), push_times, stop)


def _ft_writer(chunk: int, push_times: Any, stop: Any, port_queue: Any) -> None:
    """Child process: a FieldTrip buffer server and a writer putting chunks at 1 kHz."""
    import mne

    from neurocast.streaming.sources.base import StreamInfo
    from neurocast.streaming.sources.fieldtrip.server import FieldTripServer
    from neurocast.streaming.sources.fieldtrip.writer import FieldTripWriter

    names = [f"MEG{i:04d}" for i in range(N_CHANNELS)]
    stream = StreamInfo("bench", mne.create_info(names, SFREQ, "mag", verbose="error"))
    with (
        FieldTripServer("127.0.0.1", port=0).serve_in_thread() as server,
        FieldTripWriter("127.0.0.1", server.port) as writer,
    ):
        writer.put_header(stream)
        port_queue.put(server.port)
        _pace(chunk, lambda buf, t: writer.put_data(buf), push_times, stop)


class _ChannelMean:
    """A small real model: the mean of each channel over a 100 ms window."""

    def __init__(self) -> None:
        from neurocast.streaming.engine.windows import WindowSpec

        self.name = "channel-mean"
        self.kind: ResultKind = "embedding"
        self.window = WindowSpec(window_s=0.1, stride_s=0.025)

    def preprocessor(self, stream: Any) -> Any:
        return _Identity(stream.sfreq, stream.n_channels)

    def run(self, x: NDArray[np.float32]) -> dict[str, Any]:
        return {"embedding": x.mean(axis=1)}


class _Identity:
    """No preprocessing: the raw samples are the model's input."""

    def __init__(self, sfreq: float, n_channels: int) -> None:
        self.sfreq_out = sfreq
        self.n_channels_out = n_channels

    def push(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        return x

    def finalize(self, window: NDArray[np.float32]) -> NDArray[np.float32]:
        return window


class _Arrivals:
    """Counters of the last sample of each pushed chunk, with the time they became readable."""

    def __init__(self, chunk: int) -> None:
        self.chunk = chunk
        self.counters: list[NDArray[np.int64]] = []
        self.times: list[float] = []

    def add(self, counter_column: NDArray[Any], t: float) -> None:
        c = counter_column.astype(np.int64)
        self.counters.append(c[(c + 1) % self.chunk == 0])
        self.times.append(t)

    def latencies_ms(self, push_times: Any, since: float) -> NDArray[np.float64]:
        """Latencies of the chunks pushed at or after ``since`` (local clock, seconds)."""
        pushed = np.frombuffer(push_times, dtype=np.float64)
        lat = [(t - pushed[c]) * 1e3 for c, t in zip(self.counters, self.times, strict=True)]
        sent = [pushed[c] for c in self.counters]
        if not lat:
            return np.empty(0)
        all_lat, all_sent = np.concatenate(lat), np.concatenate(sent)
        return all_lat[all_sent >= since]


def _run_loop(source: Any, chunk: int, seconds: float, push_times: Any) -> NDArray[np.float64]:
    """Latencies of a DecodeLoop fed by ``source``, for ``seconds`` after the warm-up."""
    from neurocast.streaming.engine.loop import DecodeLoop
    from neurocast.streaming.sources.base import local_clock

    arrivals = _Arrivals(chunk)
    results: list[Any] = []
    loop = DecodeLoop(source, [_ChannelMean()], results.append)
    loop.start()
    assert loop.engine is not None
    write = loop.engine.write

    def timed_write(c: Any) -> None:
        write(c)
        arrivals.add(c.data[:, 0], local_clock())

    loop.engine.write = timed_write  # type: ignore[method-assign, assignment]
    since = local_clock() + WARMUP_S
    time.sleep(WARMUP_S + seconds)
    loop.stop()
    if loop.error:
        raise RuntimeError(f"The decode loop failed: {loop.error}")
    if not results:
        raise RuntimeError("The decode loop produced no result.")
    return arrivals.latencies_ms(push_times, since)


def _run_lsl(name: str, chunk: int, seconds: float, push_times: Any) -> NDArray[np.float64]:
    from neurocast.streaming.sources.lsl import LSLSource
    from neurocast.streaming.sources.specs import LSLSpec

    source = LSLSource(LSLSpec(name=name, resolve_timeout_s=10.0))
    return _run_loop(source, chunk, seconds, push_times)


def _run_pylsl(name: str, chunk: int, seconds: float, push_times: Any) -> NDArray[np.float64]:
    import pylsl

    from neurocast.streaming.sources.base import local_clock

    found = pylsl.resolve_byprop("name", name, 1, 10.0)
    inlet = pylsl.StreamInlet(found[0], max_buflen=1, processing_flags=pylsl.proc_none)
    inlet.open_stream(10.0)
    buf = np.empty((int(SFREQ), N_CHANNELS), dtype=np.float32)
    arrivals = _Arrivals(chunk)
    since = local_clock() + WARMUP_S
    end = since + seconds
    while local_clock() < end:
        _, ts = inlet.pull_chunk(
            timeout=0.1, max_samples=buf.shape[0], dest_obj=buf, min_samples=1, as_numpy=True
        )
        t = local_clock()
        if len(ts):
            arrivals.add(buf[: len(ts), 0], t)
    inlet.close_stream()
    return arrivals.latencies_ms(push_times, since)


def _summary(runs: list[NDArray[np.float64]]) -> tuple[float, float, int]:
    p50, p99 = _common.median_of_runs(runs)
    return round(p50, 3), round(p99, 3), sum(len(r) for r in runs)


def main() -> None:
    args = _common.parser(__doc__).parse_args()
    reps, seconds = (2, 1.5) if args.quick else (5, 5.0)
    _lsl_config()
    ctx = mp.get_context("spawn")
    figures: dict[str, Any] = {}
    counts: dict[str, int] = {}
    started = time.monotonic()

    for chunk in (1, 10, 25):
        name = f"nc-bench-{chunk}-{uuid.uuid4().hex[:8]}"
        push_times = ctx.RawArray("d", int(MAX_SECONDS * SFREQ))
        stop, ready = ctx.Event(), ctx.Event()
        proc = ctx.Process(target=_lsl_pusher, args=(name, chunk, push_times, stop, ready))
        proc.start()
        try:
            if not ready.wait(30):
                raise RuntimeError("The LSL pushing process did not start.")
            runs: dict[str, list[NDArray[np.float64]]] = {"lsl": [], "pylsl": []}
            for _ in range(reps):
                runs["lsl"].append(_run_lsl(name, chunk, seconds, push_times))
                runs["pylsl"].append(_run_pylsl(name, chunk, seconds, push_times))
        finally:
            stop.set()
            proc.join(10)
        for path, r in runs.items():
            p50, p99, n = _summary(r)
            figures[f"{path}_c{chunk}_p50_ms"] = p50
            figures[f"{path}_c{chunk}_p99_ms"] = p99
            counts[f"{path}_c{chunk}"] = n
        figures[f"lsl_overhead_c{chunk}_p99_ms"] = round(
            figures[f"lsl_c{chunk}_p99_ms"] - figures[f"pylsl_c{chunk}_p99_ms"], 3
        )
        _common.log(
            f"chunk {chunk}: "
            + json.dumps({k: v for k, v in figures.items() if f"_c{chunk}_" in k})
        )

    from neurocast.streaming.sources.fieldtrip.source import FieldTripSource
    from neurocast.streaming.sources.specs import FieldTripSpec

    push_times = ctx.RawArray("d", int(MAX_SECONDS * SFREQ))
    stop, port_queue = ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=_ft_writer, args=(25, push_times, stop, port_queue))
    proc.start()
    try:
        port = port_queue.get(timeout=60)
        ft_runs = [
            _run_loop(FieldTripSource(FieldTripSpec(port=port)), 25, seconds, push_times)
            for _ in range(reps)
        ]
    finally:
        stop.set()
        proc.join(10)
    p50, p99, n = _summary(ft_runs)
    figures["ft_c25_p50_ms"], figures["ft_c25_p99_ms"] = p50, p99
    counts["ft_c25"] = n

    figures["n_chunks"] = counts
    figures["runs_per_case"] = reps
    figures["seconds_per_run"] = seconds
    figures["wall_s"] = round(time.monotonic() - started, 1)
    _common.emit(figures)


if __name__ == "__main__":
    main()
