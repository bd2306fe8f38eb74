"""EEG→MEG translation: the U-Net, the ridge baseline, simulated data, scoring and export."""

from __future__ import annotations

from pathlib import Path

import mne
import numpy as np
import pytest
import torch

from neurocast.clients.cli import EXIT_OK, EXIT_USAGE, main
from neurocast.models.nets.translator import (
    EEGToMEGUNet,
    LinearTranslator,
    ScaledTranslator,
    TranslatorConfig,
)
from neurocast.models.serving import StreamMismatchError, load_artifact
from neurocast.models.serving.runtime import OnnxWindowModel
from neurocast.models.training.export import ArtifactAbout
from neurocast.models.training.loop import torch_threads
from neurocast.models.training.translation import (
    TranslationModel,
    TranslatorTrainConfig,
    check_windows,
    export_translator,
    fit_translator,
)
from neurocast.models.training.translation_data import (
    TranslationWindow,
    recording_segment,
    simulate_segments,
    simulator_spec,
    ssp_projector,
)
from neurocast.models.training.translation_ridge import RidgeTranslator
from neurocast.models.training.translation_scoring import evaluate_segment, score_translation
from neurocast.streaming.engine.pipeline import decode_array
from neurocast.streaming.sources.base import StreamInfo
from neurocast.streaming.sources.simulator.simulator import Simulator

EEG8 = ["Fp1", "Fz", "C3", "Cz", "C4", "Pz", "O1", "O2"]
SIM_SFREQ = 250.0
ABOUT_T = ArtifactAbout(name="t")


@pytest.fixture(scope="module")
def tiny() -> tuple[TranslationModel, list, TranslationWindow]:
    """A tiny translator trained for a few steps on 8 simulated EEG channels and 306 MEG."""
    spec = simulator_spec(sfreq=SIM_SFREQ).model_copy(update={"eeg_channels": EEG8})
    window = TranslationWindow()
    train = simulate_segments(spec, window, [1], 4.0)
    val = simulate_segments(spec, window, [2], 3.0)
    config = TranslatorConfig(8, 306, window.n_times, base_channels=4, lstm_hidden=4)
    model = fit_translator(
        train, val, window, config, TranslatorTrainConfig(max_steps=2, eval_every=1)
    )
    return model, val, window


@pytest.mark.parametrize(
    ("n_eeg", "n_meg", "n_times", "depth"),
    [(2, 1, 8, 1), (8, 306, 48, 2), (60, 306, 48, 2), (5, 17, 24, 3)],
)
def test_unet_outputs_every_meg_channel_for_any_counts(
    n_eeg: int, n_meg: int, n_times: int, depth: int
) -> None:
    net = EEGToMEGUNet(TranslatorConfig(n_eeg, n_meg, n_times, base_channels=4, depth=depth))
    net.eval()
    with torch.no_grad(), torch_threads(1):
        y = net(torch.randn(3, n_eeg, n_times))
    assert y.shape == (3, n_meg, n_times)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(n_eeg=8, n_meg=10, n_times=30, depth=2),  # 30 is not a multiple of 4
        dict(n_eeg=1, n_meg=10, n_times=32),  # one channel has no average reference
        dict(n_eeg=8, n_meg=10, n_times=32, kernel_size=4),
        dict(n_eeg=8, n_meg=0, n_times=32),
    ],
)
def test_config_rejects_bad_sizes(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        TranslatorConfig(**kwargs)


def test_translation_does_not_depend_on_the_eeg_reference() -> None:
    torch.manual_seed(0)
    net = EEGToMEGUNet(TranslatorConfig(6, 9, 16, base_channels=4)).eval()
    torch.nn.init.normal_(net.head.weight)  # a non-zero U-Net path
    x = torch.randn(2, 6, 16)
    common = torch.randn(2, 1, 16)  # a reference electrode's signal, in every channel
    with torch.no_grad():
        assert torch.allclose(net(x), net(x + common), atol=1e-5)


def test_one_training_step_lowers_the_loss() -> None:
    torch.manual_seed(0)
    net = EEGToMEGUNet(TranslatorConfig(8, 12, 16, base_channels=8))
    x, y = torch.randn(16, 8, 16), torch.randn(16, 12, 16)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    net.train()
    losses = []
    with torch_threads(1):  # two threads on a busy two-core machine only spin
        for _ in range(2):
            loss = torch.nn.functional.mse_loss(net(x), y)
            losses.append(float(loss.detach()))
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert losses[1] < losses[0]


def test_ridge_recovers_a_noiseless_linear_map() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 3000))
    w = rng.standard_normal((5, 8))
    b = rng.standard_normal(5)

    def meg(eeg: np.ndarray) -> np.ndarray:
        return w @ (eeg - eeg.mean(axis=0)) + b[:, None]

    ridge = RidgeTranslator(alphas=(1e-10,)).fit(x, meg(x))
    x_new = rng.standard_normal((8, 200))
    np.testing.assert_allclose(ridge.predict(x_new), meg(x_new), atol=1e-4)
    centre = np.eye(8) - 1 / 8
    assert ridge.weight is not None
    np.testing.assert_allclose(ridge.weight @ centre, w @ centre, atol=1e-5)
    # the same map as a torch module (what is exported)
    module = ridge.module()
    with torch.no_grad():
        y = module(torch.as_tensor(x_new[None], dtype=torch.float32)).numpy()[0]
    np.testing.assert_allclose(y, meg(x_new), atol=1e-3)


