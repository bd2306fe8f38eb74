"""Recording cost: a live SIMULATED 370-channel 1 kHz session decoded with and without recording.

The embedded simulator (306 MEG + 64 EEG channels, 1 kHz, real-time pace, 25 ms chunks)
feeds the live decode loop (:class:`~neurocast.streaming.engine.loop.DecodeLoop`) running the
packaged demo classifier every 25 ms, in the same run both without recording and with a
:class:`~neurocast.streaming.recording.recorder.SessionRecorder` taking every raw chunk
(through :class:`~neurocast.streaming.recording.tap.RecordingSource`) and every result.

The two sides alternate in rounds of 10 s (6 rounds; ``--quick``: 1), so that other load on
the machine hits both alike; the recording spans all "with" rounds (60 s of data, one file).
Figures: ``record_cpu_ms_per_s`` (CPU time of the writer thread plus the copies made by the
callers' ``write_chunk``/``write_result``, per second of data), ``decode_p99_ms_with_recording``
and ``decode_p99_ms_without_recording`` (preprocessing + inference per decoded window, 99th
percentile, median over rounds; the first 8 windows of each round are left out),
``total_p99_ms_*`` (the same plus acquisition), ``skipped_*`` (windows skipped because decoding
fell behind), ``file_mb_per_min`` (XDF size per minute of data, megabytes of 10^6 bytes) and
``pyxdf_read_s`` (``pyxdf.load_xdf`` of the file with its defaults: clock synchronisation and
dejittering).

Usage: ``python bench/record.py [--quick]`` (120 s of decoding; ``--quick``: 20 s).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import _common
import numpy as np
import pyxdf

from neurocast.catalog import PACKAGED_DIR
from neurocast.models.serving.runtime import OnnxWindowModel
from neurocast.streaming.engine.loop import DecodeLoop
from neurocast.streaming.engine.results import Result
from neurocast.streaming.recording.recorder import SessionRecorder
from neurocast.streaming.recording.tap import RecordingSource
from neurocast.streaming.sources.base import Chunk, Source
from neurocast.streaming.sources.simulator.source import SimulatorSource
from neurocast.streaming.sources.specs import SimulatorSpec

WARM_UP = 8  # windows left out of the latency figures (first calls allocate)
ROUND_S = 10.0  # seconds per side and round


class _TimedRecordingSource(RecordingSource):
    """Counts the CPU time spent handing chunks to the recorder (in the acquisition thread)."""

    cpu_s = 0.0

    def read(self, timeout: float) -> Chunk | None:
        chunk = self.source.read(timeout)
        recorder = self.recorder
        if chunk is not None and recorder is not None and self.key is not None:
            t = time.thread_time()
            recorder.write_chunk(chunk, self.key)
            self.cpu_s += time.thread_time() - t
        return chunk


def _phase(seconds: float, source: Source, recorder: SessionRecorder | None) -> dict[str, Any]:
    """Decode ``source`` live for ``seconds`` (recording when ``recorder`` is given)."""
    model = OnnxWindowModel(PACKAGED_DIR / "demo-classifier.onnx")
    results: list[Result] = []
    sink_cpu = [0.0]
    timed = source if isinstance(source, _TimedRecordingSource) else None
    cpu0 = timed.cpu_s if timed else 0.0

    def sink(result: Result) -> None:
        results.append(result)
        if recorder is not None:
            t = time.thread_time()
            recorder.write_result(result)
            sink_cpu[0] += time.thread_time() - t

    loop = DecodeLoop(source, [model], sink)
    loop.start()
    time.sleep(seconds)
    loop.stop()
    stats = loop.stats()
    kept = results[WARM_UP:]
    decode = np.array([r.latency.preprocessing_ms + r.latency.inference_ms for r in kept])
    total = decode + np.array([r.latency.acquisition_ms for r in kept])
    return {
        "decode_p99_ms": float(np.percentile(decode, 99)),
        "total_p99_ms": float(np.percentile(total, 99)),
        "n_decoded": stats.n_decoded,
        "n_skipped": stats.n_skipped,
        "caller_cpu_s": sink_cpu[0] + ((timed.cpu_s - cpu0) if timed else 0.0),
    }


def main() -> None:
    args = _common.parser(__doc__).parse_args()
    rounds = 1 if args.quick else 6
    spec = SimulatorSpec(modality="both", realtime=True, chunk_s=0.025)
    plain = SimulatorSource(spec)  # reopened every round: the stream resumes
    runs: dict[str, list[dict[str, Any]]] = {"without": [], "with": []}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "session.xdf"
        recorder = SessionRecorder(path)
        recorder.start()
        recorded = _TimedRecordingSource(SimulatorSource(spec), recorder)
        for k in range(rounds):
            # the two sides alternate so that other load on the machine hits both alike
            _common.log(f"round {k + 1}/{rounds}: {ROUND_S:g} s without, {ROUND_S:g} s with")
            runs["without"].append(_phase(ROUND_S, plain, None))
            runs["with"].append(_phase(ROUND_S, recorded, recorder))
        status = recorder.stop()
        if status.state != "stopped":
            raise SystemExit(f"the recording failed: {status.reason}")
        data_s = status.n_samples / 1000.0
        size = path.stat().st_size
        t = time.perf_counter()
        streams, _ = pyxdf.load_xdf(path)
        read_s = time.perf_counter() - t
        n_streams = len(streams)

    def med(side: str, key: str) -> float:
        return round(float(np.median([r[key] for r in runs[side]])), 2)

    def tot(side: str, key: str) -> int:
        return int(sum(r[key] for r in runs[side]))

    cpu_s = status.writer_cpu_s + sum(r["caller_cpu_s"] for r in runs["with"])
    _common.emit(
        {
            "record_cpu_ms_per_s": round(1e3 * cpu_s / data_s, 2),
            "writer_thread_cpu_ms_per_s": round(1e3 * status.writer_cpu_s / data_s, 2),
            "decode_p99_ms_with_recording": med("with", "decode_p99_ms"),
            "decode_p99_ms_without_recording": med("without", "decode_p99_ms"),
            "total_p99_ms_with_recording": med("with", "total_p99_ms"),
            "total_p99_ms_without_recording": med("without", "total_p99_ms"),
            "skipped_with_recording": tot("with", "n_skipped"),
            "skipped_without_recording": tot("without", "n_skipped"),
            "decoded_with_recording": tot("with", "n_decoded"),
            "decoded_without_recording": tot("without", "n_decoded"),
            "file_mb_per_min": round(size / 1e6 / data_s * 60, 1),
            "pyxdf_read_s": round(read_s, 2),
            "recorded_s": round(data_s, 2),
            "rounds": rounds,
            "n_streams": n_streams,
            "n_channels": 370,
            "simulated": True,
        }
    )


if __name__ == "__main__":
    main()
