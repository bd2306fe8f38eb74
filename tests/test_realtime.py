"""Live decoding within a latency budget: chunking never skips, only falling behind does.

Real transports where a peer exists: MNE-LSL's ``PlayerLSL`` as the device, the FieldTrip
buffer server fed in 1 s blocks. Clocks that run ahead of or behind the local clock, a burst
of backlog after a stall, chunks of 1 sample to 1,000 ms, NaN in a burst.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import mne
import numpy as np
import pytest
from numpy.typing import NDArray
from test_pipeline import PICKS, motor_model

from neurocast.streaming.engine.budget import LatencyBudget
from neurocast.streaming.engine.loop import DecodeLoop
from neurocast.streaming.engine.pipeline import DecodeEngine, decode_array
from neurocast.streaming.engine.results import Result
from neurocast.streaming.engine.windows import DecodeClock, WindowSamples
from neurocast.streaming.sources.base import Chunk, SourceStatus, StreamInfo, local_clock
from neurocast.streaming.sources.lsl import use_loopback_config

if "LSLAPICFG" not in os.environ:
    use_loopback_config(f"nc-test-{uuid.uuid4().hex[:8]}")

pytestmark = pytest.mark.timeout(120)

SFREQ = 160.0
STRIDE = 4  # 25 ms at 160 Hz


def _recording(seconds: float, seed: int = 0) -> tuple[StreamInfo, NDArray[np.float32]]:
    """EEG-like noise with a 10 Hz rhythm on the motor model's channels (160 Hz)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SFREQ)
    t = np.arange(n) / SFREQ
    data = 5e-6 * rng.standard_normal((len(PICKS), n))
    data += 10e-6 * np.sin(2 * np.pi * 10 * t) * (1 + np.sin(2 * np.pi * 0.3 * t))
    info = mne.create_info(PICKS, SFREQ, "eeg")
    return StreamInfo("realtime test (SIMULATED)", info, simulated=True), data.astype(np.float32)


# ----------------------------------------------------------------------------- the clock


def test_take_oldest_decodes_every_due_window_in_order() -> None:
    clock = DecodeClock(WindowSamples(window=16, stride=4, context=0, sfreq=160.0))
    assert clock.take_oldest(15) is None
    # a 100 ms chunk makes four windows due at once: each is decoded, none skipped
    assert [clock.take_oldest(32) for _ in range(5)] == [
        (16, 0),
        (20, 0),
        (24, 0),
        (28, 0),
        (32, 0),
    ]
    assert clock.take_oldest(35) is None
    # windows ending before `not_before` are over the budget: skipped, counted with the reason
    assert clock.take_oldest(100, not_before=50) == (52, 4)
    assert clock.take_oldest(100) == (56, 0)
    # the newest due window is decoded even when it is over the budget too
    assert clock.take_oldest(100, not_before=1000) == (100, 10)
    assert (clock.n_decoded, clock.n_skipped) == (8, 14)
    assert clock.skipped_by_reason == {"over_budget": 14}


@pytest.mark.parametrize("shift_s", [-2.0, 0.0, 2.0])
def test_budget_does_not_depend_on_the_source_clock(shift_s: float) -> None:
    budget = LatencyBudget(0.25)
    t0 = 1000.0
    for k in range(20):  # 100 ms chunks received in real time, stamped `shift_s` off
        receipt = t0 + 0.1 * (k + 1) + 0.003
        last = t0 + 0.1 * (k + 1) - 1 / SFREQ + shift_s
        budget.observe(last - 0.1 + 1 / SFREQ, last, 16, SFREQ, receipt)
    now = t0 + 2.0 + 0.003
    oldest = budget.oldest_in_budget(now)
    newest_sample = t0 + 2.0 - 1 / SFREQ + shift_s
    # the budget (250 ms) plus the usual chunk (100 ms) behind the newest sample
    assert oldest == pytest.approx(newest_sample - 0.35, abs=1e-9)


def test_budget_allows_the_devices_chunking() -> None:
    budget = LatencyBudget(0.25)
    for k in range(5):  # 1 s blocks (FieldTrip's default)
        budget.observe(float(k), k + 1 - 1 / SFREQ, 160, SFREQ, receipt=100.0 + k + 1)
    # at the moment the last block arrives its oldest sample (1 s old) is within the budget
    assert budget.oldest_in_budget(105.0) < 4.0
    assert budget.oldest_in_budget(105.0 + 0.3) > 4.0  # 300 ms later it no longer is


