"""``/v1/galleries``: thumbnails of the images retrieval models compare with."""

from __future__ import annotations

from fastapi import APIRouter, Response

from neurocast.server.deps import StateDep
from neurocast.server.routers.common import error

router = APIRouter(prefix="/galleries", tags=["models"])


@router.get(
    "/{gallery}/thumbnails/{image_id}",
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
