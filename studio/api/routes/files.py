"""OpenAI's Files API (`/v1/files`) for fine-tuning datasets, plus a preview."""

from __future__ import annotations

import unicodedata
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse

from studio.api.deps import DatasetsDep, PrincipalDep
from studio.api.idempotency import HashedForm, IdempotentDep
from studio.api.middleware import MULTIPART_OVERHEAD_BYTES
from studio.api.multipart import MultipartUpload
from studio.schemas.common import Page
from studio.schemas.datasets import DatasetPreview, FileDeleted, FilePublic, ListOrder

router = APIRouter(prefix="/v1", tags=["files"])
# RFC 5987 `attr-char`s besides letters, digits and "_.-~", which `quote` always keeps.
_ATTR_CHARS = "!#$&+^`|"


def attachment_disposition(filename: str) -> str:
    """Return a `Content-Disposition: attachment` value for any file name (RFC 6266).

    `filename` is an ASCII fallback (accents dropped; other characters, quotes and `%` as `_`) for old
    clients; `filename*` (RFC 5987) carries the exact name, UTF-8 and percent-encoded. Header values
    are Latin-1, so the name itself could not be sent as it is.
    """
    plain = "".join(
        char for char in unicodedata.normalize("NFKD", filename) if not unicodedata.combining(char)
    )
    fallback = "".join(char if " " <= char <= "~" and char not in '"%\\' else "_" for char in plain)
    encoded = quote(filename, safe=_ATTR_CHARS)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"


def declared_file_bytes(request: Request) -> int:
    """Return the fewest bytes the file part of a multipart body can hold, from its Content-Length.

    The form's other fields and framing take `MULTIPART_OVERHEAD_BYTES` at most, so a body declaring more
    than that carries a file of at least the rest: a write that cannot fit the client's storage quota or
    the disk is refused before its first byte. 0 when the length is not declared (chunked).
    """
    declared = request.headers.get("content-length", "")
    return max(0, int(declared) - MULTIPART_OVERHEAD_BYTES) if declared.isdigit() else 0


@router.post("/files", response_model=FilePublic)
async def create_file(
    request: Request, principal: PrincipalDep, datasets: DatasetsDep, once: IdempotentDep
) -> Response:
    """Multipart `file` + `purpose=fine-tune` (+ optional `model`: count tokens with its tokenizer).

    Small files come back validated; big ones `uploaded`. `Idempotency-Key`: the same form again gives
    the same file (its body read, not stored again); another form under the key, a 409.
    """
    form = HashedForm(MultipartUpload(request, file_field="file"))

    async def create() -> FilePublic:
        staged = await datasets.receive(
            client_id=principal.client.id,
            chunks=form.chunks(),
            limits=principal.client.limits,
            at_least_bytes=declared_file_bytes(request),
        )
        dataset = await datasets.ingest(
            staged,
            filename=form.form.filename,
            purpose=form.form.fields.get("purpose"),
            model=form.form.fields.get("model"),
            allowed_base_models=principal.client.limits.allowed_base_models,
        )
        return FilePublic.of(dataset)

    return await once.streamed(create, form)


@router.get("/files")
async def list_files(
    principal: PrincipalDep,
    datasets: DatasetsDep,
    after: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
    order: ListOrder = "desc",
    purpose: Annotated[str | None, Query(max_length=50)] = None,
) -> Page[FilePublic]:
    if purpose not in (None, "fine-tune"):
        return Page(data=[])
    rows, has_more = await datasets.list(client_id=principal.client.id, after=after, limit=limit, order=order)
    return Page(data=[FilePublic.of(row) for row in rows], has_more=has_more)


@router.get("/files/{file_id}")
async def retrieve_file(file_id: str, principal: PrincipalDep, datasets: DatasetsDep) -> FilePublic:
    return FilePublic.of(await datasets.get(client_id=principal.client.id, dataset_id=file_id))


@router.get("/files/{file_id}/content")
async def file_content(file_id: str, principal: PrincipalDep, datasets: DatasetsDep) -> StreamingResponse:
    dataset, chunks = await datasets.content(client_id=principal.client.id, dataset_id=file_id)
    return StreamingResponse(
        chunks,
        media_type="application/jsonl",
        headers={
            "Content-Length": str(dataset.bytes),
            "Content-Disposition": attachment_disposition(dataset.filename),
        },
    )


@router.get("/files/{file_id}/preview")
async def preview_file(
    file_id: str,
    principal: PrincipalDep,
    datasets: DatasetsDep,
    rows: Annotated[int, Query(ge=1, le=100)] = 5,
) -> DatasetPreview:
    return await datasets.preview(client_id=principal.client.id, dataset_id=file_id, rows=rows)


@router.delete("/files/{file_id}")
async def delete_file(file_id: str, principal: PrincipalDep, datasets: DatasetsDep) -> FileDeleted:
    await datasets.delete(client_id=principal.client.id, dataset_id=file_id)
    return FileDeleted(id=file_id)
