"""``neurocast train retrieval``: a brain module that retrieves gallery images from MEG/EEG.

Trains the brain module (Défossez et al. 2023; Benchetrit et al. 2024) against the
embeddings of a gallery (``neurocast gallery build``), on recordings whose annotations say
which image was shown (``image/<image_id>``) or, without ``--data``, on the embedded
simulator's responses to the gallery's images (SIMULATED data). The artifact's output at each
window is an embedding; with the gallery file beside it (copied there as ``<gallery>.npz``)
the runtime streams the top-k images with their scores.

torch is imported only when the command runs, never when the parser is built.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from neurocast.clients.cli.train.common import run_training

if TYPE_CHECKING:
    import mne

    from neurocast.models.serving.gallery import Gallery
    from neurocast.models.training.export import ArtifactAbout
    from neurocast.models.training.retrieval import RetrievalTrainConfig
    from neurocast.models.training.retrieval_data import EpochSet

logger = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``train retrieval``."""
    p = sub.add_parser(
        "retrieval",
        help="brain module retrieving gallery images from MEG/EEG windows",
        description=(
            "Train the brain module (spatial attention over sensor positions, per-subject "
            "layer, dilated residual convolutions, CLIP + MSE heads) to map preprocessed "
            "windows (120 Hz, baseline over the context before the window, robust scaling, "
            "clip +/-20) to the embeddings of a gallery's images, measure top-k retrieval "
            "among held-out images (with a ridge baseline), and export an ONNX retrieval "
            "artifact. Data: --data recordings annotated 'image/<image_id>', or SIMULATED "
            "responses to the gallery's images. Example: neurocast train retrieval --gallery "
            "stimuli.npz --modality meg --out models/retrieval-sim.onnx"
        ),
    )
    p.add_argument("--gallery", required=True, type=Path, help="gallery file (.npz)")
    p.add_argument("--out", required=True, type=Path, help="artifact to write (.onnx)")
    p.add_argument(
        "--data", nargs="+", type=Path, default=[], help="recordings with image/<id> annotations"
    )
    p.add_argument(
        "--modality", choices=("eeg", "meg", "both"), default="meg", help="simulated sensors"
    )
    p.add_argument("--sim-sfreq", type=float, default=240.0, help="simulation rate in Hz")
    p.add_argument("--repeats", type=int, default=2, help="simulated trials per image")
    p.add_argument("--name", help="model name (default: the output file's stem)")
    p.add_argument("--version", default="1", help="model version")
    p.add_argument("--window-ms", type=float, default=100.0, help="model window in ms")
    p.add_argument("--context-ms", type=float, default=200.0, help="baseline span before it (ms)")
    p.add_argument("--stride-ms", type=float, default=25.0, help="step between window ends (ms)")
    p.add_argument("--tmin", type=float, default=0.1, help="first window end after onset (s)")
    p.add_argument("--tmax", type=float, default=0.6, help="last window end after onset (s)")
    p.add_argument(
        "--config",
        choices=("small", "paper"),
        default="small",
        help="brain-module size: 'paper' (270 spatial, 320 hidden, 5 blocks) or 'small' (CPU)",
    )
    p.add_argument("--test-fraction", type=float, default=0.2, help="images held out for testing")
    p.add_argument("--epochs", type=int, default=30, help="maximum epochs")
    p.add_argument("--patience", type=int, default=6, help="early-stopping patience (epochs)")
    p.add_argument("--steps-per-epoch", type=int, help="cap on optimizer steps per epoch")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--clip-weight", type=float, default=0.75, help="lambda of the CLIP term")
    p.add_argument("--no-ridge", action="store_true", help="skip the ridge baseline")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads while training")
    p.set_defaults(func=run_retrieval)


def run_retrieval(args: argparse.Namespace) -> int:
    """Train, measure and export a retrieval brain module."""
    return run_training(lambda: _train_retrieval(args))


