"""Decode clock and decode engine: live equals batch, timestamps, markers, bad input."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mne
import numpy as np
import pytest
from numpy.typing import NDArray
from scipy.signal import lfilter

from neurocast.streaming.engine.pipeline import DecodeEngine, decode_array
from neurocast.streaming.engine.results import Result, ResultKind
from neurocast.streaming.engine.windows import DecodeClock, WindowSamples, WindowSpec
from neurocast.streaming.preprocessing.filters import OnlinePreprocessor, PreprocessSpec
from neurocast.streaming.sources.base import Chunk, Marker, StreamInfo, local_clock

T0 = 5000.0  # source clock at the first sample, seconds


class BandPowerModel:
    """A small numpy decoder: log power per channel, a fixed linear map, softmax.

    Its output depends on every sample of the window, so any difference in the windows cut
    or in their preprocessing shows up in the probabilities.
    """

    kind: ResultKind = "probabilities"

    def __init__(self, spec: PreprocessSpec, window: WindowSpec, name: str = "bandpower") -> None:
        self.spec = spec
        self.name = name
        self.window = window
        n = len(spec.picks or [])
        self.weights = np.random.default_rng(0).normal(size=(3, n))

    def preprocessor(self, stream: StreamInfo) -> OnlinePreprocessor:
        return OnlinePreprocessor(self.spec, stream)

    def run(self, x: NDArray[np.float32]) -> dict[str, Any]:
        power = np.log(np.mean(x.astype(np.float64) ** 2, axis=1) + 1e-30)
        logits = self.weights @ (power - power.mean())
        p = np.exp(logits - logits.max())
        return {"probabilities": (p / p.sum()).tolist(), "window": x.copy()}


PICKS = ["C3..", "Cz..", "C4..", "Fz..", "Pz..", "Oz.."]


def motor_model(name: str = "bandpower", picks: list[str] = PICKS) -> BandPowerModel:
    spec = PreprocessSpec(
        picks=picks,
        line_freq_hz=60.0,
        l_freq_hz=1.0,
        h_freq_hz=40.0,
        resample_hz=120.0,
        baseline_s=(0.0, 0.05),
        clip=20.0,
        robust_center=[0.0] * len(picks),
        robust_scale=[1e-5] * len(picks),
    )
    return BandPowerModel(spec, WindowSpec(window_s=0.1, context_s=0.05), name)


def model_span(stream: StreamInfo) -> int:
    """Raw samples under one :func:`motor_model` window.

    The model reads 0.15 s (18 samples at 120 Hz): 24 raw samples at EEGBCI's 160 Hz.
    """
    return int(np.ceil(18 * stream.sfreq / 120.0))


@pytest.fixture(scope="module")
def eegbci(shared_data: Path) -> tuple[StreamInfo, NDArray[np.float32], NDArray[np.float64]]:
    """12 s of PhysioNet EEGBCI S001R04 (64 EEG at 160 Hz) with source-clock timestamps."""
    raw = mne.io.read_raw_edf(shared_data / "eegbci" / "S001R04.edf", preload=True, verbose=False)
    raw.crop(0, 12, include_tmax=False)
    data = raw.get_data().astype(np.float32)
    return StreamInfo("eegbci S001R04", raw.info), data, T0 + raw.times


def synthetic_recording(
    seconds: float = 12.0, sfreq: float = 160.0, seed: int = 0
) -> tuple[StreamInfo, NDArray[np.float32], NDArray[np.float64]]:
    """EEG-like noise on EEGBCI's layout (64 channels at 160 Hz, the model's picks among them).

    Brown-ish background plus a 10 Hz rhythm of varying amplitude, tens of microvolts: the
    scale and spectrum the motor model's filters and robust scaling were written for, with no
    recording needed.
    """
    rng = np.random.default_rng(seed)
    names = PICKS + [f"E{i:02d}." for i in range(64 - len(PICKS))]
    info = mne.create_info(names, sfreq, "eeg")
    n = int(seconds * sfreq)
    t = np.arange(n) / sfreq
    # leaky integration of white noise gives the 1/f-like background of scalp EEG
    background = lfilter([1.0], [1.0, -0.95], rng.standard_normal((len(names), n)), axis=1)
    alpha = np.sin(2 * np.pi * 10.0 * t + rng.uniform(0, 2 * np.pi, (len(names), 1)))
    envelope = 1.0 + 0.5 * np.sin(2 * np.pi * 0.3 * t + rng.uniform(0, 2 * np.pi, (len(names), 1)))
    data = (3e-6 * background + 1.5e-5 * envelope * alpha).astype(np.float32)
    return StreamInfo("synthetic eegbci layout", info), data, T0 + t


@pytest.fixture(
    scope="module", params=["synthetic", pytest.param("eegbci", marks=pytest.mark.shared_data)]
)
def recording(
    request: pytest.FixtureRequest,
) -> tuple[StreamInfo, NDArray[np.float32], NDArray[np.float64]]:
    """The engine's input: synthetic EEG always, and the real EEGBCI excerpt when present."""
    if request.param == "synthetic":
        return synthetic_recording()
    return request.getfixturevalue("eegbci")


