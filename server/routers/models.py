"""``/v1/models``: the installed model artifacts; ``/v1/galleries``: retrieval thumbnails."""

from __future__ import annotations

from fastapi import Response

from neurocast.server.deps import StateDep
from neurocast.server.routers.common import error, protected_router
from neurocast.server.schemas import ModelInfo, ModelList

router = protected_router("models")


@router.get("/v1/models", response_model=ModelList, summary="List installed models")
def list_models(state: StateDep) -> ModelList:
    """Every model artifact the server found, with its metadata."""
    return ModelList(models=state.registry.infos())


@router.get(
    "/v1/models/{model_id}",
    response_model=ModelInfo,
    summary="One model's metadata",
    responses=error(404, "No model with this id."),
)
def get_model(model_id: str, state: StateDep) -> ModelInfo:
    """The metadata of one model: task, expected input, outputs, provenance and metrics."""
    return state.registry.info(model_id)


@router.get(
    "/v1/galleries/{gallery}/thumbnails/{image_id}",
    summary="Thumbnail of a gallery image",
    response_class=Response,
    responses={
        200: {"content": {"image/jpeg": {}, "image/png": {}}, "description": "The image."},
        **error(404, "No such gallery or image."),
    },
)
def thumbnail(gallery: str, image_id: str, state: StateDep) -> Response:
    """A small image of a gallery entry, as linked by retrieval results' ``thumbnail_url``."""
    data, media_type = state.registry.thumbnail(gallery, image_id)
    return Response(data, media_type=media_type, headers={"Cache-Control": "max-age=3600"})
