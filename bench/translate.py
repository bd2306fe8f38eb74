"""EEG→MEG translation: U-Net vs ridge on held-out simulation and on real recordings.

Training data: SIMULATED simultaneous EEG and MEG from the physics-based simulator with the
sensor geometry of ``meg_eeg/sample_audvis_raw.fif`` (its 60 EEG electrodes and 306 MEG
sensors, its device-to-head transform, a spherical conductor fitted to its head shape by
``mne.make_sphere_model``) and white sensor noise at the simulator's documented noise
densities, at the recording's rate (300.3 Hz). Several simulated subjects (``subject_seed``:
source orientations and depths) are pooled; validation (early stopping, the ridge's
regularisation) uses another subject, and held-out simulation two more.

What training shares with the real evaluation files: the sensor layout only. The translator
maps these 60 electrodes to these 306 sensors, and the only simultaneous MEG + EEG data here
is this one session, so the electrode positions, head position and head shape come from the
session it is evaluated on (a translator for another subject would be trained on that
subject's geometry). Nothing measured from the signals of that session enters training: not
its noise covariance (``sample_audvis-cov.fif`` is not read), not its SSP projectors (the
simulator drops them), not its samples.

Models, trained on the same windows (150 Hz, causal 1-40 Hz band-pass, 100 ms of translated
MEG per window with 220 ms of EEG context): the U-Net with its Bi-LSTM bottleneck
(:mod:`neurocast.models.nets.translator`, linear path initialised with the ridge solution) and
the ridge baseline (one EEG-to-MEG matrix per sample).

Real evaluation, whose samples are never used in training or tuning: ``sample_audvis_raw.fif``
(2 s) and
``neuromag306_fieldtrip_raw_v7.mat`` (5 s; its first 2 s are the same samples as the FIF
file). Channels are picked by name; the FIF's bad marks (MEG 2443, EEG 053) apply to both
files (the MAT file carries none); bad EEG is interpolated; bad or missing MEG is not scored
(FIF: 102 magnetometers + 203 gradiometers; MAT: 101 + 201); the FIF's three MEG SSP
projectors are applied to recorded and translated MEG alike. Windows tile each recording
after 0.5 s of filter settling. Figures: median over sensors (pooled over the two files for
``real_*``) of the correlation between translated and recorded MEG per sensor, for
magnetometers and gradiometers; explained variance alongside. A diagnostic
(``real_within_*``) fits a ridge on the first 55 % of the MAT file and tests it on the rest:
how much of the real MEG a linear map of the real EEG explains at all (it is trained on real
data, unlike the translators).

Streaming cost: the network exported as a translation artifact, run by the ONNX runtime (2
threads) inside the decode engine on a SIMULATED 1 kHz stream of the same geometry (366
channels, 60 EEG read by the model), 25 ms stride; per window: online preprocessing plus
inference (``window_ms_p50``, ``window_ms_p99``; median over runs), the ridge artifact as
the peer in the same run.

Mutual information (:mod:`neurocast.models.analysis.mutual_info`, k-nearest-neighbour estimator,
maximised over lags): a few hundred random EEG-MEG pairs on each real file and on 5 s of
SIMULATED data of the same geometry.

Usage: ``python bench/translate.py [--quick]``; the last stdout line is a JSON object.
"""

from __future__ import annotations

import os

# one BLAS thread for NumPy: the machine is shared; the runtime sets its own threads
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _common
import mne
import numpy as np

from neurocast.models.analysis.mutual_info import eeg_meg_mutual_info
from neurocast.models.serving.runtime import OnnxWindowModel
from neurocast.models.training.export import ArtifactAbout
from neurocast.models.training.recipes.translator import (
    SubjectSplit,
    TrainedTranslator,
    train_translator,
)
from neurocast.models.training.translation import (
    TranslationModel,
    TranslatorTrainConfig,
    export_translator,
)
from neurocast.models.training.translation_data import (
    SimultaneousSegment,
    TranslationWindow,
    meg_projectors,
    recording_segment,
    simulator_spec,
)
from neurocast.models.training.translation_ridge import RidgeTranslator
from neurocast.models.training.translation_scoring import (
    TranslationScores,
    evaluate_segment,
    score_translation,
)
from neurocast.streaming.engine.pipeline import decode_array
from neurocast.streaming.io import read_recording
from neurocast.streaming.sources.simulator.simulator import Simulator
from neurocast.streaming.sources.specs import SimulatorSpec

STREAM_SFREQ = 1000.0
REAL_FILES = {"fif": "sample_audvis_raw.fif", "mat": "neuromag306_fieldtrip_raw_v7.mat"}


@dataclass(frozen=True)
class Setup:
    n_train: int
    seconds: float
    test_seconds: float
    max_steps: int
    eval_every: int
    base_channels: int
    lstm_hidden: int
    timing_runs: int
    timing_seconds: float
    mi_pairs: int
    mi_lag_step_ms: float


