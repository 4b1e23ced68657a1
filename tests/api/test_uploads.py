"""OpenAI's Uploads API: parts, complete (order, size, md5), cancel; through the official SDK."""

from __future__ import annotations

import hashlib

import httpx
import openai
import pytest

from tests.api.conftest import new_client
from tests.api.datasets_data import chat_rows, jsonl
from tests.api.test_auth import assert_error
from tests.api.test_datasets import sdk


@pytest.fixture
async def headers(api: httpx.AsyncClient) -> dict[str, str]:
    return (await new_client(api))[1]


def split(body: bytes, parts: int) -> list[bytes]:
    step = len(body) // parts + 1
    return [body[start : start + step] for start in range(0, len(body), step)]


async def test_sdk_upload_in_parts_becomes_a_validated_file(
    api: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    client = sdk(api, headers)
    body = jsonl(chat_rows(60))
    upload = await client.uploads.create(
        bytes=len(body), filename="parts.jsonl", mime_type="application/jsonl", purpose="fine-tune"
    )
    assert upload.status == "pending"
    pieces = split(body, 3)
    parts = [await client.uploads.parts.create(upload_id=upload.id, data=piece) for piece in pieces]
    # Parts may arrive in any order; `part_ids` gives the order of assembly.
    done = await client.uploads.complete(
        upload_id=upload.id, part_ids=[part.id for part in parts], md5=hashlib.md5(body).hexdigest()
    )
    assert done.status == "completed" and done.file is not None
    assert done.file.status == "processed" and done.file.bytes == len(body)
    assert (await client.files.content(done.file.id)).content == body
    with pytest.raises(openai.ConflictError):
        await client.uploads.parts.create(upload_id=upload.id, data=b"late")


async def test_a_retried_part_replaces_a_broken_one(api: httpx.AsyncClient, headers: dict[str, str]) -> None:
    client = sdk(api, headers)
    body = jsonl(chat_rows(30, seed=1))
    first, second = split(body, 2)
    upload = await client.uploads.create(
        bytes=len(body), filename="r.jsonl", mime_type="application/jsonl", purpose="fine-tune"
    )
    part_one = await client.uploads.parts.create(upload_id=upload.id, data=first)
    await client.uploads.parts.create(upload_id=upload.id, data=second[:10])  # "broken": only 10 bytes
    part_two = await client.uploads.parts.create(upload_id=upload.id, data=second)
    done = await client.uploads.complete(upload_id=upload.id, part_ids=[part_one.id, part_two.id])
    assert done.file is not None and done.file.bytes == len(body)


async def test_complete_checks_parts_size_and_md5(api: httpx.AsyncClient, headers: dict[str, str]) -> None:
    client = sdk(api, headers)
    body = jsonl(chat_rows(10, seed=2))
    upload = await client.uploads.create(
        bytes=len(body), filename="c.jsonl", mime_type="application/jsonl", purpose="fine-tune"
    )
    part = await client.uploads.parts.create(upload_id=upload.id, data=body[:-5])
    short = await api.post(f"/v1/uploads/{upload.id}/complete", json={"part_ids": [part.id]}, headers=headers)
    assert_error(short, 400, "size_mismatch")
    unknown = await api.post(
        f"/v1/uploads/{upload.id}/complete", json={"part_ids": ["part-nope"]}, headers=headers
    )
    assert_error(unknown, 400, "unknown_part")
    rest = await client.uploads.parts.create(upload_id=upload.id, data=body[-5:])
    wrong_md5 = await api.post(
        f"/v1/uploads/{upload.id}/complete",
        json={"part_ids": [part.id, rest.id], "md5": "0" * 32},
        headers=headers,
    )
    assert_error(wrong_md5, 400, "checksum_mismatch")
    done = await client.uploads.complete(upload_id=upload.id, part_ids=[part.id, rest.id])
    assert done.file is not None and done.file.status == "processed"


async def test_cancel_and_bad_requests(api: httpx.AsyncClient, headers: dict[str, str]) -> None:
    client = sdk(api, headers)
    upload = await client.uploads.create(
        bytes=100, filename="x.jsonl", mime_type="application/jsonl", purpose="fine-tune"
    )
    await client.uploads.parts.create(upload_id=upload.id, data=b"{}\n")
    cancelled = await client.uploads.cancel(upload.id)
    assert cancelled.status == "cancelled"
    with pytest.raises(openai.ConflictError):
        await client.uploads.complete(upload_id=upload.id, part_ids=["part-x"])
    bad_name = await api.post(
        "/v1/uploads", json={"filename": "../x.jsonl", "purpose": "fine-tune", "bytes": 10}, headers=headers
    )
    assert_error(bad_name, 400, "invalid_filename")
    huge = await api.post(
        "/v1/uploads", json={"filename": "x.jsonl", "purpose": "fine-tune", "bytes": 10**15}, headers=headers
    )
    assert_error(huge, 413, "file_too_large")
    _, other = await new_client(api, "other")
    assert_error(await api.post(f"/v1/uploads/{upload.id}/cancel", headers=other), 404, "upload_not_found")
