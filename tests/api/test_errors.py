"""Bad input: one error shape, the right status, the field at fault, nothing stored."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from studio.config import Settings
from tests.api.conftest import ADMIN
from tests.api.test_auth import assert_error


async def client_count(api: httpx.AsyncClient) -> int:
    return len((await api.get("/admin/clients", params={"limit": 1000}, headers=ADMIN)).json()["data"])


async def test_malformed_json_is_400_and_stores_nothing(api: httpx.AsyncClient) -> None:
    before = await client_count(api)
    response = await api.post(
        "/admin/clients", content=b'{"name": ', headers={**ADMIN, "content-type": "application/json"}
    )
    assert_error(response, 400, "invalid_json")
    assert await client_count(api) == before


async def test_unknown_field_is_400_naming_it(api: httpx.AsyncClient) -> None:
    error = assert_error(
        await api.post("/admin/clients", json={"name": "x", "colour": "red"}, headers=ADMIN), 400
    )
    assert error["param"] == "colour"
    error = assert_error(
        await api.post(
            "/admin/clients", json={"name": "x", "limits": {"requests_per_minute": 0}}, headers=ADMIN
        ),
        400,
    )
    assert error["param"] == "limits.requests_per_minute"


async def test_oversized_body_is_413_declared_or_streamed(api: httpx.AsyncClient, settings: Settings) -> None:
    big = json.dumps({"name": "x" * (settings.api.max_json_body_bytes + 10)}).encode()
    before = await client_count(api)
    declared = await api.post(
        "/admin/clients", content=big, headers={**ADMIN, "content-type": "application/json"}
    )
    assert_error(declared, 413, "payload_too_large")

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(big), 65536):
            yield big[start : start + 65536]

    streamed = await api.post(
        "/admin/clients", content=chunks(), headers={**ADMIN, "content-type": "application/json"}
    )
    assert_error(streamed, 413)
    assert await client_count(api) == before


async def test_unknown_path_and_method_use_the_error_shape(api: httpx.AsyncClient) -> None:
    assert_error(await api.get("/nope"), 404)
    assert_error(await api.delete("/healthz"), 405)


async def test_request_id_is_returned_and_logged(api: httpx.AsyncClient, settings: Settings) -> None:
    response = await api.get("/healthz", headers={"X-Request-ID": "trace-me-42"})
    assert response.headers["x-request-id"] == "trace-me-42"
    made = await api.get("/healthz")
    assert len(made.headers["x-request-id"]) >= 16
    invalid = await api.get("/healthz", headers={"X-Request-ID": "bad id with spaces"})
    assert invalid.headers["x-request-id"] != "bad id with spaces"


async def test_access_log_line_is_json_with_request_and_client(
    api: httpx.AsyncClient, settings: Settings, tmp_path: Path
) -> None:
    from studio.logs import configure_logging
    from tests.api.conftest import new_client

    configure_logging(log_dir=settings.log_dir, level="INFO")
    client_id, headers = await new_client(api)
    await api.get("/v1/me", headers={**headers, "X-Request-ID": "log-check-1"})
    lines = [
        json.loads(line)
        for path in settings.log_dir.glob("studio-*.jsonl")
        for line in path.read_text().splitlines()
    ]
    (entry,) = [
        line
        for line in lines
        if line.get("request_id") == "log-check-1" and line["logger"] == "studio.access"
    ]
    assert entry["method"] == "GET" and entry["path"] == "/v1/me" and entry["status"] == 200
    assert entry["client_id"] == client_id and entry["duration_ms"] >= 0