def test_ridge_chooses_regularisation_on_validation_data() -> None:
    rng = np.random.default_rng(1)
    w = rng.standard_normal((4, 6))
    x, xv = rng.standard_normal((6, 400)), rng.standard_normal((6, 400))
    y = w @ (x - x.mean(0)) + 0.01 * rng.standard_normal((4, 400))
    yv = w @ (xv - xv.mean(0))
    ridge = RidgeTranslator(alphas=(1e-6, 10.0)).fit(x, y, xv, yv)
    assert ridge.alpha == 1e-6
    assert set(ridge.val_mse) == {1e-6, 10.0}


def test_ridge_rejects_bad_input() -> None:
    rng = np.random.default_rng(2)
    with pytest.raises(ValueError, match=r"like x"):
        RidgeTranslator(alphas=(1.0,)).fit(rng.standard_normal((4, 50)), np.zeros((3, 49)))
    with pytest.raises(ValueError, match="validation"):
        RidgeTranslator().fit(rng.standard_normal((4, 50)), np.zeros((3, 50)))
    with pytest.raises(RuntimeError, match="Fit"):
        RidgeTranslator().predict(np.zeros((4, 10)))
    fitted = RidgeTranslator(alphas=(1.0,)).fit(rng.standard_normal((4, 50)), np.zeros((3, 50)))
    with pytest.raises(ValueError, match="EEG channels"):
        fitted.predict(np.zeros((5, 10)))


def test_scaled_translator_crops_to_the_window_and_scales_to_tesla() -> None:
    lin = LinearTranslator(np.eye(3), np.zeros(3))
    scale = np.array([1e-13, 2e-12, 3e-12])
    module = ScaledTranslator(lin, scale, n_output_times=4)
    x = torch.randn(2, 3, 10)
    with torch.no_grad():
        y = module(x)
    car = x - x.mean(dim=1, keepdim=True)
    assert y.shape == (2, 3, 4)
    expected = car[..., -4:] * torch.as_tensor(scale, dtype=torch.float32)[None, :, None]
    torch.testing.assert_close(y, expected)


def test_window_lengths_fit_the_unet() -> None:
    w = TranslationWindow(sfreq_hz=150.0, window_s=0.1, context_s=0.2, multiple=4)
    assert w.n_window == 15
    assert w.n_times % 4 == 0 and w.n_times >= 45
    assert w.n_context == w.n_times - w.n_window
    with pytest.raises(ValueError, match="h_freq_hz"):
        TranslationWindow(sfreq_hz=100.0, h_freq_hz=60.0)


def test_simulated_segments_are_simultaneous_and_labelled(tiny: tuple) -> None:
    model, val, window = tiny
    seg = val[0]
    assert seg.simulated and "SIMULATED" in seg.description
    assert seg.eeg_names == EEG8
    assert len(seg.meg_names) == 306
    assert seg.meg_types.count("mag") == 102 and seg.meg_types.count("grad") == 204
    assert seg.eeg.shape[1] == seg.meg.shape[1]
    assert seg.sfreq == pytest.approx(window.sfreq_hz, rel=1e-4)
    assert "SIMULATED" in model.trained_on


