"""The control plane with a long queue: create rate, read latencies, the tracker's cost, a fresh tenant.

    .venv/bin/python -m bench.control_plane_bench [--tenants 100] [--jobs-per-tenant 100]
        [--deployments 1000] [--concurrency 16] [--samples 200] [--idle-s 30] [--mode haproxy]
        [--db-profile]

Mini Studio as `serve run serve_config.yaml` runs it on embedded defaults (the same application builder,
Ray's dashboard for the Jobs API, the embedded MongoDB actor), on a private 2-CPU Ray cluster. Phases:

1. Empty queue: a fresh tenant's job, create -> running; the tracker's round time (Ray's gauge
   `mini_studio_tracker_round_seconds`) and the database process's CPU over `idle-s` with no traffic.
2. `tenants` tenants (max_concurrent_jobs 1) each upload a file, then create `jobs-per-tenant` one-epoch
   LoRA jobs through the API at `concurrency` (the create rate and its p50/p99, and the CPU each
   process spent per job created, `bench/process_cpu.py`). While they are created,
   a placement group holds the cluster's free CPUs, so what the tracker launches waits in Ray and the
   rest in Mini Studio's queue. Then every bench tenant is paused (its limit set to 0, as a tenant at
   its cap: nothing of its launches), the launched jobs cancelled and the CPUs freed.
3. `deployments` deployment records of fine-tuned models (records only, status `failed`: no model
   servers) spread over the tenants, written to the database directly.
4. Reads as one tenant, the endpoints interleaved: list (first page and a deep `after=` page), retrieve
   (a queued job: with its queue position), events, `/v1/models`, `/v1/deployments`: p50/p99 each.
5. The tracker's round time and the database's CPU again, idle traffic, with the queue full.
6. A fresh tenant's job with the whole queue waiting: create -> running, beside phase 1's.

`--db-profile` records every database command of phase 2 and prints them per job created, grouped by
the process that sent them (`bench/db_commands.py`; the profiler's writes slow the phase down).
`--mode` runs Serve's entry point another way (`tests/serve_modes.py`: proxy, haproxy; default:
what `serve_config.yaml` ships).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import time
from typing import Any

import httpx
import psutil

from bench import process_cpu
from bench.common import ADMIN_KEY, RunningStudio, running_studio
from bench.db_commands import profiled, report
from studio.app.embedded import embedded_mongo_url
from tests.serve_modes import MODES, mode_env, private_ports

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
TINY = "mini-studio/tiny-llama"
JOB = {"model": TINY, "hyperparameters": {"n_epochs": 1, "batch_size": 4}}
ROWS = b"".join(
    json.dumps(
        {"messages": [{"role": "user", "content": f"Say {i}"}, {"role": "assistant", "content": f"{i}"}]}
    ).encode()
    + b"\n"
    for i in range(16)
)


def ms(seconds: list[float]) -> str:
    values = sorted(s * 1000 for s in seconds)
    p99 = values[min(len(values) - 1, round(0.99 * (len(values) - 1)))]
    return f"p50 {statistics.median(values):7.1f} ms  p99 {p99:7.1f} ms  (n={len(values)})"


async def tenant(http: httpx.AsyncClient, name: str, *, max_concurrent_jobs: int = 1) -> dict[str, str]:
    """Create a tenant and its key; upload its training file once validated. Return its headers."""
    limits = {"max_concurrent_jobs": max_concurrent_jobs, "requests_per_minute": 10_000_000}
    created = await http.post("/admin/clients", json={"name": name, "limits": limits}, headers=ADMIN)
    created.raise_for_status()
    client_id = created.json()["id"]
    secret = (await http.post(f"/admin/clients/{client_id}/keys", headers=ADMIN)).json()["secret"]
    headers = {"Authorization": f"Bearer {secret}", "X-Client-Id": client_id}
    files = {"file": ("train.jsonl", ROWS)}
    uploaded = await http.post("/v1/files", files=files, data={"purpose": "fine-tune"}, headers=auth(headers))
    uploaded.raise_for_status()
    file_id = uploaded.json()["id"]
    await wait_for(http, f"/v1/files/{file_id}", headers, status="processed")
    return {**headers, "X-File-Id": file_id}


async def wait_for(http: httpx.AsyncClient, path: str, headers: dict[str, str], *, status: str) -> None:
    for _ in range(6000):
        if (await http.get(path, headers=auth(headers))).json()["status"] == status:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{path} not {status} after 5 minutes")


def auth(headers: dict[str, str]) -> dict[str, str]:
    return {"Authorization": headers["Authorization"]}


async def create_job(http: httpx.AsyncClient, headers: dict[str, str]) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    response = await http.post(
        "/v1/fine_tuning/jobs", json={**JOB, "training_file": headers["X-File-Id"]}, headers=auth(headers)
    )
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    return elapsed, response.json()


async def fresh_tenant_start(http: httpx.AsyncClient, name: str) -> tuple[float, float]:
    """Return a new tenant's first job's create -> launched (handed to Ray) and create -> running
    times (seconds); cancel the job after."""
    headers = await tenant(http, name)
    started = time.perf_counter()
    _, job = await create_job(http, headers)
    path = f"/v1/fine_tuning/jobs/{job['id']}"
    launched = None
    for _ in range(6000):
        found = (await http.get(path, headers=auth(headers))).json()
        if launched is None and found["ray_job_id"] is not None:
            launched = time.perf_counter() - started
        if found["status"] == "running":
            break
        await asyncio.sleep(0.05)
    else:
        raise TimeoutError(f"{job['id']} not running after 5 minutes: {found}")
    running = time.perf_counter() - started
    await http.post(f"{path}/cancel", headers=auth(headers))
    return launched or running, running


def round_gauge(metrics_url: str) -> float | None:
    """Return the tracker's last round time from Ray's Prometheus endpoint (seconds), if exported yet."""
    try:
        text = httpx.get(metrics_url, timeout=5).text
    except httpx.HTTPError:
        return None
    for line in text.splitlines():
        if line.startswith("ray_mini_studio_tracker_round_seconds"):
            return float(line.rsplit(" ", 1)[1])
    return None


def database_process(port: int) -> psutil.Process:
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            for conn in process.net_connections(kind="tcp"):
                if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port:
                    return process
    raise RuntimeError(f"no process listens on the embedded MongoDB port {port}")


async def idle_costs(metrics_url: str, db: psutil.Process, seconds: float) -> tuple[list[float], float]:
    """Sample the tracker's round gauge while idle; return the samples and the db's share of a core."""
    cpu_before = sum(db.cpu_times()[:2])
    started = time.monotonic()
    samples: list[float] = []
    while time.monotonic() - started < seconds:
        value = await asyncio.to_thread(round_gauge, metrics_url)
        if value is not None:
            samples.append(value)
        await asyncio.sleep(2)
    share = (sum(db.cpu_times()[:2]) - cpu_before) / (time.monotonic() - started)
    return samples, share


def describe_idle(label: str, samples: list[float], share: float) -> str:
    rounds = ms(samples) if samples else "no gauge exported yet"
    return f"{label:<34} tracker round {rounds}   database CPU {share * 100:5.1f}% of a core"


async def create_all(
    http: httpx.AsyncClient, tenants: list[dict[str, str]], args: argparse.Namespace
) -> tuple[list[float], float]:
    """Create each tenant's queued jobs at `concurrency`; return the create latencies and wall time, and
    print the CPU each process spent per job created."""
    work = [headers for _ in range(args.jobs_per_tenant) for headers in tenants]
    latencies: list[float] = []
    queue: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    for headers in work:
        queue.put_nowait(headers)

    async def worker() -> None:
        while not queue.empty():
            elapsed, _ = await create_job(http, queue.get_nowait())
            latencies.append(elapsed)
            if len(latencies) % 1000 == 0:
                print(f"  {len(latencies):,} jobs created", flush=True)

    cpu_before = await asyncio.to_thread(process_cpu.snapshot)
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    wall = time.perf_counter() - started
    cpu_after = await asyncio.to_thread(process_cpu.snapshot)
    spent = process_cpu.report(cpu_before, cpu_after, wall_s=wall, per=len(work), unit="job created")
    print("\n".join(spent), flush=True)
    return latencies, wall


async def pause_and_clear(http: httpx.AsyncClient, tenants: list[dict[str, str]]) -> None:
    """Pause the bench tenants (limit 0: nothing more launches) and cancel what was launched."""
    for headers in tenants:
        client_id = headers["X-Client-Id"]
        paused = {"limits": {"max_concurrent_jobs": 0}}
        (await http.patch(f"/admin/clients/{client_id}", json=paused, headers=ADMIN)).raise_for_status()
    for headers in tenants:
        page = (await http.get("/v1/fine_tuning/jobs?limit=100", headers=auth(headers))).json()["data"]
        for job in page:
            if job["ray_job_id"] is not None and job["status"] in ("queued", "running"):
                await http.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel", headers=auth(headers))


async def insert_deployments(studio: RunningStudio, tenants: list[dict[str, str]], count: int) -> None:
    from pymongo import AsyncMongoClient

    from studio.domain.ids import new_id
    from studio.schemas.deployments import Deployment, EngineOptions
    from studio.stores.documents import to_document

    url = await embedded_mongo_url(studio.settings)
    docs = [
        to_document(
            Deployment(
                id=new_id("dep"),
                model=f"ft:{TINY}:{tenants[index % len(tenants)]['X-Client-Id']}:bench:ftjob-{index:05d}",
                kind="fine-tuned",
                base_model=TINY,
                placement="server",
                target="serve",
                status="failed",
                error="a bench record: no model server",
                min_replicas=1,
                max_replicas=1,
                target_ongoing_requests=8,
                num_cpus=1,
                num_gpus=0,
                engine=EngineOptions(),
                created_at=1,
                client_id=tenants[index % len(tenants)]["X-Client-Id"],
                model_source=TINY,
                updated_at=1,
            )
        )
        for index in range(count)
    ]
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url)
    try:
        await client[studio.settings.store.database]["model_routing"].insert_many(docs)
    finally:
        await client.close()


async def reads(http: httpx.AsyncClient, headers: dict[str, str], samples: int) -> dict[str, list[float]]:
    """Time each read endpoint `samples` times, interleaved; return the latencies per endpoint."""
    h = auth(headers)
    page = (await http.get("/v1/fine_tuning/jobs?limit=100", headers=h)).json()["data"]
    queued = next(job for job in page if job["status"] == "queued")
    deep_after = page[min(80, len(page) - 2)]["id"]
    paths = {
        "list, first page (limit=20)": "/v1/fine_tuning/jobs?limit=20",
        "list, deep page (after=81st job)": f"/v1/fine_tuning/jobs?limit=20&after={deep_after}",
        "retrieve (queued: its position)": f"/v1/fine_tuning/jobs/{queued['id']}",
        "events": f"/v1/fine_tuning/jobs/{queued['id']}/events",
        "/v1/models": "/v1/models",
        "/v1/deployments": "/v1/deployments",
    }
    found = (await http.get(paths["retrieve (queued: its position)"], headers=h)).json()
    print(f"  a queued job's position: {found.get('queue')}", flush=True)
    latencies: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(samples):
        for name, path in paths.items():
            started = time.perf_counter()
            response = await http.get(path, headers=h)
            latencies[name].append(time.perf_counter() - started)
            response.raise_for_status()
    return latencies


async def run(studio: RunningStudio, args: argparse.Namespace) -> None:
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    node = ray.nodes()[0]
    metrics_url = f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
    db = database_process(studio.settings.store.embedded_port)
    lines: list[str] = []
    async with httpx.AsyncClient(base_url=studio.url, timeout=60) as http:
        await fresh_tenant_start(http, "warm-up")  # the tiny model is built on first use
        empty_start = await fresh_tenant_start(http, "fresh-empty")
        samples, share = await idle_costs(metrics_url, db, args.idle_s)
        lines.append(describe_idle("idle, empty queue", samples, share))

        free_cpus = ray.available_resources().get("CPU", 0)
        hold = placement_group([{"CPU": free_cpus}]) if free_cpus >= 1 else None
        if hold is not None:
            await asyncio.to_thread(hold.wait, 60)
        print(f"creating {args.tenants} tenants x {args.jobs_per_tenant} jobs ...", flush=True)
        tenants = list(await asyncio.gather(*(tenant(http, f"bench-{i:03d}") for i in range(args.tenants))))
        if args.db_profile:
            url = await embedded_mongo_url(studio.settings)
            async with profiled(url, studio.settings.store.database) as since:
                creates, wall = await create_all(http, tenants, args)
            database, port = studio.settings.store.database, studio.settings.store.embedded_port
            lines += await report(url, database, port, since=since, per=len(creates), unit="job created")
        else:
            creates, wall = await create_all(http, tenants, args)
        await pause_and_clear(http, tenants)
        if hold is not None:
            remove_placement_group(hold)
        await insert_deployments(studio, tenants, args.deployments)
        total = len(creates)
        lines.append(f"{'create (POST /v1/fine_tuning/jobs)':<34} {total / wall:7.1f} jobs/s   {ms(creates)}")
        read_times = await reads(http, tenants[0], args.samples)
        for name, values in read_times.items():
            lines.append(f"{'GET ' + name:<34} {ms(values)}")
        samples, share = await idle_costs(metrics_url, db, args.idle_s)
        lines.append(describe_idle(f"idle, {total:,} queued", samples, share))
        full_start = await fresh_tenant_start(http, "fresh-full")
        for index, what in enumerate(("launched", "running")):
            lines.append(
                f"{'fresh tenant: create -> ' + what:<34} {full_start[index]:6.2f} s with {total:,} queued"
                f"   {empty_start[index]:6.2f} s with an empty queue"
            )
    print("\n".join(["", *lines]), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--jobs-per-tenant", type=int, default=100)
    parser.add_argument("--deployments", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--idle-s", type=float, default=30)
    parser.add_argument(
        "--db-profile", action="store_true", help="profile the database while jobs are created (slower)"
    )
    parser.add_argument("--mode", choices=[m for m in MODES if m != "direct"], default=None)
    args = parser.parse_args()
    env = None if args.mode is None else private_ports(mode_env(args.mode))
    print(f"entry point: {args.mode or 'as serve_config.yaml ships'}", flush=True)
    with running_studio(dashboard=True, controller_env=env) as studio:
        asyncio.run(run(studio, args))


if __name__ == "__main__":
    main()
