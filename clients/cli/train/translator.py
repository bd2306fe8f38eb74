"""``neurocast train translator``: an EEG→MEG translator trained on SIMULATED EEG/MEG.

torch is imported only when the command runs, never when the parser is built.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from neurocast.clients.cli.train.common import run_training

if TYPE_CHECKING:
    from neurocast.models.training.recipes.translator import TrainedTranslator
    from neurocast.models.training.translation import TranslationModel
    from neurocast.models.training.translation_data import SimultaneousSegment

logger = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``train translator``."""
    p = sub.add_parser(
        "translator",
        help="EEG-to-MEG translator (U-Net + Bi-LSTM, or ridge) on SIMULATED simultaneous data",
        description=(
            "Simulate simultaneous EEG and MEG of several simulated subjects (physics-based "
            "forward models; with --info, the real sensor geometry of a FIF recording and, with "
            "--noise-cov, its measured noise covariance), train the U-Net translator with its "
            "Bi-LSTM bottleneck and the ridge baseline on the same windows, score both on a "
            "held-out simulated subject (and on --eval recordings), and export one of them as "
            "a translation artifact. Example: neurocast train translator --info "
            "sample_audvis_raw.fif --noise-cov sample_audvis-cov.fif --eval "
            "sample_audvis_raw.fif --out eeg2meg.onnx"
        ),
    )
    p.add_argument("--out", required=True, type=Path, help="artifact to write (.onnx)")
    p.add_argument("--info", type=Path, help="FIF recording whose sensor geometry to simulate")
    p.add_argument("--noise-cov", type=Path, help="noise covariance FIF for the sensor noise")
    p.add_argument(
        "--model", choices=("net", "ridge"), default="net", help="which translator to export"
    )
    p.add_argument("--subjects", type=int, default=16, help="simulated training subjects")
    p.add_argument("--seconds", type=float, default=30.0, help="seconds simulated per subject")
    p.add_argument("--sim-sfreq", type=float, help="simulation rate in Hz (default: --info's)")
    p.add_argument("--sfreq", type=float, default=150.0, help="translator rate in Hz")
    p.add_argument("--l-freq", type=float, default=1.0, help="high-pass edge in Hz (causal)")
    p.add_argument("--h-freq", type=float, default=40.0, help="low-pass edge in Hz (causal)")
    p.add_argument("--window-ms", type=float, default=100.0, help="MEG translated per window")
    p.add_argument("--context-ms", type=float, default=200.0, help="EEG read before the window")
    p.add_argument("--steps", type=int, default=1500, help="maximum optimiser steps")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--base-channels", type=int, default=32, help="U-Net width at level 1")
    p.add_argument("--depth", type=int, default=2, help="U-Net levels (each halves time)")
    p.add_argument("--lstm-hidden", type=int, default=64, help="Bi-LSTM units per direction")
    p.add_argument("--eval", nargs="+", type=Path, default=[], help="real recordings to score")
    p.add_argument("--bads", nargs="+", default=[], help="channels bad in every --eval recording")
    p.add_argument(
        "--ssp-from", type=Path, help="apply this FIF's MEG projectors to every --eval recording"
    )
    p.add_argument("--name", help="model name (default: the output file's stem)")
    p.add_argument("--version", default="1", help="model version")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads while training")
    p.set_defaults(func=run_translator)


def run_translator(args: argparse.Namespace) -> int:
    """Simulate, train, score and export."""
    return run_training(lambda: _train_translator(args))


def _train_translator(args: argparse.Namespace) -> str:
    """Train, score and export the translator; returns the summary line."""
    from neurocast.models.training.export import ArtifactAbout
    from neurocast.models.training.translation import export_translator

    if args.subjects < 1 or args.seconds <= 0:
        raise ValueError("--subjects must be >= 1 and --seconds positive.")
    trained, stream_sfreq = _trained(args)
    metrics = _scores(args, trained.model, trained.test[0])
    artifact = export_translator(
        trained.model,
        args.out,
        which=args.model,
        check_segment=trained.test[0],
        about=ArtifactAbout(
            name=args.name or args.out.stem,
            version=args.version,
            seed=args.seed,
            metrics=metrics,
            metrics_note=(
                "Median over MEG sensors of the correlation (corr) and explained variance (ev) "
                "of translated against simulated (sim_: a held-out simulated subject) or "
                "recorded MEG, per magnetometers and gradiometers; *_ridge: the ridge baseline "
                "on the same windows."
            ),
        ),
        stream_sfreq=stream_sfreq,
    )
    return f"wrote {artifact.path} (SIMULATED training data): {json.dumps(metrics)}"


def _trained(args: argparse.Namespace) -> tuple[TrainedTranslator, float]:
    """Simulate the subjects and train both translators; also the simulation rate in Hz."""
    from neurocast.models.training.recipes.translator import SubjectSplit, train_translator
    from neurocast.models.training.translation import TranslatorTrainConfig
    from neurocast.models.training.translation_data import TranslationWindow, simulator_spec

    window = TranslationWindow(
        sfreq_hz=args.sfreq,
        l_freq_hz=args.l_freq,
        h_freq_hz=args.h_freq,
        window_s=args.window_ms / 1e3,
        context_s=args.context_ms / 1e3,
        multiple=2**args.depth,
    )
    spec = simulator_spec(args.info, args.noise_cov, sfreq=args.sim_sfreq)
    # each seed draws its own simulated subjects
    base = 1000 * args.seed
    trained = train_translator(
        spec,
        window,
        SubjectSplit(
            train=[base + i for i in range(1, args.subjects + 1)],
            val=[base + args.subjects + 1],
            test=[base + args.subjects + 2],
            seconds=args.seconds,
        ),
        TranslatorTrainConfig(
            max_steps=args.steps,
            batch_size=args.batch_size,
            n_threads=args.threads,
            seed=args.seed,
        ),
        base_channels=args.base_channels,
        depth=args.depth,
        lstm_hidden=args.lstm_hidden,
        progress=True,
    )
    return trained, spec.sfreq


def _scores(
    args: argparse.Namespace, model: TranslationModel, simulated: SimultaneousSegment
) -> dict[str, float]:
    """Both translators' figures on the held-out simulated subject and every --eval file."""
    from neurocast.models.training.translation_data import meg_projectors, recording_segment
    from neurocast.models.training.translation_scoring import evaluate_segment

    metrics: dict[str, float] = {}

    def add_scores(prefix: str, segment: SimultaneousSegment) -> None:
        # the exported model's figures carry no suffix, the other model's its name
        for which in ("net", "ridge"):
            suffix = "" if which == args.model else f"_{which}"
            summary = evaluate_segment(model, segment, which).summary()
            for key in ("corr_mag", "corr_grad", "ev_mag", "ev_grad"):
                metrics[f"{prefix}_{key}{suffix}"] = summary[key]

    add_scores("sim", simulated)
    projs = meg_projectors(args.ssp_from) if args.ssp_from else None
    for path in args.eval:
        segment = recording_segment(
            path, model.eeg_names, model.meg_names, model.window, extra_bads=args.bads, projs=projs
        )
        add_scores(path.stem, segment)
    return metrics
