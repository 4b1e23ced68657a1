"""Parts of the running studio killed mid-job: the tracker actor, the ingress (redeployed), an ingress
replica and the embedded database (kill -9). No job is lost, none is left running, none runs twice."""

from __future__ import annotations

import os
import signal
import time

import httpx
import pytest
import ray

from studio.app.builder import build_app_from_settings
from tests.helpers import TINY, new_tenant, wait_for
from tests.serve_fixtures import ServeApp

pytestmark = pytest.mark.integration


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


def test_a_job_survives_kill_9_of_an_ingress_replica_and_of_the_database(
    serve_app: ServeApp, http: httpx.Client, ray_cluster: str
) -> None:
    from ray.util.state import list_actors

    from studio.app.embedded import EMBEDDED_MONGO_ACTOR

    tenant = new_tenant(serve_app, http, "parts-kill")
    headers = tenant.headers
    job = tenant.sdk.fine_tuning.jobs.create(
        model=TINY,
        training_file=tenant.file_id,
        hyperparameters={"n_epochs": 8, "batch_size": 1, "learning_rate_multiplier": 50},
    )
    settings = serve_app.settings
    running = wait_for(
        http, job.id, headers, lambda j: j["status"] == "running" and j["progress"]["step"] > 0
    )

    # kill -9 of the embedded database mid-job: Ray restarts its actor on the same files and port.
    database = ray.get_actor(EMBEDDED_MONGO_ACTOR, namespace=settings.ray.namespace)
    os.kill(ray.get(database.__ray_call__.remote(lambda actor: os.getpid()), timeout=30), signal.SIGKILL)
    step = running["progress"]["step"]
    wait_for(http, job.id, headers, lambda j: j["progress"]["step"] > step or j["status"] != "running")

    # kill -9 of one ingress replica: Serve starts another; the job goes on meanwhile.
    def ingress_pids() -> dict[str, int]:
        actors = list_actors(address=ray_cluster, filters=[("state", "=", "ALIVE")], limit=1000)
        return {a.actor_id: a.pid for a in actors if "StudioIngress" in (a.class_name or "")}

    before = ingress_pids()
    assert len(before) == settings.serving.ingress_replicas
    victim = next(iter(before))
    os.kill(before[victim], signal.SIGKILL)
    done = wait_for(http, job.id, headers, lambda j: j["status"] in ("succeeded", "failed", "cancelled"))

    assert done["status"] == "succeeded" and done["attempts"] == 1, done
    assert done["progress"]["step"] == done["progress"]["total_steps"] > step
    for _ in range(120):  # Serve replaces the killed replica
        after = ingress_pids()
        if victim not in after and len(after) == settings.serving.ingress_replicas:
            break
        time.sleep(0.5)
    assert victim not in after and len(after) == settings.serving.ingress_replicas, after
    # HAProxy may still send a request to the dead replica until its health check marks it down (the
    # connection closes unanswered): the SDK's retries cover that window.
    events = tenant.sdk.with_options(max_retries=5).fine_tuning.jobs.list_events(job.id, limit=1000).data
    assert sum(1 for e in events if e.message.startswith("Launched ")) == 1  # never launched twice
    assert tenant.sdk.with_options(max_retries=5).models.list().data is not None  # the API serves on
