"""The ingress in-process (as tests/api) with compute that starts nothing, so jobs can be created.

Only compute is stood in for (tests/fakes.py's recording launcher, a fixed CPU cluster, a tracker that is
never woken); the stores are the real MongoDB-protocol, Redis and S3 servers of tests/conftest.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from studio.config import Settings
from studio.services.jobs import Compute
from studio.stores.mongo import MongoStore
from tests.api.conftest import new_client, started_app
from tests.api.datasets_data import chat_rows, jsonl
from tests.conftest import S3Endpoint, make_settings
from tests.fakes import FixedCluster, RecordingLauncher, SilentTracker

TINY = "mini-studio/tiny-llama"


@dataclass
class Tenant:
    api: httpx.AsyncClient
    client_id: str
    headers: dict[str, str]
    store: MongoStore

    async def upload(self, rows: int = 40) -> dict[str, object]:
        """Upload a small valid chat dataset through `/v1/files`; return the raw file object."""
        response = await self.api.post(
            "/v1/files",
            files={"file": ("train.jsonl", jsonl(chat_rows(rows)), "application/jsonl")},
            data={"purpose": "fine-tune"},
            headers=self.headers,
        )
        assert response.status_code == 200, response.text
        body: dict[str, object] = response.json()
        return body

    async def create_job(self, file_id: object, **fields: object) -> dict[str, object]:
        body = {"model": TINY, "training_file": file_id, **fields}
        response = await self.api.post("/v1/fine_tuning/jobs", json=body, headers=self.headers)
        assert response.status_code == 200, response.text
        job: dict[str, object] = response.json()
        return job


@pytest.fixture
def settings(tmp_path: Path, mongo_url: str, redis_url: str, s3_endpoint: S3Endpoint) -> Settings:
    return make_settings(tmp_path, mongo_url=mongo_url, redis_url=redis_url, s3=s3_endpoint)


def compute() -> Compute:
    return Compute(launcher=RecordingLauncher(), cluster=FixedCluster(), notifier=SilentTracker())


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    async with started_app(settings, compute()) as started:
        yield started


@pytest.fixture
async def api(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://studio") as client:
        yield client


@pytest.fixture
async def tenant(api: httpx.AsyncClient, settings: Settings) -> AsyncIterator[Tenant]:
    client_id, headers = await new_client(api)
    assert settings.store.mongo_url is not None
    store = await MongoStore.connect(settings.store.mongo_url.get_secret_value(), settings.store)
    try:
        yield Tenant(api, client_id, headers, store)
    finally:
        await store.close()
