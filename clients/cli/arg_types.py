"""Argument types shared by the ``neurocast`` commands.

Each turns one command-line word into a value or raises :class:`argparse.ArgumentTypeError`,
so that argparse reports the option and the reason in its usual format (exit code 2).
"""

from __future__ import annotations

import argparse


def positive_float(text: str) -> float:
    """A number greater than zero (durations, speeds, chunk lengths)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def port_number(text: str) -> int:
    """A TCP port, 1 to 65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be between 1 and 65535, got {value}")
    return value


def event_class(text: str) -> tuple[str, str]:
    """An ``ANNOTATION=CLASS`` pair of ``--event``: the annotation of a trial and its class."""
    key, sep, value = text.partition("=")
    if not sep or not key or not value:
        raise argparse.ArgumentTypeError(
            f"--event takes ANNOTATION=CLASS (e.g. T1=hands), got {text!r}."
        )
    return key, value
