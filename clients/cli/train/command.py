"""``neurocast train``: train decoders and export them as artifacts.

Subcommands defined here: ``classifier`` (the scalogram transfer classifier on annotated
recordings) and ``demo`` (rebuild the models shipped for the demo, trained on SIMULATED data).
Other model families add theirs without touching this file's parser code: a module
``neurocast.clients.cli.train.<name>`` exposing ``register(subparsers)`` (adding one parser to the
``train`` sub-subparsers and setting ``func``), listed in :data:`TRAIN_COMMANDS`.

torch is imported only when a training command runs, never when the parser is built.
"""

from __future__ import annotations

import argparse
import importlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from neurocast.clients.cli.arg_types import event_class
from neurocast.clients.cli.exit_codes import EXIT_OK, EXIT_USAGE
from neurocast.clients.cli.train.common import run_training

if TYPE_CHECKING:
    import mne

    from neurocast.models.serving.schema import InputSpec
    from neurocast.models.training.export import ArtifactAbout
    from neurocast.models.training.recipes.classifier import (
        ClassifierRecipe,
        LabelledRecording,
        TrainedClassifier,
    )

logger = logging.getLogger(__name__)

# further ``train`` subcommands, each from its own module neurocast.clients.cli.train.<name>
TRAIN_COMMANDS: list[str] = ["translator", "align", "retrieval", "pipeline"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train`` and its subcommands."""
    parser = subparsers.add_parser(
        "train",
        help="train a decoder and export it as an ONNX artifact",
        description="Train a decoder and export it as an ONNX artifact with its metadata.",
    )
    sub = parser.add_subparsers(dest="train_command", metavar="WHAT", required=True)
    _register_classifier(sub)
    _register_demo(sub)
    for name in TRAIN_COMMANDS:
        importlib.import_module(f"neurocast.clients.cli.train.{name}").register(sub)


def _register_classifier(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "classifier",
        help="scalogram transfer classifier on annotated recordings",
        description=(
            "Train the scalogram transfer classifier (Jhilal, Martin & Giraud 2026): Morlet "
            "scalograms, a learnable 1x1 convolution mixing all sensors into 3 channels, "
            "bilinear resize, an ImageNet-pretrained backbone and a new head, with partial "
            "fine-tuning. Trials come from annotations (--event). Example (PhysioNet EEGBCI): "
            "neurocast train classifier --data S001R06.edf --eegbci --event T1=hands "
            "--event T2=feet --test-data S001R10.edf --out hands-feet.onnx"
        ),
    )
    p.add_argument("--data", nargs="+", required=True, type=Path, help="training recordings")
    p.add_argument(
        "--event",
        action="append",
        type=event_class,
        required=True,
        help="ANNOTATION=CLASS; repeat for each class (several annotations may share a class)",
    )
    p.add_argument("--out", required=True, type=Path, help="artifact to write (.onnx)")
    p.add_argument("--test-data", nargs="+", type=Path, default=[], help="held-out recordings")
    p.add_argument("--eegbci", action="store_true", help="PhysioNet EEGBCI channel names/montage")
    p.add_argument("--name", help="model name (default: the output file's stem)")
    p.add_argument("--version", default="1", help="model version")
    p.add_argument(
        "--backbone",
        default="efficientnet-lite0",
        choices=("efficientnet-lite0", "resnet18", "vit-tiny", "compact"),
        help="vision backbone (EfficientNet-Lite0's ImageNet weights ship with the package)",
    )
    p.add_argument("--weights", help="ImageNet state dict for resnet18 / vit-tiny")
    p.add_argument(
        "--random-init", action="store_true", help="ablation: no ImageNet weights, train all"
    )
    p.add_argument("--mixing", default="learned", choices=("learned", "pca3"), help="sensor mixing")
    p.add_argument(
        "--mixing-init",
        default="discriminant",
        choices=("discriminant", "random"),
        help="start of the learned mixing: shrinkage-LDA filters of the training data, or random",
    )
    p.add_argument(
        "--reference", choices=("average",), help="EEG common average reference (EEG picks only)"
    )
    p.add_argument("--input-size", type=int, default=224, help="backbone input in pixels")
    p.add_argument("--fmin", type=float, default=6.0, help="lowest wavelet frequency in Hz")
    p.add_argument("--fmax", type=float, default=36.0, help="highest wavelet frequency in Hz")
    p.add_argument("--n-freqs", type=int, default=16, help="log-spaced wavelet frequencies")
    p.add_argument(
        "--cycles-per-hz",
        type=float,
        default=0.5,
        help="n_cycles = this x frequency (0.5: wavelets of about 0.8 s, 0.4 s latency)",
    )
    p.add_argument("--resample-hz", type=float, help="resample the recording first (Hz)")
    p.add_argument("--l-freq", type=float, help="high-pass edge in Hz (causal)")
    p.add_argument("--h-freq", type=float, help="low-pass edge in Hz (causal)")
    p.add_argument("--line-freq", type=float, help="notch at this line frequency (Hz)")
    p.add_argument("--window-ms", type=float, default=100.0, help="model window in ms")
    p.add_argument(
        "--context-ms",
        type=float,
        default=0.0,
        help="scalogram history before each window that the model also sees, in ms",
    )
    p.add_argument(
        "--decim", type=int, default=1, help="keep every n-th scalogram column (MNE's decim)"
    )
    p.add_argument("--tmin", type=float, default=0.5, help="first window end after onset (s)")
    p.add_argument("--tmax", type=float, default=3.5, help="last window end after onset (s)")
    p.add_argument("--train-stride-ms", type=float, default=100.0, help="training window step")
    p.add_argument("--val-fraction", type=float, default=0.2, help="trials held out per class")
    p.add_argument("--epochs", type=int, default=30, help="maximum epochs")
    p.add_argument("--patience", type=int, default=5, help="early-stopping patience (epochs)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.set_defaults(func=run_classifier)


def _register_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="rebuild the demo models (trained on SIMULATED data)",
        description=(
            "Train the three small demo models on the embedded simulator (SIMULATED data): the "
            "classifier of its classes, the brain module retrieving the demo gallery's "
            "pictures (the gallery is embedded first) and the EEG-to-MEG translator; write "
            "them to models/artifacts/."
        ),
    )
    p.add_argument("--out-dir", type=Path, help="folder to write to (default: the package's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: reproducible)")
    p.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    """Rebuild the demo artifacts."""
    from neurocast.models.training.demo import ARTIFACT_DIR, build_demo_models
    from neurocast.models.training.loop import set_threads

    try:
        set_threads(args.threads)
    except ValueError as exc:
        logger.error("%s", exc)
        return EXIT_USAGE
    for artifact in build_demo_models(args.out_dir or ARTIFACT_DIR, seed=args.seed):
        values = artifact.metadata.metrics.values
        shown = ", ".join(f"{k} {v:.3f}" for k, v in values.items() if k.startswith("test_"))
        shown = shown or ", ".join(f"{k} {v:.3f}" for k, v in values.items())
        print(
            f"wrote {artifact.path} ({artifact.size_bytes / 1e3:.0f} kB, SIMULATED training "
            f"data; held out: {shown})"
        )
    return EXIT_OK


def run_classifier(args: argparse.Namespace) -> int:
    """Train the scalogram classifier on annotated recordings and export it."""
    return run_training(lambda: _train_classifier(args))


def _classifier_spec(args: argparse.Namespace, info: mne.Info) -> InputSpec:
    """The classifier's input from the command line: channels of ``info``, wavelets, window."""
    import mne
    import numpy as np

    from neurocast.models.serving.schema import InputSpec
    from neurocast.streaming.preprocessing.filters import PreprocessSpec
    from neurocast.streaming.preprocessing.scalogram import ScalogramSpec

    if args.fmin <= 0 or args.fmax <= args.fmin or args.n_freqs < 1:
        raise ValueError(
            f"Need 0 < --fmin < --fmax and --n-freqs >= 1, got {args.fmin}, {args.fmax}, "
            f"{args.n_freqs}."
        )
    picks = mne.pick_types(info, meg=True, eeg=True, exclude="bads")
    if not len(picks):
        raise ValueError(f"{args.data[0]} has no EEG or MEG channels to decode.")
    ch_names = [info["ch_names"][i] for i in picks]
    sfreq = float(info["sfreq"])
    freqs = np.geomspace(args.fmin, args.fmax, args.n_freqs)
    return InputSpec(
        ch_names=ch_names,
        ch_types=[mne.channel_type(info, i) for i in picks],
        sfreq_hz=sfreq,
        window_s=args.window_ms / 1e3,
        context_s=args.context_ms / 1e3,
        preprocess=PreprocessSpec(
            picks=ch_names,
            reference=args.reference,
            resample_hz=args.resample_hz,
            l_freq_hz=args.l_freq,
            h_freq_hz=args.h_freq,
            line_freq_hz=args.line_freq,
        ),
        scalogram=ScalogramSpec(
            sfreq_hz=args.resample_hz or sfreq,
            freqs_hz=freqs.tolist(),
            n_cycles=(args.cycles_per_hz * freqs).tolist(),
            decim=args.decim,
        ),
    )


def _classifier_recordings(
    args: argparse.Namespace,
) -> tuple[InputSpec, list[LabelledRecording], list[LabelledRecording], list[str]]:
    """Read and label the training and test recordings.

    Returns
    -------
    spec : InputSpec
        The classifier's input, from the first training recording's channels.
    train, test : list of LabelledRecording
        The ``--data`` and ``--test-data`` recordings with their trials.
    class_names : list of str
        Classes of the first training recording's trials.
    """
    import numpy as np

    from neurocast.models.training.recipes.classifier import LabelledRecording
    from neurocast.models.training.trials import find_trials
    from neurocast.streaming.io import read_recording
    from neurocast.streaming.sources.base import StreamInfo

    event_map = dict(args.event)
    raws = [read_recording(p, eegbci=args.eegbci, preload=True) for p in args.data]
    tests = [read_recording(p, eegbci=args.eegbci, preload=True) for p in args.test_data]
    spec = _classifier_spec(args, raws[0].info)
    trials = [find_trials(raw, event_map) for raw in [*raws, *tests]]
    recordings = [
        LabelledRecording(
            raw.get_data().astype(np.float32),
            StreamInfo(name=str(raw.filenames[0]), info=raw.info),
            t.onsets / t.sfreq,
            t.labels,
        )
        for raw, t in zip([*raws, *tests], trials, strict=True)
    ]
    return spec, recordings[: len(raws)], recordings[len(raws) :], trials[0].class_names


def _classifier_recipe(args: argparse.Namespace) -> ClassifierRecipe:
    """The classifier recipe the command line describes."""
    from neurocast.models.training.classifier import TrainConfig
    from neurocast.models.training.recipes.classifier import ClassifierRecipe

    return ClassifierRecipe(
        tmin_s=args.tmin,
        tmax_s=args.tmax,
        train_stride_s=args.train_stride_ms / 1e3,
        val_fraction=args.val_fraction,
        backbone=args.backbone,
        pretrained=not args.random_init,
        mixing=args.mixing,
        mixing_init=args.mixing_init,
        input_size=args.input_size,
        weights=args.weights,
        train=TrainConfig(
            max_epochs=args.epochs, patience=args.patience, batch_size=args.batch_size
        ),
        seed=args.seed,
    )


def _classifier_metrics(trained: TrainedClassifier) -> dict[str, float]:
    """Validation figures, and test balanced accuracies when test recordings were given."""
    metrics = {
        "val_window_balanced_accuracy": trained.result.val_balanced_accuracy,
        "best_epoch": float(trained.result.best_epoch),
    }
    if trained.scores:
        metrics["test_window_balanced_accuracy"] = trained.scores["window_balanced_accuracy"]
        metrics["test_trial_balanced_accuracy"] = trained.scores["trial_balanced_accuracy"]
    return metrics


def _classifier_about(
    args: argparse.Namespace,
    trained: TrainedClassifier,
    class_names: list[str],
    metrics: dict[str, float],
) -> ArtifactAbout:
    """Provenance of the trained classifier: recordings, split, metrics and settings."""
    from neurocast.models.training.export import ArtifactAbout

    return ArtifactAbout(
        name=args.name or args.out.stem,
        version=args.version,
        # file names only: the artifact travels, the training machine's folders do not
        trained_on="; ".join(Path(p).name for p in args.data),
        split=(
            f"train/validation: trials of the training recordings, {args.val_fraction:g} "
            "of each class's trials held out for early stopping; test: "
            + ("; ".join(Path(p).name for p in args.test_data) or "none")
        ),
        seed=args.seed,
        metrics=metrics,
        metrics_note=(
            f"Balanced accuracy of {args.window_ms:g} ms windows ending {args.tmin:g}-"
            f"{args.tmax:g} s after each trial onset (validation: every "
            f"{args.train_stride_ms:g} ms; test: every {trained.spec.stride_s * 1e3:g} ms); "
            "trial decision = mean window log-probability."
        ),
        simulated_training_data=False,
        description=(
            f"Scalogram transfer classifier ({args.backbone}, "
            f"{'random init' if args.random_init else 'ImageNet init'}, {args.mixing} "
            f"mixing, {args.input_size} px) of {', '.join(class_names)}."
        ),
    )


def _train_classifier(args: argparse.Namespace) -> str:
    """Train, score and export the classifier; returns the summary line."""
    from neurocast.models.training.classifier import export_classifier
    from neurocast.models.training.loop import set_threads
    from neurocast.models.training.recipes.classifier import train_classifier

    set_threads(args.threads)
    spec, train, test, class_names = _classifier_recordings(args)
    trained = train_classifier(spec, train, len(class_names), _classifier_recipe(args), test)
    metrics = _classifier_metrics(trained)
    artifact = export_classifier(
        trained.model,
        args.out,
        check_inputs=trained.check_inputs(args.seed),
        input_spec=trained.spec,
        class_names=class_names,
        about=_classifier_about(args, trained, class_names, metrics),
    )
    return f"wrote {artifact.path} ({artifact.size_bytes / 1e6:.1f} MB): {metrics}"
