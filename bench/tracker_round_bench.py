"""The tracker's round with a long queue: time and database CPU, beside the previous design's round.

    .venv/bin/python -m bench.tracker_round_bench [--tenants 100] [--jobs-per-tenant 100] [--rounds 20]
        [--previous-rounds 3]

Starts SecantusDB (the embedded MongoDB-protocol server) as its own process, fills it with
`tenants x jobs-per-tenant` queued jobs (each tenant holding its concurrency limit of running jobs, so
nothing can launch), then times, alternately, `rounds` rounds of:
  (a) the tracker's round as built (`JobRunner.round`: follow the launched and running jobs, ask which
      clients wait, launch nothing since every client is at its limit);
  (b) the previous design's reads: every active job, and for each queued one its client's launched count
      and limits (the queries the old round made before deciding it could not launch);
and the same (a) on an empty queue. (b) takes about a minute a round at 10,000 jobs, so it runs only
its first `previous-rounds` times. The first (a) round reads which clients wait (a `distinct` over
the queue); the later ones reuse it, as the tracker does until a client queues a job or 30 s pass.
Prints the median and spread of each, and the database process's CPU seconds per round (its share of
a core at the 2 s poll interval).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import psutil

from studio.app.builtin_models import builtin_models
from studio.app.container import open_job_runner
from studio.schemas.clients import Client, ClientLimits
from studio.stores.mongo import MongoStore
from studio.stores.mongo_jobs import job_document
from tests.conftest import make_settings
from tests.fakes import RecordingLauncher
from tests.helpers import stored_job
from tests.servers import mongo_server, mongo_url_of

POLL_INTERVAL_S = 2.0


def job(client_id: str, created_at: int, *, running: bool) -> dict[str, Any]:
    """A stored job document, as `MongoJobRepository.insert` writes it (inserted in bulk here)."""
    return job_document(stored_job(client_id, created_at=created_at, running=running))


async def fill(store: MongoStore, database: Any, *, tenants: int, per_tenant: int) -> RecordingLauncher:
    """Insert the tenants (limit 1) with one running job each and their queued jobs."""
    launcher = RecordingLauncher()
    for entry in builtin_models():
        await store.base_models.put(entry)
    clock = 0
    for index in range(tenants):
        client = Client(
            id=f"client-bench-{index:04d}", name=f"t{index}", limits=ClientLimits(max_concurrent_jobs=1),
            created_at=1,
        )  # fmt: skip
        await store.clients.insert_client(client)
        running = job(client.id, clock, running=True)
        launcher.states[running["ray_job_id"]] = "running"
        docs = [running]
        for _ in range(per_tenant):
            clock += 1
            docs.append(job(client.id, clock, running=False))
        await database["fine_tuning_jobs"].insert_many(docs)
    return launcher


async def previous_round(store: MongoStore, database: Any) -> None:
    """The reads the previous round made: all active jobs, then per queued job its client's count."""
    jobs = database["fine_tuning_jobs"]
    active = ["validating_files", "queued", "running"]
    docs = await jobs.find({"$or": [{"status": {"$in": active}}, {"stop_pending": True}]}).to_list()
    for doc in docs:
        if doc["status"] == "queued" and doc.get("ray_job_id") is None:
            client = doc["client_id"]
            await jobs.count_documents(
                {"client_id": client, "status": {"$in": active}, "ray_job_id": {"$ne": None}}
            )
            await store.clients.get_client(client)


def describe(name: str, seconds: list[float], cpu: list[float]) -> str:
    ms = sorted(s * 1000 for s in seconds)
    spread = f"{ms[0]:.1f}-{ms[-1]:.1f}"
    cpu_share = statistics.median(cpu) / POLL_INTERVAL_S * 100
    return (
        f"{name:<44} {statistics.median(ms):>9.1f} ms  (min-max {spread:>15} ms)  "
        f"db CPU {statistics.median(cpu) * 1000:>7.1f} ms/round = {cpu_share:5.1f}% of a core at a 2 s poll"
    )


async def timed(db: psutil.Process, func: Callable[[], Awaitable[object]]) -> tuple[float, float]:
    cpu_before = sum(db.cpu_times()[:2])
    started = time.perf_counter()
    await func()
    elapsed = time.perf_counter() - started
    return elapsed, sum(db.cpu_times()[:2]) - cpu_before


async def main(args: argparse.Namespace) -> None:
    root = Path(tempfile.mkdtemp(prefix="bench-tracker-"))
    server = mongo_server(root).start()
    assert server.process is not None
    db_process = psutil.Process(server.process.pid)
    children = db_process.children(recursive=True)
    db = children[0] if children else db_process
    url = mongo_url_of(server)
    try:
        results: dict[str, tuple[list[float], list[float]]] = {}
        for queued in (True, False):
            settings = make_settings(root / f"data-{queued}", mongo_url=url)
            store = await MongoStore.connect(url, settings.store)
            database = store._db  # the bench reads the collections directly for the previous design
            per_tenant = args.jobs_per_tenant if queued else 0
            filled = time.perf_counter()
            launcher = await fill(store, database, tenants=args.tenants, per_tenant=per_tenant)
            print(
                f"{args.tenants} tenants x {per_tenant} queued jobs (+1 running each) inserted in "
                f"{time.perf_counter() - filled:.1f} s",
                flush=True,
            )
            label = "queue of " + (f"{args.tenants * per_tenant:,}" if queued else "0")
            async with open_job_runner(settings, mongo_url=url, launcher=launcher) as runner:
                sides: dict[str, Callable[[], Awaitable[object]]] = {f"tracker round, {label}": runner.round}
                if queued:
                    sides[f"previous design's reads, {label}"] = partial(previous_round, store, database)
                for name in sides:
                    results[name] = ([], [])
                for index in range(args.rounds):  # alternate the sides; the previous one is slow
                    for name, func in sides.items():
                        if name.startswith("previous") and index >= args.previous_rounds:
                            continue
                        elapsed, cpu = await timed(db, func)
                        results[name][0].append(elapsed)
                        results[name][1].append(cpu)
            await store.close()
        print()
        for name, (seconds, cpu) in results.items():
            print(describe(name, seconds, cpu))
    finally:
        server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--jobs-per-tenant", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--previous-rounds", type=int, default=3)
    asyncio.run(main(parser.parse_args()))
