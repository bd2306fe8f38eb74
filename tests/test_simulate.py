"""The embedded simulator: physics, content, determinism, training sets and the live source."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mne
import numpy as np
import pytest
from mne.io.constants import FIFF
from scipy import signal

from neurocast.streaming.sources.base import SIMULATED_TAG, Source, SourceError, local_clock
from neurocast.streaming.sources.open import open_source
from neurocast.streaming.sources.simulator import geometry
from neurocast.streaming.sources.simulator.epochs import SimulatedEpochs
from neurocast.streaming.sources.simulator.images import default_image_set, load_image_set
from neurocast.streaming.sources.simulator.physics import cov_colour as _cov_colour
from neurocast.streaming.sources.simulator.simulator import Simulator
from neurocast.streaming.sources.simulator.source import SimulatorSource
from neurocast.streaming.sources.specs import SimulatorSpec

SFREQ = 250.0


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A forward-model cache shared by the whole session (never the user's ~/.cache)."""
    path = tmp_path_factory.mktemp("neurocast-cache")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("NEUROCAST_CACHE_DIR", str(path))
        yield path


@pytest.fixture(scope="session")
def sim(cache_dir: Path) -> Simulator:
    """A default simulator for read-only use (tests that stream make their own)."""
    return Simulator(seed=0, sfreq=SFREQ, cache_dir=cache_dir)


def make(cache_dir: Path, **kwargs: Any) -> Simulator:
    kwargs.setdefault("sfreq", SFREQ)
    return Simulator(cache_dir=cache_dir, **kwargs)


def band_power(x: np.ndarray, lo: float, hi: float, sfreq: float = SFREQ) -> np.ndarray:
    """Mean Welch power in [lo, hi] Hz along the last axis."""
    f, p = signal.welch(x, fs=sfreq, nperseg=min(x.shape[-1], int(sfreq)), axis=-1)
    return p[..., (f >= lo) & (f <= hi)].mean(axis=-1)


# -- geometry ------------------------------------------------------------------------------


def test_default_geometry_is_a_vectorview_like_array_and_10_05_eeg(sim: Simulator) -> None:
    info = sim.info
    types = info.get_channel_types()
    assert types.count("mag") == 102 and types.count("grad") == 204 and types.count("eeg") == 64
    assert info["ch_names"][:3] == ["MEG0111", "MEG0112", "MEG0113"]
    assert "Oz" in info["ch_names"] and "C3" in info["ch_names"]
    centre = mne.transforms.apply_trans(info["dev_head_t"], geometry.HELMET_CENTER_DEVICE_M)
    sphere = geometry.default_sphere()
    scalp = sphere["layers"][-1]["rad"]
    for site in range(102):
        mag, g1, g2 = info["chs"][3 * site : 3 * site + 3]
        assert mag["coil_type"] == FIFF.FIFFV_COIL_VV_MAG_T3
        assert g1["coil_type"] == g2["coil_type"] == FIFF.FIFFV_COIL_VV_PLANAR_T1
        assert mag["unit"] == FIFF.FIFF_UNIT_T and g1["unit"] == FIFF.FIFF_UNIT_T_M
        assert mag["coord_frame"] == FIFF.FIFFV_COORD_DEVICE
        pos = mne.transforms.apply_trans(info["dev_head_t"], mag["loc"][:3])
        normal = mag["loc"][9:12]
        # on the helmet, outside the scalp, normal pointing outwards
        assert np.linalg.norm(pos - centre) == pytest.approx(geometry.HELMET_RADIUS_M)
        assert np.linalg.norm(pos - sphere["r0"]) > scalp + 0.015
        assert normal @ (pos - centre) > 0.99 * geometry.HELMET_RADIUS_M
        # the two gradiometers measure orthogonal, tangential gradients
        assert abs(g1["loc"][3:6] @ g2["loc"][3:6]) < 1e-9
        assert abs(g1["loc"][3:6] @ normal) < 1e-9 and abs(g2["loc"][3:6] @ normal) < 1e-9
    eeg = [ch for ch in info["chs"] if ch["kind"] == FIFF.FIFFV_EEG_CH]
    dist = [np.linalg.norm(ch["loc"][:3] - sphere["r0"]) for ch in eeg]
    np.testing.assert_allclose(dist, scalp)  # electrodes sit on the scalp


