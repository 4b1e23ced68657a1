"""The same FastAPI app as the ingress, run by plain uvicorn (for comparison with Serve's proxy).

`uvicorn --factory bench.plain_app:create` with STUDIO_* settings and BENCH_MONGO_URL in the env.
"""

from __future__ import annotations

import os

from fastapi import FastAPI

from studio.api.app import create_api
from studio.api.middleware import BodyLimits
from studio.app.container import open_services
from studio.config import load_settings
from studio.domain.keys import hash_key


def create() -> FastAPI:
    settings = load_settings()
    assert settings.admin_key is not None
    admin_hash = hash_key(settings.admin_key.get_secret_value())
    mongo_url = os.environ["BENCH_MONGO_URL"]
    return create_api(
        lambda: open_services(settings, mongo_url=mongo_url, admin_key_hash=admin_hash),
        cors_origins=settings.api.cors_origins,
        cors_allow_credentials=settings.api.cors_allow_credentials,
        body_limits=BodyLimits.from_settings(settings),
        max_open_requests=settings.api.max_open_requests_per_client,
    )
