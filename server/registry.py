"""The models a server offers: the installed artifacts, their metadata and their galleries."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from neurocast.catalog import InstalledModel, by_name, discover
from neurocast.models.serving.runtime import loaded_sessions
from neurocast.server.exceptions import InvalidInput, NotFound
from neurocast.streaming.engine.pipeline import WindowModel
from neurocast.wire.schemas import ModelInfo, ModelInput


class ModelRegistry:
    """Installed models by id.

    Parameters
    ----------
    models : iterable of InstalledModel
        The models; ids must be unique (a later duplicate is ignored with a warning).
    threads : int | None
        Intra-op threads of the decoders it loads (None: the runtime's default).
    """

    def __init__(self, models: Iterable[InstalledModel] = (), threads: int | None = None) -> None:
        self._models = by_name(models)
        self._infos = {name: _info(m) for name, m in self._models.items()}
        self._threads = threads

    @classmethod
    def discover(
        cls, models_dir: Path | None, *, packaged: bool = True, threads: int | None = None
    ) -> ModelRegistry:
        """The artifacts of ``models_dir`` and, if ``packaged``, those shipped in the package.

        See :func:`neurocast.catalog.discover`: a model in ``models_dir`` shadows a packaged
        one of the same name, and invalid files are skipped with a warning.
        """
        return cls(discover(models_dir, packaged=packaged), threads)

    def ids(self) -> list[str]:
        """Model ids, sorted."""
        return sorted(self._models)

    def infos(self) -> list[ModelInfo]:
        """Metadata of every model, sorted by id."""
        return [self.info(i) for i in self.ids()]

    def info(self, model_id: str) -> ModelInfo:
        """Metadata of one model, with its execution provider once it is loaded.

        Raises
        ------
        NotFound
            When no model has this id.
        """
        info = self._infos.get(model_id)
        if info is None:
            raise NotFound(
                "unknown_model",
                f"No model {model_id!r}; list the installed ones with GET /v1/models.",
            )
        if info.provider is None:
            loaded = {s.artifact.sha256: s.provider for s in loaded_sessions()}
            if info.sha256 in loaded:
                return info.model_copy(update={"provider": loaded[info.sha256]})
        return info

    def check_ids(self, model_ids: Iterable[str]) -> list[str]:
        """The ids a request names, once each is known to be installed.

        Raises
        ------
        InvalidInput
            ``unknown_model`` for an id no installed model has.
        """
        ids = list(model_ids)
        for model_id in ids:
            if model_id not in self._models:
                known = ", ".join(self.ids()) or "none installed"
                raise InvalidInput(
                    "unknown_model",
                    f"Unknown model {model_id!r} (installed: {known}); see GET /v1/models.",
                )
        return ids

    def window_models(self, model_ids: Iterable[str]) -> list[WindowModel]:
        """Ready decoders for the models a request names.

        Raises
        ------
        InvalidInput
            ``unknown_model`` for an id no installed model has.
        """
        return [self._models[m].load(self._threads) for m in self.check_ids(model_ids)]

    def thumbnail(self, gallery: str, image_id: str) -> tuple[bytes, str]:
        """The encoded thumbnail of a gallery image and its media type.

        Raises
        ------
        NotFound
            When no model has this gallery, or the gallery has no such image.
        """
        for model in self._models.values():
            g = model.gallery
            if g is not None and g.name == gallery:
                try:
                    return g.thumbnail(image_id), g.thumbnail_media_type
                except KeyError:
                    break
        raise NotFound(
            "unknown_image", f"No thumbnail for image {image_id!r} in gallery {gallery!r}."
        )


def _info(model: InstalledModel) -> ModelInfo:
    meta = model.artifact.metadata
    spec = meta.input
    return ModelInfo(
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
        packaged=model.packaged,
        simulated_training=meta.simulated_training_data,
        gallery=model.gallery.name if model.gallery is not None else None,
        sha256=model.artifact.sha256,
        provider=None,
        metadata=_without_paths(meta.model_dump(mode="json")),
    )


# an absolute path (POSIX or Windows) not glued to a word: "/home/u/data/sub-01_raw.fif"
_ABSOLUTE_PATH = re.compile(
    r"(?<![\w.])(?:[A-Za-z]:)?[/\\](?:[^\s;,()'\"/\\]+[/\\])*([^\s;,()'\"/\\]+)"
)


def _without_paths(metadata: dict[str, Any]) -> dict[str, Any]:
    """The metadata with absolute paths in its provenance cut to file names.

    Artifacts trained elsewhere may name their training files by absolute path, which tells
    clients about the training machine and nothing they can use.
    """
    provenance = metadata.get("provenance")
    if isinstance(provenance, dict):
        metadata["provenance"] = {
            k: _ABSOLUTE_PATH.sub(r"\1", v) if isinstance(v, str) else v
            for k, v in provenance.items()
        }
    return metadata
