"""The Serve app as users run it, for every test folder that drives it (integration, browser).

A pytest plugin (`pytest_plugins` in tests/conftest.py), not a folder's conftest: session fixtures
defined in two conftests would be two fixtures, and one run of both folders would start two Ray
clusters. A private Ray cluster (own temp dir, never `ray stop`) running the Serve app on embedded
defaults.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from studio.config import Settings
from tests import servers
from tests.conftest import S3Endpoint, make_settings
from tests.serve_modes import controller_options, private_ports, shipped_env, wait_for_direct_routes

os.environ.setdefault("RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S", "0")


@dataclass(frozen=True)
class ServeApp:
    url: str
    settings: Settings
    admin: dict[str, str]


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[str]:
    """Yield the dashboard (Jobs API) address of a private local Ray cluster."""
    import ray

    # A short private temp dir: a stale /tmp/ray session cannot capture this cluster, and Ray's
    # socket paths stay under the 107-byte limit.
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    ray.init(
        address="local",
        num_cpus=2,
        _temp_dir=temp_dir,
        include_dashboard=True,
        dashboard_port=(dashboard_port := servers.free_port()),
        namespace="mini-studio-tests",
        log_to_driver=False,
    )
    yield f"http://127.0.0.1:{dashboard_port}"
    ray.shutdown()


@pytest.fixture(scope="session")
def serve_app(
    ray_cluster: str, tmp_path_factory: pytest.TempPathFactory, redis_url: str, s3_endpoint: S3Endpoint
) -> Iterator[ServeApp]:
    """Mini Studio as users run it: the entry point `serve_config.yaml` ships (HAProxy), two ingress
    replicas, embedded MongoDB actor. Ingress replicas drain for 1 s when stopped, not Ray's 30."""
    from ray import serve

    from studio.app.builder import build_app_from_settings

    data_dir = tmp_path_factory.mktemp("studio-data")
    settings = make_settings(
        data_dir,
        mongo_url=None,
        redis_url=redis_url,
        s3=s3_endpoint,
        store={"embedded_port": servers.free_port()},
        serving={"ingress_replicas": 2, "ingress_num_cpus": 0.1},
    )
    port = servers.free_port()
    env = private_ports(shipped_env(), drain_s=1)
    serve.start(http_options={"host": "127.0.0.1", "port": port}, controller_options=controller_options(env))
    serve.run(build_app_from_settings(settings), name=settings.serving.app_name, route_prefix="/")
    wait_for_direct_routes(env, replicas=settings.serving.ingress_replicas)
    assert settings.admin_key is not None
    yield ServeApp(
        url=f"http://127.0.0.1:{port}",
        settings=settings,
        admin={"Authorization": f"Bearer {settings.admin_key.get_secret_value()}"},
    )
    serve.shutdown()  # type: ignore[no-untyped-call]


@pytest.fixture
def http(serve_app: ServeApp) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=serve_app.url, timeout=30) as client:
        yield client


def data_dir_of(app: ServeApp) -> Path:
    return app.settings.data_dir
