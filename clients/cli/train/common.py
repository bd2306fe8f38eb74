"""What every ``neurocast train`` subcommand shares: turning training errors into exit codes."""

from __future__ import annotations

import logging
from collections.abc import Callable

from neurocast.clients.cli.exit_codes import EXIT_FAILURE, EXIT_OK, EXIT_USAGE

logger = logging.getLogger(__name__)


def run_training(train: Callable[[], str]) -> int:
    """Run a training command's work and turn its errors into exit codes.

    Parameters
    ----------
    train : callable
        Trains and exports; returns the line printed on success.

    Returns
    -------
    code : int
        ``EXIT_OK``; ``EXIT_USAGE`` when the input is wrong (missing file, bad value, invalid
        artifact or gallery); ``EXIT_FAILURE`` when the exported graph does not reproduce the
        trained model. The error is logged.
    """
    from neurocast.models.serving.gallery import GalleryError
    from neurocast.models.serving.schema import ArtifactError
    from neurocast.models.training.export import ExportCheckError

    try:
        summary = train()
    except (FileNotFoundError, ValueError, ArtifactError, GalleryError) as exc:
        logger.error("%s", exc)
        return EXIT_USAGE
    except ExportCheckError as exc:
        logger.error("%s", exc)
        return EXIT_FAILURE
    print(summary)
    return EXIT_OK