def test_scores_are_per_sensor_and_per_type() -> None:
    rng = np.random.default_rng(3)
    ref = rng.standard_normal((4, 500)) * np.array([[1e-13], [1e-13], [5e-12], [5e-12]])
    names, types = ["m1", "m2", "g1", "g2"], ["mag", "mag", "grad", "grad"]
    perfect = score_translation(ref, ref, names, types, simulated=True)
    np.testing.assert_allclose(perfect.corr, 1.0)
    np.testing.assert_allclose(perfect.explained_variance, 1.0)
    half = score_translation(0.5 * ref, ref, names, types, simulated=True)
    np.testing.assert_allclose(half.corr, 1.0)
    np.testing.assert_allclose(half.explained_variance, 0.75)
    noise = score_translation(rng.standard_normal(ref.shape), ref, names, types, simulated=False)
    summary = noise.summary()
    assert abs(summary["corr_mag"]) < 0.2 and summary["ev_grad"] < 0
    assert summary["n_mag"] == 2 and summary["n_grad"] == 2
    with pytest.raises(ValueError, match="n_meg"):
        score_translation(ref[:, :10], ref, names, types, simulated=True)


def test_ssp_projector_removes_its_vectors() -> None:
    v = np.array([[1.0, 1.0, 0.0, 0.0]])
    proj = mne.Projection(
        data=dict(nrow=1, ncol=4, row_names=None, col_names=["a", "b", "c", "d"], data=v),
        desc="test",
        kind=1,
        active=False,
        explained_var=None,
    )
    p = ssp_projector([proj], ["a", "b", "c"])  # "d" absent: its entry is dropped
    assert p is not None
    np.testing.assert_allclose(p @ np.array([1.0, 1.0, 0.0]), 0.0, atol=1e-12)
    np.testing.assert_allclose(p @ np.array([0.0, 0.0, 1.0]), [0.0, 0.0, 1.0])
    assert ssp_projector([proj], ["x", "y"]) is None


def test_export_round_trip_gives_the_translation_payload(tiny: tuple, tmp_path: Path) -> None:
    model, val, window = tiny
    artifact = export_translator(
        model, tmp_path / "t.onnx", check_segment=val[0], about=ABOUT_T, stream_sfreq=SIM_SFREQ
    )
    loaded = load_artifact(artifact.path)
    meta = loaded.metadata
    assert meta.task == "translation" and meta.simulated_training_data
    assert meta.output.ch_names == model.meg_names
    assert meta.output.ch_types == model.meg_types
    assert meta.input.ch_names == EEG8
    runtime = OnnxWindowModel(loaded, threads=1)
    x = check_windows(model, val[0], n=2)
    payload = runtime.run(x[0])
    assert set(payload) >= {"ch_names", "ch_types", "sfreq_hz", "signal"}
    assert payload["ch_names"] == model.meg_names
    assert payload["signal"].shape == (306, window.n_window)
    assert payload["signal"].dtype == np.float32
    assert payload["simulated_training_data"] is True
    expected = model.predictor("net")(x[:1])[0]
    scale = model.scaling.meg_scale[:, None]
    np.testing.assert_allclose(payload["signal"] / scale, expected / scale, atol=1e-4)
    # the runtime path scores like the torch path
    via_runtime = evaluate_segment(
        model, val[0], predict=lambda b: np.stack([p["signal"] for p in runtime.run_batch(b)])
    )
    via_torch = evaluate_segment(model, val[0], "net")
    np.testing.assert_allclose(via_runtime.corr, via_torch.corr, atol=1e-4)


def test_ridge_exports_too(tiny: tuple, tmp_path: Path) -> None:
    model, val, _ = tiny
    artifact = export_translator(
        model,
        tmp_path / "r.onnx",
        which="ridge",
        check_segment=val[0],
        about=ArtifactAbout(name="r"),
        stream_sfreq=SIM_SFREQ,
    )
    assert "Ridge" in artifact.metadata.description
    # the artifact runs the ridge map, not the network it was exported beside
    runtime = OnnxWindowModel(load_artifact(artifact.path), threads=1)
    x = check_windows(model, val[0], n=2)
    expected = model.predictor("ridge")(x[:1])[0]
    scale = model.scaling.meg_scale[:, None]
    np.testing.assert_allclose(runtime.run(x[0])["signal"] / scale, expected / scale, atol=1e-4)


def test_streams_are_translated_window_by_window(tiny: tuple, tmp_path: Path) -> None:
    model, val, window = tiny
    artifact = export_translator(
        model, tmp_path / "t.onnx", check_segment=val[0], about=ABOUT_T, stream_sfreq=SIM_SFREQ
    )
    runtime = OnnxWindowModel(artifact, threads=1)
    # a stream at another rate than the training data: the artifact resamples it
    sim = Simulator(sfreq=500.0, eeg_channels=EEG8, seed=7)
    n = 500
    data, _ = sim.generate(n)
    results = list(decode_array(data, sim.sample_times(0, n), sim.stream_info, [runtime]))
    assert len(results) > 10
    for r in results:
        assert r.kind == "translation" and r.simulated
        assert r.payload["signal"].shape == (306, window.n_window)
        assert np.isfinite(r.payload["signal"]).all()


