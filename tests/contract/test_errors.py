"""Errors as OpenAI's: the shape (strict, against the SDK's `ErrorObject`), the status, the `type`, and
`x-should-retry`, which the `openai` SDK obeys before its own rules; and the SDK's retries, counted."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager

import httpx
import openai
import pytest
from fastapi import FastAPI

from studio.api.app import create_api
from studio.api.middleware import BodyLimits
from studio.api.services import Services
from studio.config import Settings
from tests.api.conftest import new_client
from tests.contract.conftest import TINY, Tenant
from tests.contract.strict import ERROR_OMITTED, ErrorBody, assert_openai_shape


def assert_error(
    response: httpx.Response, status: int, error_type: str, code: str | None, *, retry: str | None
) -> dict[str, object]:
    """Check an error answer whole; return its `error`. `retry`: the `x-should-retry` expected."""
    assert response.status_code == status, response.text
    assert_openai_shape(response.json(), ErrorBody, omitted=ERROR_OMITTED)
    error: dict[str, object] = response.json()["error"]
    assert (error["type"], error["code"]) == (error_type, code), error
    assert response.headers.get("x-should-retry") == retry
    if status in (429, 503):
        assert int(response.headers["retry-after"]) >= 1
    return error


async def test_refusals_of_the_request_are_400_to_404_and_permanent(
    api: httpx.AsyncClient, tenant: Tenant
) -> None:
    file = await tenant.upload()
    bad_value = {"model": TINY, "training_file": file["id"], "hyperparameters": {"n_epochs": 0}}
    response = await api.post("/v1/fine_tuning/jobs", json=bad_value, headers=tenant.headers)
    error = assert_error(response, 400, "invalid_request_error", "greater_than_equal", retry="false")
    assert error["param"] == "hyperparameters.n_epochs"
    unknown_field = {"model": TINY, "training_file": file["id"], "colour": 1}
    unknown = await api.post("/v1/fine_tuning/jobs", json=unknown_field, headers=tenant.headers)
    error = assert_error(unknown, 400, "invalid_request_error", "extra_forbidden", retry="false")
    assert error["param"] == "colour"
    malformed = await api.post(
        "/v1/fine_tuning/jobs",
        content=b'{"model": ',
        headers={**tenant.headers, "content-type": "application/json"},
    )
    assert_error(malformed, 400, "invalid_request_error", "invalid_json", retry="false")

    wrong_key = await api.get("/v1/models", headers={"Authorization": "Bearer sk-ms-wrong"})
    assert_error(wrong_key, 401, "authentication_error", "invalid_api_key", retry="false")
    _, no_jobs = await new_client(api, "no-jobs", max_concurrent_jobs=0)
    forbidden = await api.post(
        "/v1/fine_tuning/jobs", json=bad_value | {"hyperparameters": {}}, headers=no_jobs
    )
    assert_error(forbidden, 403, "permission_error", "jobs_not_allowed", retry="false")
    missing = await api.get("/v1/fine_tuning/jobs/ftjob-none", headers=tenant.headers)
    assert_error(missing, 404, "invalid_request_error", "job_not_found", retry="false")
    assert_error(await api.get("/v1/nothing-here"), 404, "invalid_request_error", None, retry="false")
    assert_error(await api.delete("/healthz"), 405, "invalid_request_error", None, retry="false")


async def test_conflicts_are_permanent(api: httpx.AsyncClient, tenant: Tenant, settings: Settings) -> None:
    file = await tenant.upload()
    job = await tenant.create_job(file["id"])
    in_use = await api.delete(f"/v1/files/{file['id']}", headers=tenant.headers)
    assert_error(in_use, 409, "invalid_request_error", "file_in_use", retry="false")
    await api.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel", headers=tenant.headers)
    finished = await api.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel", headers=tenant.headers)
    assert_error(finished, 409, "invalid_request_error", "job_finished", retry="false")
    chat = {"model": TINY, "messages": [{"role": "user", "content": "hi"}]}
    not_deployed = await api.post("/v1/chat/completions", json=chat, headers=tenant.headers)
    assert_error(not_deployed, 409, "invalid_request_error", "model_not_deployed", retry="false")
    too_big = json.dumps({"name": "x" * (settings.api.max_json_body_bytes + 10)})
    admin = {"Authorization": f"Bearer {settings.admin_key.get_secret_value()}"} if settings.admin_key else {}
    oversized = await api.post(
        "/admin/clients", content=too_big, headers={**admin, "content-type": "application/json"}
    )
    assert_error(oversized, 413, "invalid_request_error", "payload_too_large", retry="false")


async def test_limits_and_outages_say_retry(api: httpx.AsyncClient) -> None:
    _, headers = await new_client(api, "slow", requests_per_minute=1)
    await api.get("/v1/me", headers=headers)
    limited = await api.get("/v1/me", headers=headers)
    assert_error(limited, 429, "rate_limit_error", "rate_limit_exceeded", retry="true")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=starting_app()), base_url="http://s"
    ) as starting:
        unavailable = await starting.get("/v1/models", headers=headers)
    assert_error(unavailable, 503, "server_error", "service_unavailable", retry="true")


def _never_started() -> AbstractAsyncContextManager[Services]:
    raise AssertionError("the lifespan is not run")


def starting_app() -> FastAPI:
    """The ingress before its lifespan ran: every request is a 503 with Retry-After (2 s)."""
    limits = BodyLimits(json=1024**2, inference=4 * 1024**2, upload=1024**3, part=64 * 1024**2)
    return create_api(
        _never_started, cors_origins=[], cors_allow_credentials=False, body_limits=limits, max_open_requests=8
    )


class Counted:
    """An SDK client over the app in-process, counting the requests that reach the app."""

    def __init__(self, app: FastAPI, key: str) -> None:
        self.requests = 0

        async def count(_: httpx.Request) -> None:
            self.requests += 1

        self.http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://studio", event_hooks={"request": [count]}
        )
        # openai 3.5x is typed for httpx2's client; httpx's has the same interface and works unchanged.
        self.sdk = openai.AsyncOpenAI(
            api_key=key,
            base_url="http://studio/v1",
            http_client=self.http,  # type: ignore[arg-type]
            max_retries=2,
        )


@pytest.fixture
async def counted(app: FastAPI, tenant: Tenant) -> AsyncIterator[Counted]:
    client = Counted(app, tenant.headers["Authorization"].removeprefix("Bearer "))
    yield client
    await client.http.aclose()


async def test_the_sdk_does_not_retry_a_permanent_conflict(counted: Counted, tenant: Tenant) -> None:
    file = await tenant.upload()
    job = await counted.sdk.fine_tuning.jobs.create(model=TINY, training_file=str(file["id"]))
    await counted.sdk.fine_tuning.jobs.cancel(job.id)
    counted.requests = 0
    with pytest.raises(openai.ConflictError) as finished:
        await counted.sdk.fine_tuning.jobs.cancel(job.id)
    assert finished.value.code == "job_finished" and counted.requests == 1
    with pytest.raises(openai.ConflictError) as not_deployed:
        await counted.sdk.chat.completions.create(model=TINY, messages=[{"role": "user", "content": "hi"}])
    assert not_deployed.value.code == "model_not_deployed" and counted.requests == 2


async def test_the_sdk_retries_a_503(tenant: Tenant) -> None:
    # Two retries after Retry-After (2 s) each: about 4 s.
    client = Counted(starting_app(), tenant.headers["Authorization"].removeprefix("Bearer "))
    try:
        with pytest.raises(openai.InternalServerError) as unavailable:
            await client.sdk.models.list()
    finally:
        await client.http.aclose()
    assert unavailable.value.status_code == 503 and client.requests == 3
