"""OpenAI's Models API: what a client can name in `model` (serving status comes with deployments)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from studio.api.deps import ModelsDep, PrincipalDep, ServicesDep
from studio.api.routes.files import attachment_disposition
from studio.errors import Unavailable
from studio.schemas.common import Page
from studio.schemas.models import ModelDeleted, ModelPublic
from studio.services.model_download import DownloadFormat

router = APIRouter(prefix="/v1", tags=["models"])


@router.get("/models")
async def list_models(principal: PrincipalDep, models: ModelsDep) -> Page[ModelPublic]:
    return Page(data=await models.list(principal.client))


# Before `/models/{model_id:path}`, which would otherwise take `.../content` as part of the id.
@router.get("/models/{model_id:path}/content", response_class=StreamingResponse)
async def model_content(
    model_id: str,
    principal: PrincipalDep,
    services: ServicesDep,
    format: Annotated[DownloadFormat | None, Query()] = None,
) -> StreamingResponse:
    """Download one of the client's fine-tuned models as a tar, streamed: a LoRA fine-tune's adapter
    (`format=merged`: base + adapter merged into full safetensors), a full fine-tune's model."""
    if services.downloads is None:
        raise Unavailable("model downloads are not available here")
    archive = await services.downloads.open(principal.client, model_id, format=format)
    return StreamingResponse(
        archive.chunks,
        media_type=archive.media_type,
        headers={
            "Content-Length": str(archive.size),
            "Content-Disposition": attachment_disposition(archive.filename),
            # Sent as it is: the gzip middleware would spend the ingress's CPU squeezing weights that
            # barely compress, and drop the Content-Length that lets a client show its progress.
            "Content-Encoding": "identity",
        },
    )


@router.get("/models/{model_id:path}")
async def retrieve_model(model_id: str, principal: PrincipalDep, models: ModelsDep) -> ModelPublic:
    return await models.get(principal.client, model_id)


@router.delete("/models/{model_id:path}")
async def delete_model(model_id: str, principal: PrincipalDep, models: ModelsDep) -> ModelDeleted:
    """Delete one of the client's fine-tuned models (refused while it is deployed)."""
    return await models.delete(principal.client, model_id)
