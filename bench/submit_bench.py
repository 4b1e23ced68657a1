"""Submit latency for both launchers: Mini Studio's API call -> run RUNNING, beside the bare Ray call.

    .venv/bin/python -m bench.submit_bench [--rounds 5]

Two private Ray clusters in turn, each running Mini Studio on embedded defaults (launcher `auto`):
1. with its dashboard, so jobs run through the Jobs API. Each round, alternately: (a) the bare
   `JobSubmissionClient.submit_job` of a sleeping entrypoint, timed until Ray reports it RUNNING;
   (b) `POST /v1/fine_tuning/jobs` on the tiny model, timed until the Ray job the tracker launched for
   it is RUNNING (the API call, the tracker's wake-up, its config write and submit, Ray's own start).
2. without a dashboard, so jobs run as Ray actors (the fallback). Alternately: (a) a bare detached
   actor with one CPU that starts a sleeping process, timed until its constructor returned; (b) the
   same API call, timed until the run's actor reports its process running.
Each run is stopped (and an actor run's actor gone) before the next round, so both find a free CPU.
Goal for the Jobs API: (b) <= 1.2 x (a), medians; the actor side is printed beside its bare call.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import httpx
import ray
from ray.job_submission import JobStatus, JobSubmissionClient

from bench.common import running_studio
from studio.backends.ray_actor_jobs import RayActorLauncher, actor_name
from studio.errors import NotFound

POLL_S = 0.01
ROWS = [
    {"messages": [{"role": "user", "content": f"Say {i}"}, {"role": "assistant", "content": f"{i}"}]}
    for i in range(32)
]


def wait_status(
    client: JobSubmissionClient, job_id: str, wanted: set[JobStatus], timeout_s: float = 120
) -> None:
    deadline = time.monotonic() + timeout_s
    while client.get_job_status(job_id) not in wanted:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{job_id} not in {wanted} after {timeout_s} s")
        time.sleep(POLL_S)


def bare_round(client: JobSubmissionClient) -> float:
    started = time.perf_counter()
    job_id = client.submit_job(
        entrypoint=f"{sys.executable} -c 'import time; time.sleep(60)'", entrypoint_num_cpus=1
    )
    wait_status(client, job_id, {JobStatus.RUNNING})
    elapsed = time.perf_counter() - started
    client.stop_job(job_id)
    wait_status(client, job_id, {JobStatus.STOPPED, JobStatus.SUCCEEDED, JobStatus.FAILED})
    return elapsed


@ray.remote(num_cpus=1)
class SleepingRun:
    """What a user would write for a run without the Jobs API: an actor owning a process."""

    def __init__(self) -> None:
        self._process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])

    def stop(self) -> None:
        self._process.kill()
        self._process.wait()


def bare_actor_round() -> float:
    started = time.perf_counter()
    run = SleepingRun.options(lifetime="detached").remote()  # type: ignore[attr-defined]
    ray.get(run.stop.remote())  # the constructor ran (the process started); now stop it
    elapsed = time.perf_counter() - started
    ray.kill(run)
    return elapsed


def launch_id_of(http: httpx.Client, job_id: str) -> str:
    while True:
        launch_id = http.get(f"/v1/fine_tuning/jobs/{job_id}").json()["ray_job_id"]
        if launch_id is not None:
            return str(launch_id)
        time.sleep(POLL_S)


def api_round(
    http: httpx.Client,
    file_id: str,
    *,
    wait_running: Callable[[str], None],
    wait_ended: Callable[[str], None],
) -> float:
    started = time.perf_counter()
    created = http.post(
        "/v1/fine_tuning/jobs",
        json={
            "model": "mini-studio/tiny-llama",
            "training_file": file_id,
            "hyperparameters": {"n_epochs": 100},
        },
    )
    created.raise_for_status()
    job_id = created.json()["id"]
    launch_id = launch_id_of(http, job_id)
    wait_running(launch_id)
    elapsed = time.perf_counter() - started
    http.post(f"/v1/fine_tuning/jobs/{job_id}/cancel").raise_for_status()
    wait_ended(launch_id)
    return elapsed


def wait_actor(launcher: RayActorLauncher, launch_id: str, wanted: set[str], timeout_s: float = 120) -> None:
    async def poll() -> None:
        async with asyncio.timeout(timeout_s):
            while True:
                with contextlib.suppress(NotFound):  # the actor is being registered, or was released
                    if (await launcher.status(launch_id)).state in wanted:
                        return
                await asyncio.sleep(POLL_S)

    asyncio.run(poll())


def wait_gone(launcher: RayActorLauncher, launch_id: str, timeout_s: float = 120) -> None:
    async def poll() -> None:
        async with asyncio.timeout(timeout_s):
            for _ in itertools.count():
                if not await launcher.has_run(actor_name(launch_id)):
                    return
                await asyncio.sleep(0.1)

    asyncio.run(poll())


def upload(http: httpx.Client) -> str:
    body = "".join(json.dumps(row) + "\n" for row in ROWS).encode()
    created = http.post("/v1/files", files={"file": ("bench.jsonl", body)}, data={"purpose": "fine-tune"})
    created.raise_for_status()
    return str(created.json()["id"])


def through_jobs_api(rounds: int) -> tuple[list[float], list[float]]:
    with running_studio(dashboard=True, tracker={"poll_interval_s": 2.0}) as studio:
        assert studio.jobs_address is not None
        client = JobSubmissionClient(studio.jobs_address)
        ended = {JobStatus.STOPPED, JobStatus.SUCCEEDED, JobStatus.FAILED}
        with httpx.Client(base_url=studio.url, headers=studio.headers, timeout=60) as http:
            file_id = upload(http)

            def api() -> float:
                return api_round(
                    http,
                    file_id,
                    wait_running=lambda launch_id: wait_status(client, launch_id, {JobStatus.RUNNING}),
                    wait_ended=lambda launch_id: wait_status(client, launch_id, ended),
                )

            api()  # warm-up: the tracker actor connects, imports load
            bare_round(client)
            bare, through_api = [], []
            for _ in range(rounds):
                bare.append(bare_round(client))
                through_api.append(api())
    return bare, through_api


def through_actors(rounds: int) -> tuple[list[float], list[float]]:
    with running_studio(dashboard=False, tracker={"poll_interval_s": 2.0}) as studio:
        launcher = RayActorLauncher(namespace=studio.settings.ray.namespace)
        with httpx.Client(base_url=studio.url, headers=studio.headers, timeout=60) as http:
            file_id = upload(http)

            def api() -> float:
                elapsed = api_round(
                    http,
                    file_id,
                    wait_running=lambda launch_id: wait_actor(launcher, launch_id, {"running"}),
                    # ended, and its actor gone: the next round finds the CPU free
                    wait_ended=lambda launch_id: wait_gone(launcher, launch_id),
                )
                newest = http.get("/v1/fine_tuning/jobs?limit=1").json()["data"][0]
                assert newest["resources"]["launcher"] == "actor", newest
                return elapsed

            api()  # warm-up
            bare_actor_round()
            bare, through_api = [], []
            for _ in range(rounds):
                bare.append(bare_actor_round())
                through_api.append(api())
    return bare, through_api


def report(title: str, rows: list[tuple[str, list[float]]], *, goal: str = "") -> None:
    print(title)
    medians = []
    for name, values in rows:
        median = statistics.median(values) * 1000
        medians.append(median)
        each = ", ".join(f"{x * 1000:.0f}" for x in values)
        print(f"  {name:46s} median {median:8.1f} ms  ({each})")
    print(f"  ratio {medians[1] / medians[0]:.2f}x{goal}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    jobs_bare, jobs_api = through_jobs_api(args.rounds)
    actor_bare, actor_api = through_actors(args.rounds)
    print(f"rounds {args.rounds}")
    report(
        "Jobs API launcher (cluster with its dashboard)",
        [
            ("bare JobSubmissionClient submit -> RUNNING", jobs_bare),
            ("POST /v1/fine_tuning/jobs -> RUNNING", jobs_api),
        ],
        goal=" (goal <= 1.2x)",
    )
    report(
        "actor launcher (cluster without a dashboard)",
        [
            ("bare detached actor + process -> started", actor_bare),
            ("POST /v1/fine_tuning/jobs -> running", actor_api),
        ],
    )


if __name__ == "__main__":
    main()
