"""The ``neurocast`` command line.

Each subcommand lives in its own module ``neurocast.clients.cli.<name>`` exposing
``register(subparsers)``, which adds its parser and sets ``func`` (returning an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import logging
from collections.abc import Sequence

from neurocast.clients.cli.exit_codes import EXIT_INTERRUPTED

COMMANDS: list[str] = [
    "demo",
    "serve",
    "decode",
    "watch",
    "simulate",
    "info",
    "replay",
    "buffer",
    "train",
    "gallery",
    "analyze",
    "evaluate",
    "record",
    "export_bids",
]


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="neurocast", description="Real-time MEG/EEG decoding: streams in, decoded results out."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"neurocast.clients.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