def test_streams_without_the_models_electrodes_are_refused(tiny: tuple, tmp_path: Path) -> None:
    model, val, _ = tiny
    artifact = export_translator(
        model, tmp_path / "t.onnx", check_segment=val[0], about=ABOUT_T, stream_sfreq=SIM_SFREQ
    )
    runtime = OnnxWindowModel(artifact, threads=1)
    info = mne.create_info(["Fp1", "Fz", "C3"], SIM_SFREQ, "eeg")
    with pytest.raises(StreamMismatchError, match="lacks"):
        runtime.preprocessor(StreamInfo("three electrodes", info))


def test_evaluation_refuses_other_channels(tiny: tuple) -> None:
    model, val, _ = tiny
    other = val[0].__class__(**{**val[0].__dict__, "meg_names": ["NOPE"] * 306})
    with pytest.raises(ValueError, match="does not output"):
        evaluate_segment(model, other)
    with pytest.raises(ValueError, match="which"):
        model.scaled_module("linear")


def test_fit_refuses_segments_with_different_channels(tiny: tuple) -> None:
    _, val, window = tiny
    other = val[0].__class__(**{**val[0].__dict__, "eeg_names": list(reversed(EEG8))})
    with pytest.raises(ValueError, match="same EEG and MEG"):
        fit_translator(val, [other], window)


@pytest.mark.shared_data
def test_real_recording_is_read_by_name(shared_data: Path) -> None:
    path = shared_data / "meg_eeg" / "sample_audvis_raw.fif"
    info = mne.io.read_info(path, verbose="error")
    types = info.get_channel_types()
    eeg = [n for n, t in zip(info["ch_names"], types, strict=True) if t == "eeg"]
    meg = [n for n, t in zip(info["ch_names"], types, strict=True) if t in ("mag", "grad")]
    seg = recording_segment(path, eeg, meg, TranslationWindow())
    assert not seg.simulated
    assert len(seg.eeg_names) == 60  # EEG 053 (bad) interpolated, not dropped
    assert "MEG 2443" not in seg.meg_names  # bad: not scored
    assert seg.meg_types.count("mag") == 102 and seg.meg_types.count("grad") == 203
    assert seg.meg_projector is not None and seg.meg_projector.shape == (305, 305)
    assert np.isfinite(seg.eeg).all() and np.isfinite(seg.meg).all()
    with pytest.raises(ValueError, match="lacks"):
        recording_segment(path, [*eeg, "Cz"], meg, TranslationWindow())


@pytest.mark.shared_data
def test_simulation_uses_the_real_geometry(shared_data: Path) -> None:
    d = shared_data / "meg_eeg"
    spec = simulator_spec(d / "sample_audvis_raw.fif", d / "sample_audvis-cov.fif")
    assert spec.sfreq == pytest.approx(300.307, abs=1e-3)
    (seg,) = simulate_segments(spec, TranslationWindow(), [10], 1.5)
    info = mne.io.read_info(d / "sample_audvis_raw.fif", verbose="error")
    assert seg.eeg_names == [n for n in info["ch_names"] if n.startswith("EEG")]
    assert len(seg.meg_names) == 306 and seg.simulated


@pytest.mark.timeout(240)
def test_train_translator_command(tmp_path: Path) -> None:
    out = tmp_path / "cli.onnx"
    argv = ["train", "translator", "--out", str(out), "--subjects", "1", "--seconds", "2"]
    argv += ["--steps", "1", "--base-channels", "4", "--lstm-hidden", "4", "--sim-sfreq", "250"]
    assert main(argv) == EXIT_OK
    meta = load_artifact(out).metadata
    assert meta.task == "translation" and meta.simulated_training_data
    assert len(meta.output.ch_names or []) == 306
    figures = ("corr_mag", "corr_grad", "ev_mag", "ev_grad")
    expected = {f"sim_{f}{s}" for f in figures for s in ("", "_ridge")} | {"export_max_abs_diff"}
    assert set(meta.metrics.values) == expected
    # a held-out simulated subject is translated far above chance (a median correlation of 0)
    # by both models; with the network's one step it still sits near the ridge map
    for suffix in ("", "_ridge"):
        assert meta.metrics.values[f"sim_corr_mag{suffix}"] > 0.2
        assert meta.metrics.values[f"sim_corr_grad{suffix}"] > 0.15
    assert main(["train", "translator", "--out", str(out), "--subjects", "0"]) == EXIT_USAGE
