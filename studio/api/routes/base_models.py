"""The base-model registry: admins manage it; clients list what they may fine-tune."""

from __future__ import annotations

from fastapi import APIRouter

from studio.api.deps import AdminDep, BaseModelsDep, PrincipalDep
from studio.domain.limits import model_allowed
from studio.schemas.base_models import BaseModelCreate, BaseModelPublic
from studio.schemas.common import Page

admin_router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[AdminDep])
router = APIRouter(prefix="/v1/fine_tuning", tags=["fine-tuning"])


@admin_router.post("/base-models", status_code=201)
async def register_base_model(body: BaseModelCreate, models: BaseModelsDep) -> BaseModelPublic:
    return BaseModelPublic.of(await models.register(body))


@admin_router.get("/base-models")
async def list_all_base_models(models: BaseModelsDep) -> Page[BaseModelPublic]:
    return Page(data=[BaseModelPublic.of(entry) for entry in await models.list()])


@admin_router.delete("/base-models/{name:path}", status_code=204)
async def delete_base_model(name: str, models: BaseModelsDep) -> None:
    await models.delete(name)


@router.get("/base_models")
async def list_base_models(principal: PrincipalDep, models: BaseModelsDep) -> Page[BaseModelPublic]:
    """The base models this client may fine-tune."""
    allowed = principal.client.limits.allowed_base_models
    entries = [entry for entry in await models.list() if model_allowed(allowed, entry.id)]
    return Page(data=[BaseModelPublic.of(entry) for entry in entries])
