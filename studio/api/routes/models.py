"""OpenAI's Models API: what a client can name in `model` (serving status comes with deployments)."""

from __future__ import annotations

from fastapi import APIRouter

from studio.api.deps import ModelsDep, PrincipalDep
from studio.schemas.common import Page
from studio.schemas.models import ModelDeleted, ModelPublic

router = APIRouter(prefix="/v1", tags=["models"])


@router.get("/models")
async def list_models(principal: PrincipalDep, models: ModelsDep) -> Page[ModelPublic]:
    return Page(data=await models.list(principal.client))


@router.get("/models/{model_id:path}")
async def retrieve_model(model_id: str, principal: PrincipalDep, models: ModelsDep) -> ModelPublic:
    return await models.get(principal.client, model_id)


@router.delete("/models/{model_id:path}")
async def delete_model(model_id: str, principal: PrincipalDep, models: ModelsDep) -> ModelDeleted:
    """Delete one of the client's fine-tuned models (refused while it is deployed)."""
    return await models.delete(principal.client, model_id)
