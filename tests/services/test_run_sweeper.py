"""Runs the store does not account for are stopped, on the real MongoDB-protocol server.

The launcher records runs instead of starting Ray jobs (tests/fakes.py); the sweeper's clock is the test's.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from studio.config import StoreSettings
from studio.schemas.jobs import JobChanges
from studio.services.job_journal import JobJournal
from studio.services.run_sweeper import UnaccountedRuns
from studio.stores.mongo import MongoStore
from tests.fakes import RecordingLauncher
from tests.helpers import stored_job

INTERVAL_S = 30.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def store(mongo_url: str) -> AsyncIterator[MongoStore]:
    settings = StoreSettings(mongo_url=mongo_url, database=f"t_{uuid.uuid4().hex[:12]}")
    store = await MongoStore.connect(mongo_url, settings)
    try:
        yield store
    finally:
        await store.close()


async def launched(store: MongoStore, launcher: RecordingLauncher, *, status: str = "running") -> str:
    """Store a job with a run in the launcher; return the job id (its run is `<id>-attempt-1`)."""
    job = stored_job("client-sweep", created_at=1)
    run = await launcher.submit(
        submission_id=f"{job.id}-attempt-1", config_path="c", num_cpus=1, num_gpus=0,
        metadata={"studio_job_id": job.id},
    )  # fmt: skip
    launcher.states[run] = "running"
    job = job.model_copy(update={"status": status, "ray_job_id": run, "attempts": 1})
    await store.jobs.insert(job)
    return job.id


async def test_runs_of_ended_moved_on_or_unknown_jobs_are_stopped_after_two_sweeps(store: MongoStore) -> None:
    launcher = RecordingLauncher()
    clock = Clock()
    sweeper = UnaccountedRuns(
        launcher=launcher,
        jobs=store.jobs,
        journal=JobJournal(jobs=store.jobs, events=store.job_events),
        interval_s=INTERVAL_S,
        clock=clock,
    )
    followed = await launched(store, launcher)
    cancelled = await launched(store, launcher, status="cancelled")  # its stop failed
    moved_on = await launched(store, launcher)
    await store.jobs.update(
        job_id=moved_on, expected="running", changes=JobChanges(ray_job_id=f"{moved_on}-attempt-2")
    )
    unknown_run = await launcher.submit(
        submission_id="ftjob-gone-attempt-1", config_path="c", num_cpus=1, num_gpus=0,
        metadata={"studio_job_id": "ftjob-gone"},
    )  # fmt: skip
    # A tracker died between launching and recording: the queued job's own launch adopts that run.
    adopted = stored_job("client-sweep", created_at=2)
    await store.jobs.insert(adopted)
    await launcher.submit(
        submission_id=f"{adopted.id}-attempt-1", config_path="c", num_cpus=1, num_gpus=0,
        metadata={"studio_job_id": adopted.id},
    )  # fmt: skip

    tracked = await store.jobs.list_followed()
    assert await sweeper.maybe_sweep(tracked) == []  # first sight: suspects only
    clock.now += 1
    assert await sweeper.maybe_sweep(tracked) == []  # within the interval: no list at all
    assert all(launcher.states[f"{j}-attempt-1"] == "running" for j in (cancelled, moved_on))

    clock.now += INTERVAL_S
    stopped = await sweeper.maybe_sweep(await store.jobs.list_followed())

    assert sorted(stopped) == sorted([f"{cancelled}-attempt-1", f"{moved_on}-attempt-1", unknown_run])
    assert launcher.states[f"{followed}-attempt-1"] == "running"
    assert launcher.states[f"{adopted.id}-attempt-1"] == "pending"
    for run in stopped:
        assert run not in launcher.states  # stopped, then released
    events = await store.job_events.list(job_id=cancelled, after=None, limit=10)
    assert any("kept going after the job was cancelled" in e.message for e in events)
    events = await store.job_events.list(job_id=moved_on, after=None, limit=10)
    assert any(f"moved on to {moved_on}-attempt-2" in e.message for e in events)


async def test_a_run_recorded_between_two_sweeps_is_left_alone(store: MongoStore) -> None:
    launcher = RecordingLauncher()
    clock = Clock()
    journal = JobJournal(jobs=store.jobs, events=store.job_events)
    sweeper = UnaccountedRuns(
        launcher=launcher, jobs=store.jobs, journal=journal, interval_s=INTERVAL_S, clock=clock
    )
    job_id = await launched(store, launcher)
    assert await sweeper.maybe_sweep([]) == []  # listed before the job's run was read as followed
    clock.now += INTERVAL_S
    assert await sweeper.maybe_sweep(await store.jobs.list_followed()) == []
    assert launcher.states[f"{job_id}-attempt-1"] == "running"
