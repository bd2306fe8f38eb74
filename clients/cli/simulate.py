"""``neurocast simulate``: write a simulated MEG/EEG recording to a FIF file.

The recording comes from the embedded physics-based simulator
(:mod:`neurocast.streaming.sources.simulator.simulator`): class blocks and image trials as
annotations, EEG in volts and MEG in tesla (tesla/metre for gradiometers), and
``info["description"]`` saying SIMULATED.
"""

from __future__ import annotations

import argparse
import logging
from collections import Counter
from pathlib import Path

from neurocast.clients.cli.exit_codes import EXIT_FAILURE, EXIT_OK, EXIT_USAGE

logger = logging.getLogger(__name__)

_FIF_SUFFIXES = (".fif", ".fif.gz")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``simulate`` command."""
    parser = subparsers.add_parser(
        "simulate",
        help="write a simulated MEG/EEG recording (FIF)",
        description=(
            "Simulate MEG and EEG with the embedded physics-based simulator (dipoles in a "
            "spherical head, MNE forward models) and write it to a FIF file with annotations "
            "'class/<name>' for blocks of activity and 'image/<id>' for image trials. The file "
            "is labelled SIMULATED in its description."
        ),
    )
    parser.add_argument("--out", required=True, type=Path, help="FIF file to write (*.fif)")
    parser.add_argument("--seconds", required=True, type=float, help="duration in seconds")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--subject-seed",
        type=int,
        default=0,
        help="seed of the simulated subject: source orientations and the image-embedding map "
        "(default 0)",
    )
    parser.add_argument(
        "--sfreq", type=float, default=1000.0, help="sampling rate in Hz (default 1000)"
    )
    parser.add_argument(
        "--modality",
        choices=("eeg", "meg", "both"),
        default="both",
        help="sensors to simulate (default both)",
    )
    parser.add_argument(
        "--info",
        type=Path,
        help="FIF recording whose real sensor geometry to use (e.g. sample_audvis_raw.fif); "
        "default: 64 EEG electrodes of the 10-05 system and a VectorView-like MEG helmet",
    )
    parser.add_argument(
        "--noise-cov",
        type=Path,
        help="noise covariance (e.g. sample_audvis-cov.fif) to draw sensor noise from; its "
        "channels must cover the simulated ones (use it with --info)",
    )
    parser.add_argument(
        "--embeddings",
        type=Path,
        help=".npz with 'embeddings' and 'ids' (or a gallery file) of the images shown",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from neurocast.streaming.sources.simulator.simulator import Simulator

    out: Path = args.out
    if not out.name.endswith(_FIF_SUFFIXES):
        logger.error("--out must name a .fif file (e.g. sim_raw.fif), got %s.", out)
        return EXIT_USAGE
    if out.exists() and not args.overwrite:
        logger.error("%s exists; pass --overwrite to replace it.", out)
        return EXIT_USAGE
    if not args.seconds > 0:
        logger.error("--seconds must be positive, got %s.", args.seconds)
        return EXIT_USAGE
    for flag, path in (("--info", args.info), ("--noise-cov", args.noise_cov)):
        if path is not None and not path.is_file():
            logger.error("%s %s: no such file.", flag, path)
            return EXIT_USAGE
    if args.embeddings is not None and not args.embeddings.is_file():
        logger.error("--embeddings %s: no such file.", args.embeddings)
        return EXIT_USAGE
    try:
        sim = Simulator(
            seed=args.seed,
            subject_seed=args.subject_seed,
            sfreq=args.sfreq,
            modality=args.modality,
            info_path=None if args.info is None else str(args.info),
            noise_cov_path=None if args.noise_cov is None else str(args.noise_cov),
            embeddings_path=None if args.embeddings is None else str(args.embeddings),
        )
    except ValueError as exc:
        logger.error("%s", exc)
        return EXIT_USAGE

    total = max(1, round(args.seconds * sim.sfreq))
    # disable=None: a progress bar on terminals only, not in logs
    with tqdm(
        total=total, unit="sample", unit_scale=True, desc="simulating", leave=False, disable=None
    ) as bar:
        raw = sim.simulate_raw(args.seconds, progress=bar.update)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        raw.save(out, overwrite=True, verbose="error")
    except OSError as exc:
        logger.error("Cannot write %s: %s", out, exc)
        return EXIT_FAILURE
    counts = Counter(raw.get_channel_types())
    print(
        f"Wrote {out}: SIMULATED, {len(raw.ch_names)} channels "
        f"({', '.join(f'{n} {t}' for t, n in counts.items())}), {sim.sfreq:g} Hz, "
        f"{raw.n_times / sim.sfreq:g} s, {len(raw.annotations)} annotations."
    )
    return EXIT_OK