def test_budget_forgets_offsets_when_the_source_clock_steps_back() -> None:
    budget = LatencyBudget(0.25)
    budget.observe(100.0, 100.1, 16, SFREQ, receipt=10.1)
    budget.observe(0.0, 0.1, 16, SFREQ, receipt=10.2)  # clock reset: old offsets are void
    # judged on the new clock alone: the last sample, less the chunk's span and the budget
    assert budget.oldest_in_budget(10.2) == pytest.approx(0.1 - (0.1 + 1 / SFREQ) - 0.25)


# ----------------------------------------------------------------------------- the engine


def _feed_and_decode(
    engine: DecodeEngine, data: NDArray[np.float32], chunk: Callable[[int], int], t0: float
) -> list[Result]:
    """Write chunks as they would arrive, decoding every due window after each."""
    out: list[Result] = []
    a = 0
    k = 0
    while a < data.shape[1]:
        n = chunk(k)
        ts = t0 + (a + np.arange(min(n, data.shape[1] - a))) / SFREQ
        engine.write(Chunk(data[:, a : a + n].T, ts, local_clock()))
        while (results := engine.decode_next()) is not None:
            out.extend(results)
        a += n
        k += 1
    return out


@pytest.mark.parametrize(
    "chunk",
    [
        pytest.param(lambda k: 1, id="1-sample"),
        pytest.param(lambda k: 4, id="25ms"),
        pytest.param(lambda k: 16, id="100ms"),
        pytest.param(lambda k: 160, id="1000ms"),
        pytest.param(lambda k: int(np.random.default_rng(k).integers(1, 161)), id="random"),
    ],
)
def test_any_chunking_decodes_the_windows_of_batch(chunk: Callable[[int], int]) -> None:
    stream, data = _recording(6.0)
    t0 = local_clock()
    batch = list(decode_array(data, t0 + np.arange(data.shape[1]) / SFREQ, stream, [motor_model()]))
    engine = DecodeEngine(stream, [motor_model()], max_lag_s=0.25)
    live = _feed_and_decode(engine, data, chunk, t0)
    assert [r.window_end for r in live] == [r.window_end for r in batch]
    assert engine.clock.n_skipped == 0 and all(r.skipped == 0 for r in live)
    for a, b in zip(live, batch, strict=True):
        np.testing.assert_allclose(
            a.payload["probabilities"], b.payload["probabilities"], atol=1e-6
        )


def test_burst_after_a_stall_decodes_the_recent_windows_and_counts_the_rest() -> None:
    stream, data = _recording(14.0)
    engine = DecodeEngine(stream, [motor_model()], max_lag_s=0.25)
    now = local_clock()
    # 2 s in 100 ms chunks, received in real time 12 s ago (decoded now, so mostly skipped)
    t0 = now - 12.0
    for k in range(20):
        ts = t0 + (16 * k + np.arange(16)) / SFREQ
        engine.write(Chunk(data[:, 16 * k : 16 * (k + 1)].T, ts, ts[-1] + 0.002))
    while engine.decode_next() is not None:
        pass
    before = engine.clock.n_decoded
    skipped_before = engine.clock.n_skipped
    # the device stalled for 10 s and now delivers its backlog and the newest samples at once
    ts = t0 + np.arange(320, 1920) / SFREQ
    nan_at = 1920 - 20  # NaN in the burst, inside the windows that are still decoded
    burst = data[:, 320:1920].copy()
    burst[0, nan_at - 320] = np.nan
    engine.write(Chunk(burst.T, ts, local_clock()))
    burst_results = []
    while (results := engine.decode_next()) is not None:
        burst_results.extend(results)
    ends = [r.window_end for r in burst_results]
    # only the windows within the budget plus the usual 100 ms chunk of the newest sample
    assert ends == list(range(ends[0], 1921, STRIDE))
    assert 0.3 <= (1920 - ends[0]) / SFREQ <= 0.45
    n_due = (1920 - 320) // STRIDE
    assert burst_results[0].skipped == n_due - len(ends)
    assert engine.clock.n_skipped - skipped_before == n_due - len(ends)
    assert list(engine.clock.skipped_by_reason) == ["over_budget"]
    assert engine.clock.n_decoded == before + len(ends)
    span = 24  # raw samples under one motor-model window
    for r in burst_results:
        hit = r.window_end - span <= nan_at < r.window_end
        assert r.valid is not hit
        assert r.issues == (["non_finite"] if hit else [])


# ----------------------------------------------------------------------------- the live loop


