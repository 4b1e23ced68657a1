"""Bounds on stored job events, on the real MongoDB-protocol server: retention of finished jobs'
events, and training-step metrics thinned on long runs while the job's progress follows every step."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from studio.app.builtin_models import builtin_models
from studio.app.container import open_job_runner
from studio.domain.ids import new_id
from studio.domain.training_events import EVENT_MARKER, keeps_metrics
from studio.schemas.jobs import Job, JobEvent
from studio.services.job_retention import DAY_S, EventRetention
from studio.stores.mongo import MongoStore
from tests.conftest import make_settings
from tests.fakes import RecordingLauncher
from tests.helpers import stored_job

NOW = 1_800_000_000


@pytest.fixture
async def store(tmp_path: Path, mongo_url: str) -> AsyncIterator[MongoStore]:
    settings = make_settings(tmp_path, mongo_url=mongo_url)
    store = await MongoStore.connect(mongo_url, settings.store)
    try:
        yield store
    finally:
        await store.close()


async def job_with_events(store: MongoStore, *, finished_days_ago: float | None, events: int = 3) -> Job:
    """Store a job (finished that many days before NOW, or running) with `events` events."""
    job = stored_job("client-retention", created_at=NOW - 400 * DAY_S, running=finished_days_ago is None)
    if finished_days_ago is not None:
        finished_at = NOW - int(finished_days_ago * DAY_S)
        job = job.model_copy(update={"status": "succeeded", "finished_at": finished_at})
    await store.jobs.insert(job)
    await store.job_events.add([
        JobEvent(
            id=new_id("ftevent"), job_id=job.id, client_id=job.client_id, seq=i,
            created_at=job.created_at, level="info", message=f"event {i}", type="message", data=None,
        )
        for i in range(events)
    ])  # fmt: skip
    return job


async def events_of(store: MongoStore, job: Job) -> int:
    return len(await store.job_events.list(job_id=job.id, after=None, limit=1000))


def retention(store: MongoStore, **options: int) -> EventRetention:
    return EventRetention(
        jobs=store.jobs, events=store.job_events, retention_days=90, interval_s=3600, **options
    )


async def test_only_jobs_finished_before_the_window_lose_their_events(store: MongoStore) -> None:
    old = await job_with_events(store, finished_days_ago=100)
    recent = await job_with_events(store, finished_days_ago=10)
    running = await job_with_events(store, finished_days_ago=None)  # created 400 days ago, still running

    assert await retention(store).sweep(now=NOW) == 3
    assert await events_of(store, old) == 0
    assert await events_of(store, recent) == 3 and await events_of(store, running) == 3
    assert (await store.jobs.get_any(old.id)) is not None  # the job's record stays
    assert await store.jobs.retention_mark() == old.id

    # Nothing more is old enough; 81 days later the recent job is, and the sweep resumes at the mark.
    assert await retention(store).sweep(now=NOW) == 0
    assert await retention(store).sweep(now=NOW + 81 * DAY_S) == 3
    assert await events_of(store, recent) == 0 and await events_of(store, running) == 3


async def test_a_long_backlog_is_swept_in_bounded_batches_across_sweeps(store: MongoStore) -> None:
    old = [await job_with_events(store, finished_days_ago=200 - day) for day in range(5)]
    bounded = retention(store, batch=2, max_batches=1)

    assert await bounded.sweep(now=NOW) == 6  # two jobs per sweep, oldest first
    assert [await events_of(store, job) for job in old] == [0, 0, 3, 3, 3]
    assert await bounded.sweep(now=NOW) == 6
    assert await bounded.sweep(now=NOW) == 3
    assert [await events_of(store, job) for job in old] == [0] * 5


async def test_a_mark_on_a_vanished_job_starts_over(store: MongoStore) -> None:
    old = await job_with_events(store, finished_days_ago=100)
    await store.jobs.put_retention_mark("ftjob-gone")
    assert await retention(store).sweep(now=NOW) == 3 and await events_of(store, old) == 0


def test_metrics_are_thinned_to_the_cap_keeping_the_whole_curve() -> None:
    kept = [step for step in range(1, 1001) if keeps_metrics(step=step, total_steps=1000, cap=100)]
    assert len(kept) == 100 and kept[0] == 10 and kept[-1] == 1000
    assert all(keeps_metrics(step=step, total_steps=100, cap=100) for step in range(1, 101))
    odd = [step for step in range(1, 1002) if keeps_metrics(step=step, total_steps=1001, cap=100)]
    assert len(odd) <= 101 and odd[-1] == 1001


async def test_the_tracker_stores_a_long_runs_metrics_thinned_and_its_progress_whole(
    tmp_path: Path, mongo_url: str
) -> None:
    settings = make_settings(tmp_path, mongo_url=mongo_url, tracker={"max_metrics_events_per_attempt": 10})
    store = await MongoStore.connect(mongo_url, settings.store)
    for entry in builtin_models():
        await store.base_models.put(entry)
    launcher = RecordingLauncher()
    job = stored_job("client-thin", created_at=NOW, running=True)
    await store.jobs.insert(job)
    assert job.ray_job_id is not None
    launcher.states[job.ray_job_id] = "running"
    lines = [
        EVENT_MARKER
        + json.dumps({"type": "metrics", "step": step, "total_steps": 100, "train_loss": 1 / step})
        for step in range(1, 101)
    ]
    lines.insert(50, EVENT_MARKER + json.dumps({"type": "metrics", "step": 50, "valid_loss": 0.5}))
    launcher.logs_of[job.ray_job_id] = "\n".join(lines) + "\n"
    try:
        async with open_job_runner(settings, mongo_url=mongo_url, launcher=launcher) as runner:
            await runner.round()
        events = await store.job_events.list(job_id=job.id, after=None, limit=1000)
        steps = sorted(e.data["step"] for e in events if e.data and "train_loss" in e.data)
        assert steps == list(range(10, 101, 10))
        assert any(e.data and "valid_loss" in e.data for e in events)  # evaluations are never thinned
        progress = (await store.jobs.get_any(job.id)).progress  # type: ignore[union-attr]
        assert progress.step == 100 and progress.train_loss == pytest.approx(0.01)
    finally:
        await store.close()