def test_forward_solution_is_cached_on_disk(cache_dir: Path) -> None:
    info = geometry.default_info(SFREQ, "meg")
    sphere = geometry.default_sphere()
    d = geometry.template_directions(["O1", "C4"])
    rr = sphere["r0"] + 0.07 * d
    nn = np.cross(d, [0.0, 0.0, 1.0])
    nn /= np.linalg.norm(nn, axis=1, keepdims=True)
    gain = geometry.forward_gain(info, sphere, rr, nn, cache_dir=cache_dir)
    files = sorted((cache_dir / "forward").glob("*.npy"))
    assert files
    geometry._MEMORY_CACHE.clear()
    again = geometry.forward_gain(info, sphere, rr, nn, cache_dir=cache_dir)
    np.testing.assert_array_equal(again, gain)
    # a damaged cache file is recomputed, not trusted
    geometry._MEMORY_CACHE.clear()
    key = geometry._geometry_key(info, sphere, rr, nn)
    (cache_dir / "forward" / f"{key}.npy").write_bytes(b"not a numpy file")
    fresh = geometry.forward_gain(info, sphere, rr, nn, cache_dir=cache_dir)
    np.testing.assert_allclose(fresh, gain)
    # tangential dipoles are seen by the magnetometers
    assert np.abs(gain).max() > 1e-6


# -- stream content ------------------------------------------------------------------------


def test_same_seed_same_stream_in_any_chunking(cache_dir: Path) -> None:
    a, b, c = make(cache_dir, seed=3), make(cache_dir, seed=3), make(cache_dir, seed=4)
    data_a, markers_a = a.generate(1500)
    pieces, markers_b = [], []
    for n in (1, 24, 400, 0, 1075):
        d, m = b.generate(n)
        pieces.append(d)
        markers_b += m
    # the same samples whatever the chunking (up to float rounding in the products)
    scale = np.abs(data_a).max(axis=1, keepdims=True)  # per channel: volts vs tesla
    assert np.max(np.abs(np.concatenate(pieces, axis=1) - data_a) / scale) < 1e-6
    assert markers_b == markers_a
    np.testing.assert_array_equal(make(cache_dir, seed=3).generate(1500)[0], data_a)
    assert data_a.dtype == np.float32 and data_a.shape == (370, 1500)
    data_c, _ = c.generate(1500)
    assert not np.allclose(data_c, data_a)


def test_amplitudes_are_realistic_per_sensor_type(cache_dir: Path) -> None:
    data, _ = make(cache_dir, seed=1).generate(int(10 * SFREQ))
    types = np.array(make(cache_dir).info.get_channel_types())
    rms = {t: float(np.median(data[types == t].std(axis=1))) for t in ("eeg", "mag", "grad")}
    assert 2e-6 < rms["eeg"] < 50e-6  # volts: µV range
    assert 50e-15 < rms["mag"] < 2e-12  # tesla: 100s of fT
    assert 1e-12 < rms["grad"] < 5e-11  # tesla/metre: 10-500 fT/cm
    assert np.all(np.isfinite(data))


def test_eeg_and_meg_show_the_same_sources(cache_dir: Path) -> None:
    both = make(cache_dir, seed=5, sensor_noise=False)
    eeg = make(cache_dir, seed=5, sensor_noise=False, modality="eeg")
    meg = make(cache_dir, seed=5, sensor_noise=False, modality="meg")
    d_both, m_both = both.generate(800)
    d_eeg, m_eeg = eeg.generate(800)
    d_meg, _ = meg.generate(800)
    assert eeg.info["ch_names"] == both.info["ch_names"][306:]
    assert meg.info["ch_names"] == both.info["ch_names"][:306]
    np.testing.assert_allclose(d_both[306:], d_eeg, rtol=1e-5, atol=1e-12)
    np.testing.assert_allclose(d_both[:306], d_meg, rtol=1e-5, atol=1e-17)
    assert m_both == m_eeg