class PacedSource:
    """A device in real time whose clock is ``shift_s`` off the local clock (test peer)."""

    def __init__(self, stream: StreamInfo, data: NDArray[np.float32], chunk: int, shift_s: float):
        self._stream, self._data, self._chunk, self._shift = stream, data, chunk, shift_s
        self._start = 0.0
        self._sent = 0

    @property
    def stream_info(self) -> StreamInfo:
        return self._stream

    @property
    def status(self) -> SourceStatus:
        return "running"

    def open(self) -> StreamInfo:
        self._start = local_clock()
        return self._stream

    def read(self, timeout: float) -> Chunk | None:
        a, b = self._sent, min(self._sent + self._chunk, self._data.shape[1])
        if a >= b:
            time.sleep(timeout)
            return None
        due = self._start + b / SFREQ
        time.sleep(max(0.0, due - local_clock()))
        self._sent = b
        ts = self._start + np.arange(a, b) / SFREQ + self._shift
        return Chunk(self._data[:, a:b].T, ts, local_clock())

    def close(self) -> None:
        pass


def _run_loop(source: Any, seconds: float) -> tuple[DecodeLoop, list[Result]]:
    got: list[Result] = []
    loop = DecodeLoop(source, [motor_model()], got.append, max_lag_s=0.25)
    loop.start()
    try:
        time.sleep(seconds)
    finally:
        loop.stop()
    return loop, got


@pytest.mark.parametrize("shift_s", [2.0, -2.0])
def test_a_clock_ahead_shows_as_negative_latency_never_as_skips(shift_s: float) -> None:
    stream, data = _recording(3.0)
    loop, got = _run_loop(PacedSource(stream, data, chunk=16, shift_s=shift_s), 2.5)
    stats = loop.stats()
    assert stats.n_skipped == 0 and stats.n_decoded >= 60
    acquisition = np.array([r.latency.acquisition_ms for r in got])
    # measured as it is: about -2000 ms ahead, +2000 ms behind (plus transport and waiting)
    assert np.all(np.abs(acquisition + 1000 * shift_s) < 200)
    if shift_s > 0:
        assert all(r.issues == ["clock_ahead"] and r.valid for r in got)
        assert stats.clock_ahead_ms == pytest.approx(2000, abs=200)
    else:
        assert all(r.issues == [] for r in got)
        assert stats.clock_ahead_ms == 0.0


def _assert_live_equals_batch(loop: DecodeLoop, got: list[Result]) -> None:
    """Every window decoded (none skipped) and equal to batch decoding of the same samples."""
    stats = loop.stats()
    assert stats.n_skipped == 0, stats.skipped_by_reason
    assert loop.engine is not None
    ring = loop.engine.ring
    received = ring.read(0, ring.n_written)
    batch = {
        r.window_end: r
        for r in decode_array(received.data, received.timestamps, loop.stream_info, [motor_model()])
    }
    ends = [r.window_end for r in got]
    assert len(ends) >= 80 and ends == list(range(ends[0], ends[-1] + 1, STRIDE))
    for r in got:
        np.testing.assert_allclose(
            r.payload["probabilities"], batch[r.window_end].payload["probabilities"], atol=1e-6
        )


def test_mne_lsl_player_in_100ms_chunks_is_decoded_window_for_window() -> None:
    from mne_lsl.player import PlayerLSL

    from neurocast.streaming.sources.lsl import LSLSource
    from neurocast.streaming.sources.specs import LSLSpec

    stream, data = _recording(20.0)
    raw = mne.io.RawArray(data.astype(np.float64), stream.info, verbose="error")
    name = f"nc-player-{uuid.uuid4().hex[:8]}"
    player = PlayerLSL(raw, chunk_size=16, name=name, source_id=name)
    player.start()
    try:
        source = LSLSource(LSLSpec(name=name, resolve_timeout_s=10.0))
        loop, got = _run_loop(source, 4.0)
    finally:
        player.stop()
    _assert_live_equals_batch(loop, got)


def test_fieldtrip_buffer_in_1s_blocks_is_decoded_window_for_window() -> None:
    from neurocast.streaming.sources.fieldtrip import (
        FieldTripServer,
        FieldTripSource,
        FieldTripWriter,
    )
    from neurocast.streaming.sources.specs import FieldTripSpec

    stream, data = _recording(8.0)
    stop = threading.Event()
    with FieldTripServer().serve_in_thread() as srv, FieldTripWriter("127.0.0.1", srv.port) as w:
        w.put_header(stream)

        def acquire() -> None:  # NatMEG's acquisition: one 1 s block a second
            for k in range(8):
                if stop.wait(1.0):
                    return
                w.put_data(data[:, 160 * k : 160 * (k + 1)].T)

        writer = threading.Thread(target=acquire, daemon=True)
        writer.start()
        try:
            source = FieldTripSource(FieldTripSpec(host="127.0.0.1", port=srv.port))
            loop, got = _run_loop(source, 5.5)
        finally:
            stop.set()
            writer.join()
    _assert_live_equals_batch(loop, got)
