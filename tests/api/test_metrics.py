"""What the ingress counts, recorded by a fake `StudioMetrics` in place of Ray's: the bytes clients
upload (files and upload parts) and every error answer by status and code, middleware's included."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx

from studio.api.app import create_api
from studio.api.errors import error_response
from studio.api.middleware import BodyLimits
from studio.app.container import open_services
from studio.config import Settings
from studio.domain.keys import hash_key
from studio.services.inference import stream_usage
from tests.api.conftest import new_client
from tests.api.datasets_data import chat_rows, jsonl
from tests.fakes import RecordingMetrics


async def metered_api(settings: Settings, metrics: RecordingMetrics) -> AsyncIterator[httpx.AsyncClient]:
    assert settings.admin_key is not None and settings.store.mongo_url is not None
    mongo_url, admin_hash = (
        settings.store.mongo_url.get_secret_value(),
        hash_key(settings.admin_key.get_secret_value()),
    )
    app = create_api(
        lambda: open_services(settings, mongo_url=mongo_url, admin_key_hash=admin_hash, metrics=metrics),
        cors_origins=[],
        cors_allow_credentials=False,
        body_limits=BodyLimits.from_settings(settings),
        max_open_requests=settings.api.max_open_requests_per_client,
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://studio") as client:
            yield client


async def test_uploads_and_error_answers_are_counted(settings: Settings) -> None:
    metrics = RecordingMetrics()
    async for api in metered_api(settings, metrics):
        client_id, headers = await new_client(api)
        content = jsonl(chat_rows(8))
        created = await api.post(
            "/v1/files", files={"file": ("t.jsonl", content)}, data={"purpose": "fine-tune"}, headers=headers
        )
        assert created.status_code in (200, 201), created.text
        assert metrics.of("uploaded_bytes") == [{"client_id": client_id, "size": len(content)}]

        # Refused by the auth gate (middleware), by a route's validation, and an unknown path.
        assert (await api.get("/v1/files")).status_code == 401
        assert (await api.post("/v1/fine_tuning/jobs", json={}, headers=headers)).status_code == 400
        assert (await api.get("/v1/nowhere", headers=headers)).status_code == 404
        errors = [(e["status"], e["code"]) for e in metrics.of("api_error")]
        assert errors[0] == (401, "missing_api_key")
        assert errors[1][0] == 400 and errors[1][1] == "missing"
        assert errors[2] == (404, None)
        assert len(errors) == 3
    # Once the app is gone, its errors are no longer counted here.
    count = len(metrics.calls)
    error_response(409, "x", code="y")
    assert len(metrics.calls) == count


def test_a_streams_usage_is_read_from_its_last_chunk_only() -> None:
    chunk = 'data: {"id":"c","choices":[{"delta":{"content":"Hi"}}],"usage":null}\n\n'
    last = (
        'data: {"id":"c","choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3}}\n\ndata: [DONE]\n\n'
    )
    assert stream_usage(chunk) is None
    assert stream_usage(chunk + last) == {"prompt_tokens": 7, "completion_tokens": 3}
    assert stream_usage('data: {"usage": {"prompt_tokens": 1}}\n\n') == {"prompt_tokens": 1}
    assert stream_usage('data: {"usage":{broken\n\n') is None
