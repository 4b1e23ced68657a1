"""Fine-tuning on Ray clusters without a working Jobs API, each scenario on its own Ray cluster.

Run by tests/integration/test_launch_without_dashboard.py in a subprocess: a driver connects to one
Ray cluster only, and the test session's shared cluster has (and needs) its dashboard. Each scenario
starts a private local cluster, runs the API and the tracker's loop in this process with the launcher
production builds (`training_launcher`, mode `auto`), and drives jobs through the `openai` SDK:

- `no_dashboard`: a cluster started with `include_dashboard=False`: a LoRA job runs to `succeeded`
  as a Ray actor and resumes from its checkpoint after its actor is killed; another is cancelled
  mid-run and its run ends `stopped`.
- `dashboard_stopped`: the dashboard is killed while a job runs as a Ray job: that job is still
  followed to `succeeded` (status, log and end read through the cluster), and the next job launches
  through the actor fallback and succeeds.

    python -m tests.reliability.launch_scenarios <scenario> --mongo-url URL --tmp DIR

Exits 0 when every check held; an AssertionError (with the job) otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import psutil
import ray
from ray.job_submission import JobSubmissionClient

from studio.app.job_tracker import jobs_api_address, training_launcher
from studio.backends.ray_actor_jobs import actor_name
from studio.config import Settings
from tests.conftest import make_settings
from tests.helpers import state_after_running
from tests.integration.test_jobs import (
    TINY,
    Stack,
    capitals,
    checkpointed_job,
    fast_lora,
    jobs_stack,
    training_process,
    upload,
    wait_for_job,
)
from tests.servers import free_port

FINISHED = ("succeeded", "failed", "cancelled")


async def messages_of(stack: Stack, job_id: str) -> list[str]:
    return [e.message async for e in stack.sdk.fine_tuning.jobs.list_events(job_id, limit=1000)]


async def no_dashboard(stack: Stack, settings: Settings) -> None:
    file_id, job, running = await checkpointed_job(stack)
    assert running["ray_job_id"].startswith("actor:"), running
    assert running["resources"]["launcher"] == "actor", running
    process = training_process(str(settings.jobs_dir / job.id))
    assert process is not None
    # The run's actor is killed (and its process with it): the next attempt resumes from its checkpoint.
    ray.kill(ray.get_actor(actor_name(running["ray_job_id"]), namespace=settings.ray.namespace))
    assert psutil.wait_procs([process], timeout=30)[0], "the training process outlived its actor"
    done = await wait_for_job(stack, job.id, lambda j: j["status"] in FINISHED)
    assert done["status"] == "succeeded" and done["attempts"] == 2, (done, await messages_of(stack, job.id))
    assert any("Retrying from the checkpoint at step" in m for m in await messages_of(stack, job.id))

    cancelled = await stack.sdk.fine_tuning.jobs.create(
        model=TINY,
        training_file=file_id,
        hyperparameters=fast_lora(100, batch=1),  # type: ignore[arg-type]
    )
    running = await wait_for_job(stack, cancelled.id, lambda j: j["progress"]["step"] > 0)
    assert running["ray_job_id"].startswith("actor:"), running
    assert (await stack.sdk.fine_tuning.jobs.cancel(cancelled.id)).status == "cancelled"
    assert await state_after_running(stack.launcher, running["ray_job_id"]) == "stopped"


def dashboard_processes(temp_dir: str) -> list[psutil.Process]:
    """Return this cluster's dashboard process (the Jobs API's server), found by its temp dir."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if "dashboard/dashboard.py" in cmdline and temp_dir in cmdline:
            found.append(process)
    return found


async def dashboard_stopped(stack: Stack, settings: Settings, temp_dir: str) -> None:
    file_id = await upload(stack, capitals())
    job = await stack.sdk.fine_tuning.jobs.create(
        model=TINY,
        training_file=file_id,
        hyperparameters=fast_lora(6, batch=2),  # type: ignore[arg-type]
    )
    running = await wait_for_job(stack, job.id, lambda j: j["progress"]["step"] > 0)
    assert not running["ray_job_id"].startswith("actor:"), running
    assert running["resources"]["launcher"] == "jobs_api", running
    dashboards = dashboard_processes(temp_dir)
    assert dashboards, "no dashboard process found"
    for process in dashboards:
        process.kill()
    psutil.wait_procs(dashboards, timeout=10)
    done = await wait_for_job(stack, job.id, lambda j: j["status"] in FINISHED)
    assert done["status"] == "succeeded" and done["attempts"] == 1, done
    assert done["progress"]["step"] == done["progress"]["total_steps"], done

    after = await stack.sdk.fine_tuning.jobs.create(
        model=TINY,
        training_file=file_id,
        hyperparameters=fast_lora(1, batch=8),  # type: ignore[arg-type]
    )
    done = await wait_for_job(stack, after.id, lambda j: j["status"] in FINISHED)
    assert done["status"] == "succeeded" and done["ray_job_id"].startswith("actor:"), done


async def jobs_api_ready(address: str, timeout_s: float = 120) -> None:
    """Wait until the Jobs API takes a submission (it answers 500 "No available agent" until the
    node's dashboard agent has registered, after it already lists jobs)."""

    def takes_a_job() -> bool:
        try:
            JobSubmissionClient(address).submit_job(entrypoint="true")
        except Exception:  # not up yet
            return False
        return True

    for _ in range(int(timeout_s / 0.5)):
        if await asyncio.to_thread(takes_a_job):
            return
        await asyncio.sleep(0.5)
    raise TimeoutError(f"the Jobs API at {address} took no job in {timeout_s} s")


async def run(scenario: str, *, mongo_url: str, tmp: Path) -> None:
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    dashboard = scenario == "dashboard_stopped"
    dashboard_port = free_port()
    ray.init(
        address="local",
        num_cpus=2,
        _temp_dir=temp_dir,
        include_dashboard=dashboard,
        dashboard_port=dashboard_port,
        namespace="mini-studio-tests",
        log_to_driver=False,
    )
    settings = make_settings(
        tmp,
        mongo_url=mongo_url,
        tracker={"poll_interval_s": 0.5},
        # A Jobs API slow to answer on a loaded machine must not send the first job to the fallback.
        training={"checkpoint_every_steps": 4, "max_seq_len": 64, "jobs_api_timeout_s": 30},
        ray={"actor_timeout_s": 10},
    )
    if dashboard:  # the first job must start through the Jobs API: wait until it answers
        await jobs_api_ready(jobs_api_address(settings))
    launcher = training_launcher(settings)  # what the tracker builds: `auto`, this cluster's Jobs API
    steps: dict[str, Callable[[Stack], Awaitable[None]]] = {
        "no_dashboard": lambda stack: no_dashboard(stack, settings),
        "dashboard_stopped": lambda stack: dashboard_stopped(stack, settings, temp_dir),
    }
    try:
        async with jobs_stack(settings, "unused", launcher=launcher) as stack:
            await steps[scenario](stack)
    finally:
        ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("scenario", choices=["no_dashboard", "dashboard_stopped"])
    parser.add_argument("--mongo-url", required=True)
    parser.add_argument("--tmp", type=Path, required=True)
    args = parser.parse_args()
    asyncio.run(run(args.scenario, mongo_url=args.mongo_url, tmp=args.tmp))
    print(f"scenario {args.scenario}: every check held")


if __name__ == "__main__":
    main()