def test_markers_label_class_blocks_and_images(cache_dir: Path) -> None:
    s = make(cache_dir, seed=2)
    s.start_time = 100.0
    _, markers = s.generate(int(30 * SFREQ))
    values = [m.value for m in markers]
    times = np.array([m.timestamp for m in markers])
    assert np.all(np.diff(times) >= 0) and times[0] == 100.0 and times[-1] < 130.0
    classes = [v.split("/", 1)[1] for v in values if v.startswith("class/")]
    images = [v.split("/", 1)[1] for v in values if v.startswith("image/")]
    assert set(classes) == {"rest", "speech", "motor"}
    assert set(images) <= set(s.image_ids) and len(images) > 15
    blocks = times[[v.startswith("class/") for v in values]]
    assert np.all((np.diff(blocks) > 3.0) & (np.diff(blocks) < 5.0))  # block_s = 4 s ± 12.5 %


def test_classes_have_distinct_spatial_and_spectral_signatures(sim: Simulator) -> None:
    ep = sim.simulate_epochs(12, duration_s=1.0)
    assert ep.kind == "class" and ep.label_names == ["rest", "speech", "motor"]
    assert ep.data.shape == (36, 370, 250) and np.bincount(ep.labels).tolist() == [12, 12, 12]
    rest, speech, motor = (ep.labels == k for k in range(3))
    eeg = ep.get_data(["O1", "Oz", "O2", "T7", "FT7", "C3", "C4"])
    alpha = band_power(eeg[:, :3], 8, 12).mean(axis=1)
    assert alpha[rest].mean() > 4 * alpha[speech].mean()
    beta_gamma = band_power(eeg[:, 3:5], 15, 45).mean(axis=1)
    assert beta_gamma[speech].mean() > 3 * beta_gamma[rest].mean()
    mu = band_power(eeg[:, 5:7], 9, 13)  # C3, C4
    # right-hand imagery: left (C3) mu drops, right (C4) mu does not
    assert mu[motor, 0].mean() < 0.4 * mu[rest, 0].mean()
    assert mu[motor, 1].mean() > 0.6 * mu[rest, 1].mean()
    mags = band_power(ep.get_data("mag"), 8, 12).sum(axis=1)
    assert mags[rest].mean() > 2 * mags[speech].mean()  # MEG sees the alpha too


def test_image_responses_are_linear_in_the_embedding(sim: Simulator) -> None:
    rng = np.random.default_rng(0)
    e1, e2 = rng.standard_normal((2, 32)) / np.sqrt(32)
    a = 0.3
    emb = np.stack([e1, e2, a * e1 + (1 - a) * e2, np.zeros(32), 2 * e1])
    ep = sim.simulate_image_epochs(emb, image_indices=[0, 1, 2, 3, 4], noise=False)
    x = ep.data.astype(np.float64)
    scale = np.abs(x).max()
    # affine combination of embeddings -> the same combination of sensor patterns
    np.testing.assert_allclose(x[2], a * x[0] + (1 - a) * x[1], atol=1e-4 * scale)
    # the image-specific part (minus the response to the zero embedding) is linear
    np.testing.assert_allclose(x[4] - x[3], 2 * (x[0] - x[3]), atol=1e-4 * scale)
    assert np.abs(x[0] - x[1]).max() > 0.1 * scale  # different images, different patterns
    # nothing before onset; components peak ~100 and ~240 ms after onset and after offset
    assert np.abs(x[:, :, ep.times < 0]).max() < 1e-6 * scale
    mags = np.array(sim.info.get_channel_types()) == "mag"
    gfp = x[:, mags].std(axis=1).mean(axis=0)
    peaks = ep.times[signal.find_peaks(gfp, prominence=0.05 * gfp.max())[0]]
    for expected in (0.1, 0.24, 0.6, 0.74):  # image shown 0.5 s
        assert np.min(np.abs(peaks - expected)) < 0.02


