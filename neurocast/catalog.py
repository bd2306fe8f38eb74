"""The installed model artifacts: found in a models folder and in the package, by name.

The decoding service lists and loads its models from here, and so does ``neurocast decode``
when it decodes in its own process.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from neurocast.models.serving import Artifact, list_artifacts
from neurocast.models.serving.gallery import GALLERY_SUFFIX, Gallery, GalleryError
from neurocast.models.serving.runtime import OnnxWindowModel
from neurocast.streaming.engine.pipeline import WindowModel

logger = logging.getLogger(__name__)

#: Where the models shipped with the package live (the demo models).
PACKAGED_DIR = Path(str(files("neurocast.models"))) / "artifacts"


class UnknownModelError(LookupError):
    """A model id that no installed artifact has; the message lists the installed ones."""

    def __init__(self, model_id: str, known: Iterable[str]) -> None:
        self.model_id = model_id
        self.known = sorted(known)
        listed = ", ".join(self.known) or "none installed"
        super().__init__(f"Unknown model {model_id!r} (installed: {listed})")


@dataclass(frozen=True)
class InstalledModel:
    """One artifact found on disk.

    Attributes
    ----------
    artifact : Artifact
        The validated artifact.
    packaged : bool
        True for the models shipped with the package.
    gallery : Gallery | None
        The image gallery of a retrieval model, when its file was found next to it.
    """

    artifact: Artifact
    packaged: bool
    gallery: Gallery | None = None

    @property
    def name(self) -> str:
        """The model's id."""
        return self.artifact.metadata.name

    def load(self, threads: int | None = None) -> WindowModel:
        """A ready decoder; ONNX sessions are shared process-wide, so loading again is cheap."""
        return OnnxWindowModel(self.artifact, gallery=self.gallery, threads=threads)


def discover(models_dir: Path | None, *, packaged: bool = True) -> Iterator[InstalledModel]:
    """The artifacts of ``models_dir`` and, if ``packaged``, those shipped in the package.

    ``models_dir`` comes first, so that a user's model shadows a packaged one of the same
    name. Files that are not valid artifacts are skipped with a warning saying why. A retrieval
    model's gallery is the file ``<gallery>.npz`` in the same folder; without it results carry
    no top-k images.
    """
    folders: list[tuple[Path, bool]] = []
    if models_dir is not None:
        folders.append((Path(models_dir), False))
    if packaged and PACKAGED_DIR.is_dir():
        folders.append((PACKAGED_DIR, True))
    for folder, is_packaged in folders:
        for artifact in list_artifacts(folder).artifacts:
            yield InstalledModel(artifact, is_packaged, _gallery(artifact, folder))


def by_name(models: Iterable[InstalledModel]) -> dict[str, InstalledModel]:
    """Models by id; a name found twice keeps the first (with a warning)."""
    found: dict[str, InstalledModel] = {}
    for model in models:
        if model.name in found:
            logger.warning("Model id %r found twice; keeping the first.", model.name)
            continue
        found[model.name] = model
    return found


def load_models(
    model_ids: Iterable[str], models_dir: Path | None, *, packaged: bool = True
) -> list[WindowModel]:
    """Ready decoders for the given ids, found as :func:`discover` finds them.

    Raises
    ------
    UnknownModelError
        For an id no installed artifact has.
    """
    installed = by_name(discover(models_dir, packaged=packaged))
    missing = [m for m in model_ids if m not in installed]
    if missing:
        raise UnknownModelError(missing[0], installed)
    return [installed[m].load() for m in model_ids]


def _gallery(artifact: Artifact, folder: Path) -> Gallery | None:
    meta = artifact.metadata
    if meta.task != "retrieval" or not meta.output.gallery:
        return None
    try:
        return Gallery.load(folder / f"{meta.output.gallery}{GALLERY_SUFFIX}")
    except (OSError, GalleryError) as exc:
        logger.warning("Model %s: no gallery (%s); results carry no top-k images.", meta.name, exc)
        return None
