"""Storage per client (bytes, files, uploads in progress), upload part caps and the 507 disk guard.

On the real MongoDB-protocol server, through the in-process app; every refusal must leave nothing behind.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from studio.config import Settings
from tests.api.conftest import ADMIN, new_client, started_app
from tests.api.datasets_data import chat_rows, jsonl
from tests.api.raw_asgi import call_without_body
from tests.api.test_auth import assert_error
from tests.conftest import make_settings

MIB = 1024**2


def stored_files(settings: Settings, client_id: str) -> list[Path]:
    """Every file (hidden temporaries included) under the client's part of the datasets directory."""
    root = settings.datasets_dir / client_id
    return sorted(path for path in root.rglob("*") if path.is_file()) if root.exists() else []


async def upload(api: httpx.AsyncClient, headers: dict[str, str], body: bytes, name: str) -> httpx.Response:
    return await api.post(
        "/v1/files", files={"file": (name, body)}, data={"purpose": "fine-tune"}, headers=headers
    )


async def chunked(body: bytes, piece: int = 4096) -> AsyncIterator[bytes]:
    """`body` sent without a Content-Length."""
    for start in range(0, len(body), piece):
        yield body[start : start + piece]


def multipart(body: bytes, name: str = "big.jsonl", boundary: str = "qb0undary") -> tuple[bytes, str]:
    form = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        "Content-Type: application/jsonl\r\n\r\n"
    ).encode()
    return form + body + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


async def test_a_file_over_the_byte_quota_is_refused_and_nothing_is_stored(settings: Settings) -> None:
    async with started_app(settings) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://studio") as api:
            first = jsonl(chat_rows(20))
            client_id, headers = await new_client(api, max_stored_bytes=len(first) + 100)
            kept = await upload(api, headers, first, "first.jsonl")
            assert kept.status_code == 200, kept.text
            before = stored_files(settings, client_id)

            # Size unknown up front (small multipart, or chunked): refused as the bytes arrive.
            second = jsonl(chat_rows(20, seed=1))
            for response in (
                await upload(api, headers, second, "second.jsonl"),
                await api.post(
                    "/v1/files",
                    content=chunked(multipart(second)[0]),
                    headers={**headers, "content-type": multipart(second)[1]},
                ),
            ):
                error = assert_error(response, 403, "storage_quota_exceeded")
                message = str(error["message"])
                assert "max_stored_bytes" in message and str(len(first) + 100) in message
                assert f"holds {len(first)}" in message
            assert [item["id"] for item in (await api.get("/v1/files", headers=headers)).json()["data"]] == [
                kept.json()["id"]
            ]
            assert stored_files(settings, client_id) == before

            # Declared size over what is left: refused before a byte of the body is read.
            body, content_type = multipart(b"x" * (3 * MIB))
            answer = await call_without_body(
                app,
                "POST",
                "/v1/files",
                {"content-type": content_type, "content-length": str(len(body)), **headers},
            )
            assert (answer.status, answer.receive_calls) == (403, 0)
            error_body = answer.json()["error"]
            assert isinstance(error_body, dict) and error_body["code"] == "storage_quota_exceeded"
            assert stored_files(settings, client_id) == before

            # The admin raises the quota with the existing PATCH: the same file now goes in.
            raised = await api.patch(
                f"/admin/clients/{client_id}", json={"limits": {"max_stored_bytes": 10 * MIB}}, headers=ADMIN
            )
            assert raised.status_code == 200 and raised.json()["limits"]["max_stored_bytes"] == 10 * MIB
            assert raised.json()["limits"]["max_files"] == 10_000  # the others kept
            assert (await upload(api, headers, second, "second.jsonl")).status_code == 200


