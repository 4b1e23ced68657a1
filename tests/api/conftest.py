"""The ingress app in-process (httpx ASGITransport) on real MongoDB-protocol, Redis and S3 servers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from studio.api.app import create_api
from studio.api.middleware import BodyLimits
from studio.app.container import open_services
from studio.backends.model_targets import ModelServersByTarget
from studio.config import Settings
from studio.domain.keys import hash_key
from studio.ports import ModelDemand
from studio.services.jobs import Compute
from tests.conftest import S3Endpoint, make_settings

ADMIN = {"Authorization": "Bearer test-admin-key-0123456789"}


@asynccontextmanager
async def started_app(
    settings: Settings,
    compute: Compute | None = None,
    model_servers: ModelServersByTarget | None = None,
    model_demand: ModelDemand | None = None,
) -> AsyncIterator[FastAPI]:
    """Build the app from `settings` and run its lifespan (connects the stores) around the block."""
    assert settings.admin_key is not None and settings.store.mongo_url is not None
    admin_hash = hash_key(settings.admin_key.get_secret_value())
    mongo_url = settings.store.mongo_url.get_secret_value()
    app = create_api(
        lambda: open_services(
            settings,
            mongo_url=mongo_url,
            admin_key_hash=admin_hash,
            compute=compute,
            model_servers=model_servers,
            model_demand=model_demand,
        ),
        cors_origins=settings.api.cors_origins,
        cors_allow_credentials=settings.api.cors_allow_credentials,
        body_limits=BodyLimits.from_settings(settings),
        max_open_requests=settings.api.max_open_requests_per_client,
    )
    async with app.router.lifespan_context(app):
        yield app


@asynccontextmanager
async def running_api(
    settings: Settings,
    compute: Compute | None = None,
    model_servers: ModelServersByTarget | None = None,
    model_demand: ModelDemand | None = None,
) -> AsyncIterator[httpx.AsyncClient]:
    """Start the app's lifespan (connects the stores) and yield a client talking to it in-process."""
    async with started_app(settings, compute, model_servers, model_demand) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://studio") as client:
            yield client


@pytest.fixture
def settings(tmp_path: Path, mongo_url: str, redis_url: str, s3_endpoint: S3Endpoint) -> Settings:
    return make_settings(tmp_path, mongo_url=mongo_url, redis_url=redis_url, s3=s3_endpoint)


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with running_api(settings) as client:
        yield client


async def new_client(
    api: httpx.AsyncClient, name: str = "acme", **limits: object
) -> tuple[str, dict[str, str]]:
    """Create a client (with optional limits) and a key; return its id and auth headers."""
    body: dict[str, object] = {"name": name}
    if limits:
        body["limits"] = limits
    created = await api.post("/admin/clients", json=body, headers=ADMIN)
    assert created.status_code == 201, created.text
    client_id = created.json()["id"]
    key = await api.post(f"/admin/clients/{client_id}/keys", headers=ADMIN)
    assert key.status_code == 201, key.text
    return client_id, {"Authorization": f"Bearer {key.json()['secret']}"}