FULL = Setup(16, 30.0, 30.0, 1500, 100, 32, 64, 5, 20.0, 400, 5.0)
QUICK = Setup(3, 12.0, 12.0, 300, 50, 16, 32, 2, 4.0, 120, 10.0)


def pooled(scores: list[TranslationScores]) -> dict[str, float]:
    """Median over (sensor, recording) pairs of correlation and explained variance per type."""
    types = np.concatenate([np.asarray(s.meg_types) for s in scores])
    corr = np.concatenate([s.corr for s in scores])
    ev = np.concatenate([s.explained_variance for s in scores])
    out = {}
    for t in ("mag", "grad"):
        out[f"corr_{t}"] = float(np.median(corr[types == t]))
        out[f"ev_{t}"] = float(np.median(ev[types == t]))
    return out


def within_recording_ridge(segment: SimultaneousSegment, fraction: float) -> TranslationScores:
    """Diagnostic: a ridge fitted on the start of a real recording, tested on its end."""
    cut = int(segment.n_samples * fraction)
    x = segment.eeg / np.median(segment.eeg.std(axis=1))
    unit = segment.meg[:, :cut].std(axis=1, keepdims=True)
    y = segment.meg / unit
    # regularisation chosen on the last fifth of the training part (never on the test part)
    val = int(cut * 0.8)
    chosen = RidgeTranslator().fit(x[:, :val], y[:, :val], x[:, val:cut], y[:, val:cut]).alpha
    assert chosen is not None
    ridge = RidgeTranslator(alphas=(chosen,)).fit(x[:, :cut], y[:, :cut])
    return score_translation(
        ridge.predict(x[:, cut:]) * unit,
        segment.meg[:, cut:],
        segment.meg_names,
        segment.meg_types,
        simulated=False,
        description=f"ridge fitted on the first {fraction:.0%} of {segment.description}",
    )


def window_costs(runtime: OnnxWindowModel, sim: Simulator, seconds: float) -> np.ndarray:
    """Preprocessing + inference time (ms) of every window of a simulated stream."""
    n = round(seconds * sim.sfreq)
    data, _ = sim.generate(n)
    times = sim.sample_times(sim.n_generated - n, n)
    results = decode_array(data, times, sim.stream_info, [runtime], chunk_s=0.025)
    return np.array([r.latency.preprocessing_ms + r.latency.inference_ms for r in results])


def mutual_information(raw: mne.io.BaseRaw, setup: Setup) -> dict[str, float]:
    """Summary of EEG-MEG mutual information against distance (random pairs, bits)."""
    res = eeg_meg_mutual_info(raw, n_pairs=setup.mi_pairs, lag_step_ms=setup.mi_lag_step_ms)
    return res.summary()


def train(spec: SimulatorSpec, window: TranslationWindow, setup: Setup) -> TrainedTranslator:
    """Both translators, trained on SIMULATED subjects of the real geometry."""
    _common.log(f"simulating {setup.n_train} + 1 + 2 subjects (SIMULATED, real geometry)")
    return train_translator(
        spec,
        window,
        SubjectSplit(
            train=range(1, setup.n_train + 1),
            val=[101],
            test=[201, 202],
            seconds=setup.seconds,
            val_seconds=setup.seconds / 2,
            test_seconds=setup.test_seconds,
        ),
        TranslatorTrainConfig(max_steps=setup.max_steps, eval_every=setup.eval_every),
        base_channels=setup.base_channels,
        lstm_hidden=setup.lstm_hidden,
    )


def simulated_figures(model: TranslationModel, test: list[SimultaneousSegment]) -> dict[str, Any]:
    """Both translators' scores on the held-out simulated subjects, pooled."""
    figures: dict[str, Any] = {}
    for which in ("net", "ridge"):
        sim = pooled([evaluate_segment(model, s, which) for s in test])
        for t in ("mag", "grad"):
            figures[f"sim_corr_{t}_{which}"] = sim[f"corr_{t}"]
            figures[f"sim_ev_{t}_{which}"] = sim[f"ev_{t}"]
    return figures


def real_figures(
    model: TranslationModel, window: TranslationWindow, fif: Path, bads: list[str]
) -> dict[str, Any]:
    """Both translators' scores on the real recordings, and the within-recording diagnostic."""
    projs = meg_projectors(fif)
    real: dict[str, SimultaneousSegment] = {}
    for key, name in REAL_FILES.items():
        path = _common.shared_data("meg_eeg", name)
        if path is not None:
            real[key] = recording_segment(
                path, model.eeg_names, model.meg_names, window, extra_bads=bads, projs=projs
            )
    figures: dict[str, Any] = {}
    for which in ("net", "ridge"):
        per_file = {k: evaluate_segment(model, s, which) for k, s in real.items()}
        both = pooled(list(per_file.values()))
        for t in ("mag", "grad"):
            figures[f"real_corr_{t}_{which}"] = both[f"corr_{t}"]
            figures[f"real_ev_{t}_{which}"] = both[f"ev_{t}"]
            for k, sc in per_file.items():
                figures[f"real_{k}_corr_{t}_{which}"] = sc.summary()[f"corr_{t}"]
    for k, seg in real.items():
        figures[f"real_{k}_n_mag"] = seg.meg_types.count("mag")
        figures[f"real_{k}_n_grad"] = seg.meg_types.count("grad")
        figures[f"real_{k}_n_samples"] = int(seg.n_samples - window.n_context)
    if "mat" in real:
        within = within_recording_ridge(real["mat"], 0.55).summary()
        figures["real_within_corr_mag_ridge"] = within["corr_mag"]
        figures["real_within_corr_grad_ridge"] = within["corr_grad"]
    return figures


