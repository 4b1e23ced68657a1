"""OpenAI's Uploads API: `/v1/uploads`, `/parts`, `/complete`, `/cancel`."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from studio.api.deps import PrincipalDep, UploadsDep
from studio.api.idempotency import HashedForm, IdempotentDep
from studio.api.multipart import MultipartUpload
from studio.api.routes.files import declared_file_bytes
from studio.schemas.datasets import FilePublic, UploadComplete, UploadCreate, UploadPartPublic, UploadPublic

router = APIRouter(prefix="/v1/uploads", tags=["uploads"])


@router.post("", response_model=UploadPublic)
async def create_upload(
    body: UploadCreate, principal: PrincipalDep, uploads: UploadsDep, once: IdempotentDep
) -> Response:
    """Start an upload (`Idempotency-Key`: once per key)."""

    async def create() -> UploadPublic:
        limits = principal.client.limits
        return UploadPublic.of(await uploads.create(client_id=principal.client.id, data=body, limits=limits))

    return await once(create)


@router.post("/{upload_id}/parts", response_model=UploadPartPublic)
async def add_part(
    upload_id: str, request: Request, principal: PrincipalDep, uploads: UploadsDep, once: IdempotentDep
) -> Response:
    """Multipart `data`: one part of at most the part limit (64 MiB by default).

    `Idempotency-Key`: the same part again gives the same part object (not stored twice).
    """
    form = HashedForm(MultipartUpload(request, file_field="data"))

    async def create() -> UploadPartPublic:
        part = await uploads.add_part(
            client_id=principal.client.id,
            upload_id=upload_id,
            chunks=form.chunks(),
            at_least_bytes=declared_file_bytes(request),
        )
        return UploadPartPublic.of(part)

    return await once.streamed(create, form)


@router.post("/{upload_id}/complete")
async def complete_upload(
    upload_id: str, body: UploadComplete, principal: PrincipalDep, uploads: UploadsDep
) -> UploadPublic:
    upload, dataset = await uploads.complete(client_id=principal.client.id, upload_id=upload_id, data=body)
    return UploadPublic.of(upload, FilePublic.of(dataset))


@router.post("/{upload_id}/cancel")
async def cancel_upload(upload_id: str, principal: PrincipalDep, uploads: UploadsDep) -> UploadPublic:
    return UploadPublic.of(await uploads.cancel(client_id=principal.client.id, upload_id=upload_id))
