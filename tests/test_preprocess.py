"""Online preprocessing: chunking invariance on real recordings, filters, resampling, bad input."""

from __future__ import annotations

from pathlib import Path

import mne
import numpy as np
import pytest
from numpy.typing import NDArray
from scipy import signal

from neurocast.streaming.preprocessing import filters as preprocess
from neurocast.streaming.preprocessing.filters import (
    OnlinePreprocessor,
    PreprocessSpec,
    fit_robust_scaler,
    hold_last_finite,
    preprocess_array,
)
from neurocast.streaming.sources.base import StreamInfo


def stream_of(raw: mne.io.BaseRaw, name: str) -> tuple[StreamInfo, NDArray[np.float32]]:
    return StreamInfo(name, raw.info), raw.get_data().astype(np.float32)


@pytest.fixture(scope="module")
def eegbci(shared_data: Path) -> tuple[StreamInfo, NDArray[np.float32]]:
    """PhysioNet EEGBCI subject 1 run 4: 64 EEG channels at 160 Hz (first 40 s)."""
    raw = mne.io.read_raw_edf(shared_data / "eegbci" / "S001R04.edf", preload=True, verbose=False)
    raw.crop(0, 40, include_tmax=False)
    return stream_of(raw, "eegbci S001R04")


@pytest.fixture(scope="module")
def audvis(shared_data: Path) -> tuple[StreamInfo, NDArray[np.float32]]:
    """MNE sample recording: 306 MEG + 60 EEG + EOG + stim at 300.3 Hz (2 s)."""
    path = shared_data / "meg_eeg" / "sample_audvis_raw.fif"
    raw = mne.io.read_raw_fif(path, preload=True, verbose=False)
    return stream_of(raw, "sample_audvis")


def push_in_random_chunks(
    pre: OnlinePreprocessor, data: NDArray[np.float32], seed: int, max_chunk: int = 60
) -> NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    out, a = [], 0
    while a < data.shape[1]:
        n = int(rng.integers(0, max_chunk))  # zero-length chunks are legal too
        out.append(pre.push(data[:, a : a + n]))
        a += n
    return np.concatenate(out, axis=1)


def synthetic(
    freqs_hz: list[float], sfreq: float, seconds: float, n_channels: int = 2
) -> tuple[StreamInfo, NDArray[np.float32]]:
    """Unit-amplitude sines (a test signal, not a recording), one copy per channel."""
    t = np.arange(int(seconds * sfreq)) / sfreq
    x = sum(np.sin(2 * np.pi * f * t) for f in freqs_hz)
    info = mne.create_info(n_channels, sfreq, "eeg")
    return StreamInfo("test sines", info, simulated=True), np.tile(x, (n_channels, 1)).astype(
        np.float32
    )


