"""What ``neurocast serve --ray`` and ``neurocast decode --ray`` run.

The commands declare their ``--ray`` options themselves and import this module only when
``--ray`` is given; Ray is imported by the functions that need it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from neurocast.clients.cli.exit_codes import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from neurocast.server.cluster import RAY_MISSING, ray_available
from neurocast.server.cluster.settings import ClusterSettings


def cluster_settings(args: argparse.Namespace) -> ClusterSettings:
    """The environment's cluster settings with ``--ray-address`` applied."""
    settings = ClusterSettings()
    if getattr(args, "ray_address", None):
        settings = settings.model_copy(update={"address": args.ray_address})
    return settings


def check_ray(command: str) -> int | None:
    """``EXIT_USAGE`` (after saying why) when Ray is missing, else None."""
    if ray_available():
        return None
    print(f"neurocast {command}: {RAY_MISSING}", file=sys.stderr)
    return EXIT_USAGE


def run_decode(
    files: list[Path],
    models: list[str],
    out_dir: Path,
    args: argparse.Namespace,
    *,
    stride_s: float = 0.025,
    models_dir: Path | None = None,
) -> int:
    """``neurocast decode --ray FILE... --out DIR``: one Parquet file per recording.

    Returns
    -------
    code : int
        0 when every recording was decoded, 1 when one failed, 2 for bad usage.
    """
    missing = check_ray("decode")
    if missing is not None:
        return missing
    if out_dir.suffix:
        print(
            f"neurocast decode: with --ray, --out is a folder (one .parquet per recording), "
            f"got {out_dir.name!r}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    from tqdm import tqdm

    from neurocast.server.cluster.batch import decode_recordings
    from neurocast.server.cluster.remote import connect

    connect(cluster_settings(args))
    with tqdm(total=len(files), unit="file", desc="recordings", file=sys.stderr) as bar:
        outcomes = decode_recordings(
            files,
            models,
            out_dir,
            models_dir=models_dir,
            stride_s=stride_s,
            workers=args.workers,
            num_gpus=args.gpus_per_worker,
            on_done=lambda o, k, n: bar.update(),
        )
    failed = [o for o in outcomes if o.error is not None]
    for o in failed:
        print(f"neurocast decode: {Path(o.path).name}: {o.error}", file=sys.stderr)
    n_windows = sum(o.n_windows for o in outcomes)
    print(
        f"{len(outcomes) - len(failed)} of {len(outcomes)} recordings decoded "
        f"({n_windows} windows) into {out_dir}"
    )
    return EXIT_FAILURE if failed else EXIT_OK
