"""The live decode loop: threads around the engine, a failing source, refused chunks, stop."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Literal

import numpy as np
import pytest
from numpy.typing import NDArray
from test_pipeline import motor_model, synthetic_recording

from neurocast.streaming.engine.loop import DecodeLoop
from neurocast.streaming.engine.results import Result
from neurocast.streaming.sources.base import Chunk, SourceError, StreamInfo, local_clock

pytestmark = pytest.mark.timeout(60)

Step = NDArray[np.float32] | Exception


class ScriptedSource:
    """A live source that plays a script: each step is a block of samples (channels ×
    samples) or an exception to raise.

    Samples are stamped on the local clock at the nominal rate, the whole script ending at
    ``open()``: every sample is already acquired when it is read, so no window is early.

    After the script it returns None (nothing arrived), like a quiet device.
    """

    def __init__(self, stream: StreamInfo, script: list[Step]) -> None:
        self._stream = stream
        self._script = list(script)
        self._status: Literal["starting", "running", "stopped"] = "starting"
        self.n_closed = 0
        self.done = threading.Event()
        self._next_time = 0.0

    @property
    def stream_info(self) -> StreamInfo:
        return self._stream

    @property
    def status(self) -> Literal["starting", "running", "stopped"]:
        return self._status

    def open(self) -> StreamInfo:
        self._status = "running"
        n = sum(s.shape[1] for s in self._script if not isinstance(s, Exception))
        self._next_time = local_clock() - n / self._stream.sfreq
        return self._stream

    def read(self, timeout: float) -> Chunk | None:
        if not self._script:
            self.done.set()
            time.sleep(min(timeout, 0.02))
            return None
        step = self._script.pop(0)
        if isinstance(step, Exception):
            raise step
        n = step.shape[1]
        ts = self._next_time + np.arange(n) / self._stream.sfreq
        self._next_time = float(ts[-1]) + 1 / self._stream.sfreq
        return Chunk(step.T.copy(), ts, local_clock())

    def close(self) -> None:
        self.n_closed += 1
        self._status = "stopped"


def _blocks(data: NDArray[np.float32], n: int, size: int = 40) -> list[Step]:
    return [data[:, a : a + size] for a in range(0, n, size)]


def _wait(condition: Callable[[], bool], limit_s: float = 20.0) -> None:
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, "the loop did not get there in time"
        time.sleep(0.01)


def _loop(source: ScriptedSource, sink: list[Result]) -> DecodeLoop:
    # a budget longer than any pause of a busy machine: every due window is decoded
    return DecodeLoop(source, [motor_model()], sink.append, stride_s=0.025, max_lag_s=5.0)


def test_loop_decodes_a_live_source_and_stops_twice() -> None:
    stream, data, _ = synthetic_recording(seconds=3.0)
    source = ScriptedSource(stream, _blocks(data, 400))
    results: list[Result] = []
    loop = _loop(source, results)
    loop.start()
    try:
        assert loop.running
        _wait(lambda: source.done.is_set() and loop.stats().n_decoded > 0)
        _wait(lambda: loop.engine is not None and loop.engine.clock.next_end > 400)
        stats = loop.stats()
        assert stats.status == "running" and stats.error is None
    finally:
        loop.stop()
    assert not loop.running and source.n_closed == 1
    loop.stop()  # a second stop is harmless
    assert source.n_closed == 2  # closing twice is the source's promise
    assert loop.stats().status == "stopped"
    ends = [r.window_end for r in results]
    assert ends == sorted(ends) and len(set(ends)) == len(ends)
    assert all(r.valid and r.model == "bandpower" for r in results)
    assert loop.stats().n_decoded == len(results)


def test_source_that_raises_fails_the_loop_with_the_reason() -> None:
    stream, data, _ = synthetic_recording(seconds=2.0)
    script = [*_blocks(data, 200), SourceError("the amplifier was unplugged")]
    source = ScriptedSource(stream, script)
    results: list[Result] = []
    loop = _loop(source, results)
    loop.start()
    try:
        _wait(lambda: not loop.running)
        stats = loop.stats()
        assert stats.status == "failed"
        assert stats.error == "SourceError: the amplifier was unplugged"
        assert loop.engine is not None and loop.engine.ring.n_written == 200
    finally:
        loop.stop()
    assert source.n_closed == 1


def test_chunk_with_wrong_channel_count_is_refused_and_the_loop_goes_on() -> None:
    stream, data, _ = synthetic_recording(seconds=3.0)
    bad = data[:10, 200:240]  # ten of the 64 channels
    script = [*_blocks(data, 200), bad, *_blocks(data[:, 200:], 200)]
    source = ScriptedSource(stream, script)
    results: list[Result] = []
    loop = _loop(source, results)
    loop.start()
    try:
        _wait(lambda: source.done.is_set())
        # the 400 good samples all reached the ring; the bad chunk added none
        _wait(lambda: loop.engine is not None and loop.engine.ring.n_written == 400)
        _wait(lambda: any(r.window_end > 200 for r in results))
        assert loop.running
        stats = loop.stats()
        assert stats.status == "running"
        assert stats.error is not None and "expected (n_samples, 64)" in stats.error
    finally:
        loop.stop()
    # a refused chunk is not a failure: the loop ends stopped, the refusal still reported
    final = loop.stats()
    assert final.status == "stopped" and "expected (n_samples, 64)" in (final.error or "")
