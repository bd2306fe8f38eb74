"""Keeping httpx's request log out of the output of commands that talk to a server."""

from __future__ import annotations

import argparse
import logging


def quiet_http_log(args: argparse.Namespace) -> None:
    """Keep httpx's one line per request out of a command's output unless ``--verbose``."""
    if not getattr(args, "verbose", False):
        logging.getLogger("httpx").setLevel(logging.WARNING)
