"""The artifacts of a folder: the valid ones, and the files refused with the reason."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from neurocast.models.serving.artifact import Artifact, load_artifact
from neurocast.models.serving.schema import ARTIFACT_SUFFIX, ArtifactError

logger = logging.getLogger(__name__)


@dataclass
class InvalidArtifact:
    """A file in an artifact folder that could not be loaded, and why."""

    path: Path
    reason: str


@dataclass
class ArtifactListing:
    """The artifacts of a folder: the valid ones and the files refused, with reasons."""

    artifacts: list[Artifact] = field(default_factory=list)
    invalid: list[InvalidArtifact] = field(default_factory=list)


def list_artifacts(directory: str | Path) -> ArtifactListing:
    """Load every ``*.onnx`` file of a folder (not recursive), keeping going past bad ones.

    Parameters
    ----------
    directory : str | Path
        The folder.

    Returns
    -------
    listing : ArtifactListing
        ``artifacts``: the valid ones, sorted by file name; ``invalid``: every other
        ``.onnx`` file with the reason it was refused (also logged as a warning).

    Raises
    ------
    ArtifactError
        If ``directory`` is not a folder.
    """
    d = Path(directory)
    if not d.is_dir():
        raise ArtifactError(
            f"Artifact folder {d} does not exist or is not a folder; create it or point the "
            "setting at the folder that holds the .onnx files."
        )
    listing = ArtifactListing()
    for p in sorted(d.glob(f"*{ARTIFACT_SUFFIX}")):
        try:
            listing.artifacts.append(load_artifact(p))
        except (ArtifactError, OSError) as err:
            reason = str(err)
            logger.warning("Skipping %s: %s", p, reason)
            listing.invalid.append(InvalidArtifact(p, reason))
    return listing