def _train_retrieval(args: argparse.Namespace) -> str:
    """Train, measure and export; copies the gallery beside the artifact; returns the summary."""
    import numpy as np

    from neurocast.models.nets.brain_module import BrainModuleConfig, small_config
    from neurocast.models.serving.gallery import Gallery
    from neurocast.models.training.loop import set_threads
    from neurocast.models.training.recipes.retrieval import fit_retrieval
    from neurocast.models.training.retrieval import export_retrieval
    from neurocast.models.training.retrieval_data import retrieval_spec

    set_threads(args.threads)
    _check_args(args)
    gallery = Gallery.load(args.gallery)
    if gallery.n_images < 10:
        raise ValueError(
            f"Gallery {gallery.name!r} has {gallery.n_images} images; training and "
            "held-out images need at least 10."
        )
    rng = np.random.default_rng(args.seed)
    n_test = max(2, round(args.test_fraction * gallery.n_images))
    test_images = rng.permutation(gallery.n_images)[:n_test]
    context_s = args.context_ms / 1e3
    read = _recorded_epochs if args.data else _simulated_epochs
    epochs, info, simulated, data_note = read(args, gallery, context_s)
    fit = fit_retrieval(
        epochs,
        info,
        retrieval_spec(epochs.ch_names, context_s=context_s),
        gallery.embeddings.astype(np.float32),
        np.isin(epochs.image_rows, test_images),
        window_s=args.window_ms / 1e3,
        context_s=context_s,
        end_range_s=(args.tmin, args.tmax),
        stride_s=args.stride_ms / 1e3,
        config=BrainModuleConfig(n_subjects=1) if args.config == "paper" else small_config(1),
        train_config=_train_config(args),
        ridge=not args.no_ridge,
    )
    about = _about(args, fit.metrics, data_note, simulated, len(test_images), gallery.n_images)
    artifact = export_retrieval(
        fit.module,
        args.out,
        gallery=gallery,
        info=info,
        spec=fit.spec,
        geometry=fit.geometry,
        check_inputs=fit.check_inputs,
        about=about,
        stride_s=args.stride_ms / 1e3,
    )
    beside = artifact.path.parent / f"{gallery.name}.npz"
    if beside.resolve() != args.gallery.resolve():
        shutil.copyfile(args.gallery, beside)
    return json.dumps(
        {
            "artifact": str(artifact.path),
            "gallery": str(beside),
            "simulated_training_data": simulated,
            **{k: round(v, 4) for k, v in fit.metrics.items()},
        }
    )


def _check_args(args: argparse.Namespace) -> None:
    """Refuse settings that cannot give a held-out measure, before any data are read."""
    if not 0 < args.test_fraction < 1:
        raise ValueError(f"--test-fraction must be between 0 and 1, got {args.test_fraction}.")
    if args.repeats < 1:
        raise ValueError(f"--repeats must be at least 1, got {args.repeats}.")
    if not args.tmin < args.tmax:
        raise ValueError(f"--tmin ({args.tmin}) must be below --tmax ({args.tmax}).")


def _train_config(args: argparse.Namespace) -> RetrievalTrainConfig:
    """The brain module's optimisation settings from the command line."""
    from neurocast.models.training.retrieval import RetrievalTrainConfig

    return RetrievalTrainConfig(
        max_epochs=args.epochs,
        patience=args.patience,
        batch_size=args.batch_size,
        lr=args.lr,
        clip_weight=args.clip_weight,
        max_steps_per_epoch=args.steps_per_epoch,
        seed=args.seed,
        progress=True,
    )


def _about(
    args: argparse.Namespace,
    metrics: dict[str, float],
    data_note: str,
    simulated: bool,
    n_test_images: int,
    n_images: int,
) -> ArtifactAbout:
    """Name, provenance and measured figures of the artifact."""
    from neurocast.models.training.export import ArtifactAbout

    return ArtifactAbout(
        name=args.name or args.out.stem,
        version=args.version,
        trained_on=data_note,
        split=(
            f"{n_test_images} of {n_images} gallery images held out (seed "
            f"{args.seed}); early stopping on 15 % of the training images"
        ),
        seed=args.seed,
        metrics=metrics,
        metrics_note=(
            f"Held-out trials: rank of the seen image among it and "
            f"{int(metrics['test_gallery_size']) - 1} other held-out images, per "
            f"window end from {args.tmin} to {args.tmax} s after onset (mean and peak); "
            "ridge_*: RidgeCV on the same windows."
        ),
        simulated_training_data=simulated,
    )


