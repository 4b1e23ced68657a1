"""Jobs as users run them: through Serve's proxy, followed by the detached tracker actor, across redeploys."""

from __future__ import annotations

import time
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


def test_a_job_survives_a_redeploy_of_the_serve_app(serve_app: ServeApp, http: httpx.Client) -> None:
    from ray import serve

    tenant = http.post("/admin/clients", json={"name": "jobs"}, headers=serve_app.admin).json()
    key = http.post(f"/admin/clients/{tenant['id']}/keys", headers=serve_app.admin).json()["secret"]
    headers = {"Authorization": f"Bearer {key}"}
    sdk = openai.OpenAI(api_key=key, base_url=f"{serve_app.url}/v1", max_retries=0)
    file_id = sdk.files.create(file=("capitals.jsonl", capitals()), purpose="fine-tune").id
    job = sdk.fine_tuning.jobs.create(
        model=TINY,
        training_file=file_id,
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
    assert done["fine_tuned_model"].startswith(f"ft:{TINY}:{tenant['id']}::")
    assert done["progress"]["step"] == done["progress"]["total_steps"] == 6 * 64
