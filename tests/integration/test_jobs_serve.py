"""Jobs as users run them: through Serve's proxy, followed by the detached tracker actor, across redeploys."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest
import ray

from studio.app.builder import build_app_from_settings
from tests.integration.conftest import ServeApp
from tests.integration.test_jobs import TINY, capitals

pytestmark = pytest.mark.integration


def wait_for(
    http: httpx.Client, job_id: str, headers: dict[str, str], until: Any, timeout_s: float = 240
) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        job = http.get(f"/v1/fine_tuning/jobs/{job_id}", headers=headers).json()
        if until(job):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.5)


@dataclass(frozen=True)
class Tenant:
    id: str
    headers: dict[str, str]
    sdk: openai.OpenAI
    file_id: str


def new_tenant(serve_app: ServeApp, http: httpx.Client, name: str) -> Tenant:
    """Create a client with a key through the admin API, and upload the capitals file as it."""
    tenant = http.post("/admin/clients", json={"name": name}, headers=serve_app.admin).json()
    key = http.post(f"/admin/clients/{tenant['id']}/keys", headers=serve_app.admin).json()["secret"]
    sdk = openai.OpenAI(api_key=key, base_url=f"{serve_app.url}/v1", max_retries=0)
    file_id = sdk.files.create(file=("capitals.jsonl", capitals()), purpose="fine-tune").id
    return Tenant(tenant["id"], {"Authorization": f"Bearer {key}"}, sdk, file_id)


def test_a_job_survives_a_redeploy_of_the_serve_app(serve_app: ServeApp, http: httpx.Client) -> None:
    from ray import serve

    tenant = new_tenant(serve_app, http, "jobs")
    headers = tenant.headers
    job = tenant.sdk.fine_tuning.jobs.create(
        model=TINY,
        training_file=tenant.file_id,
        method={
            "type": "supervised",
            "supervised": {
                "hyperparameters": {"n_epochs": 6, "batch_size": 1, "learning_rate_multiplier": 50}
            },
        },
    )
    # The tracker is a named, detached actor in Mini Studio's namespace (visible in the dashboard).
    settings = serve_app.settings
    assert ray.get_actor(settings.tracker.name, namespace=settings.ray.namespace) is not None
    wait_for(http, job.id, headers, lambda j: j["status"] == "running" and j["progress"]["step"] > 0)

    serve.delete(settings.serving.app_name)  # the ingress goes away mid-job...
    serve.run(build_app_from_settings(settings), name=settings.serving.app_name, route_prefix="/")
    done = wait_for(http, job.id, headers, lambda j: j["status"] in ("succeeded", "failed", "cancelled"))
    assert done["status"] == "succeeded" and done["attempts"] == 1, done
    assert done["fine_tuned_model"].startswith(f"ft:{TINY}:{tenant.id}::")
    assert done["progress"]["step"] == done["progress"]["total_steps"] == 6 * 64


def test_a_killed_tracker_comes_back_and_finishes_the_job(serve_app: ServeApp, http: httpx.Client) -> None:
    tenant = new_tenant(serve_app, http, "tracker-kill")
    headers = tenant.headers
    job = tenant.sdk.fine_tuning.jobs.create(
        model=TINY,
        training_file=tenant.file_id,
        hyperparameters={"n_epochs": 8, "batch_size": 1, "learning_rate_multiplier": 50},
    )
    settings = serve_app.settings
    wait_for(http, job.id, headers, lambda j: j["status"] == "running" and j["progress"]["step"] > 0)

    # kill -9 of its process: Ray restarts the actor, whose constructor starts the loop again.
    tracker = ray.get_actor(settings.tracker.name, namespace=settings.ray.namespace)
    pid = ray.get(tracker.__ray_call__.remote(lambda actor: os.getpid()), timeout=30)
    os.kill(pid, signal.SIGKILL)
    step = http.get(f"/v1/fine_tuning/jobs/{job.id}", headers=headers).json()["progress"]["step"]
    wait_for(http, job.id, headers, lambda j: j["progress"]["step"] > step or j["status"] != "running")

    # Killed for good (no restart): an ingress replica's liveness check creates it again.
    ray.kill(ray.get_actor(settings.tracker.name, namespace=settings.ray.namespace), no_restart=True)
    done = wait_for(http, job.id, headers, lambda j: j["status"] in ("succeeded", "failed", "cancelled"))
    assert done["status"] == "succeeded" and done["attempts"] == 1, done
