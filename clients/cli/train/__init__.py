"""``neurocast train``: one subcommand per model family."""

from neurocast.clients.cli.train.command import register

__all__ = ["register"]
