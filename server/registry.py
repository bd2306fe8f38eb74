"""The models a server offers: artifacts found on disk, their metadata and their galleries."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from fastapi import status

from ..streaming.pipeline import WindowModel
from .config import Settings
from .errors import ApiError
from .schemas import ModelInfo

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelEntry:
    """One installed model.

    Attributes
    ----------
    info : ModelInfo
        What ``GET /v1/models/{id}`` shows.
    load : callable
        Returns a ready :class:`~neurocast.streaming.pipeline.WindowModel` (ONNX sessions are
        shared process-wide by the runtime, so calling it again is cheap).
    gallery : object | None
        The image gallery of a retrieval model (serves thumbnails), else None.
    """

    info: ModelInfo
    load: Callable[[], WindowModel]
    gallery: Any = None


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
    def from_settings(cls, settings: Settings) -> ModelRegistry:
        """The artifacts under ``settings.models_dir`` and, if enabled, the packaged ones."""
        raise NotImplementedError

    def ids(self) -> list[str]:
        """Model ids, sorted."""
        return sorted(self._entries)

    def infos(self) -> list[ModelInfo]:
        """Metadata of every model, sorted by id."""
        return [self._entries[i].info for i in self.ids()]

    def info(self, model_id: str) -> ModelInfo:
        """Metadata of one model (404 :class:`ApiError` when unknown)."""
        entry = self._entries.get(model_id)
        if entry is None:
            raise ApiError(
                status.HTTP_404_NOT_FOUND,
                "unknown_model",
                f"No model {model_id!r}; list the installed ones with GET /v1/models.",
            )
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
