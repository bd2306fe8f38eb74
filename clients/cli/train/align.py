"""``neurocast train align``: EEG and MEG encoders of an aligned space, on SIMULATED trials.

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
    import numpy as np
    from numpy.typing import NDArray

logger = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``train align``."""
    p = sub.add_parser(
        "align",
        help="EEG and MEG encoders aligned with image embeddings (SIMULATED image trials)",
        description=(
            "Simulate simultaneous EEG and MEG responses to images (physics-based forward "
            "models; with --info, the real sensor geometry of a FIF recording), train an EEG "
            "and a MEG encoder contrastively against the image embeddings and against each "
            "other, score decoding, encoding and EEG<->MEG conversion on held-out images, and "
            "write one embedding artifact per modality (<name>-eeg.onnx, <name>-meg.onnx) whose "
            "output lives in the image embedding space. Images: --gallery (an .npz with "
            "'embeddings' and 'ids', e.g. from 'neurocast gallery build') or seeded random "
            "unit embeddings."
        ),
    )
    p.add_argument("--out-dir", required=True, type=Path, help="folder for the two artifacts")
    p.add_argument("--name", default="aligned", help="artifact name prefix")
    p.add_argument("--version", default="1", help="model version")
    p.add_argument("--info", type=Path, help="FIF recording whose sensor geometry to simulate")
    p.add_argument("--noise-cov", type=Path, help="noise covariance FIF for the sensor noise")
    p.add_argument("--gallery", type=Path, help=".npz of image embeddings and ids")
    p.add_argument("--n-images", type=int, default=300, help="training images")
    p.add_argument("--n-test-images", type=int, default=50, help="held-out images")
    p.add_argument("--repeats", type=int, default=4, help="trials per training image (>= 2)")
    p.add_argument("--test-repeats", type=int, default=4, help="trials per test image (>= 2)")
    p.add_argument("--noise-scale", type=float, default=1.0, help="x the simulator's noise")
    p.add_argument("--sim-sfreq", type=float, default=250.0, help="simulation rate in Hz")
    p.add_argument("--epochs", type=int, default=40, help="maximum training epochs")
    p.add_argument("--patience", type=int, default=8, help="early-stopping patience (epochs)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0, help="seed of training and of the subject")
    p.add_argument("--threads", type=int, default=1, help="torch threads while training")
    p.set_defaults(func=run_align)


def run_align(args: argparse.Namespace) -> int:
    """Simulate, train, score and export both encoders."""
    return run_training(lambda: _train_align(args))


def _train_align(args: argparse.Namespace) -> str:
    """Train and export both encoders; returns the summary line."""
    import numpy as np

    from neurocast.models.training.align import AlignTrainConfig, export_encoder, fit_aligned
    from neurocast.models.training.align_data import AlignedEpochs, simulate_aligned_epochs
    from neurocast.models.training.align_eval import evaluate_aligned
    from neurocast.models.training.export import ArtifactAbout
    from neurocast.streaming.sources.specs import SimulatorSpec

    if args.repeats < 2 or args.test_repeats < 2:
        raise ValueError("--repeats and --test-repeats must be at least 2.")
    n_total = args.n_images + args.n_test_images
    emb, ids = _image_set(args, n_total)
    rng = np.random.default_rng(args.seed)
    images = rng.permutation(len(emb))[:n_total]
    train_img, test_img = images[: args.n_images], images[args.n_images :]
    spec = SimulatorSpec(
        sfreq=args.sim_sfreq,
        info_path=None if args.info is None else str(args.info),
        noise_cov_path=None if args.noise_cov is None else str(args.noise_cov),
        subject_seed=args.seed,
        realtime=False,
    )

    def trials(rows: NDArray[np.intp], repeats: int, seed: int) -> AlignedEpochs:
        order = [int(i) for i in rng.permutation(np.repeat(rows, repeats))]
        return simulate_aligned_epochs(
            spec, emb, order, image_ids=ids, noise_scale=args.noise_scale, seed=seed
        )

    train = trials(train_img, args.repeats, 2 * args.seed + 1)
    test = trials(test_img, args.test_repeats, 2 * args.seed + 2)
    model = fit_aligned(
        train,
        AlignTrainConfig(
            max_epochs=args.epochs,
            patience=args.patience,
            batch_size=args.batch_size,
            lr=args.lr,
            n_threads=args.threads,
            seed=args.seed,
            progress=True,
        ),
    )
    metrics = evaluate_aligned(model, test)
    note = (
        f"Held-out images ({len(test_img)}, {args.test_repeats} trials each, never seen in "
        "training): decode_* single trials against all test images; encode_2way image "
        "embedding against the mean representations of the test images; conversion_* "
        "mean representation of half the trials against the other modality's other half, "
        "normalised by that modality's split-half ceiling. Noise x"
        f"{args.noise_scale:g}; SIMULATED data."
    )
    written = []
    for modality in ("eeg", "meg"):
        artifact = export_encoder(
            model,
            modality,
            args.out_dir / f"{args.name}-{modality}.onnx",
            check_data=test,
            about=ArtifactAbout(
                name=f"{args.name}-{modality}",
                version=args.version,
                seed=args.seed,
                metrics=metrics,
                metrics_note=note,
            ),
            stream_sfreq=spec.sfreq,
        )
        written.append(str(artifact.path))
    return f"wrote {', '.join(written)} (SIMULATED training data): {json.dumps(metrics)}"


def _image_set(args: argparse.Namespace, n_total: int) -> tuple[NDArray[np.float32], list[str]]:
    """Embeddings and ids of --gallery's images, or of the default set, at least ``n_total``."""
    from neurocast.streaming.sources.simulator.images import default_image_set, load_image_set

    if args.gallery is None:
        return default_image_set(n_total, 64, seed=args.seed)
    emb, ids = load_image_set(args.gallery)
    if len(emb) < n_total:
        raise ValueError(
            f"{args.gallery} holds {len(emb)} images; --n-images + --n-test-images "
            f"asks for {n_total}."
        )
    return emb, ids