def test_image_epochs_give_eeg_and_meg_of_the_same_trials(sim: Simulator) -> None:
    ep = sim.simulate_image_epochs(n_repeats=2, tmin=-0.1, tmax=0.5)
    assert isinstance(ep, SimulatedEpochs) and ep.simulated and ep.kind == "image"
    assert ep.label_names == sim.image_ids
    assert np.bincount(ep.labels, minlength=100).tolist() == [2] * 100
    assert ep.get_data("eeg").shape == (200, 64, 151)
    assert ep.get_data("meg").shape == (200, 306, 151)
    assert ep.times[0] == pytest.approx(-0.1) and ep.times[-1] == pytest.approx(0.5)
    epochs = ep.to_mne()
    assert len(epochs) == 200 and SIMULATED_TAG in epochs.info["description"]
    # averaging repeats of one image recovers its evoked response from the background
    noisy = sim.simulate_image_epochs(image_indices=[7] * 30, tmin=-0.5, tmax=1.0)
    clean = sim.simulate_image_epochs(image_indices=[7], tmin=-0.5, tmax=1.0, noise=False)
    sos = signal.butter(4, (1.0, 30.0), "bandpass", fs=SFREQ, output="sos")
    keep = (noisy.times >= -0.1) & (noisy.times <= 0.5)
    for ch_type in ("mag", "eeg"):
        truth = signal.sosfiltfilt(sos, clean.get_data(ch_type)[0])[:, keep]
        trials = signal.sosfiltfilt(sos, noisy.get_data(ch_type))[:, :, keep]
        single = np.corrcoef(trials[0].ravel(), truth.ravel())[0, 1]
        average = np.corrcoef(trials.mean(axis=0).ravel(), truth.ravel())[0, 1]
        assert single < 0.5 < average  # buried in one trial, clear in the average


def test_training_sets_leave_the_stream_untouched(cache_dir: Path) -> None:
    a, b = make(cache_dir, seed=9), make(cache_dir, seed=9)
    a.simulate_epochs(2, duration_s=0.5)
    a.simulate_image_epochs(image_indices=[0, 1])
    np.testing.assert_array_equal(a.generate(300)[0], b.generate(300)[0])


def test_simulate_raw_has_annotations_from_markers(cache_dir: Path) -> None:
    s, twin = make(cache_dir, seed=4), make(cache_dir, seed=4)
    raw = s.simulate_raw(12.0)
    data, markers = twin.generate(int(12 * SFREQ))
    np.testing.assert_allclose(raw.get_data(), data, rtol=1e-6, atol=1e-18)
    assert SIMULATED_TAG in raw.info["description"]
    ann = raw.annotations
    assert list(ann.description) == [m.value for m in markers]
    np.testing.assert_allclose(ann.onset, [m.timestamp for m in markers])
    images = np.array([d.startswith("image/") for d in ann.description])
    np.testing.assert_allclose(ann.duration[images], 0.5)
    assert np.all(ann.onset + ann.duration <= 12.0 + 1e-9)


def test_custom_images_and_classes(cache_dir: Path, tmp_path: Path) -> None:
    emb, _ = default_image_set(n_images=5, dim=8, seed=1)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-6)
    path = tmp_path / "images.npz"
    np.savez(path, embeddings=emb, image_ids=np.array(["a", "b", "c", "d", "e"]))
    assert load_image_set(path)[1] == ["a", "b", "c", "d", "e"]
    s = make(cache_dir, embeddings_path=str(path), classes=["rest", "speech"], block_s=1.5)
    _, markers = s.generate(int(20 * SFREQ))
    values = {m.value for m in markers}
    assert {v for v in values if v.startswith("class/")} == {"class/rest", "class/speech"}
    assert {v for v in values if v.startswith("image/")} <= {f"image/{i}" for i in "abcde"}


