"""``/v1/models``: the installed model artifacts."""

from __future__ import annotations

from fastapi import APIRouter

from neurocast.server.deps import StateDep
from neurocast.server.routers.common import error
from neurocast.wire.schemas import ModelInfo, ModelList

router = APIRouter(prefix="/models", tags=["models"])


@router.get("", response_model=ModelList, summary="List installed models")
def list_models(state: StateDep) -> ModelList:
    """Every model artifact the server found, with its metadata."""
    return ModelList(models=state.registry.infos())


@router.get(
    "/{model_id}",
    response_model=ModelInfo,
    summary="One model's metadata",
    responses=error(404, "No model with this id."),
)
def get_model(model_id: str, state: StateDep) -> ModelInfo:
    """The metadata of one model: task, expected input, outputs, provenance and metrics."""
    return state.registry.info(model_id)