def streaming_figures(
    model: TranslationModel, check: SimultaneousSegment, spec: SimulatorSpec, setup: Setup
) -> dict[str, Any]:
    """Per-window cost of both translators through their artifacts and the runtime."""
    _common.log("streaming cost through the artifact and the runtime")
    with tempfile.TemporaryDirectory() as tmp:
        runtimes = {}
        for which in ("net", "ridge"):
            art = export_translator(
                model,
                Path(tmp) / f"{which}.onnx",
                which=which,
                check_segment=check,
                about=ArtifactAbout(name=f"bench-{which}"),
                stream_sfreq=spec.sfreq,
            )
            runtimes[which] = OnnxWindowModel(art, threads=2)
        # a held-out subject's forward model is cached already; the seed is new
        stream = Simulator(spec, sfreq=STREAM_SFREQ, seed=999, subject_seed=201)
        runs: dict[str, list[np.ndarray]] = {"net": [], "ridge": []}
        for _ in range(setup.timing_runs):
            for which in ("net", "ridge"):
                runs[which].append(window_costs(runtimes[which], stream, setup.timing_seconds))
    figures: dict[str, Any] = {}
    for which, suffix in (("net", ""), ("ridge", "_ridge")):
        p50, p99 = _common.median_of_runs(runs[which])
        figures[f"window_ms_p50{suffix}"] = p50
        figures[f"window_ms_p99{suffix}"] = p99
    figures["windows_timed"] = int(sum(len(r) for r in runs["net"]))
    return figures


def mi_figures(spec: SimulatorSpec, setup: Setup, bads: list[str]) -> dict[str, Any]:
    """EEG-MEG mutual information of the real recordings and of SIMULATED data."""
    _common.log("mutual information")
    figures: dict[str, Any] = {}
    for key, name in REAL_FILES.items():
        path = _common.shared_data("meg_eeg", name)
        if path is None:
            continue
        raw = read_recording(path, preload=True)
        raw.info["bads"] = [b for b in bads if b in raw.ch_names]
        for k, v in mutual_information(raw, setup).items():
            figures[f"mi_real_{key}_{k}"] = v
    sim_raw = Simulator(spec, seed=301, subject_seed=202).simulate_raw(5.0)
    for k, v in mutual_information(sim_raw, setup).items():
        figures[f"mi_sim_{k}"] = v
    return figures


def main() -> None:
    args = _common.parser(__doc__).parse_args()
    setup = QUICK if args.quick else FULL
    t_start = time.perf_counter()
    fif = _common.shared_data("meg_eeg", REAL_FILES["fif"])
    if fif is None:
        raise SystemExit(
            f"{_common.SHARED_DATA} is missing: this benchmark needs the real recordings "
            "(sensor layout and evaluation data)."
        )
    window = TranslationWindow()
    # white sensor noise: the measured covariance of the evaluated session would carry its
    # noise (and, through its rank, its projectors) into training
    spec = simulator_spec(fif, None)
    t0 = time.perf_counter()
    trained = train(spec, window, setup)
    model: TranslationModel = trained.model
    train_s = time.perf_counter() - t0
    _common.log(f"trained in {train_s:.0f} s ({len(model.history) - 1} validations)")
    bads = mne.io.read_info(fif, verbose="error")["bads"]
    figures = simulated_figures(model, trained.test)
    figures.update(real_figures(model, window, fif, bads))
    figures.update(streaming_figures(model, trained.test[0], spec, setup))
    figures.update(mi_figures(spec, setup, bads))
    figures.update(
        {
            "n_train_subjects": setup.n_train,
            "train_seconds_per_subject": setup.seconds,
            "net_parameters": model.net.n_parameters(),
            "ridge_alpha": model.ridge.alpha,
            "val_loss_net": min(h["val_loss"] for h in model.history),
            "val_loss_ridge": model.history[0]["val_loss_ridge"],
            "train_s": train_s,
            "simulated_training_data": True,
            "training_noise": "white sensor noise (no covariance of the evaluated session)",
            "shared_with_evaluation": "sensor layout, head position and head shape only",
            "quick": bool(args.quick),
            "wall_s": time.perf_counter() - t_start,
        }
    )
    _common.emit(figures)


if __name__ == "__main__":
    main()
