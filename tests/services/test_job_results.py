"""The tracker writes a finished job's step-metrics CSV (`JobResults`), on the real MongoDB-protocol
server with a recording launcher (tests/fakes.py) whose run log the test writes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from studio.app.builtin_models import builtin_models
from studio.app.container import open_job_runner
from studio.config import Settings
from studio.domain.training_events import EVENT_MARKER
from studio.schemas.clients import Client, ClientLimits
from studio.schemas.datasets import Dataset, S3Mirror
from studio.schemas.jobs import Job
from studio.services.job_results import JobResults
from studio.services.job_runner import JobRunner
from studio.stores.local_files import LocalFileStore
from studio.stores.mongo import MongoStore
from tests.conftest import make_settings
from tests.fakes import RecordingLauncher
from tests.helpers import stored_job

CLIENT = "client-results"
HEADER = "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy"


@dataclass
class Tracker:
    store: MongoStore
    runner: JobRunner
    launcher: RecordingLauncher
    settings: Settings

    async def job(self) -> Job:
        job = stored_job(CLIENT, created_at=1, file_id="file-train")
        await self.store.jobs.insert(job)
        return job

    async def end(self, job: Job, *events: dict[str, Any], state: str = "succeeded") -> Job:
        """Launch `job`, let its run log `events` and end in `state`; return the job as stored after."""
        self.runner.wake()  # stored behind the tracker's back: it reads the queue again
        await self.runner.round()
        *_, submission = (s for s in self.launcher.submitted if s.metadata["studio_job_id"] == job.id)
        log = "".join(f"{EVENT_MARKER}{json.dumps(event)}\n" for event in events)
        self.launcher.logs_of[submission.submission_id] = log
        self.launcher.states[submission.submission_id] = state  # type: ignore[assignment]
        await self.runner.round()
        found = await self.store.jobs.get(client_id=CLIENT, job_id=job.id)
        assert found is not None
        return found

    async def csv(self, job: Job) -> str:
        (file_id,) = job.result_files
        dataset = await self.store.datasets.get(client_id=CLIENT, dataset_id=file_id)
        assert dataset is not None and dataset.purpose == "fine-tune-results" and dataset.status == "ready"
        files = LocalFileStore(self.settings.datasets_dir)
        return b"".join([chunk async for chunk in files.read(dataset.local_path)]).decode()


@pytest.fixture
async def tracker(tmp_path: Path, mongo_url: str) -> AsyncIterator[Tracker]:
    settings = make_settings(tmp_path, mongo_url=mongo_url)
    store = await MongoStore.connect(mongo_url, settings.store)
    for entry in builtin_models():
        await store.base_models.put(entry)
    await store.clients.insert_client(
        Client(id=CLIENT, name="results", limits=ClientLimits(max_concurrent_jobs=5), created_at=1)
    )
    await store.datasets.insert(
        Dataset(
            id="file-train", client_id=CLIENT, filename="t.jsonl", bytes=1, sha256="t", status="ready",
            local_path=f"{CLIENT}/t.jsonl", s3=S3Mirror(state="disabled"), created_at=1,
        )
    )  # fmt: skip
    launcher = RecordingLauncher()
    try:
        async with open_job_runner(settings, mongo_url=mongo_url, launcher=launcher) as runner:
            yield Tracker(store, runner, launcher, settings)
    finally:
        await store.close()


async def test_a_succeeded_job_gets_its_csv_and_keeps_its_model_path(tracker: Tracker) -> None:
    job = await tracker.job()
    done = await tracker.end(
        job,
        {"type": "metrics", "step": 1, "total_steps": 2, "train_loss": 1.0},
        {"type": "metrics", "step": 1, "valid_loss": 1.5, "valid_mean_token_accuracy": 0.25},
        {"type": "metrics", "step": 2, "total_steps": 2, "train_loss": 0.5},
        {"type": "result", "final_path": "/models/final", "trained_tokens": 10},
    )
    assert done.status == "succeeded" and done.output_model_path == "/models/final"
    assert await tracker.csv(done) == f"{HEADER}\n1,1,,1.5,0.25\n2,0.5,,,\n"


async def test_a_retried_steps_metrics_replace_the_first_attempts(tracker: Tracker) -> None:
    job = await tracker.job()
    # The first attempt ran two steps and was lost (a platform failure): the job is queued again.
    again = await tracker.end(
        job,
        {"type": "metrics", "step": 1, "total_steps": 3, "train_loss": 9.0},
        {"type": "metrics", "step": 2, "total_steps": 3, "train_loss": 8.0},
        state="failed",
    )
    assert again.status == "queued" and again.result_files == []
    done = await tracker.end(
        again,
        {"type": "metrics", "step": 2, "total_steps": 3, "train_loss": 2.0},
        {"type": "metrics", "step": 3, "total_steps": 3, "train_loss": 1.0},
        {"type": "result", "final_path": "/models/final", "trained_tokens": 10},
    )
    assert await tracker.csv(done) == f"{HEADER}\n1,9,,,\n2,2,,,\n3,1,,,\n"


async def test_a_job_that_ran_no_step_gets_no_file_and_publishing_twice_writes_one(
    tracker: Tracker,
) -> None:
    job = await tracker.job()
    failed = await tracker.end(job, {"type": "error", "kind": "user", "message": "bad row"}, state="failed")
    assert failed.status == "failed" and failed.result_files == []

    results = JobResults(
        jobs=tracker.store.jobs,
        events=tracker.store.job_events,
        datasets=tracker.store.datasets,
        files=LocalFileStore(tracker.settings.datasets_dir),
        mirror_to_s3=False,
    )
    done = await tracker.end(
        await tracker.job(),
        {"type": "metrics", "step": 1, "total_steps": 1, "train_loss": 1.0},
        {"type": "result", "final_path": "/models/final", "trained_tokens": 10},
    )
    assert await results.publish(done) == done  # it has its file: nothing more is written
    _, count = await tracker.store.datasets.usage(CLIENT)
    assert count == 2  # the training file and one results file
