"""The tracker and a job's method type: a file validated after creation is checked against the method,
and a DPO job reaches the training entrypoint as one.

The launcher records submissions instead of starting Ray jobs (tests/fakes.py); the store is the real
MongoDB-protocol server.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from studio.app.builtin_models import builtin_models
from studio.app.container import open_job_runner
from studio.domain.datasets import DatasetFormat
from studio.schemas.clients import Client, ClientLimits
from studio.schemas.datasets import Dataset, S3Mirror
from studio.schemas.jobs import Job
from studio.services.job_runner import JobRunner
from studio.stores.mongo import MongoStore
from tests.conftest import make_settings
from tests.fakes import RecordingLauncher
from tests.helpers import SMALL_LORA, stored_job

DPO_LORA = SMALL_LORA.model_copy(update={"method_type": "dpo", "beta": 0.3})


@dataclass
class Tracker:
    store: MongoStore
    runner: JobRunner
    launcher: RecordingLauncher
    client_id: str = "client-methods"

    async def dataset(self, file_format: DatasetFormat) -> str:
        dataset = Dataset(
            id=f"file-{file_format}",
            client_id=self.client_id,
            filename=f"{file_format}.jsonl",
            bytes=1,
            sha256=file_format,
            status="ready",
            format=file_format,
            local_path=f"{self.client_id}/{file_format}.jsonl",
            s3=S3Mirror(state="disabled"),
            created_at=1,
        )
        await self.store.datasets.insert(dataset)
        return dataset.id

    async def job(self, file_id: str, *, dpo: bool, status: str = "validating_files") -> Job:
        job = stored_job(self.client_id, created_at=1, file_id=file_id)
        job = job.model_copy(update={"status": status, "hyperparameters": DPO_LORA if dpo else SMALL_LORA})
        await self.store.jobs.insert(job)
        return job

    async def reread(self, job: Job) -> Job:
        found = await self.store.jobs.get(client_id=self.client_id, job_id=job.id)
        assert found is not None
        return found


@pytest.fixture
async def tracker(tmp_path: Path, mongo_url: str) -> AsyncIterator[Tracker]:
    settings = make_settings(tmp_path, mongo_url=mongo_url)
    store = await MongoStore.connect(mongo_url, settings.store)
    for entry in builtin_models():
        await store.base_models.put(entry)
    client = Client(
        id="client-methods", name="methods", limits=ClientLimits(max_concurrent_jobs=5), created_at=1
    )
    await store.clients.insert_client(client)
    launcher = RecordingLauncher()
    try:
        async with open_job_runner(settings, mongo_url=mongo_url, launcher=launcher) as runner:
            yield Tracker(store, runner, launcher)
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("file_format", "dpo"), [("preference", False), ("chat", True), ("prompt_completion", True)]
)
async def test_a_file_validated_later_of_the_wrong_kind_fails_the_job(
    tracker: Tracker, file_format: DatasetFormat, dpo: bool
) -> None:
    job = await tracker.job(await tracker.dataset(file_format), dpo=dpo)

    await tracker.runner.advance(job)

    failed = await tracker.reread(job)
    assert failed.status == "failed" and failed.error is not None
    assert failed.error.code == "file_format_mismatch" and failed.error.kind == "user"
    assert failed.error.param == "training_file"
    assert f"{job.training_file!r} is a {file_format} file" in failed.error.message
    assert ("a dpo job" if dpo else "a supervised job") in failed.error.message
    assert tracker.launcher.submitted == []


async def test_a_dpo_job_reaches_the_trainer_as_dpo_with_its_beta(tracker: Tracker) -> None:
    job = await tracker.job(await tracker.dataset("preference"), dpo=True)
    await tracker.runner.advance(job)
    assert (await tracker.reread(job)).status == "queued"

    await tracker.runner.round()

    (submission,) = tracker.launcher.submitted
    config = json.loads(await asyncio.to_thread(Path(submission.config_path).read_bytes))
    assert config["objective"] == "dpo" and config["beta"] == 0.3 and config["method"] == "lora"
