"""Datasets through the official `openai` SDK and the original design's paths, on real servers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from studio.config import Settings
from tests.api.conftest import new_client, running_api
from tests.api.datasets_data import broken_on_line_7, chat_rows, jsonl
from tests.api.test_auth import assert_error
from tests.conftest import S3Endpoint, make_settings


def sdk(api: httpx.AsyncClient, headers: dict[str, str]) -> openai.AsyncOpenAI:
    """The official SDK, sending its requests through the in-process client `api`."""
    key = headers["Authorization"].removeprefix("Bearer ")
    # openai 3.5x is typed for httpx2's client; httpx's has the same interface and works unchanged.
    return openai.AsyncOpenAI(
        api_key=key,
        base_url="http://studio/v1",
        http_client=api,  # type: ignore[arg-type]
        max_retries=0,
    )


@pytest.fixture
async def tenant(api: httpx.AsyncClient) -> tuple[str, dict[str, str]]:
    return await new_client(api)


async def wait_for_file(
    client: openai.AsyncOpenAI, file_id: str, predicate: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for _ in range(100):
        found = (await client.files.retrieve(file_id)).model_dump()
        if predicate(found):
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"file {file_id} never got there: {found}")


async def test_sdk_uploads_lists_retrieves_downloads_and_deletes(
    api: httpx.AsyncClient, tenant: tuple[str, dict[str, str]]
) -> None:
    client = sdk(api, tenant[1])
    body = jsonl(chat_rows(20))
    created = await client.files.create(file=("train.jsonl", body), purpose="fine-tune")
    assert created.id.startswith("file-") and created.bytes == len(body) and created.filename == "train.jsonl"
    assert created.status == "processed"
    details = created.model_dump()["details"]
    assert details["validation_status"] == "ready" and details["format"] == "chat"
    stats = details["stats"]
    assert stats["rows"] == 20 and stats["valid_rows"] == 20
    assert stats["tokens_total"] > 0 and stats["role_counts"] == {"system": 20, "user": 20, "assistant": 20}
    assert stats["token_counting"] == "estimate:chars/4"

    listed = await client.files.list()
    assert [item.id for item in listed.data] == [created.id]
    assert (await client.files.retrieve(created.id)).id == created.id
    content = await client.files.content(created.id)
    assert content.content == body
    deleted = await client.files.delete(created.id)
    assert deleted.deleted is True and deleted.id == created.id
    with pytest.raises(openai.NotFoundError):
        await client.files.retrieve(created.id)


async def test_broken_file_is_invalid_with_line_numbered_errors(
    api: httpx.AsyncClient, tenant: tuple[str, dict[str, str]]
) -> None:
    created = await sdk(api, tenant[1]).files.create(
        file=("bad.jsonl", broken_on_line_7()), purpose="fine-tune"
    )
    assert created.status == "error"
    assert created.status_details is not None and "line 7" in created.status_details
    details = created.model_dump()["details"]
    assert details["validation_status"] == "invalid" and details["error_count"] == 1
    (error,) = details["errors"]
    assert error["line"] == 7 and error["code"] == "invalid_json"


async def test_same_content_twice_returns_the_same_dataset(
    api: httpx.AsyncClient, tenant: tuple[str, dict[str, str]]
) -> None:
    client = sdk(api, tenant[1])
    body = jsonl(chat_rows(5, seed=3))
    first = await client.files.create(file=("a.jsonl", body), purpose="fine-tune")
    second = await client.files.create(file=("b.jsonl", body), purpose="fine-tune")
    racing = await asyncio.gather(
        *(
            client.files.create(file=("c.jsonl", jsonl(chat_rows(5, seed=4))), purpose="fine-tune")
            for _ in range(4)
        )
    )
    assert second.id == first.id
    assert len({item.id for item in racing}) == 1
    assert len((await client.files.list()).data) == 2


@pytest.mark.parametrize(
    ("filename", "code"),
    [
        ("../escape.jsonl", "invalid_filename"),
        ("/etc/passwd.jsonl", "invalid_filename"),
        ("nul\x00.jsonl", "invalid_filename"),
        ("data.csv", "invalid_file_extension"),
    ],
)
async def test_bad_names_are_refused_and_nothing_is_stored(
    api: httpx.AsyncClient, tenant: tuple[str, dict[str, str]], settings: Settings, filename: str, code: str
) -> None:
    # The body is built by hand: httpx would percent-encode a NUL in the name.
    boundary = "b0undary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n\r\n'
        ).encode()
        + jsonl(chat_rows(2))
        + f"\r\n--{boundary}--\r\n".encode()
    )
    response = await api.post(
        "/v1/files",
        content=body,
        headers={**tenant[1], "content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert_error(response, 400, code)
    assert (await api.get("/v1/files", headers=tenant[1])).json()["data"] == []
    client_dir = settings.datasets_dir / tenant[0]
    assert not client_dir.exists() or not any(client_dir.iterdir())
    assert not (settings.datasets_dir.parent / "escape.jsonl").exists()


async def test_empty_file_wrong_purpose_and_missing_file_are_refused(
    api: httpx.AsyncClient, tenant: tuple[str, dict[str, str]]
) -> None:
    headers = tenant[1]
    empty = await api.post(
        "/v1/files", files={"file": ("e.jsonl", b"")}, data={"purpose": "fine-tune"}, headers=headers
    )
    assert_error(empty, 400, "empty_file")
    purpose = await api.post(
        "/v1/files",
        files={"file": ("p.jsonl", b'{"prompt":"a","completion":"b"}\n')},
        data={"purpose": "batch"},
        headers=headers,
    )
    assert_error(purpose, 400, "invalid_purpose")
    missing = await api.post(
        "/v1/files", data={"purpose": "fine-tune"}, files={"other": ("x", b"1")}, headers=headers
    )
    assert_error(missing, 400, "missing_file")
    not_form = await api.post(
        "/v1/files", content=b"{}", headers={**headers, "content-type": "application/json"}
    )
    assert_error(not_form, 400, "invalid_content_type")


async def test_another_tenants_dataset_is_404(
    api: httpx.AsyncClient, tenant: tuple[str, dict[str, str]]
) -> None:
    created = await sdk(api, tenant[1]).files.create(
        file=("t.jsonl", jsonl(chat_rows(3))), purpose="fine-tune"
    )
    _, other = await new_client(api, "other")
    for response in (
        await api.get(f"/v1/files/{created.id}", headers=other),
        await api.get(f"/v1/files/{created.id}/content", headers=other),
        await api.delete(f"/v1/files/{created.id}", headers=other),
        await api.get(f"/fine_tuning/datasets/{created.id}", headers=other),
    ):
        assert_error(response, 404, "file_not_found")
    assert (await api.get(f"/v1/files/{created.id}", headers=tenant[1])).status_code == 200


async def test_over_the_size_limit_is_413_and_leaves_nothing(tmp_path: Path, mongo_url: str) -> None:
    settings = make_settings(tmp_path, mongo_url=mongo_url, datasets={"max_upload_bytes": 4096})
    async with running_api(settings) as api:
        _, headers = await new_client(api)
        body = jsonl(chat_rows(100))
        assert len(body) > 4096
        response = await api.post(
            "/v1/files", files={"file": ("big.jsonl", body)}, data={"purpose": "fine-tune"}, headers=headers
        )
        assert_error(response, 413, "file_too_large")
        assert (await api.get("/v1/files", headers=headers)).json()["data"] == []
    assert [path for path in settings.datasets_dir.rglob("*") if path.is_file()] == []


async def test_broken_stream_leaves_no_file_and_no_metadata(tmp_path: Path, mongo_url: str) -> None:
    settings = make_settings(tmp_path, mongo_url=mongo_url)
    async with running_api(settings) as api:
        _, headers = await new_client(api)
        boundary = "studio-boundary"

        async def breaks() -> AsyncIterator[bytes]:
            yield (
                f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.jsonl"\r\n\r\n'
            ).encode()
            yield jsonl(chat_rows(50))
            raise ConnectionResetError("client went away")

        # In-process, httpx turns the broken body into the ASGI disconnect a server sees.
        try:
            response = await api.post(
                "/v1/files",
                content=breaks(),
                headers={**headers, "content-type": f"multipart/form-data; boundary={boundary}"},
            )
        except ConnectionResetError:
            pass
        else:
            assert response.status_code >= 400, response.text
        assert (await api.get("/v1/files", headers=headers)).json()["data"] == []
    assert [path for path in settings.datasets_dir.rglob("*") if path.is_file()] == []


async def test_big_files_validate_in_the_background(tmp_path: Path, mongo_url: str) -> None:
    settings = make_settings(tmp_path, mongo_url=mongo_url, datasets={"sync_validation_bytes": 100})
    async with running_api(settings) as api:
        _, headers = await new_client(api)
        client = sdk(api, headers)
        created = await client.files.create(file=("bg.jsonl", jsonl(chat_rows(200))), purpose="fine-tune")
        assert created.status == "uploaded"
        assert created.model_dump()["details"]["validation_status"] == "validating"
        done = await wait_for_file(client, created.id, lambda f: f["status"] == "processed")
        assert done["details"]["stats"]["rows"] == 200


async def test_s3_copy_exists_in_the_s3_server(
    api: httpx.AsyncClient, tenant: tuple[str, dict[str, str]], s3_endpoint: S3Endpoint
) -> None:
    client = sdk(api, tenant[1])
    body = jsonl(chat_rows(7, seed=11))
    created = await client.files.create(file=("s3.jsonl", body), purpose="fine-tune")
    done = await wait_for_file(client, created.id, lambda f: f["details"]["s3"]["state"] == "mirrored")
    key = f"{tenant[0]}/{created.id}/s3.jsonl"
    assert done["details"]["s3"]["uri"] == f"s3://{s3_endpoint.bucket}/{key}"
    s3 = s3_endpoint.client()
    assert s3.get_object(Bucket=s3_endpoint.bucket, Key=key)["Body"].read() == body
    await client.files.delete(created.id)
    with pytest.raises(s3.exceptions.NoSuchKey):
        s3.get_object(Bucket=s3_endpoint.bucket, Key=key)


async def test_s3_down_keeps_the_dataset_and_mirrors_it_later(tmp_path: Path, mongo_url: str) -> None:
    from tests import servers

    s3_server = servers.s3_server(tmp_path / "late-s3", bucket="late")
    endpoint = S3Endpoint(
        f"http://127.0.0.1:{s3_server.port}", servers.S3_ACCESS_KEY, servers.S3_SECRET_KEY, "late"
    )
    settings = make_settings(
        tmp_path,
        mongo_url=mongo_url,
        s3=endpoint,
        s3_options={"timeout_s": 1, "max_attempts": 1},
        datasets={"worker_interval_s": 0.3, "mirror_backoff_max_s": 1},
    )
    async with running_api(settings) as api:
        _, headers = await new_client(api)
        client = sdk(api, headers)
        created = await client.files.create(file=("later.jsonl", jsonl(chat_rows(4))), purpose="fine-tune")
        assert created.status == "processed"
        pending = await wait_for_file(client, created.id, lambda f: f["details"]["s3"]["attempts"] >= 1)
        assert pending["details"]["s3"]["state"] == "pending" and pending["details"]["s3"]["last_error"]
        assert (await api.get("/readyz")).json()["checks"]["s3"]["status"] == "down"
        s3_server.start()
        try:
            await wait_for_file(client, created.id, lambda f: f["details"]["s3"]["state"] == "mirrored")
        finally:
            s3_server.stop()


async def test_delete_refused_while_an_active_job_uses_it(
    api: httpx.AsyncClient, tenant: tuple[str, dict[str, str]], settings: Settings, mongo_url: str
) -> None:
    from pymongo import AsyncMongoClient

    created = await sdk(api, tenant[1]).files.create(
        file=("j.jsonl", jsonl(chat_rows(3, seed=9))), purpose="fine-tune"
    )
    mongo: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(mongo_url)
    jobs = mongo[settings.store.database]["fine_tuning_jobs"]
    await jobs.insert_one(
        {"_id": "ftjob-x", "client_id": tenant[0], "status": "running", "training_file": created.id}
    )
    try:
        assert_error(await api.delete(f"/v1/files/{created.id}", headers=tenant[1]), 409, "file_in_use")
        assert (await api.get(f"/v1/files/{created.id}", headers=tenant[1])).status_code == 200
        await jobs.update_one({"_id": "ftjob-x"}, {"$set": {"status": "succeeded"}})
        assert (await api.delete(f"/v1/files/{created.id}", headers=tenant[1])).status_code == 200
    finally:
        await mongo.close()


async def test_seed_paths_upload_list_preview_delete(
    api: httpx.AsyncClient, tenant: tuple[str, dict[str, str]]
) -> None:
    headers = tenant[1]
    body = jsonl(chat_rows(8, seed=5))
    uploaded = await api.post(
        "/fine_tuning/upload-dataset", files={"file": ("seed.jsonl", body)}, headers=headers
    )
    assert uploaded.status_code == 201, uploaded.text
    dataset = uploaded.json()
    assert dataset["status"] == "ready" and dataset["stats"]["rows"] == 8
    listed = (await api.get("/fine_tuning/datasets", headers=headers)).json()
    assert [row["dataset_id"] for row in listed["data"]] == [dataset["dataset_id"]]
    preview = (
        await api.get(f"/fine_tuning/datasets/{dataset['dataset_id']}/preview?rows=2", headers=headers)
    ).json()
    assert preview["rows"] == chat_rows(8, seed=5)[:2]
    assert (
        await api.delete(f"/fine_tuning/datasets/{dataset['dataset_id']}", headers=headers)
    ).status_code == 204
    assert_error(await api.get(f"/fine_tuning/datasets/{dataset['dataset_id']}", headers=headers), 404)


async def test_list_pagination_and_order(api: httpx.AsyncClient, tenant: tuple[str, dict[str, str]]) -> None:
    client = sdk(api, tenant[1])
    ids = []
    for seed in range(3):
        ids.append(
            (
                await client.files.create(
                    file=(f"{seed}.jsonl", jsonl(chat_rows(2, seed=seed))), purpose="fine-tune"
                )
            ).id
        )
        await asyncio.sleep(1.01)  # distinct created_at seconds
    page = await client.files.list(limit=2, order="asc")
    assert [item.id for item in page.data] == ids[:2] and page.has_more
    rest = await client.files.list(limit=2, order="asc", after=ids[1])
    assert [item.id for item in rest.data] == ids[2:] and not rest.has_more
    newest_first = await client.files.list(order="desc")
    assert [item.id for item in newest_first.data] == ids[::-1]


async def test_body_ending_inside_the_file_part_is_refused(
    api: httpx.AsyncClient, tenant: tuple[str, dict[str, str]], settings: Settings
) -> None:
    boundary = "cut-short"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="cut.jsonl"\r\n\r\n'
    ).encode() + jsonl(chat_rows(5))  # no closing boundary
    response = await api.post(
        "/v1/files",
        content=body,
        headers={**tenant[1], "content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert_error(response, 400, "invalid_multipart")
    assert (await api.get("/v1/files", headers=tenant[1])).json()["data"] == []
    client_dir = settings.datasets_dir / tenant[0]
    assert not client_dir.exists() or not [path for path in client_dir.rglob("*") if path.is_file()]


async def test_tokens_are_counted_with_the_named_base_models_tokenizer(
    api: httpx.AsyncClient, tenant: tuple[str, dict[str, str]], settings: Settings
) -> None:
    from studio.training import TINY_MODEL_NAME
    from studio.training.tokens import token_counter

    rows = chat_rows(12, seed=3)
    client = sdk(api, tenant[1])
    counted = await client.files.create(
        file=("tok.jsonl", jsonl(rows)), purpose="fine-tune", extra_body={"model": TINY_MODEL_NAME}
    )
    stats = counted.model_dump()["details"]["stats"]
    assert stats["token_counting"] == TINY_MODEL_NAME
    count = await asyncio.to_thread(token_counter, TINY_MODEL_NAME, settings.models_dir)
    messages = [m for row in rows for m in row["messages"]]  # type: ignore[attr-defined]
    expected = sum(count(m["content"]) + 4 for m in messages) + 2 * len(rows)
    assert stats["tokens_total"] == expected

    # The same rows, estimated (another file: the same bytes would return the first dataset).
    estimated = await client.files.create(
        file=("est.jsonl", jsonl(chat_rows(12, seed=4))), purpose="fine-tune"
    )
    assert estimated.model_dump()["details"]["stats"]["token_counting"] != TINY_MODEL_NAME

    unknown = await api.post(
        "/v1/files",
        files={"file": ("x.jsonl", jsonl(chat_rows(2, seed=9)))},
        data={"purpose": "fine-tune", "model": "acme/unknown"},
        headers=tenant[1],
    )
    assert_error(unknown, 404, "model_not_found")
    assert unknown.json()["error"]["param"] == "model"
    listed = await client.files.list()
    assert sorted(f.filename for f in listed.data) == ["est.jsonl", "tok.jsonl"]

    # A base model the client may not use is refused before its tokenizer is fetched, nothing stored.
    _, narrow = await new_client(api, "narrow", allowed_base_models=["acme/*"])
    for path, field in (("/v1/files", "model"), ("/fine_tuning/upload-dataset", "base_model")):
        refused = await api.post(
            path,
            files={"file": ("x.jsonl", jsonl(chat_rows(2, seed=10)))},
            data={"purpose": "fine-tune", field: TINY_MODEL_NAME},
            headers=narrow,
        )
        assert_error(refused, 403, "model_not_allowed")
    assert (await api.get("/v1/files", headers=narrow)).json()["data"] == []
