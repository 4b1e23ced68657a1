"""`Idempotency-Key` on creates: one object per client and key, the stored answer replayed, another
body under the key refused; on the real MongoDB-protocol server (claims are its unique `_id`s)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from openai.types.fine_tuning import FineTuningJob

from studio.config import Settings
from studio.errors import NotFound
from studio.services.idempotency import Answer, IdempotencyService, KeyInProgress
from studio.stores.mongo import MongoStore
from tests.api.datasets_data import chat_rows, jsonl
from tests.contract.conftest import TINY, Tenant
from tests.contract.strict import ERROR_OMITTED, ErrorBody, assert_openai_shape
from tests.contract.test_api_shapes import JOB_EXTRAS, JOB_OMITTED


async def create(
    tenant: Tenant, body: dict[str, object], key: str, path: str = "/v1/fine_tuning/jobs"
) -> httpx.Response:
    return await tenant.api.post(path, json=body, headers={**tenant.headers, "Idempotency-Key": key})


async def job_ids(tenant: Tenant) -> list[str]:
    listed = (await tenant.api.get("/v1/fine_tuning/jobs", headers=tenant.headers)).json()
    return [job["id"] for job in listed["data"]]


async def test_eight_concurrent_creates_with_one_key_make_one_job(tenant: Tenant) -> None:
    file = await tenant.upload()
    body = {"model": TINY, "training_file": file["id"], "suffix": "once"}

    answers = await asyncio.gather(*(create(tenant, body, "key-concurrent") for _ in range(8)))

    assert [answer.status_code for answer in answers] == [200] * 8, [a.text for a in answers]
    assert len({answer.json()["id"] for answer in answers}) == 1
    assert await job_ids(tenant) == [answers[0].json()["id"]]
    assert sum(answer.headers.get("idempotent-replayed") == "true" for answer in answers) == 7
    for answer in answers:
        assert_openai_shape(answer.json(), FineTuningJob, omitted=JOB_OMITTED, extras=JOB_EXTRAS)


async def test_a_repeat_gets_the_stored_answer_and_another_body_a_409(tenant: Tenant) -> None:
    file = await tenant.upload()
    body = {"model": TINY, "training_file": file["id"]}
    first = await create(tenant, body, "key-1", "/fine_tuning/submit-finetune")
    again = await create(tenant, body, "key-1", "/fine_tuning/submit-finetune")
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers

    other = await create(tenant, {**body, "suffix": "other"}, "key-1", "/fine_tuning/submit-finetune")
    assert other.status_code == 409 and other.headers["x-should-retry"] == "false"
    assert_openai_shape(other.json(), ErrorBody, omitted=ERROR_OMITTED)
    error = other.json()["error"]
    assert error["code"] == "idempotency_key_reused" and "'key-1'" in error["message"]
    # The same body on another path is another request.
    assert (await create(tenant, body, "key-1")).status_code == 409
    assert await job_ids(tenant) == [first.json()["id"]]

    # Another key is another create.
    assert (await create(tenant, body, "key-2")).json()["id"] != first.json()["id"]


async def test_a_failed_create_leaves_the_key_free(tenant: Tenant) -> None:
    missing = await create(tenant, {"model": TINY, "training_file": "file-nope"}, "key-retry")
    assert missing.status_code == 404
    file = await tenant.upload()
    made = await create(tenant, {"model": TINY, "training_file": file["id"]}, "key-retry")
    assert made.status_code == 200 and await job_ids(tenant) == [made.json()["id"]]


async def test_without_a_key_each_create_makes_a_job(tenant: Tenant) -> None:
    file = await tenant.upload()
    body = {"model": TINY, "training_file": file["id"]}
    for _ in range(2):
        assert (
            await tenant.api.post("/v1/fine_tuning/jobs", json=body, headers=tenant.headers)
        ).status_code == 200
    assert len(await job_ids(tenant)) == 2
    bad = await create(tenant, body, "x" * 300)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_idempotency_key"


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[MongoStore]:
    assert settings.store.mongo_url is not None
    store = await MongoStore.connect(settings.store.mongo_url.get_secret_value(), settings.store)
    try:
        yield store
    finally:
        await store.close()


async def test_a_repeat_while_the_first_runs_is_told_to_retry(store: MongoStore) -> None:
    service = IdempotencyService(repository=store.idempotency, ttl_s=3600, wait_s=0.2)
    release = asyncio.Event()
    runs = 0

    async def slow() -> Answer:
        nonlocal runs
        runs += 1
        await release.wait()
        return Answer(status_code=200, body='{"id": "x"}')

    first = asyncio.create_task(service.run(client_id="c", key="k", fingerprint="h", create=slow))
    await asyncio.sleep(0.05)
    with pytest.raises(KeyInProgress):
        await service.run(client_id="c", key="k", fingerprint="h", create=slow)
    release.set()
    assert (await first).body == '{"id": "x"}'
    replay = await service.run(client_id="c", key="k", fingerprint="h", create=slow)
    assert replay.replayed and runs == 1


async def test_an_expired_key_runs_again(store: MongoStore) -> None:
    service = IdempotencyService(repository=store.idempotency, ttl_s=0.1, wait_s=0)
    made: list[int] = []

    async def make() -> Answer:
        made.append(len(made))
        if len(made) == 3:
            raise NotFound("gone")
        return Answer(status_code=200, body=str(len(made)))

    assert (await service.run(client_id="c", key="old", fingerprint="a", create=make)).body == "1"
    await asyncio.sleep(0.2)
    # Expired: another body is no conflict, and the create runs again.
    assert (await service.run(client_id="c", key="old", fingerprint="b", create=make)).body == "2"
    await asyncio.sleep(0.2)
    with pytest.raises(NotFound):
        await service.run(client_id="c", key="old", fingerprint="b", create=make)
    assert await store.idempotency.get("c:old") is None


# -- multipart creates: the key claimed before the body is read, the body hashed as it is written --


async def upload(
    tenant: Tenant,
    content: bytes,
    key: str | None,
    *,
    path: str = "/v1/files",
    filename: str = "train.jsonl",
    field: str = "file",
    data: dict[str, str] | None = None,
) -> httpx.Response:
    headers = {**tenant.headers, **({"Idempotency-Key": key} if key else {})}
    return await tenant.api.post(
        path,
        files={field: (filename, content, "application/jsonl")},
        data={"purpose": "fine-tune"} if data is None else data,
        headers=headers,
    )


def stored_files(settings: Settings, tenant: Tenant) -> list[str]:
    folder = settings.datasets_dir / tenant.client_id
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


async def test_a_repeated_file_upload_is_the_same_file_and_stores_nothing(
    tenant: Tenant, settings: Settings
) -> None:
    content = jsonl(chat_rows(30, seed=3))
    answers = await asyncio.gather(*(upload(tenant, content, "file-key") for _ in range(4)))
    assert [answer.status_code for answer in answers] == [200] * 4, [a.text for a in answers]
    assert len({answer.json()["id"] for answer in answers}) == 1
    assert sum(answer.headers.get("idempotent-replayed") == "true" for answer in answers) == 3
    assert stored_files(settings, tenant) == [answers[0].json()["id"]]

    # The same bytes under another name are another request: a 409, though without the key the
    # studio would answer with the file it has for these bytes.
    renamed = await upload(tenant, content, "file-key", filename="other.jsonl")
    assert renamed.status_code == 409 and renamed.json()["error"]["code"] == "idempotency_key_reused"
    other = await upload(tenant, jsonl(chat_rows(31, seed=3)), "file-key")
    assert other.status_code == 409 and other.headers["x-should-retry"] == "false"
    assert_openai_shape(other.json(), ErrorBody, omitted=ERROR_OMITTED)
    # The key used on /v1/files is not reusable on the original upload path either.
    elsewhere = await upload(tenant, content, "file-key", path="/fine_tuning/upload-dataset")
    assert elsewhere.status_code == 409
    assert stored_files(settings, tenant) == [answers[0].json()["id"]]


async def test_upload_dataset_replays_its_201_and_a_failed_upload_frees_the_key(
    tenant: Tenant, settings: Settings
) -> None:
    content = jsonl(chat_rows(25, seed=5))
    refused = await upload(
        tenant, content, "ds-key", path="/fine_tuning/upload-dataset", data={"purpose": "x"}
    )
    assert refused.status_code == 400 and stored_files(settings, tenant) == []
    first = await upload(tenant, content, "ds-key", path="/fine_tuning/upload-dataset", data={})
    again = await upload(tenant, content, "ds-key", path="/fine_tuning/upload-dataset", data={})
    assert first.status_code == again.status_code == 201, first.text
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    assert stored_files(settings, tenant) == [first.json()["dataset_id"]]


async def test_a_repeated_upload_part_is_the_same_part(tenant: Tenant) -> None:
    part = jsonl(chat_rows(20, seed=9))
    body = {
        "filename": "big.jsonl",
        "purpose": "fine-tune",
        "bytes": 2 * len(part),
        "mime_type": "text/jsonl",
    }
    created = await tenant.api.post("/v1/uploads", json=body, headers=tenant.headers)
    assert created.status_code == 200, created.text
    parts_path = f"/v1/uploads/{created.json()['id']}/parts"
    first, again = [
        await upload(tenant, part, "part-1", path=parts_path, field="data", data={}) for _ in range(2)
    ]
    assert first.status_code == again.status_code == 200, first.text
    assert again.json()["id"] == first.json()["id"] and again.headers["idempotent-replayed"] == "true"
    other = await upload(tenant, part[:-1] + b" \n", "part-1", path=parts_path, field="data", data={})
    assert other.status_code == 409
    second = await upload(tenant, part, None, path=parts_path, field="data", data={})
    assert second.status_code == 200 and second.json()["id"] != first.json()["id"]
    # Two parts, not three: the replay added none (the sizes add up to the upload's declared bytes).
    done = await tenant.api.post(
        f"/v1/uploads/{created.json()['id']}/complete",
        json={"part_ids": [first.json()["id"], second.json()["id"]]},
        headers=tenant.headers,
    )
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "completed"
