"""The streaming Morlet scalogram against MNE's tfr_array_morlet."""

from __future__ import annotations

from pathlib import Path

import mne
import numpy as np
import pytest
from mne.time_frequency import morlet, tfr_array_morlet
from numpy.testing import assert_allclose
from pydantic import ValidationError

from neurocast.streaming.preprocessing.filters import OnlinePreprocessor, PreprocessSpec
from neurocast.streaming.preprocessing.scalogram import (
    ScalogramPreprocessor,
    ScalogramSpec,
    StreamingMorlet,
    morlet_power,
)
from neurocast.streaming.sources.base import StreamInfo

pytestmark = pytest.mark.timeout(120)

RTOL = 1e-5


def _mne_power(x: np.ndarray, spec: ScalogramSpec) -> np.ndarray:
    return tfr_array_morlet(
        x[np.newaxis].astype(np.float64),
        spec.sfreq_hz,
        np.asarray(spec.freqs_hz),
        n_cycles=spec.n_cycles,
        zero_mean=spec.zero_mean,
        decim=spec.decim,
        output="power",
    )[0]


def _push_in_chunks(engine: StreamingMorlet, x: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out, pos = [], 0
    while pos < x.shape[1]:
        n = int(rng.integers(0, 3 * engine.block + 2))
        out.append(engine.push(x[:, pos : pos + n]))
        pos += n
    return np.concatenate(out, axis=-1)


@pytest.mark.parametrize(
    ("n_cycles", "decim", "block"),
    [("half", 1, 25), ("half", 1, 1), (7.0, 1, 5), (3.0, 3, 25), ("half", 4, 63)],
)
def test_streaming_equals_mne_on_random_data(n_cycles: str | float, decim: int, block: int) -> None:
    sfreq = 250.0
    freqs = np.linspace(4.0, 100.0, 9)
    cycles = (freqs / 2).tolist() if n_cycles == "half" else n_cycles
    spec = ScalogramSpec(sfreq_hz=sfreq, freqs_hz=freqs, n_cycles=cycles, decim=decim)
    x = np.random.default_rng(0).standard_normal((4, 2000))
    ref = _mne_power(x, spec)
    engine = StreamingMorlet(spec, 4, block=block)
    streamed = _push_in_chunks(engine, x, seed=block)
    # columns are emitted once the block holding their wavelet's last sample is complete;
    # each has its whole wavelet inside the pushed data (or before it, where both take the
    # signal as zero)
    k = (max(w.size for w in spec.wavelets()) - 1) // 2
    assert k <= engine.latency_samples < k + block
    complete = x.shape[1] // block * block
    n_valid = len(range(0, complete - engine.latency_samples, decim))
    assert engine.n_columns == n_valid
    assert streamed.shape == (4, freqs.size, n_valid) == ref[..., :n_valid].shape
    assert_allclose(streamed, ref[..., :n_valid], rtol=RTOL, atol=0)
    # the one-shot function pads the end with zeros as MNE does: equal everywhere
    assert_allclose(morlet_power(x, spec, block=block), ref, rtol=RTOL, atol=0)


def test_incremental_equals_one_shot_for_any_chunking() -> None:
    spec = ScalogramSpec(sfreq_hz=500.0, freqs_hz=[6.0, 13.0, 30.0, 70.0], n_cycles=[3, 4, 6, 9])
    x = np.random.default_rng(1).standard_normal((3, 3000))
    whole = StreamingMorlet(spec, 3, block=11).push(x)
    for seed in range(3):
        chunked = _push_in_chunks(StreamingMorlet(spec, 3, block=11), x, seed)
        assert_allclose(chunked, whole, rtol=1e-6, atol=0)
    # the block (update size) changes the cost, never the values
    other = _push_in_chunks(StreamingMorlet(spec, 3, block=3), x, seed=7)
    n = min(other.shape[-1], whole.shape[-1])
    assert_allclose(other[..., :n], whole[..., :n], rtol=1e-6, atol=0)


def test_threads_give_the_same_columns() -> None:
    spec = ScalogramSpec(sfreq_hz=1000.0, freqs_hz=np.linspace(10, 100, 6), n_cycles=5.0)
    x = np.random.default_rng(2).standard_normal((130, 1500))
    one = StreamingMorlet(spec, 130, block=25)
    two = StreamingMorlet(spec, 130, block=25, n_threads=2)
    try:
        assert_allclose(two.push(x), one.push(x), rtol=1e-6, atol=0)
    finally:
        two.close()


def test_zero_mean_false_and_latency_metadata() -> None:
    freqs = [5.0, 11.0, 23.0]
    spec = ScalogramSpec(sfreq_hz=200.0, freqs_hz=freqs, n_cycles=4.0, zero_mean=False)
    longest = max(w.size for w in morlet(200.0, freqs, n_cycles=4.0))
    assert spec.latency_s == pytest.approx((longest - 1) / 2 / 200.0)
    # the latency survives a JSON round trip and is checked against the wavelets
    again = ScalogramSpec.model_validate_json(spec.model_dump_json())
    assert again == spec
    with pytest.raises(ValidationError, match="does not match these wavelets"):
        ScalogramSpec.model_validate({**spec.model_dump(), "latency_s": 0.5})
    x = np.random.default_rng(3).standard_normal((2, 1500)) + 3.0  # a DC offset
    assert_allclose(morlet_power(x, spec), _mne_power(x, spec), rtol=RTOL, atol=0)


def test_non_finite_input_is_forgotten_after_the_longest_wavelet() -> None:
    spec = ScalogramSpec(sfreq_hz=200.0, freqs_hz=[8.0, 20.0], n_cycles=3.0)
    x = np.random.default_rng(4).standard_normal((2, 2000))
    clean = StreamingMorlet(spec, 2, block=5).push(x)
    x[1, 600] = np.nan
    dirty = StreamingMorlet(spec, 2, block=5).push(x)
    k = (max(w.size for w in spec.wavelets()) - 1) // 2
    bad = ~np.isfinite(dirty)
    assert bad[1].any() and not bad[0].any()
    cols = np.flatnonzero(bad[1].any(axis=0))
    assert cols.min() >= 600 - k - 5 and cols.max() <= 600 + k + 5
    after = 600 + k + 10
    assert_allclose(dirty[..., after:], clean[..., after:], rtol=1e-6, atol=0)


def test_real_meg_equals_mne(shared_data: Path) -> None:
    raw = mne.io.read_raw_fif(shared_data / "meg_eeg" / "sample_audvis_raw.fif", verbose="error")
    raw.pick(["mag", "eeg"], verbose="error")
    x = raw.get_data()[::8]  # every 8th channel: magnetometers and EEG, in SI units
    spec = ScalogramSpec(
        sfreq_hz=raw.info["sfreq"],
        freqs_hz=np.linspace(4.0, 60.0, 15),
        n_cycles=np.linspace(2, 9, 15),
    )
    ref = _mne_power(x, spec)
    engine = StreamingMorlet(spec, x.shape[0], block=7)
    streamed = _push_in_chunks(engine, x, seed=5)
    n = streamed.shape[-1]
    assert n > 0
    assert_allclose(streamed, ref[..., :n], rtol=RTOL, atol=0)
    assert_allclose(morlet_power(x, spec), ref, rtol=RTOL, atol=0)


def test_epochs_and_leading_dimensions() -> None:
    spec = ScalogramSpec(sfreq_hz=160.0, freqs_hz=[8.0, 12.0, 24.0], n_cycles=3.0, decim=2)
    x = np.random.default_rng(6).standard_normal((5, 3, 640))
    power = morlet_power(x, spec)
    assert power.shape == (5, 3, 3, 320)
    ref = tfr_array_morlet(x, 160.0, spec.freqs_hz, 3.0, decim=2, output="power")
    assert_allclose(power, ref, rtol=RTOL, atol=0)


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"freqs_hz": [10.0, 130.0]}, "Nyquist"),
        ({"freqs_hz": [10.0, -1.0]}, "positive"),
        ({"freqs_hz": [10.0, 20.0], "n_cycles": [3.0, 4.0, 5.0]}, "one per frequency"),
        ({"freqs_hz": [10.0], "n_cycles": 0.0}, "positive"),
        ({"freqs_hz": [10.0], "decim": 0}, "greater than or equal to 1"),
    ],
)
def test_spec_refuses_bad_values(fields: dict, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        ScalogramSpec(sfreq_hz=250.0, **fields)


def test_bad_push_and_block() -> None:
    spec = ScalogramSpec(sfreq_hz=250.0, freqs_hz=[10.0, 20.0], n_cycles=3.0)
    with pytest.raises(ValueError, match="odd"):
        StreamingMorlet(spec, 2, block=4)
    engine = StreamingMorlet(spec, 2)
    assert engine.block % 2 == 1
    with pytest.raises(ValueError, match=r"\(2, n\)"):
        engine.push(np.zeros((3, 10)))
    assert engine.push(np.zeros((2, 0))).shape == (2, 2, 0)
    assert engine.n_columns == 0


def _stream(names: list[str], sfreq: float) -> StreamInfo:
    return StreamInfo("test", mne.create_info(names, sfreq, "eeg"))


def test_preprocessor_wraps_signal_preprocessing() -> None:
    names = [f"E{i}" for i in range(4)]
    stream = _stream(names, 500.0)
    base = OnlinePreprocessor(PreprocessSpec(picks=["E2", "E0"], resample_hz=250.0), stream)
    spec = ScalogramSpec(sfreq_hz=250.0, freqs_hz=[6.0, 12.0, 30.0], n_cycles=3.0)
    pre = ScalogramPreprocessor(base, spec, block=5)
    assert pre.n_channels_out == 6 and pre.sfreq_out == 250.0
    x = np.random.default_rng(7).standard_normal((4, 3000)).astype(np.float32)
    rows = np.concatenate([pre.push(x[:, a : a + 100]) for a in range(0, 3000, 100)], axis=1)
    window = pre.finalize(rows[:, -50:])
    assert window.shape == (2, 3, 50) and window.dtype == np.float32
    # the same as the scalogram of the preprocessed signal
    signal = OnlinePreprocessor(PreprocessSpec(picks=["E2", "E0"], resample_hz=250.0), stream)
    expected = StreamingMorlet(spec, 2, block=5).push(signal.push(x))
    assert_allclose(window, expected[..., rows.shape[1] - 50 : rows.shape[1]], rtol=1e-5)
    with pytest.raises(ValueError, match=r"\(6, n_times\)"):
        pre.finalize(rows[:5])
    # after a reset it starts again as a new one would
    pre.reset()
    fresh = ScalogramPreprocessor(
        OnlinePreprocessor(PreprocessSpec(picks=["E2", "E0"], resample_hz=250.0), stream),
        spec,
        block=5,
    )
    assert_allclose(pre.push(x[:, :1000]), fresh.push(x[:, :1000]), rtol=1e-6)
    # robust scaling of the continuous signal before the wavelets
    scaled = ScalogramPreprocessor(
        OnlinePreprocessor(PreprocessSpec(picks=["E2", "E0"], resample_hz=250.0), stream),
        spec,
        center=[0.5, -1.0],
        scale=[2.0, 4.0],
        block=5,
    )
    rows_scaled = scaled.push(x)
    # zero-mean wavelets ignore the centre once the start of the stream (where the signal
    # steps from zero to -centre) has left the longest wavelet
    start = 2 * scaled.morlet.latency_samples
    factor = np.repeat([1 / 4.0, 1 / 16.0], 3)[:, None]
    expected_scaled = rows[:, start:] * factor  # float32 signal rounding: a small atol
    assert_allclose(rows_scaled[:, start:], expected_scaled, rtol=1e-4, atol=1e-6 * factor.max())
    with pytest.raises(ValueError, match="one value per channel"):
        ScalogramPreprocessor(scaled.base, spec, center=[0.0], scale=[1.0])
    with pytest.raises(ValueError, match="resample_hz"):
        ScalogramPreprocessor(OnlinePreprocessor(PreprocessSpec(), stream), spec)