def amplitude(y: NDArray, freq_hz: float, sfreq: float) -> float:
    """Amplitude of the ``freq_hz`` component of ``y`` (whole cycles, so other tones cancel)."""
    per_s = round(sfreq)
    n = per_s * (y.shape[-1] // per_s)  # whole seconds
    t = np.arange(n) / sfreq
    z = y[..., -n:] @ np.exp(-2j * np.pi * freq_hz * t)
    return float(np.abs(z).mean() * 2 / n)


def assert_close_per_channel(actual: NDArray, expected: NDArray) -> None:
    """Within 1e-5 of each channel's peak: MEG (tesla) and EEG (volts) differ by far more."""
    scale = np.abs(expected).max(axis=1, keepdims=True)
    assert (np.abs(actual - expected) <= 1e-5 * scale).all()


# ----------------------------------------------------------------- chunking invariance


@pytest.mark.shared_data
@pytest.mark.parametrize("seed", [0, 1])
def test_chunks_equal_batch_on_eegbci(
    eegbci: tuple[StreamInfo, NDArray[np.float32]], seed: int
) -> None:
    stream, data = eegbci
    picks = ["Cz..", "C3..", "C4..", "Fz..", "Pz..", "Oz..", "T7..", "T8.."]
    spec = PreprocessSpec(picks=picks, line_freq_hz=60, l_freq_hz=1, h_freq_hz=40, resample_hz=120)
    batch = preprocess_array(spec, data, stream)
    chunked = push_in_random_chunks(OnlinePreprocessor(spec, stream), data, seed)
    assert batch.shape == chunked.shape == (8, 4800)  # 40 s at 120 Hz
    assert batch.dtype == np.float32
    scale = np.abs(batch).max()
    np.testing.assert_allclose(chunked, batch, rtol=0, atol=1e-5 * scale)
    assert np.isfinite(batch).all() and batch.std() > 1e-6  # real EEG came through


@pytest.mark.shared_data
def test_chunks_equal_batch_on_meg_eeg_without_resampling(
    audvis: tuple[StreamInfo, NDArray[np.float32]],
) -> None:
    stream, data = audvis
    picks = [c for c in stream.ch_names if c.startswith(("MEG", "EEG"))]
    spec = PreprocessSpec(picks=picks, line_freq_hz=60, l_freq_hz=0.5, h_freq_hz=100)
    batch = preprocess_array(spec, data, stream)
    chunked = push_in_random_chunks(OnlinePreprocessor(spec, stream), data, seed=2, max_chunk=25)
    assert batch.shape == chunked.shape == (366, data.shape[1])
    assert_close_per_channel(chunked, batch)


@pytest.mark.shared_data
def test_chunks_equal_batch_on_meg_resampled_300_to_120(
    audvis: tuple[StreamInfo, NDArray[np.float32]],
) -> None:
    stream, data = audvis
    picks = [c for c in stream.ch_names if c.startswith("MEG")]
    spec = PreprocessSpec(picks=picks, line_freq_hz=60, l_freq_hz=1, h_freq_hz=40, resample_hz=120)
    pre = OnlinePreprocessor(spec, stream)
    assert pre.sfreq_out == pytest.approx(120, rel=1e-5)
    batch = preprocess_array(spec, data, stream)
    chunked = push_in_random_chunks(pre, data, seed=3)
    expected = int(np.floor((data.shape[1] - 1) * pre.sfreq_out / stream.sfreq)) + 1
    assert batch.shape == chunked.shape == (306, expected)
    assert_close_per_channel(chunked, batch)
    # reset forgets everything: the same output again
    pre.reset()
    assert_close_per_channel(push_in_random_chunks(pre, data, seed=4), batch)


# ----------------------------------------------------------------- channels


@pytest.mark.shared_data
def test_reorder_by_name_and_extra_channels_ignored(
    eegbci: tuple[StreamInfo, NDArray[np.float32]],
) -> None:
    stream, data = eegbci
    base = {"line_freq_hz": 60.0, "l_freq_hz": 1.0, "resample_hz": 100.0}
    everything = preprocess_array(PreprocessSpec(**base), data, stream)
    assert everything.shape[0] == 64
    picks = ["Oz..", "Cz..", "Fp1.", "C3.."]  # a subset in another order
    picked = preprocess_array(PreprocessSpec(picks=picks, **base), data, stream)
    rows = [stream.ch_names.index(c) for c in picks]
    np.testing.assert_allclose(picked, everything[rows], rtol=0, atol=1e-5 * np.abs(picked).max())
    pre = OnlinePreprocessor(PreprocessSpec(picks=picks, **base), stream)
    assert pre.ch_names == picks and pre.n_channels_out == 4


@pytest.mark.shared_data
def test_average_reference_equals_mne_and_streams(
    eegbci: tuple[StreamInfo, NDArray[np.float32]],
) -> None:
    stream, data = eegbci
    picks = stream.ch_names[:16]
    raw = mne.io.RawArray(data[:16].astype(np.float64), mne.pick_info(stream.info, range(16)))
    expected = raw.set_eeg_reference("average", verbose="error").get_data()
    spec = PreprocessSpec(picks=picks, reference="average")
    batch = preprocess_array(spec, data, stream)
    np.testing.assert_allclose(batch, expected, rtol=0, atol=1e-6 * np.abs(expected).max())
    assert np.abs(batch.mean(axis=0)).max() < 1e-6 * np.abs(batch).max()
    # with filters and resampling, chunk by chunk equals the whole recording at once
    spec = PreprocessSpec(picks=picks, reference="average", l_freq_hz=1, resample_hz=100)
    batch = preprocess_array(spec, data, stream)
    chunked = push_in_random_chunks(OnlinePreprocessor(spec, stream), data, seed=5)
    np.testing.assert_allclose(chunked, batch, rtol=0, atol=1e-5 * np.abs(batch).max())


def test_average_reference_refuses_non_eeg_channels() -> None:
    info = mne.create_info(["Cz", "Pz", "MEG 0111"], 250.0, ["eeg", "eeg", "mag"])
    with pytest.raises(ValueError, match=r"EEG channels only.*\['mag'\]"):
        OnlinePreprocessor(PreprocessSpec(reference="average"), StreamInfo("mixed", info))
    pre = OnlinePreprocessor(
        PreprocessSpec(picks=["Cz", "Pz"], reference="average"), StreamInfo("mixed", info)
    )
    out = pre.push(np.array([[1.0, 2.0], [3.0, 6.0], [9.0, 9.0]], dtype=np.float32))
    np.testing.assert_allclose(out, [[-1.0, -2.0], [1.0, 2.0]])


def test_missing_channel_is_a_clear_error() -> None:
    info = mne.create_info(["Cz", "Pz", "Oz"], 250.0, "eeg")
    stream = StreamInfo("three channels", info)
    with pytest.raises(ValueError) as err:
        OnlinePreprocessor(PreprocessSpec(picks=["Cz", "C3", "C4"]), stream)
    message = str(err.value)
    assert "['C3', 'C4']" in message  # what is missing
    assert "['Cz', 'Pz', 'Oz']" in message  # what the stream has


def test_push_with_wrong_channel_count_refused() -> None:
    stream, data = synthetic([10.0], 250.0, 1.0, n_channels=3)
    pre = OnlinePreprocessor(PreprocessSpec(l_freq_hz=1.0), stream)
    with pytest.raises(ValueError, match=r"\(3, n\)"):
        pre.push(data[:2])
    with pytest.raises(ValueError, match=r"\(3, n\)"):
        pre.push(data[0])
    assert pre.push(data).shape == (3, 250)


# ----------------------------------------------------------------- filters


@pytest.mark.parametrize(("line", "resample"), [(50.0, 250.0), (60.0, 250.0), (50.0, None)])
def test_notch_removes_line_and_harmonics(line: float, resample: float | None) -> None:
    stream, x = synthetic([7.0, line, 2 * line], 1000.0, 6.0)
    spec = PreprocessSpec(line_freq_hz=line, resample_hz=resample)
    pre = OnlinePreprocessor(spec, stream)
    y = pre.push(x)[:, -int(3 * pre.sfreq_out) :]  # the filters have settled
    assert amplitude(y, line, pre.sfreq_out) < 0.01
    assert amplitude(y, 2 * line, pre.sfreq_out) < 0.01
    assert amplitude(y, 7.0, pre.sfreq_out) == pytest.approx(1.0, abs=0.02)


def test_notch_harmonics_up_to_nyquist() -> None:
    # at 1 kHz without resampling every harmonic below 500 Hz is notched
    stream, x = synthetic([3.0, 150.0, 450.0], 1000.0, 6.0)
    y = preprocess_array(PreprocessSpec(line_freq_hz=50.0), x, stream)[:, -3000:]
    assert amplitude(y, 150.0, 1000.0) < 0.01
    assert amplitude(y, 450.0, 1000.0) < 0.01
    assert amplitude(y, 3.0, 1000.0) == pytest.approx(1.0, abs=0.02)


def test_bandpass_attenuates_out_of_band() -> None:
    stream, x = synthetic([1.0, 15.0, 90.0], 500.0, 8.0)
    spec = PreprocessSpec(l_freq_hz=8.0, h_freq_hz=30.0, filter_order=4)
    y = preprocess_array(spec, x, stream)[:, -2500:]
    assert amplitude(y, 15.0, 500.0) == pytest.approx(1.0, abs=0.05)
    assert amplitude(y, 1.0, 500.0) < 0.01
    assert amplitude(y, 90.0, 500.0) < 0.01
    # high-pass only and low-pass only
    hp = preprocess_array(PreprocessSpec(l_freq_hz=8.0), x, stream)[:, -2500:]
    assert amplitude(hp, 1.0, 500.0) < 0.01 and amplitude(hp, 90.0, 500.0) > 0.95
    lp = preprocess_array(PreprocessSpec(h_freq_hz=30.0), x, stream)[:, -2500:]
    assert amplitude(lp, 90.0, 500.0) < 0.01 and amplitude(lp, 1.0, 500.0) > 0.95


def test_dc_offset_causes_no_startup_transient() -> None:
    stream, x = synthetic([10.0], 1000.0, 1.0)
    x = x * 1e-5 + 0.02  # 10 µV sine on a 20 mV electrode offset
    y = preprocess_array(PreprocessSpec(l_freq_hz=1.0, resample_hz=250), x, stream)
    # the high-pass starts in its steady state: no 20 mV step response at the start
    assert np.abs(y).max() < 2e-5


def test_edge_above_nyquist_is_refused() -> None:
    stream, _ = synthetic([10.0], 1000.0, 0.1)
    with pytest.raises(ValueError, match="Nyquist"):
        OnlinePreprocessor(PreprocessSpec(h_freq_hz=150.0, resample_hz=250.0), stream)


@pytest.mark.parametrize("kernel", ["compiled", "public"])
def test_inplace_sosfilt_matches_scipy(kernel: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if kernel == "public":  # the path taken when SciPy no longer has the compiled kernel
        monkeypatch.setattr(preprocess, "_sosfilt_kernel", None)
    sos = signal.butter(4, [1.0, 40.0], "bandpass", fs=250.0, output="sos")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 300))
    zi0 = rng.standard_normal((5, sos.shape[0], 2))
    expected, zf = signal.sosfilt(sos, x, axis=-1, zi=zi0.transpose(1, 0, 2))
    y, zi = x.copy(), zi0.copy()
    preprocess._sosfilt_inplace(sos, y, zi)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(zi, zf.transpose(1, 0, 2), rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------- resampling


@pytest.mark.parametrize(
    ("sfreq_in", "sfreq_out"),
    [(1000.0, 250.0), (300.3074951171875, 120.0), (160.0, 120.0), (128.0, 250.0)],
)
def test_resampled_rate_length_and_phase(sfreq_in: float, sfreq_out: float) -> None:
    freq = 3.0  # well inside every pass band
    stream, x = synthetic([freq], sfreq_in, 4.0)
    pre = OnlinePreprocessor(PreprocessSpec(resample_hz=sfreq_out), stream)
    assert pre.sfreq_out == pytest.approx(sfreq_out, rel=1e-5)
    y = push_in_random_chunks(pre, x, seed=5, max_chunk=40)
    n_in = x.shape[1]
    assert y.shape[1] == int(np.floor((n_in - 1) * pre.sfreq_out / sfreq_in + 1e-9)) + 1
    # output m is the input at time m / sfreq_out, late by the resampler's group delay
    t = np.arange(y.shape[1]) / pre.sfreq_out - pre.resample_delay_s
    settled = t > 0.5
    expected = np.sin(2 * np.pi * freq * t[settled])
    np.testing.assert_allclose(y[0, settled], expected, atol=0.01)


def test_resample_to_same_rate_is_identity_without_filters() -> None:
    stream, x = synthetic([5.0], 250.0, 1.0)
    y = preprocess_array(PreprocessSpec(resample_hz=250.0), x, stream)
    np.testing.assert_array_equal(y, x)


# ----------------------------------------------------------------- bad samples


def test_nan_and_inf_do_not_crash_or_poison_state() -> None:
    stream, x = synthetic([10.0], 1000.0, 3.0)
    x = x * 1e-5 + 0.01
    spec = PreprocessSpec(line_freq_hz=50.0, l_freq_hz=1.0, h_freq_hz=40.0, resample_hz=250.0)
    clean = preprocess_array(spec, x, stream)
    bad = x.copy()
    bad[0, 1000:1003] = np.nan
    bad[1, 1500] = np.inf
    bad[1, 1501] = -np.inf
    pre = OnlinePreprocessor(spec, stream)
    y = push_in_random_chunks(pre, bad, seed=6)
    assert y.shape == clean.shape and np.isfinite(y).all()
    # held values are close to the true ones, so the output soon returns to the clean one
    late = slice(int(2.5 * 250), None)
    np.testing.assert_allclose(y[:, late], clean[:, late], atol=1e-7)


def test_nan_in_the_first_samples() -> None:
    stream, x = synthetic([10.0], 250.0, 1.0)
    x[:, :5] = np.nan
    y = preprocess_array(PreprocessSpec(l_freq_hz=1.0), x, stream)
    assert np.isfinite(y).all()


def test_hold_last_finite() -> None:
    x = np.array([[np.nan, 1, np.nan, np.inf, 4], [2, 3, 5, 7, -np.inf]], dtype=np.float32)
    held = hold_last_finite(x, np.array([9.0, 0.0]))
    np.testing.assert_array_equal(held, [[9, 1, 1, 1, 4], [2, 3, 5, 7, 7]])
    assert np.isnan(x[0, 0])  # the input is left alone


# ----------------------------------------------------------------- per-window steps


def test_finalize_baseline_scaling_and_clip() -> None:
    stream, _ = synthetic([1.0], 100.0, 0.1, n_channels=2)
    spec = PreprocessSpec(
        baseline_s=(0.0, 0.05), robust_center=[1.0, -1.0], robust_scale=[2.0, 0.5], clip=3.0
    )
    pre = OnlinePreprocessor(spec, stream)
    window = np.zeros((2, 10), dtype=np.float32)
    window[0, :5], window[0, 5:] = 10.0, 14.0  # baseline mean 10
    window[1, :5], window[1, 5:] = -2.0, -1.0  # baseline mean -2
    out = pre.finalize(window)
    # (x - baseline - center) / scale, then clipped at ±3
    np.testing.assert_allclose(out[0], [-0.5] * 5 + [1.5] * 5)
    np.testing.assert_allclose(out[1], [2.0] * 5 + [3.0] * 5)
    assert window[0, 0] == 10.0  # input untouched
    with pytest.raises(ValueError, match="baseline_s"):
        pre.finalize(window[:, :4])
    with pytest.raises(ValueError, match=r"\(2, n_times\)"):
        pre.finalize(window[:1])


def test_fit_robust_scaler() -> None:
    rng = np.random.default_rng(0)
    data = np.stack([rng.normal(5.0, 2.0, 20000), np.full(20000, 3.0)])
    center, scale = fit_robust_scaler(data)
    assert center[0] == pytest.approx(5.0, abs=0.05)
    assert scale[0] == pytest.approx(2.0 * 1.349, rel=0.03)  # IQR of a normal: 1.349 sigma
    assert (center[1], scale[1]) == (3.0, 1.0)  # flat channel: centred only
    epochs = data.reshape(2, 4, 5000).transpose(1, 0, 2)  # (n_epochs, n_channels, n_times)
    np.testing.assert_allclose(fit_robust_scaler(epochs)[0], center)
    spec = PreprocessSpec(robust_center=center, robust_scale=scale)
    assert spec.robust_center == center.tolist()
    with pytest.raises(ValueError, match="n_channels"):
        fit_robust_scaler(data[0])


# ----------------------------------------------------------------- spec


def test_spec_round_trips_through_json() -> None:
    spec = PreprocessSpec(
        picks=["MEG 0113", "MEG 0112"],
        line_freq_hz=50.0,
        l_freq_hz=0.5,
        h_freq_hz=40.0,
        resample_hz=120.0,
        baseline_s=(0.0, 0.2),
        robust_center=[0.0, 1e-13],
        robust_scale=[1e-12, 2e-12],
        clip=20.0,
    )
    assert PreprocessSpec.model_validate_json(spec.model_dump_json()) == spec


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"l_freq_hz": 40.0, "h_freq_hz": 30.0}, "below h_freq_hz"),
        ({"baseline_s": (0.2, 0.1)}, "baseline_s"),
        ({"robust_center": [0.0]}, "together"),
        ({"robust_center": [0.0], "robust_scale": [1.0, 2.0]}, "one per channel"),
        ({"robust_center": [0.0], "robust_scale": [0.0]}, "positive"),
        ({"picks": ["Cz"], "robust_center": [0, 0], "robust_scale": [1, 1]}, "picks"),
        ({"picks": ["Cz", "Cz"]}, "more than once"),
        ({"picks": []}, "empty"),
        ({"resample_hz": -1.0}, "greater than 0"),
        ({"unknown": 1}, "Extra inputs"),
    ],
)
def test_spec_rejects_nonsense(fields: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PreprocessSpec(**fields)


def test_robust_scaling_must_match_the_channels() -> None:
    stream, _ = synthetic([1.0], 100.0, 0.1, n_channels=3)
    spec = PreprocessSpec(robust_center=[0.0, 0.0], robust_scale=[1.0, 1.0])
    with pytest.raises(ValueError, match="3 channels"):
        OnlinePreprocessor(spec, stream)
