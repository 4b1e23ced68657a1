"""The original design's dataset paths (`/fine_tuning/upload-dataset`, `/fine_tuning/datasets`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from studio.api.deps import DatasetsDep, PrincipalDep
from studio.api.idempotency import HashedForm, IdempotentDep
from studio.api.multipart import MultipartUpload
from studio.api.routes.files import declared_file_bytes
from studio.schemas.common import Page
from studio.schemas.datasets import DatasetPreview, DatasetPublic, ListOrder

router = APIRouter(prefix="/fine_tuning", tags=["datasets"])


@router.post("/upload-dataset", status_code=201, response_model=DatasetPublic)
async def upload_dataset(
    request: Request, principal: PrincipalDep, datasets: DatasetsDep, once: IdempotentDep
) -> Response:
    """Multipart `file` (`purpose` optional, `fine-tune`; `base_model` optional: its tokenizer counts).

    `Idempotency-Key`: the same form again gives the same dataset; another form under the key, a 409.
    """
    form = HashedForm(MultipartUpload(request, file_field="file"))

    async def create() -> DatasetPublic:
        staged = await datasets.receive(
            client_id=principal.client.id,
            chunks=form.chunks(),
            limits=principal.client.limits,
            at_least_bytes=declared_file_bytes(request),
        )
        fields = form.form.fields
        return DatasetPublic.of(
            await datasets.ingest(
                staged,
                filename=form.form.filename,
                purpose=fields.get("purpose", "fine-tune"),
                model=fields.get("base_model") or fields.get("model"),
                allowed_base_models=principal.client.limits.allowed_base_models,
            )
        )

    return await once.streamed(create, form, status_code=201)


@router.get("/datasets")
async def list_datasets(
    principal: PrincipalDep,
    datasets: DatasetsDep,
    after: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    order: ListOrder = "desc",
) -> Page[DatasetPublic]:
    rows, has_more = await datasets.list(client_id=principal.client.id, after=after, limit=limit, order=order)
    return Page(data=[DatasetPublic.of(row) for row in rows], has_more=has_more)


@router.get("/datasets/{dataset_id}")
async def get_dataset(dataset_id: str, principal: PrincipalDep, datasets: DatasetsDep) -> DatasetPublic:
    return DatasetPublic.of(await datasets.get(client_id=principal.client.id, dataset_id=dataset_id))


@router.get("/datasets/{dataset_id}/preview")
async def preview_dataset(
    dataset_id: str,
    principal: PrincipalDep,
    datasets: DatasetsDep,
    rows: Annotated[int, Query(ge=1, le=100)] = 5,
) -> DatasetPreview:
    return await datasets.preview(client_id=principal.client.id, dataset_id=dataset_id, rows=rows)


@router.delete("/datasets/{dataset_id}", status_code=204)
async def delete_dataset(dataset_id: str, principal: PrincipalDep, datasets: DatasetsDep) -> None:
    await datasets.delete(client_id=principal.client.id, dataset_id=dataset_id)
