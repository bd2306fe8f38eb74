"""The models a server offers: artifacts found on disk, their metadata and their galleries."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

from fastapi import status

from neurocast.models.serving.artifact import Artifact, list_artifacts
from neurocast.models.serving.gallery import GALLERY_SUFFIX, Gallery, GalleryError
from neurocast.models.serving.runtime import OnnxWindowModel, loaded_sessions
from neurocast.server.config import Settings
from neurocast.server.errors import ApiError
from neurocast.server.schemas import ModelInfo, ModelInput
from neurocast.streaming.engine.pipeline import WindowModel

logger = logging.getLogger(__name__)

#: Where the models shipped with the package live (the demo models).
PACKAGED_DIR = Path(str(files("neurocast.models"))) / "artifacts"


@dataclass(frozen=True)
class ModelEntry:
    """One installed model.

    Attributes
    ----------
    info : ModelInfo
        What ``GET /v1/models/{id}`` shows.
    load : callable
        Returns a ready :class:`~neurocast.streaming.engine.pipeline.WindowModel` (ONNX sessions are
        shared process-wide by the runtime, so calling it again is cheap).
    gallery : object | None
        The image gallery of a retrieval model (serves thumbnails), else None.
    sha256 : str | None
        Content hash of the artifact (finds its runtime session).
    """

    info: ModelInfo
    load: Callable[[], WindowModel]
    gallery: Any = None
    sha256: str | None = None


class ModelRegistry:
    """Installed models by id.

    Parameters
    ----------
    entries : iterable of ModelEntry
        The models; ids must be unique (a later duplicate is ignored with a warning).
    """

    def __init__(self, entries: Iterable[ModelEntry] = ()) -> None:
        self._entries: dict[str, ModelEntry] = {}
        for entry in entries:
            if entry.info.id in self._entries:
                logger.warning("Model id %r found twice; keeping the first.", entry.info.id)
                continue
            self._entries[entry.info.id] = entry

    @classmethod
    def discover(cls, models_dir: Path | None, *, packaged: bool = True) -> ModelRegistry:
        """The artifacts of ``models_dir`` and, if ``packaged``, those shipped in the package.

        A model's id is its name; a name found twice keeps the first (``models_dir`` comes
        first, so a user's model shadows a packaged one). Files that are not valid artifacts
        are skipped with a warning saying why. A retrieval model's gallery is the file
        ``<gallery>.npz`` in the same folder; without it results carry no top-k images.
        """
        folders: list[tuple[Path, bool]] = []
        if models_dir is not None:
            folders.append((Path(models_dir), False))
        if packaged and PACKAGED_DIR.is_dir():
            folders.append((PACKAGED_DIR, True))
        entries = []
        for folder, is_packaged in folders:
            for artifact in list_artifacts(folder).artifacts:
                entries.append(_entry(artifact, folder, is_packaged))
        return cls(entries)

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelRegistry:
        """The artifacts under ``settings.models_dir`` and, if enabled, the packaged ones."""
        return cls.discover(settings.models_dir, packaged=settings.packaged_models)

    def ids(self) -> list[str]:
        """Model ids, sorted."""
        return sorted(self._entries)

    def infos(self) -> list[ModelInfo]:
        """Metadata of every model, sorted by id."""
        return [self.info(i) for i in self.ids()]

    def info(self, model_id: str) -> ModelInfo:
        """Metadata of one model (404 :class:`ApiError` when unknown)."""
        entry = self._entries.get(model_id)
        if entry is None:
            raise ApiError(
                status.HTTP_404_NOT_FOUND,
                "unknown_model",
                f"No model {model_id!r}; list the installed ones with GET /v1/models.",
            )
        if entry.info.provider is None and entry.sha256 is not None:
            loaded = {s.artifact.sha256: s.provider for s in loaded_sessions()}
            if entry.sha256 in loaded:
                return entry.info.model_copy(update={"provider": loaded[entry.sha256]})
        return entry.info

    def window_model(self, model_id: str) -> WindowModel:
        """A ready decoder for a model named in a request (422 :class:`ApiError` if unknown)."""
        entry = self._entries.get(model_id)
        if entry is None:
            known = ", ".join(self.ids()) or "none installed"
            raise ApiError(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                "unknown_model",
                f"Unknown model {model_id!r} (installed: {known}); see GET /v1/models.",
            )
        return entry.load()

    def window_models(self, model_ids: Iterable[str]) -> list[WindowModel]:
        """Ready decoders for several models (422 :class:`ApiError` for an unknown id)."""
        return [self.window_model(m) for m in model_ids]

    def thumbnail(self, gallery: str, image_id: str) -> tuple[bytes, str]:
        """The encoded thumbnail of a gallery image and its media type (404 when unknown)."""
        for entry in self._entries.values():
            g = entry.gallery
            if g is not None and g.name == gallery:
                try:
                    return g.thumbnail(image_id), g.thumbnail_media_type
                except KeyError:
                    break
        raise ApiError(
            status.HTTP_404_NOT_FOUND,
            "unknown_image",
            f"No thumbnail for image {image_id!r} in gallery {gallery!r}.",
        )


def _entry(artifact: Artifact, folder: Path, packaged: bool) -> ModelEntry:
    meta = artifact.metadata
    gallery = None
    if meta.task == "retrieval" and meta.output.gallery:
        path = folder / f"{meta.output.gallery}{GALLERY_SUFFIX}"
        try:
            gallery = Gallery.load(path)
        except (OSError, GalleryError) as exc:
            logger.warning(
                "Model %s: no gallery (%s); results carry no top-k images.", meta.name, exc
            )
    spec = meta.input
    info = ModelInfo(
        id=meta.name,
        name=meta.name,
        version=meta.version,
        task=meta.task,
        kind=meta.kind,
        input=ModelInput(
            ch_names=spec.ch_names,
            sfreq_hz=spec.model_sfreq_hz,
            window_s=spec.window_s,
            context_s=spec.context_s,
        ),
        packaged=packaged,
        simulated_training=meta.simulated_training_data,
        gallery=gallery.name if gallery is not None else None,
        sha256=artifact.sha256,
        provider=None,
        metadata=meta.model_dump(mode="json"),
    )
    return ModelEntry(
        info,
        lambda: OnnxWindowModel(artifact, gallery=gallery),
        gallery,
        artifact.sha256,
    )
