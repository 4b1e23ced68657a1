"""Results like OpenAI's: a finished job's step-metrics CSV as a file the SDK downloads, jobs refused on
files that are not ready or not training data, and `DELETE /v1/models/{fine-tune}`.

A job is created through the API and taken to its end by the real tracker (`JobRunner`) on the same
MongoDB-protocol server, with a recording launcher whose run log the test writes (tests/fakes.py).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types import FileObject, ModelDeleted
from openai.types.fine_tuning import FineTuningJob

from studio.app.container import open_job_runner
from studio.config import Settings
from studio.domain.ids import new_id, unix_now
from studio.domain.training_events import EVENT_MARKER
from studio.schemas.datasets import Dataset, S3Mirror
from studio.schemas.deployments import Deployment
from studio.services.job_runner import JobRunner
from tests.contract.conftest import TINY, Tenant
from tests.contract.strict import ERROR_OMITTED, ErrorBody, assert_openai_shape
from tests.contract.test_api_shapes import FILE_EXTRAS, JOB_EXTRAS, JOB_OMITTED
from tests.fakes import RecordingLauncher

HEADER = "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy"


def log_of(*events: dict[str, Any]) -> str:
    return "".join(f"{EVENT_MARKER}{json.dumps(event)}\n" for event in events)


def sdk(tenant: Tenant) -> openai.AsyncOpenAI:
    key = tenant.headers["Authorization"].removeprefix("Bearer ")
    return openai.AsyncOpenAI(api_key=key, base_url="http://studio/v1", http_client=tenant.api)


@dataclass
class Tracker:
    runner: JobRunner
    launcher: RecordingLauncher
    settings: Settings

    async def run_to_end(self, job_id: str, log: str, *, state: str = "succeeded") -> None:
        """Launch the queued job, let its run write `log` and end in `state`, and follow it."""
        await self.runner.round()
        (submission,) = [s for s in self.launcher.submitted if s.metadata["studio_job_id"] == job_id]
        self.launcher.logs_of[submission.submission_id] = log
        self.launcher.states[submission.submission_id] = state  # type: ignore[assignment]
        await self.runner.round()


@pytest.fixture
async def tracker(settings: Settings, tenant: Tenant) -> AsyncIterator[Tracker]:
    assert settings.store.mongo_url is not None
    launcher = RecordingLauncher()
    url = settings.store.mongo_url.get_secret_value()
    async with open_job_runner(settings, mongo_url=url, launcher=launcher) as runner:
        yield Tracker(runner, launcher, settings)


def final_dir(settings: Settings, job_id: str) -> Path:
    path = settings.jobs_dir / job_id / "final"
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text("{}")
    return path


async def succeeded_job(tenant: Tenant, tracker: Tracker) -> dict[str, Any]:
    file = await tenant.upload()
    job = await tenant.create_job(file["id"], suffix="csv")
    job_id = str(job["id"])
    log = log_of(
        {"type": "metrics", "step": 1, "total_steps": 3, "train_loss": 2.5, "learning_rate": 1e-4},
        {"type": "metrics", "step": 2, "total_steps": 3, "train_loss": 1.25},
        {"type": "metrics", "step": 2, "valid_loss": 1.5, "valid_mean_token_accuracy": 0.625},
        {"type": "metrics", "step": 3, "total_steps": 3, "train_loss": 0.75},
        {"type": "result", "final_path": str(final_dir(tracker.settings, job_id)), "trained_tokens": 99},
    )
    await tracker.run_to_end(job_id, log)
    done = (await tenant.api.get(f"/v1/fine_tuning/jobs/{job_id}", headers=tenant.headers)).json()
    assert done["status"] == "succeeded", done
    return dict(done)


async def test_a_finished_jobs_metrics_csv_downloads_through_the_sdk(
    tenant: Tenant, tracker: Tracker
) -> None:
    done = await succeeded_job(tenant, tracker)
    assert_openai_shape(done, FineTuningJob, omitted=JOB_OMITTED, extras=JOB_EXTRAS)
    (file_id,) = done["result_files"]
    assert done["output_model_path"] == str(tracker.settings.jobs_dir / done["id"] / "final")

    content = await sdk(tenant).files.content(file_id)
    assert content.text == f"{HEADER}\n1,2.5,,,\n2,1.25,,1.5,0.625\n3,0.75,,,\n"

    file = (await tenant.api.get(f"/v1/files/{file_id}", headers=tenant.headers)).json()
    assert_openai_shape(file, FileObject, extras=FILE_EXTRAS)
    assert file["purpose"] == "fine-tune-results" and file["status"] == "processed"
    assert file["bytes"] == len(content.content)

    # Not training data.
    refused = await tenant.api.post(
        "/v1/fine_tuning/jobs", json={"model": TINY, "training_file": file_id}, headers=tenant.headers
    )
    assert refused.status_code == 400, refused.text
    assert_openai_shape(refused.json(), ErrorBody, omitted=ERROR_OMITTED)
    error = refused.json()["error"]
    assert error["code"] == "invalid_file_purpose" and error["param"] == "training_file"
    assert "fine-tune-results" in error["message"] and refused.headers["x-should-retry"] == "false"


async def test_a_failed_job_gets_the_steps_it_ran(tenant: Tenant, tracker: Tracker) -> None:
    file = await tenant.upload()
    job = await tenant.create_job(file["id"])
    log = log_of(
        {"type": "metrics", "step": 1, "total_steps": 9, "train_loss": 3.0},
        {"type": "error", "kind": "user", "message": "a row is too long"},
    )
    await tracker.run_to_end(str(job["id"]), log, state="failed")

    failed = (await tenant.api.get(f"/v1/fine_tuning/jobs/{job['id']}", headers=tenant.headers)).json()
    assert failed["status"] == "failed"
    (file_id,) = failed["result_files"]
    assert (await sdk(tenant).files.content(file_id)).text == f"{HEADER}\n1,3,,,\n"


async def test_a_job_on_a_file_still_validating_is_a_400_naming_it(tenant: Tenant) -> None:
    file_id = new_id("file")
    await tenant.store.datasets.insert(
        Dataset(
            id=file_id, client_id=tenant.client_id, filename="big.jsonl", bytes=10, sha256=file_id,
            status="validating", local_path=f"{tenant.client_id}/{file_id}/big.jsonl",
            s3=S3Mirror(state="disabled"), created_at=unix_now(),
        )
    )  # fmt: skip
    for path in ("/v1/fine_tuning/jobs", "/v1/fine_tuning/jobs/estimate"):
        answer = await tenant.api.post(
            path, json={"model": TINY, "training_file": file_id}, headers=tenant.headers
        )
        assert answer.status_code == 400, answer.text
        assert_openai_shape(answer.json(), ErrorBody, omitted=ERROR_OMITTED)
        error = answer.json()["error"]
        assert error["code"] == "file_not_ready" and error["param"] == "training_file"
        assert file_id in error["message"] and "'validating'" in error["message"]
    listed = (await tenant.api.get("/v1/fine_tuning/jobs", headers=tenant.headers)).json()
    assert listed["data"] == []


async def test_delete_a_fine_tuned_model(tenant: Tenant, tracker: Tracker) -> None:
    done = await succeeded_job(tenant, tracker)
    tuned = str(done["fine_tuned_model"])
    final = Path(done["output_model_path"])

    # Refused while deployed (its deployment record holds the name), and not retried by the SDK.
    deployment = Deployment(
        id=new_id("deploy"), model=tuned, kind="fine-tuned", base_model=TINY, placement="adapter",
        target="serve", status="ready", min_replicas=1, max_replicas=1, target_ongoing_requests=4,
        num_cpus=1, num_gpus=0, engine={}, created_at=unix_now(), client_id=tenant.client_id,
        model_source=str(final), updated_at=unix_now(),
    )  # fmt: skip
    await tenant.store.deployments.insert(deployment)
    refused = await tenant.api.delete(f"/v1/models/{tuned}", headers=tenant.headers)
    assert refused.status_code == 409 and refused.headers["x-should-retry"] == "false"
    assert refused.json()["error"]["code"] == "model_deployed"
    assert deployment.id in refused.json()["error"]["message"] and await asyncio.to_thread(final.is_dir)
    await tenant.store.deployments.remove(deployment.id)

    deleted = await sdk(tenant).models.delete(tuned)
    assert deleted.id == tuned and deleted.deleted is True
    raw = await tenant.api.delete(f"/v1/models/{tuned}", headers=tenant.headers)
    assert raw.status_code == 404 and raw.json()["error"]["code"] == "model_not_found"
    assert not await asyncio.to_thread(final.exists)

    listed = (await tenant.api.get("/v1/models", headers=tenant.headers)).json()
    assert tuned not in [model["id"] for model in listed["data"]]
    assert (await tenant.api.get(f"/v1/models/{tuned}", headers=tenant.headers)).status_code == 404
    deploy = await tenant.api.post("/v1/deployments", json={"model": tuned}, headers=tenant.headers)
    assert deploy.status_code == 404, deploy.text
    # The job keeps its record and its results file.
    job = (await tenant.api.get(f"/v1/fine_tuning/jobs/{done['id']}", headers=tenant.headers)).json()
    assert job["fine_tuned_model"] == tuned and job["output_model_path"] is None
    assert job["result_files"] == done["result_files"]


async def test_a_base_model_is_not_deleted(tenant: Tenant) -> None:
    answer = await tenant.api.delete(f"/v1/models/{TINY}", headers=tenant.headers)
    assert answer.status_code == 403, answer.text
    assert answer.json()["error"]["code"] == "model_not_deletable"


async def test_the_model_deleted_shape(tenant: Tenant, tracker: Tracker) -> None:
    done = await succeeded_job(tenant, tracker)
    answer = await tenant.api.delete(f"/v1/models/{done['fine_tuned_model']}", headers=tenant.headers)
    assert answer.status_code == 200, answer.text
    assert_openai_shape(answer.json(), ModelDeleted)
    assert answer.json() == {"id": done["fine_tuned_model"], "object": "model", "deleted": True}