def run_live(
    engine: DecodeEngine, data: NDArray, times: NDArray, seed: int, markers: Sequence[Marker] = ()
) -> list[Result]:
    """Write random-size chunks and decode only the newest due window after each."""
    rng = np.random.default_rng(seed)
    out: list[Result] = []
    a = 0
    while a < data.shape[1]:
        n = int(rng.integers(1, 30))
        ts = times[a : a + n]
        due = [m for m in markers if ts[0] <= m.timestamp <= ts[-1]]
        engine.write(Chunk(data[:, a : a + n].T, ts, local_clock(), markers=due))
        out.extend(engine.decode_due(newest_only=True))
        a += n
    return out


# ----------------------------------------------------------------- windows and clock


def test_window_spec_in_samples() -> None:
    s = WindowSpec(window_s=0.1, stride_s=0.025, context_s=0.05).in_samples(1000.0)
    assert (s.window, s.stride, s.context, s.total) == (100, 25, 50, 150)
    assert s.first_end == 150
    assert list(s.ends(220)) == [150, 175, 200]
    assert WindowSpec().in_samples(160.0).stride == 4
    with pytest.raises(ValueError, match="positive"):
        WindowSpec(window_s=0.0)
    with pytest.raises(ValueError, match="non-negative"):
        WindowSpec(context_s=-0.1)