def _simulated_epochs(
    args: argparse.Namespace, gallery: Gallery, context_s: float
) -> tuple[EpochSet, mne.Info, bool, str]:
    from neurocast.models.training.retrieval_data import preprocess_epochs, retrieval_spec
    from neurocast.streaming.sources.simulator.simulator import Simulator

    sim = Simulator(
        sfreq=args.sim_sfreq,
        modality=args.modality,
        seed=args.seed,
        subject_seed=args.seed,
        image_embeddings=gallery.embeddings.astype("float32"),
        image_ids=gallery.image_ids,
    )
    tmin = -(context_s + args.window_ms / 1e3 + 0.3)
    raw = sim.simulate_image_epochs(n_repeats=args.repeats, tmin=tmin, tmax=args.tmax + 0.1)
    spec = retrieval_spec(sim.stream_info.ch_names, context_s=context_s)
    epochs = preprocess_epochs(raw.data, sim.stream_info, spec, tmin, raw.labels)
    note = (
        f"SIMULATED {args.modality.upper()} responses ({len(sim.info['ch_names'])} channels, "
        f"{args.sim_sfreq:g} Hz, subject_seed {args.seed}) to the {gallery.n_images} images of "
        f"gallery {gallery.name!r}, {args.repeats} trials each"
    )
    return epochs, sim.info, True, note


def _recorded_epochs(
    args: argparse.Namespace, gallery: Gallery, context_s: float
) -> tuple[EpochSet, mne.Info, bool, str]:
    import mne
    import numpy as np

    from neurocast.models.training.retrieval_data import (
        EpochSet,
        epochs_from_recording,
        retrieval_spec,
    )
    from neurocast.streaming.io import is_simulated, read_recording
    from neurocast.streaming.sources.base import StreamInfo

    sets = []
    info = None
    tmin = -(context_s + args.window_ms / 1e3 + 0.3)
    for k, path in enumerate(args.data):
        raw = read_recording(path, preload=True)
        picks = mne.pick_types(raw.info, meg=True, eeg=True, exclude="bads")
        raw.pick(picks)
        wanted = {
            d: gallery.index_of(d[6:]) + 1
            for d in set(raw.annotations.description)
            if d.startswith("image/") and d[6:] in gallery
        }
        onsets: list[int] = []
        rows: list[int] = []
        if wanted:
            events, _ = mne.events_from_annotations(raw, event_id=wanted, verbose="error")
            onsets = (events[:, 0] - raw.first_samp).tolist()
            rows = (events[:, 2] - 1).tolist()
        if not onsets:
            raise ValueError(
                f"{path} has no 'image/<image_id>' annotation naming an image of gallery "
                f"{gallery.name!r}; annotate the image onsets with the gallery's ids."
            )
        stream = StreamInfo(path.name, raw.info, simulated=is_simulated(raw.info))
        if info is None:
            info = raw.info
        elif info["ch_names"] != raw.info["ch_names"]:
            raise ValueError(f"{path} has other channels than {args.data[0]}; use one montage.")
        spec = retrieval_spec(raw.ch_names, context_s=context_s)
        sets.append(
            epochs_from_recording(
                raw.get_data(),
                stream,
                spec,
                np.array(onsets),
                np.array(rows),
                tmin,
                args.tmax + 0.1,
                group=k,
            )
        )
    assert info is not None
    epochs = EpochSet.concatenate(sets)
    note = f"{len(epochs)} image trials from {', '.join(p.name for p in args.data)}"
    if epochs.simulated:
        note = "SIMULATED " + note
    return epochs, info, epochs.simulated, note
