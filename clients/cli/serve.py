"""``neurocast serve``: run the decoding service (REST, WebSocket, dashboard) under uvicorn."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from pydantic import ValidationError

from neurocast.clients.cli.exit_codes import EXIT_FAILURE, EXIT_OK, EXIT_USAGE

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``serve`` command."""
    parser = subparsers.add_parser(
        "serve",
        help="run the decoding service",
        description=(
            "Serve the REST API, the WebSocket result streams and the dashboard. Options "
            "override the NEUROCAST_* environment variables. Clients need the bearer token "
            "(NEUROCAST_TOKEN, or the one printed at start when none is set); NEUROCAST_AUTH=off "
            "disables auth, only on a loopback address."
        ),
    )
    parser.add_argument("--host", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="TCP port (default 8000)")
    parser.add_argument("--models-dir", type=Path, help="directory of model artifacts")
    parser.add_argument(
        "--data-root", type=Path, help="files under it may be decoded or replayed by path"
    )
    parser.add_argument(
        "--cors-origin",
        action="append",
        dest="cors_origins",
        metavar="ORIGIN",
        help="allow browser calls from this origin (repeatable; '*' for any)",
    )
    parser.add_argument("--max-upload-mb", type=float, help="upload size limit in MiB")
    parser.add_argument("--log-level", default="info", help="uvicorn log level (default info)")
    parser.add_argument(
        "--ray",
        action="store_true",
        help="run each session in its own Ray actor and allow batch jobs on the cluster "
        "(needs neurocast[ray]; cluster options: NEUROCAST_RAY_* variables)",
    )
    parser.add_argument(
        "--ray-address",
        metavar="ADDRESS",
        help="the Ray cluster to join (default NEUROCAST_RAY_ADDRESS, else a local one)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build the settings and serve until interrupted."""
    from neurocast.server.app import create_app
    from neurocast.server.config import Settings
    from neurocast.server.runner import NeurocastServer, uvicorn_config

    if args.ray or args.ray_address:
        code = _join_cluster(args)
        if code is not None:
            return code
    try:
        settings = Settings.from_env(
            host=args.host,
            port=args.port,
            models_dir=args.models_dir,
            data_root=args.data_root,
            cors_origins=args.cors_origins,
            max_upload_mb=args.max_upload_mb,
            ray=True if args.ray or args.ray_address else None,
        )
    except ValidationError as exc:
        for err in exc.errors():
            print(f"neurocast serve: {err['msg']}", file=sys.stderr)
        return EXIT_USAGE
    app = create_app(settings)
    if settings.token_generated:
        print(
            f"neurocast serve: no NEUROCAST_TOKEN set; clients must send this run's token:\n"
            f"  {settings.effective_token}\n"
            f"dashboard: http://{settings.host}:{settings.port}/dashboard/#token="
            f"{settings.effective_token}",
            file=sys.stderr,
        )
    NeurocastServer(uvicorn_config(app, settings.host, settings.port, args.log_level)).run()
    return EXIT_OK


def _join_cluster(args: argparse.Namespace) -> int | None:
    """Join the Ray cluster and start its decoder pools; an exit code when that fails."""
    from neurocast.server.cluster.cli import check_ray, cluster_settings

    missing = check_ray("serve")
    if missing is not None:
        return missing
    from neurocast.server.cluster.gateway import start_cluster

    if args.ray_address:  # the sessions' actors read the cluster settings from the environment
        os.environ["NEUROCAST_RAY_ADDRESS"] = args.ray_address
    try:
        start_cluster(cluster_settings(args), args.models_dir)
    except Exception as exc:  # an unreachable cluster, a pool that cannot start
        print(f"neurocast serve: cannot start on the Ray cluster: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return None
