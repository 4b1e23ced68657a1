"""Submit latency: Mini Studio's API call -> Ray job RUNNING, beside a bare Jobs API submit -> RUNNING.

    .venv/bin/python -m bench.submit_bench [--rounds 5]

Starts a private Ray cluster (with its dashboard: the Jobs API) running Mini Studio on embedded
defaults. Each round, alternately: (a) `JobSubmissionClient.submit_job` of a sleeping entrypoint, timed
until Ray reports it RUNNING; (b) `POST /v1/fine_tuning/jobs` on the tiny model, timed until the Ray job
the tracker launched for it is RUNNING (the API call, the tracker's wake-up, its config write and
submit, and Ray's own start). Each job is stopped before the next round so both find a free CPU.
Goal: (b) <= 1.2 x (a), medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import httpx
from ray.job_submission import JobStatus, JobSubmissionClient

from bench.common import running_studio

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


def api_round(http: httpx.Client, client: JobSubmissionClient, file_id: str) -> float:
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
    ray_job_id = None
    while ray_job_id is None:
        ray_job_id = http.get(f"/v1/fine_tuning/jobs/{job_id}").json()["ray_job_id"]
        time.sleep(POLL_S)
    wait_status(client, ray_job_id, {JobStatus.RUNNING})
    elapsed = time.perf_counter() - started
    http.post(f"/v1/fine_tuning/jobs/{job_id}/cancel").raise_for_status()
    wait_status(client, ray_job_id, {JobStatus.STOPPED, JobStatus.SUCCEEDED, JobStatus.FAILED})
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with running_studio(dashboard=True, tracker={"poll_interval_s": 2.0}) as studio:
        assert studio.jobs_address is not None
        client = JobSubmissionClient(studio.jobs_address)
        with httpx.Client(base_url=studio.url, headers=studio.headers, timeout=60) as http:
            body = "".join(json.dumps(row) + "\n" for row in ROWS).encode()
            file_id = http.post(
                "/v1/files", files={"file": ("bench.jsonl", body)}, data={"purpose": "fine-tune"}
            ).json()["id"]
            api_round(http, client, file_id)  # warm-up: the tracker actor connects, imports load
            bare_round(client)
            bare, api = [], []
            for _ in range(args.rounds):
                bare.append(bare_round(client))
                api.append(api_round(http, client, file_id))
    bare_ms, api_ms = statistics.median(bare) * 1000, statistics.median(api) * 1000
    print(f"rounds {args.rounds}")
    for name, values, median in (
        ("bare JobSubmissionClient submit -> RUNNING", bare, bare_ms),
        ("POST /v1/fine_tuning/jobs -> RUNNING", api, api_ms),
    ):
        each = ", ".join(f"{x * 1000:.0f}" for x in values)
        print(f"{name:44s} median {median:8.1f} ms  ({each})")
    print(f"ratio {api_ms / bare_ms:.2f}x (goal <= 1.2x)")


if __name__ == "__main__":
    main()
