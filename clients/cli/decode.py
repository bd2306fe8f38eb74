"""``neurocast decode``: batch-decode a saved recording, in this process or on a server."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, cast

from neurocast.clients.cli.exit_codes import EXIT_FAILURE, EXIT_OK, EXIT_USAGE

if TYPE_CHECKING:
    from neurocast.wire.schemas import ResultFormat


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``decode`` command."""
    parser = subparsers.add_parser(
        "decode",
        help="batch-decode a recording to a results file",
        description=(
            "Decode every window of a recording (any format mne.io.read_raw reads) with the "
            "windows and preprocessing of live decoding, and write the results as Parquet, NPZ "
            "or JSON (chosen by the --out suffix). Runs in this process, or on a server with "
            "--url (the file is uploaded). With --ray, many recordings are decoded on a Ray "
            "cluster into one .parquet file each in the --out folder."
        ),
    )
    parser.add_argument(
        "file", type=Path, nargs="+", metavar="FILE", help="the recording (several with --ray)"
    )
    parser.add_argument(
        "--model", "-m", action="append", required=True, dest="models", help="model id (repeatable)"
    )
    parser.add_argument(
        "--out", "-o", type=Path, required=True, help="results file (.parquet, .npz or .json)"
    )
    parser.add_argument(
        "--stride-ms", type=float, default=25.0, help="time between windows in ms (default 25)"
    )
    parser.add_argument("--models-dir", type=Path, help="directory of model artifacts (local)")
    parser.add_argument("--url", help="decode on this server instead of locally")
    parser.add_argument("--token", help="the server's token (default NEUROCAST_TOKEN)")
    cluster = parser.add_argument_group("Ray cluster (needs the ray extra)")
    cluster.add_argument(
        "--ray", action="store_true", help="decode on a Ray cluster; --out is then a folder"
    )
    cluster.add_argument(
        "--ray-address",
        help="cluster to join ('auto', 'ray://head:10001'; default NEUROCAST_RAY_ADDRESS, else "
        "a local one)",
    )
    cluster.add_argument("--workers", type=int, default=2, help="decoding workers (default 2)")
    cluster.add_argument(
        "--gpus-per-worker", type=float, default=0.0, help="GPU fraction per worker (default 0)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Decode and write the results; exit code 2 for bad input, 1 for a failed decode."""
    from neurocast.wire.tables import FORMATS

    if args.ray:
        from neurocast.server.cluster.cli import run_decode

        return run_decode(
            args.file,
            args.models,
            args.out,
            args,
            stride_s=args.stride_ms / 1e3,
            models_dir=args.models_dir,
        )
    if len(args.file) > 1:
        print("neurocast decode: several recordings need --ray", file=sys.stderr)
        return EXIT_USAGE
    args.file = args.file[0]
    fmt = args.out.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        print(
            f"neurocast decode: --out must end in .parquet, .npz or .json, got {args.out.name!r}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if not args.file.is_file():
        print(f"neurocast decode: no file {args.file}", file=sys.stderr)
        return EXIT_USAGE
    if args.url:
        return _remote(args, cast("ResultFormat", fmt))
    return _local(args)


def _local(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from neurocast.catalog import UnknownModelError, load_models
    from neurocast.streaming.engine import batch
    from neurocast.streaming.engine.results import Result
    from neurocast.wire.tables import write_results

    try:
        models = load_models(args.models, args.models_dir)
        recording = batch.load_recording(args.file)
        batch.check_models(recording.stream, models)
    except (UnknownModelError, batch.RecordingError) as exc:
        print(f"neurocast decode: {exc}", file=sys.stderr)
        return EXIT_USAGE
    stride_s = args.stride_ms / 1e3
    total = batch.n_windows(recording.data.shape[1], recording.stream.sfreq, stride_s)
    windows = batch.WindowCounter()
    with tqdm(total=total, unit="window", desc=args.file.name, file=sys.stderr) as bar:

        def progress(result: Result) -> None:
            if windows.add(result):
                bar.update()

        results = batch.decode_recording(recording, models, stride_s=stride_s, on_result=progress)
    write_results(results, args.out, simulated=recording.stream.simulated)
    tag = " (SIMULATED recording)" if recording.stream.simulated else ""
    print(f"{len(results)} results from {windows.n_windows} windows written to {args.out}{tag}")
    return EXIT_OK


def _remote(args: argparse.Namespace, fmt: ResultFormat) -> int:
    from tqdm import tqdm

    from neurocast.clients.calls import NeurocastError
    from neurocast.clients.cli.http_log import quiet_http_log
    from neurocast.clients.client import Client
    from neurocast.wire.schemas import FINISHED_JOB_STATES

    quiet_http_log(args)

    with Client(args.url, token=args.token) as client:
        try:
            job = client.submit_decode(args.file, models=args.models, stride_s=args.stride_ms / 1e3)
        except NeurocastError as exc:
            print(f"neurocast decode: {exc.detail}", file=sys.stderr)
            return EXIT_USAGE if 400 <= exc.status_code < 500 else EXIT_FAILURE
        with tqdm(
            total=1.0,
            unit="",
            desc=args.file.name,
            file=sys.stderr,
            bar_format="{l_bar}{bar}| {elapsed}",
        ) as bar:
            while job.status not in FINISHED_JOB_STATES:
                job = client.job(job.id, wait_s=0.5)  # long poll: returns early when done
                bar.n = job.progress
                bar.refresh()
        if job.status != "done":
            print(f"neurocast decode: job {job.status}: {job.error}", file=sys.stderr)
            return EXIT_FAILURE
        client.download_results(job.id, fmt, args.out)
    tag = " (SIMULATED recording)" if job.simulated else ""
    print(f"{job.n_results} results from {job.n_windows_done} windows written to {args.out}{tag}")
    return EXIT_OK
