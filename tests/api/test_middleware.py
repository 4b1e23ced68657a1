"""CORS from settings, gzip for large bodies, database commands timed at DEBUG level."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from studio.config import Settings
from studio.logs import DB_LOGGER, configure_logging
from tests.api.conftest import ADMIN, running_api
from tests.conftest import make_settings


async def test_cors_allows_configured_origins_only(tmp_path: Path, mongo_url: str) -> None:
    settings = make_settings(tmp_path, mongo_url=mongo_url, api={"cors_origins": "https://ui.example"})
    async with running_api(settings) as api:
        preflight = {
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        }
        allowed = await api.options("/v1/me", headers={"Origin": "https://ui.example", **preflight})
        refused = await api.options("/v1/me", headers={"Origin": "https://evil.example", **preflight})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://ui.example"
    assert "access-control-allow-origin" not in refused.headers


async def test_large_responses_are_gzipped(settings: Settings) -> None:
    async with running_api(settings) as api:
        response = await api.get("/openapi.json", headers={"Accept-Encoding": "gzip"})
    assert response.status_code == 200
    assert response.headers["content-encoding"] == "gzip"
    assert response.json()["info"]["title"] == "Mini Studio"


async def test_database_commands_are_logged_with_duration_at_debug(settings: Settings) -> None:
    configure_logging(log_dir=settings.log_dir, level="DEBUG")
    try:
        async with running_api(settings) as api:
            await api.get("/admin/clients", headers={**ADMIN, "X-Request-ID": "db-log-1"})
    finally:
        logging.getLogger("studio").setLevel(logging.INFO)
    lines = [
        json.loads(line)
        for path in settings.log_dir.glob("studio-*.jsonl")
        for line in path.read_text().splitlines()
    ]
    db_lines = [
        line for line in lines if line["logger"] == DB_LOGGER and line.get("request_id") == "db-log-1"
    ]
    assert any(line["db_command"] == "find" for line in db_lines)
    assert all(line["duration_ms"] >= 0 for line in db_lines)