def test_decode_clock_skips_and_never_queues() -> None:
    clock = DecodeClock(WindowSamples(window=16, stride=4, context=0, sfreq=160.0))
    assert clock.take(15) is None  # not enough data for the first window
    assert clock.take(16) == (16, 0)
    assert clock.take(19) is None
    assert clock.take(20) == (20, 0)
    # decoding fell behind by 6 strides: only the newest due window, 5 counted as skipped
    assert clock.take(45) == (44, 5)
    assert clock.take(45) is None  # nothing left queued
    assert clock.next_end == 48
    assert (clock.n_decoded, clock.n_skipped) == (3, 5)
    assert clock.take(10_000) == (10_000, (10_000 - 48) // 4)


# ----------------------------------------------------------------- engine on real EEG


@pytest.mark.parametrize("seed", [0, 1])
def test_live_decoding_equals_batch(
    recording: tuple[StreamInfo, NDArray[np.float32], NDArray[np.float64]], seed: int
) -> None:
    stream, data, times = recording
    models = [motor_model("a"), motor_model("b", picks=PICKS[::-1])]
    batch = list(decode_array(data, times, stream, models, stride_s=0.025, chunk_s=0.7))
    engine = DecodeEngine(stream, models, stride_s=0.025)
    live = run_live(engine, data, times, seed)

    by_end = {(r.model, r.window_end): r for r in batch}
    ends = sorted({r.window_end for r in batch})
    assert np.all(np.diff(ends) == 4)  # every stride (25 ms at 160 Hz) in batch mode
    assert len(ends) > 400
    # live decodes a subset (chunks longer than the stride skip windows), each equal to batch
    assert 0 < len(live) < len(batch)
    assert engine.clock.n_skipped > 0
    assert sum(r.skipped for r in live if r.model == "a") == engine.clock.n_skipped
    for r in live:
        b = by_end[(r.model, r.window_end)]
        np.testing.assert_allclose(
            r.payload["probabilities"], b.payload["probabilities"], atol=1e-5
        )
        np.testing.assert_allclose(r.payload["window"], b.payload["window"], atol=1e-4)
        assert r.t_window_end == b.t_window_end
    # both models saw the same channels, in their own orders
    a = next(r for r in live if r.model == "a")
    b = next(r for r in live if r.model == "b" and r.window_end == a.window_end)
    np.testing.assert_allclose(a.payload["window"], b.payload["window"][::-1], atol=1e-4)


def test_results_carry_window_end_time_and_latency(
    recording: tuple[StreamInfo, NDArray[np.float32], NDArray[np.float64]],
) -> None:
    stream, data, times = recording
    results = list(decode_array(data[:, :800], times[:800], stream, [motor_model()]))
    assert results
    for r in results:
        assert r.t_window_end == times[r.window_end - 1]
        assert r.kind == "probabilities" and r.model == "bandpower"
        assert r.valid and not r.issues and not r.simulated
        lat = r.latency
        for value in (lat.acquisition_ms, lat.preprocessing_ms, lat.inference_ms):
            assert np.isfinite(value) and value >= 0
        assert lat.delivery_ms == 0.0  # filled in by whoever delivers it
        assert lat.acquisition_ms == 0.0  # no acquisition in batch decoding
        assert sum(r.payload["probabilities"]) == pytest.approx(1.0)


def test_markers_attach_to_the_windows_they_fall_in(
    recording: tuple[StreamInfo, NDArray[np.float32], NDArray[np.float64]],
) -> None:
    stream, data, times = recording
    n = 1600
    markers = [Marker(T0 + 2.0, "class/left"), Marker(T0 + 5.5031, "image/7")]
    results = list(decode_array(data[:, :n], times[:n], stream, [motor_model()], markers=markers))
    span = model_span(stream)
    for r in results:
        t_start, t_end = times[r.window_end - span], times[r.window_end - 1]
        expected = [m for m in markers if t_start <= m.timestamp <= t_end]
        assert r.markers == expected
    for m in markers:
        assert sum(m in r.markers for r in results) >= span // 4 - 1  # every window over it


def test_nan_windows_invalid_then_valid_again(
    recording: tuple[StreamInfo, NDArray[np.float32], NDArray[np.float64]],
) -> None:
    stream, data, times = recording
    n = 960  # 6 s
    # a 20 mV electrode offset makes a zero-filled sample a large step for the filters
    clean = data[:, :n] + 0.02
    bad = clean.copy()
    bad[pick_rows(stream), 480:483] = np.nan
    bad[0, 700] = np.inf  # a channel the model does not read still flags the stream
    model = motor_model()
    ok = {r.window_end: r for r in decode_array(clean, times[:n], stream, [model])}
    # the recording is written faster than real time on its own clock (T0): not a live source,
    # so no acquisition latency (a live engine would rightly note `clock_ahead` on each window)
    got = run_live(DecodeEngine(stream, [model], live=False), bad, times[:n], seed=3)
    got_batch = list(decode_array(bad, times[:n], stream, [model]))
    span = model_span(stream)
    for r in got + got_batch:
        hit_nan = r.window_end - span < 483 and r.window_end > 480
        hit_inf = r.window_end - span <= 700 < r.window_end
        assert r.valid is not (hit_nan or hit_inf), r.window_end
        if not r.valid:
            assert r.issues == ["non_finite"]
        assert np.isfinite(r.payload["probabilities"]).all()
        if r.window_end > 760:
            # well after the bad samples: back to what the clean recording gives
            clean_window = ok[r.window_end].payload["window"]
            np.testing.assert_allclose(r.payload["window"], clean_window, atol=0.05)
    assert any(not r.valid for r in got) and any(r.valid for r in got if r.window_end > 760)


def pick_rows(stream: StreamInfo) -> list[int]:
    return [stream.ch_names.index(c) for c in PICKS]


def test_gap_and_clock_jump_invalidate_spanning_windows(
    recording: tuple[StreamInfo, NDArray[np.float32], NDArray[np.float64]],
) -> None:
    stream, data, times = recording
    n = 800
    ts = times[:n].copy()
    ts[400:] += 0.5  # 80 samples lost at sample 400
    results = list(decode_array(data[:, :n], ts, stream, [motor_model()]))
    span = model_span(stream)
    for r in results:
        spans_gap = r.window_end - span < 400 < r.window_end
        assert r.valid is not spans_gap
        if spans_gap:
            assert r.issues == ["gap"]
    # the source's clock is reset between two chunks
    engine = DecodeEngine(stream, [motor_model()], live=False)
    engine.write(Chunk(data[:, :400].T, times[:400], local_clock()))
    engine.write(Chunk(data[:, 400:n].T, times[400:n] - 100.0, local_clock()))
    results = engine.decode_due(newest_only=False)
    for r in results:
        spans_jump = r.window_end - span < 400 < r.window_end
        assert r.issues == (["clock_jump_backward"] if spans_jump else [])
    assert results[-1].t_window_end == times[n - 1] - 100.0
    # batch decoding of a recording whose clock steps back inside one chunk reports the jump
    ts = np.concatenate([times[:400], times[400:n] - 100.0])
    batch = list(decode_array(data[:, :n], ts, stream, [motor_model()], chunk_s=10.0))
    assert [r.window_end for r in batch] == [r.window_end for r in results]
    assert [r.issues for r in batch] == [r.issues for r in results]


def test_bad_chunks_refused_and_stream_goes_on(
    recording: tuple[StreamInfo, NDArray[np.float32], NDArray[np.float64]],
) -> None:
    stream, data, times = recording
    engine = DecodeEngine(stream, [motor_model()])
    assert engine.decode_due() == []  # before any data: no window is due
    engine.write(Chunk(data[:, :100].T, times[:100], local_clock()))
    with pytest.raises(ValueError, match=r"expected \(n_samples, 64\)"):
        engine.write(Chunk(data[:10, 100:120].T, times[100:120], local_clock()))
    swapped = times[100:120].copy()
    swapped[[3, 4]] = swapped[[4, 3]]
    with pytest.raises(ValueError, match="strictly increasing"):
        engine.write(Chunk(data[:, 100:120].T, swapped, local_clock()))
    assert engine.ring.n_written == 100
    engine.write(Chunk(data[:, 100:400].T, times[100:400], local_clock()))
    results = engine.decode_due(newest_only=True)
    assert [r.window_end for r in results] == [400]
    assert results[0].valid


def test_unknown_channel_in_model_picks_is_a_clear_error() -> None:
    info = mne.create_info(["Cz", "C3", "C4"], 250.0, "eeg")
    stream = StreamInfo("three channels", info)
    with pytest.raises(ValueError, match=r"\['Oz'\].*\['Cz', 'C3', 'C4'\]"):
        DecodeEngine(stream, [motor_model(picks=["Cz", "Oz"])])
    with pytest.raises(ValueError, match="at least one model"):
        DecodeEngine(stream, [])


def test_engine_that_fell_behind_the_ring_restarts_its_filters() -> None:
    """Decoding that falls further behind than the ring holds resets the preprocessing and
    decodes what is left, exactly as a fresh engine fed only those samples would."""
    stream, data, times = synthetic_recording(seconds=4.0)
    model = motor_model()
    engine = DecodeEngine(stream, [model], capacity_s=1.0, live=False)
    capacity = engine.ring.capacity
    engine.write(Chunk(data[:, :100].T, times[:100], local_clock()))
    assert [r.window_end for r in engine.decode_due()] == [100]
    end = 100 + 3 * capacity  # three ring-fulls arrive while nothing is decoded
    for a in range(100, end, 40):
        engine.write(Chunk(data[:, a : a + 40].T, times[a : a + 40], local_clock()))
    resets = []
    original = type(engine.states[0].pre).reset

    def counting_reset(pre: Any) -> None:
        resets.append(pre)
        original(pre)

    engine.states[0].pre.reset = counting_reset.__get__(engine.states[0].pre)  # type: ignore[method-assign]
    (result,) = engine.decode_due()
    assert resets, "the filters were not restarted"
    assert result.window_end == end and result.valid
    assert np.isfinite(result.payload["probabilities"]).all()
    # the samples the ring still held, through a fresh engine
    oldest = end - capacity
    fresh = DecodeEngine(stream, [motor_model()], capacity_s=1.0, live=False)
    fresh.write(Chunk(data[:, oldest:end].T, times[oldest:end], local_clock()))
    (expected,) = fresh.decode_due()
    assert expected.t_window_end == result.t_window_end
    np.testing.assert_allclose(result.payload["window"], expected.payload["window"], rtol=1e-5)
    np.testing.assert_allclose(
        result.payload["probabilities"], expected.payload["probabilities"], rtol=1e-5
    )
    # and decoding goes on from there
    engine.write(Chunk(data[:, end : end + 40].T, times[end : end + 40], local_clock()))
    assert [r.window_end for r in engine.decode_due()] == [end + 40]
    assert len(resets) == 1