# -- real geometry and noise ---------------------------------------------------------------


@pytest.mark.shared_data
def test_real_info_file_gives_its_channels(shared_data: Path, cache_dir: Path) -> None:
    fif = shared_data / "meg_eeg" / "sample_audvis_raw.fif"
    cov = shared_data / "meg_eeg" / "sample_audvis-cov.fif"
    s = make(cache_dir, info_path=str(fif), noise_cov_path=str(cov))
    real = mne.io.read_info(fif, verbose="error")
    picks = mne.pick_types(real, meg=True, eeg=True, exclude=())
    assert s.info["ch_names"] == [real["ch_names"][p] for p in picks]
    np.testing.assert_array_equal(s.info["dev_head_t"]["trans"], real["dev_head_t"]["trans"])
    assert s.info["sfreq"] == SFREQ and SIMULATED_TAG in s.info["description"]
    assert s.info["meas_date"] is None  # not the real recording's date
    data, _ = s.generate(500)
    types = np.array(s.info.get_channel_types())
    assert 2e-6 < np.median(data[types == "eeg"].std(axis=1)) < 50e-6
    assert 50e-15 < np.median(data[types == "mag"].std(axis=1)) < 2e-12


@pytest.mark.shared_data
def test_noise_covariance_colours_sensor_noise(shared_data: Path) -> None:
    cov = mne.read_cov(shared_data / "meg_eeg" / "sample_audvis-cov.fif", verbose="error")
    info = geometry.load_info(shared_data / "meg_eeg" / "sample_audvis_raw.fif", SFREQ)
    colour = _cov_colour(cov, info)
    idx = [cov["names"].index(n) for n in info["ch_names"]]
    target = cov.data[np.ix_(idx, idx)]
    # the colouring reproduces the covariance (up to its tiny negative eigenvalues)
    np.testing.assert_allclose(colour @ colour.T, target, atol=1e-6 * np.abs(target).max())


@pytest.mark.shared_data
def test_meg_only_file_needs_meg_modality(shared_data: Path, cache_dir: Path) -> None:
    bti = shared_data / "meg_eeg" / "exported4D_linux_raw.fif"
    with pytest.raises(ValueError, match="no EEG channels; use modality='meg'"):
        make(cache_dir, info_path=str(bti))
    s = make(cache_dir, info_path=str(bti), modality="meg")
    assert s.info.get_channel_types().count("mag") == 248


# -- bad input -----------------------------------------------------------------------------


def test_bad_input_is_refused_clearly(cache_dir: Path, tmp_path: Path, sim: Simulator) -> None:
    with pytest.raises(ValueError, match="sfreq must be at least"):
        make(cache_dir, sfreq=50.0)
    with pytest.raises(ValueError, match="Unknown or no classes"):
        make(cache_dir, classes=["dancing"])
    with pytest.raises(ValueError, match="Unknown 10-05 electrode names"):
        make(cache_dir, eeg_channels=["Cz", "XX9"])
    with pytest.raises(ValueError, match="Cannot read sensor geometry"):
        make(cache_dir, info_path=str(tmp_path / "missing_raw.fif"))
    with pytest.raises(ValueError, match="ids for"):
        make(cache_dir, image_embeddings=np.ones((3, 4)), image_ids=["a", "b"])
    with pytest.raises(ValueError, match="2-D array"):
        make(cache_dir, image_embeddings=np.ones(4))
    with pytest.raises(ValueError, match="NaN"):
        make(cache_dir, image_embeddings=np.full((2, 4), np.nan))
    bad = tmp_path / "bad.npz"
    np.savez(bad, something=np.ones(3))
    with pytest.raises(ValueError, match="Cannot read image embeddings"):
        load_image_set(bad)
    with pytest.raises(ValueError, match="non-negative integer"):
        sim.generate(-1)
    with pytest.raises(ValueError, match="image_indices"):
        sim.simulate_image_epochs(image_indices=[0, 100])
    with pytest.raises(ValueError, match="tmax must exceed tmin"):
        sim.simulate_image_epochs(image_indices=[0], tmin=0.5, tmax=0.1)
    with pytest.raises(ValueError, match="Unknown classes"):
        sim.simulate_epochs(2, classes=["sleep"])
    with pytest.raises(ValueError, match="Unknown channels"):
        sim.simulate_epochs(1, duration_s=0.2).get_data(["Cz", "NOPE"])
    cov = mne.make_ad_hoc_cov(mne.create_info(["A1", "A2"], SFREQ, "eeg"))
    with pytest.raises(ValueError, match="noise covariance lacks"):
        make(cache_dir, noise_cov=cov)


