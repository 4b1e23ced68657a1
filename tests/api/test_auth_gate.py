"""The auth gate: callers are refused from their headers alone, before any byte of the body is read."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from studio.api.app import create_api
from studio.api.middleware import BodyLimits
from studio.api.services import Services
from studio.config import Settings
from studio.schemas.clients import Principal
from studio.services.auth import AuthService
from tests.api.conftest import ADMIN, new_client, running_api, started_app
from tests.api.raw_asgi import call_without_body
from tests.api.test_auth import assert_error
from tests.conftest import make_settings

GIB = str(1024**3)
OCTETS = {"content-type": "application/octet-stream"}


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    async with started_app(settings) as started:
        yield started


async def client_headers(app: FastAPI) -> dict[str, str]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://studio") as api:
        return (await new_client(api))[1]


# Routes with a JSON body parameter (FastAPI reads those bodies before it runs the dependencies) and
# routes that read their body themselves (uploads, inference).
@pytest.mark.parametrize(
    ("method", "path", "key", "code"),
    [
        ("POST", "/admin/clients", None, "missing_api_key"),
        ("POST", "/admin/clients", "Bearer sk-ms-not-the-admin", "invalid_api_key"),
        ("POST", "/admin/base-models", "Bearer sk-ms-not-the-admin", "invalid_api_key"),
        ("POST", "/v1/fine_tuning/jobs", "Bearer sk-ms-wrong", "invalid_api_key"),
        ("POST", "/v1/uploads", None, "missing_api_key"),
        ("POST", "/v1/files", "Bearer sk-ms-wrong", "invalid_api_key"),
        ("POST", "/v1/chat/completions", "Basic abc", "missing_api_key"),
    ],
)
async def test_unauthenticated_big_body_is_401_without_reading_it(
    app: FastAPI, method: str, path: str, key: str | None, code: str
) -> None:
    headers = {**OCTETS, "transfer-encoding": "chunked"}
    if key is not None:
        headers["authorization"] = key
    answer = await call_without_body(app, method, path, headers)
    assert answer.receive_calls == 0
    assert answer.status == 401
    error = answer.json()["error"]
    assert isinstance(error, dict)
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "authentication_error" and error["code"] == code
    assert answer.headers["content-type"] == "application/json"
    assert "x-request-id" in answer.headers


async def test_a_client_key_on_an_admin_path_is_refused_before_the_body(app: FastAPI) -> None:
    headers = await client_headers(app)
    answer = await call_without_body(
        app, "POST", "/admin/clients", {**OCTETS, "content-length": GIB, **headers}
    )
    assert (answer.status, answer.receive_calls) == (401, 0)


async def test_disabled_client_gets_403_before_the_body(app: FastAPI) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://studio") as api:
        client_id, headers = await new_client(api)
        assert (await api.post(f"/admin/clients/{client_id}/disable", headers=ADMIN)).status_code == 200
    answer = await call_without_body(
        app, "POST", "/v1/fine_tuning/jobs", {**OCTETS, "content-length": GIB, **headers}
    )
    assert (answer.status, answer.receive_calls) == (403, 0)
    assert answer.json()["error"] == {
        "message": f"client {client_id!r} is disabled",
        "type": "permission_error",
        "param": None,
        "code": "client_disabled",
    }


async def test_over_the_rate_limit_is_429_with_retry_after_before_the_body(settings: Settings) -> None:
    async with started_app(settings) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://studio") as api:
            _, headers = await new_client(api, requests_per_minute=1)
            assert (await api.get("/v1/me", headers=headers)).status_code == 200
        answer = await call_without_body(
            app, "POST", "/v1/uploads", {**OCTETS, "content-length": GIB, **headers}
        )
    assert (answer.status, answer.receive_calls) == (429, 0)
    assert 1 <= int(answer.headers["retry-after"]) <= 60


async def test_the_gate_authenticates_once_and_the_dependencies_reuse_it(
    api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    client_id, headers = await new_client(api)
    calls: list[str | None] = []
    authenticate = AuthService.authenticate

    async def counted(self: AuthService, authorization: str | None) -> Principal:
        calls.append(authorization)
        return await authenticate(self, authorization)

    monkeypatch.setattr(AuthService, "authenticate", counted)
    me = await api.get("/v1/me", headers=headers)
    assert me.status_code == 200 and me.json()["id"] == client_id
    assert calls == [headers["Authorization"]]


async def test_public_paths_and_unknown_paths_need_no_key(api: httpx.AsyncClient) -> None:
    for path in ("/healthz", "/readyz", "/openapi.json", "/docs", "/redoc", "/docs/oauth2-redirect"):
        assert (await api.get(path)).status_code == 200, path
    # The web app is public; a file it does not have is a 404, not a 401.
    assert (await api.get("/studio/")).status_code == 200
    assert_error(await api.get("/studio/nope.js"), 404)
    assert_error(await api.get("/nope"), 404)
    assert_error(await api.put("/v1/me"), 405)


async def test_cors_preflight_passes_and_gate_answers_carry_cors_headers(
    tmp_path: Path, mongo_url: str
) -> None:
    settings = make_settings(tmp_path, mongo_url=mongo_url, api={"cors_origins": "https://ui.example"})
    async with running_api(settings) as api:
        preflight = await api.options(
            "/v1/files",
            headers={"Origin": "https://ui.example", "Access-Control-Request-Method": "POST"},
        )
        refused = await api.post("/v1/files", headers={"Origin": "https://ui.example"})
    assert preflight.status_code == 200
    assert_error(refused, 401, "missing_api_key")
    assert refused.headers["access-control-allow-origin"] == "https://ui.example"


def _never_started() -> AbstractAsyncContextManager[Services]:
    raise AssertionError("the lifespan is not run in this test")


async def test_while_starting_requests_go_on_to_the_503() -> None:
    app = create_api(
        _never_started,
        cors_origins=[],
        cors_allow_credentials=False,
        body_limits=BodyLimits(json=1024**2, inference=4 * 1024**2, upload=1024**3, part=64 * 1024**2),
        max_open_requests=32,
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://studio") as api:
        for response in (await api.get("/v1/me"), await api.get("/admin/clients", headers=ADMIN)):
            assert_error(response, 503, "service_unavailable")
            assert response.headers["retry-after"] == "2"
