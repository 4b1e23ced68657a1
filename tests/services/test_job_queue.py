"""The tracker's queue on the real MongoDB-protocol server: bounded rounds and a fair launch order.

The launcher records submissions instead of starting Ray jobs (tests/fakes.py); everything the
tracker reads and writes goes through the real store and its queries.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from studio.app.builtin_models import builtin_models
from studio.app.container import open_job_runner
from studio.config import Settings
from studio.domain.ids import new_id
from studio.schemas.clients import Client, ClientLimits
from studio.schemas.datasets import Dataset, S3Mirror
from studio.services.job_runner import JobRunner
from studio.stores.documents import to_document
from studio.stores.mongo import MongoStore
from tests.conftest import make_settings
from tests.fakes import RecordingLauncher
from tests.helpers import stored_job


@dataclass
class Queue:
    store: MongoStore
    runner: JobRunner
    launcher: RecordingLauncher
    settings: Settings
    clock: int = 0

    async def client(self, name: str, *, max_concurrent_jobs: int) -> str:
        client = Client(
            id=f"client-{name}-{new_id('x')[-6:]}",
            name=name,
            limits=ClientLimits(max_concurrent_jobs=max_concurrent_jobs),
            created_at=1,
        )
        await self.store.clients.insert_client(client)
        dataset = Dataset(
            id=f"file-{client.id}",
            client_id=client.id,
            filename="train.jsonl",
            bytes=1,
            sha256=client.id,
            status="ready",
            local_path=f"{client.id}/train.jsonl",
            s3=S3Mirror(state="disabled"),
            created_at=1,
        )
        await self.store.datasets.insert(dataset)
        return client.id

    async def queue(
        self, client_id: str, count: int, *, priority: int = 0, same_second: bool = False
    ) -> list[str]:
        """Queue `count` jobs in creation order (`same_second`: all created within one second)."""
        ids = []
        for _ in range(count):
            self.clock += 1
            job = stored_job(
                client_id, created_at=1 if same_second else self.clock, file_id=f"file-{client_id}"
            )
            job = job.model_copy(update={"priority": priority, "created_ns": self.clock})
            await self.store.jobs.insert(job)
            ids.append(job.id)
        return ids

    def run_all(self) -> None:
        """Ray starts every launched run."""
        for submission_id, state in self.launcher.states.items():
            if state == "pending":
                self.launcher.states[submission_id] = "running"


@pytest.fixture
async def queue(tmp_path: Path, mongo_url: str) -> AsyncIterator[Queue]:
    settings = make_settings(tmp_path, mongo_url=mongo_url, tracker={"max_pending_launches": 2})
    store = await MongoStore.connect(mongo_url, settings.store)
    for entry in builtin_models():
        await store.base_models.put(entry)
    launcher = RecordingLauncher()
    try:
        async with open_job_runner(settings, mongo_url=mongo_url, launcher=launcher) as runner:
            yield Queue(store, runner, launcher, settings)
    finally:
        await store.close()


async def test_a_second_clients_first_job_goes_before_a_long_queue(queue: Queue) -> None:
    busy = await queue.client("busy", max_concurrent_jobs=100)
    busy_jobs = await queue.queue(busy, 300)
    late = await queue.client("late", max_concurrent_jobs=1)
    (late_job,) = await queue.queue(late, 1)

    stats = await queue.runner.round()

    # Two launch slots: one for each waiting client, the late one included, whatever the queue length.
    assert stats.waiting_clients == 2 and stats.launched == 2
    assert sorted(queue.launcher.job_ids()) == sorted([busy_jobs[0], late_job])
    # The queue itself is not followed: only the two launched jobs are.
    assert len(await queue.store.jobs.list_followed()) == 2


async def test_launches_wait_while_ray_holds_the_pending_budget(queue: Queue) -> None:
    busy = await queue.client("busy", max_concurrent_jobs=100)
    jobs = await queue.queue(busy, 10)

    await queue.runner.round()
    await queue.runner.round()  # both launched runs still pending in Ray: nothing more goes
    assert queue.launcher.job_ids() == jobs[:2]

    queue.run_all()
    await queue.runner.round()  # they run: two more may wait in Ray, FIFO within the client
    assert queue.launcher.job_ids() == jobs[:4]


async def test_a_client_at_its_limit_waits_while_others_launch(queue: Queue) -> None:
    capped = await queue.client("capped", max_concurrent_jobs=1)
    capped_jobs = await queue.queue(capped, 3)
    other = await queue.client("other", max_concurrent_jobs=5)
    other_jobs = await queue.queue(other, 3)

    for _ in range(3):
        await queue.runner.round()
        queue.run_all()

    launched = queue.launcher.job_ids()
    assert [job for job in launched if job in capped_jobs] == capped_jobs[:1]
    assert [job for job in launched if job in other_jobs] == other_jobs


async def test_within_a_client_higher_priority_first_then_creation_order(queue: Queue) -> None:
    client = await queue.client("sweeps", max_concurrent_jobs=100)
    # Created within one second: the order is still the order of creation, not of the random ids.
    sweep = await queue.queue(client, 3, same_second=True)
    urgent = await queue.queue(client, 2, priority=5, same_second=True)

    for _ in range(3):
        await queue.runner.round()
        queue.run_all()

    assert queue.launcher.job_ids() == urgent + sweep


async def test_the_round_publishes_where_waiting_jobs_stand(queue: Queue) -> None:
    sweep = await queue.client("sweep", max_concurrent_jobs=0)  # paused: nothing of theirs launches
    sweep_jobs = await queue.queue(sweep, 3, same_second=True)
    single = await queue.client("single", max_concurrent_jobs=0)
    await queue.queue(single, 1)

    await queue.runner.round()

    summary = await queue.store.jobs.queue_summary()
    assert summary is not None and summary.waiting == {sweep: 3, single: 1} and summary.running == 0
    third = await queue.store.jobs.get_any(sweep_jobs[2])
    assert third is not None and await queue.store.jobs.count_ahead(third) == 2


async def test_jobs_stored_before_the_launched_flag_are_queued_and_followed(queue: Queue) -> None:
    client = await queue.client("old", max_concurrent_jobs=5)
    waiting, launched = (stored_job(client, created_at=t, running=t == 2) for t in (1, 2))
    launched = launched.model_copy(update={"status": "queued"})  # launched, Ray not running it yet
    # As an earlier Mini Studio stored them: no `launched` field.
    assert queue.settings.store.mongo_url is not None
    url = queue.settings.store.mongo_url.get_secret_value()
    raw: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url)
    try:
        jobs = raw[queue.settings.store.database]["fine_tuning_jobs"]
        await jobs.insert_many([to_document(waiting), to_document(launched)])
    finally:
        await raw.close()
    assert client not in await queue.store.jobs.waiting_counts()

    reconnected = await MongoStore.connect(url, queue.settings.store)
    try:
        assert (await reconnected.jobs.waiting_counts())[client] == 1
        assert (await reconnected.jobs.next_waiting(client)) == waiting
        assert launched.id in [job.id for job in await reconnected.jobs.list_followed()]
    finally:
        await reconnected.close()


async def test_a_create_behind_its_clients_waiting_jobs_starts_no_round(queue: Queue) -> None:
    capped = await queue.client("capped", max_concurrent_jobs=1)
    await queue.queue(capped, 3)
    await queue.runner.round()  # one launched; the tracker knows the client has two more waiting
    wake = queue.runner._wake  # the run loop's trigger: set means "start a round now"
    wake.clear()

    await queue.queue(capped, 1)
    queue.runner.wake(capped)  # what the ingress does after the create
    assert not wake.is_set()  # its job waits behind the two: a round now could launch nothing

    fresh = await queue.client("fresh", max_concurrent_jobs=1)
    (fresh_job,) = await queue.queue(fresh, 1)
    queue.runner.wake(fresh)  # a client with nothing waiting: its job may launch now
    assert wake.is_set()
    stats = await queue.runner.round()
    assert stats.launched == 1 and queue.launcher.job_ids()[-1] == fresh_job
    queue.runner.wake()  # any other change: a round
    assert wake.is_set()