# -- the live source -----------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_source_paces_chunks_in_real_time(cache_dir: Path) -> None:
    spec = SimulatorSpec(sfreq=SFREQ, chunk_s=0.04, duration_s=1.0, realtime=True, seed=1)
    source = SimulatorSource(spec, cache_dir=cache_dir)
    assert source.status == "starting"
    assert isinstance(source, Source)  # the protocol check does not need an open source
    with pytest.raises(SourceError, match="open"):
        _ = source.stream_info
    stream = source.open()
    assert isinstance(source, Source) and source.status == "running"
    assert stream.simulated and SIMULATED_TAG in stream.name and stream.n_channels == 370
    chunks = []
    while source.status == "running":
        chunk = source.read(timeout=0.5)
        if chunk is not None:
            chunks.append(chunk)
    ts = np.concatenate([c.timestamps for c in chunks])
    assert len(ts) == 250 and source.status == "stopped"
    np.testing.assert_allclose(np.diff(ts), 1 / SFREQ, rtol=1e-6)
    assert chunks[0].data.shape == (10, 370)
    # each chunk arrives once its last sample is due, never before (how long after depends on
    # the machine: bench/source_timing.py measures it)
    lags = np.array([c.receipt_time - c.timestamps[-1] for c in chunks])
    assert lags.min() >= -1e-3
    # paced, not faster than real time: the last sample is received no sooner than a second
    # of samples after the first one was stamped
    assert chunks[-1].receipt_time - ts[0] >= (len(ts) - 1) / SFREQ - 1e-3
    markers = [m for c in chunks for m in c.markers]
    assert [m.value.split("/")[0] for m in markers[:2]] == ["class", "image"]
    for c in chunks:
        for m in c.markers:
            assert c.timestamps[0] <= m.timestamp <= c.timestamps[-1]
    source.close()
    assert source.read(0.1) is None and source.status == "stopped"


def test_source_without_pacing_runs_ahead_of_the_clock(cache_dir: Path) -> None:
    spec = SimulatorSpec(sfreq=SFREQ, chunk_s=0.5, realtime=False)
    source = open_source(spec)
    assert isinstance(source, SimulatorSource)
    source.open()
    n = 0
    for _ in range(20):
        chunk = source.read(timeout=0.0)
        assert chunk is not None
        n += len(chunk.timestamps)
    assert n == 20 * 125
    assert chunk.timestamps[-1] > local_clock() + 5.0  # 10 s of data, delivered at once
    source.close()
    assert source.read(timeout=0.0) is None and source.status == "stopped"
    # reopening resumes the stream where it stopped; its times never go backwards
    source.open()
    resumed = source.read(timeout=0.0)
    assert resumed is not None and resumed.timestamps[0] >= chunk.timestamps[-1] + 1 / SFREQ
    np.testing.assert_allclose(np.diff(resumed.timestamps), 1 / SFREQ, rtol=1e-6)
    source.close()


def test_source_reports_bad_settings_as_source_error(cache_dir: Path) -> None:
    source = SimulatorSource(SimulatorSpec(sfreq=SFREQ, classes=["nope"]), cache_dir=cache_dir)
    with pytest.raises(SourceError, match="Unknown or no classes"):
        source.open()
    assert source.status == "failed"