async def test_the_quota_counts_files_and_bytes_across_a_delete(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    client_id, headers = await new_client(api, max_files=2)
    ids = []
    for seed in range(2):
        created = await upload(api, headers, jsonl(chat_rows(5, seed=seed)), f"f{seed}.jsonl")
        assert created.status_code == 200, created.text
        ids.append(created.json()["id"])
    third = jsonl(chat_rows(5, seed=9))
    error = assert_error(await upload(api, headers, third, "f9.jsonl"), 403, "storage_quota_exceeded")
    assert "max_files" in str(error["message"]) and "holds 2" in str(error["message"])
    _, other_headers = await new_client(api, "other", max_files=2)
    assert (await upload(api, other_headers, third, "f9.jsonl")).status_code == 200  # per client

    assert (await api.delete(f"/v1/files/{ids[0]}", headers=headers)).status_code == 200
    assert (await upload(api, headers, third, "f9.jsonl")).status_code == 200

    # Bytes too: a quota the held files fill is freed by a delete.
    listed = (await api.get("/v1/files", headers=headers)).json()["data"]
    held = sum(item["bytes"] for item in listed)
    await api.patch(
        f"/admin/clients/{client_id}",
        json={"limits": {"max_files": 100, "max_stored_bytes": held + 10}},
        headers=ADMIN,
    )
    fourth = jsonl(chat_rows(5, seed=11))
    error = assert_error(await upload(api, headers, fourth, "f11.jsonl"), 403, "storage_quota_exceeded")
    assert f"holds {held}" in str(error["message"])
    assert (await api.delete(f"/v1/files/{listed[0]['id']}", headers=headers)).status_code == 200
    assert (await upload(api, headers, fourth, "f11.jsonl")).status_code == 200


async def test_uploads_in_progress_hold_their_place_and_declared_bytes(api: httpx.AsyncClient) -> None:
    client_id, headers = await new_client(api, max_uploads_in_progress=1, max_stored_bytes=10_000)
    body = {"filename": "u.jsonl", "purpose": "fine-tune", "bytes": 6000}
    first = await api.post("/v1/uploads", json=body, headers=headers)
    assert first.status_code == 200, first.text
    error = assert_error(
        await api.post("/v1/uploads", json=body, headers=headers), 403, "storage_quota_exceeded"
    )
    assert "max_uploads_in_progress" in str(error["message"]) and "has 1" in str(error["message"])

    await api.patch(
        f"/admin/clients/{client_id}", json={"limits": {"max_uploads_in_progress": 5}}, headers=ADMIN
    )
    # The pending upload holds its 6000 declared bytes: 6000 more would pass 10,000.
    error = assert_error(
        await api.post("/v1/uploads", json=body, headers=headers), 403, "storage_quota_exceeded"
    )
    assert "max_stored_bytes" in str(error["message"]) and "holds 6000" in str(error["message"])
    direct = await upload(api, headers, b"x" * 5000, "d.jsonl")
    assert_error(direct, 403, "storage_quota_exceeded")

    cancelled = await api.post(f"/v1/uploads/{first.json()['id']}/cancel", headers=headers)
    assert cancelled.status_code == 200
    assert (await api.post("/v1/uploads", json=body, headers=headers)).status_code == 200


async def test_an_upload_holds_a_bounded_number_and_total_of_parts(tmp_path: Path, mongo_url: str) -> None:
    settings = make_settings(
        tmp_path, mongo_url=mongo_url, datasets={"max_upload_parts": 3, "max_part_bytes": 1024}
    )
    async with started_app(settings) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://studio") as api:
            client_id, headers = await new_client(api)
            create = {"filename": "p.jsonl", "purpose": "fine-tune", "bytes": 10_000}
            many = (await api.post("/v1/uploads", json=create, headers=headers)).json()["id"]
            for _ in range(3):
                part = await api.post(f"/v1/uploads/{many}/parts", files={"data": b"{}\n"}, headers=headers)
                assert part.status_code == 200, part.text
            fourth = await api.post(f"/v1/uploads/{many}/parts", files={"data": b"{}\n"}, headers=headers)
            error = assert_error(fourth, 400, "too_many_parts")
            assert "max_upload_parts 3" in str(error["message"])
            parts_dir = settings.datasets_dir / client_id / "uploads" / many
            assert len(list(parts_dir.iterdir())) == 3  # the refused part left nothing

            # Parts sent at once: the cap is part of the write that records a part, so exactly 3 stay.
            racing = (await api.post("/v1/uploads", json=create, headers=headers)).json()["id"]
            answers = await asyncio.gather(
                *(
                    api.post(f"/v1/uploads/{racing}/parts", files={"data": b"{}\n"}, headers=headers)
                    for _ in range(6)
                )
            )
            assert sorted(answer.status_code for answer in answers) == [200, 200, 200, 400, 400, 400]
            assert len(list((settings.datasets_dir / client_id / "uploads" / racing).iterdir())) == 3

            # Parts may hold the declared bytes plus one part (a part sent again), no more.
            small = {"filename": "s.jsonl", "purpose": "fine-tune", "bytes": 100}
            capped = (await api.post("/v1/uploads", json=small, headers=headers)).json()["id"]
            for size in (1024, 100):
                part = await api.post(
                    f"/v1/uploads/{capped}/parts", files={"data": b"x" * size}, headers=headers
                )
                assert part.status_code == 200, part.text
            over = await api.post(f"/v1/uploads/{capped}/parts", files={"data": b"x"}, headers=headers)
            error = assert_error(over, 413, "upload_parts_too_large")
            assert "1124" in str(error["message"])
            assert len(list((settings.datasets_dir / client_id / "uploads" / capped).iterdir())) == 2


async def test_writes_get_507_while_the_disk_is_under_its_floor(tmp_path: Path, mongo_url: str) -> None:
    # The floor is a setting: above the disk's free space here, whatever that is, then lowered.
    settings = make_settings(tmp_path, mongo_url=mongo_url, storage={"min_free_bytes": 1 << 60})
    async with started_app(settings) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://studio") as api:
            client_id, headers = await new_client(api)
            body = jsonl(chat_rows(5))
            refused = await upload(api, headers, body, "a.jsonl")
            error = assert_error(refused, 507, "insufficient_storage")
            assert refused.headers["retry-after"] == str(settings.storage.retry_after_s)
            assert "free" in str(error["message"]) and str(settings.datasets_dir) not in str(error["message"])
            create = {"filename": "u.jsonl", "purpose": "fine-tune", "bytes": 100}
            assert_error(
                await api.post("/v1/uploads", json=create, headers=headers), 507, "insufficient_storage"
            )
            form, content_type = multipart(b"x" * MIB)
            answer = await call_without_body(
                app,
                "POST",
                "/fine_tuning/upload-dataset",
                {"content-type": content_type, "content-length": str(len(form)), **headers},
            )
            assert (answer.status, answer.receive_calls) == (507, 0)
            assert stored_files(settings, client_id) == []
            # Reads go on.
            assert (await api.get("/v1/files", headers=headers)).status_code == 200

            settings.storage.min_free_bytes = 0
            settings.storage.min_free_percent = 0.0
            created = await upload(api, headers, body, "a.jsonl")
            assert created.status_code == 200, created.text
            pending = await api.post("/v1/uploads", json=create, headers=headers)
            assert pending.status_code == 200, pending.text

            # A part, and the assembly of an upload, are refused too once the floor is back up.
            settings.storage.min_free_bytes = 1 << 60
            part = await api.post(
                f"/v1/uploads/{pending.json()['id']}/parts", files={"data": b"x" * 100}, headers=headers
            )
            assert_error(part, 507, "insufficient_storage")
