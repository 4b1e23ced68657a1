"""Shared set-up for benchmarks: a private Ray cluster running Mini Studio, a client and its key."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.servers import free_port

ADMIN_KEY = "bench-admin-key-0123456789"


@dataclass(frozen=True)
class RunningStudio:
    url: str
    data_dir: Path
    headers: dict[str, str]
    settings: Any
    jobs_address: str | None = None


@contextmanager
def running_studio(*, dashboard: bool = False, **settings_overrides: Any) -> Iterator[RunningStudio]:
    """Start Ray (own temp dir), Serve and Mini Studio on embedded defaults; yield a client's headers.

    `dashboard=True` starts Ray's dashboard too (the Jobs API, which fine-tuning needs).
    """
    os.environ.setdefault("RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S", "0")
    import ray
    from ray import serve

    from studio.app.builder import build_app_from_settings
    from studio.config import load_settings

    data_dir = Path(tempfile.mkdtemp(prefix="studio-bench-"))
    settings = load_settings(
        data_dir=data_dir,
        admin_key=ADMIN_KEY,
        store={"embedded_port": free_port()},
        api={"log_level": "WARNING"},
        **settings_overrides,
    )
    ray.init(
        address="local",
        num_cpus=2,
        _temp_dir=tempfile.mkdtemp(prefix="ray-", dir="/tmp"),
        include_dashboard=dashboard,
        dashboard_port=(dashboard_port := free_port()),
        log_to_driver=False,
    )
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app_from_settings(settings), name="mini-studio", route_prefix="/")
    url = f"http://127.0.0.1:{port}"
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    try:
        with httpx.Client(base_url=url, timeout=30) as http:
            client = http.post(
                "/admin/clients",
                headers=admin,
                json={"name": "bench", "limits": {"requests_per_minute": 10_000_000}},
            ).json()
            secret = http.post(f"/admin/clients/{client['id']}/keys", headers=admin).json()["secret"]
        jobs_address = f"http://127.0.0.1:{dashboard_port}" if dashboard else None
        yield RunningStudio(url, data_dir, {"Authorization": f"Bearer {secret}"}, settings, jobs_address)
    finally:
        serve.shutdown()  # type: ignore[no-untyped-call]
        ray.shutdown()
