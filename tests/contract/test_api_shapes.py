"""Every OpenAI-shaped answer of the ingress, checked strictly against the `openai` SDK's own models.

Each check names its exceptions: `omitted`, fields OpenAI itself leaves out of that answer, and
`extras`, Mini Studio's additions (documented in the README), so any other difference fails.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable

from openai.pagination import AsyncCursorPage, AsyncPage
from openai.types import FileDeleted, FileObject, Model, Upload
from openai.types.fine_tuning import FineTuningJob, FineTuningJobEvent
from openai.types.fine_tuning.jobs import FineTuningJobCheckpoint
from openai.types.uploads import UploadPart

from studio.domain.jobs import fine_tuned_model_name
from studio.schemas.jobs import Checkpoint, CheckpointMetrics, JobError, JobEvent
from tests.api.datasets_data import chat_rows, jsonl
from tests.contract.conftest import TINY, Tenant
from tests.contract.strict import assert_openai_shape
from tests.helpers import stored_job

# Mini Studio's validation report of a file.
FILE_EXTRAS = {"details"}
# OpenAI sends `user_provided_suffix` (the SDK's model lacks it); the rest are Mini Studio's: the
# method's details, the Ray job, what the job was planned to use, its live progress, its queue place,
# where its final model lies.
JOB_EXTRAS = {
    "user_provided_suffix", "fine_tuning_method", "lora", "ray_job_id", "attempts", "resources",
    "progress", "priority", "queue", "output_model_path", "output_model_uri",
}  # fmt: skip
# A job's method carries only the key of its own type, as OpenAI's does.
JOB_OMITTED = {"method.dpo", "method.reinforcement"}
# Mini Studio's: what kind of model, where it came from, its context, where it is deployed.
MODEL_EXTRAS = {"kind", "base_model", "fine_tuning_job", "fine_tuning_method", "context_length", "deployment"}
# OpenAI names a shutdown date only for models being retired.
MODEL_OMITTED = {"shutdown_date"}


def in_page(paths: Iterable[str]) -> set[str]:
    """Return `paths` as paths of a list page's items."""
    return {f"data[].{path}" for path in paths}


async def test_files_create_retrieve_list_delete(tenant: Tenant) -> None:
    created = await tenant.upload()
    assert_openai_shape(created, FileObject, extras=FILE_EXTRAS)
    assert created["status"] == "processed" and created["status_details"] is None

    retrieved = (await tenant.api.get(f"/v1/files/{created['id']}", headers=tenant.headers)).json()
    assert_openai_shape(retrieved, FileObject, extras=FILE_EXTRAS)
    listed = (await tenant.api.get("/v1/files", headers=tenant.headers)).json()
    assert_openai_shape(listed, AsyncCursorPage[FileObject], extras={"object", *in_page(FILE_EXTRAS)})
    assert [file["id"] for file in listed["data"]] == [created["id"]]

    deleted = (await tenant.api.delete(f"/v1/files/{created['id']}", headers=tenant.headers)).json()
    assert_openai_shape(deleted, FileDeleted)


async def test_upload_part_complete_and_cancel(tenant: Tenant) -> None:
    body = jsonl(chat_rows(20))
    new = {
        "bytes": len(body),
        "filename": "u.jsonl",
        "mime_type": "application/jsonl",
        "purpose": "fine-tune",
    }
    upload = (await tenant.api.post("/v1/uploads", json=new, headers=tenant.headers)).json()
    assert_openai_shape(upload, Upload)
    assert upload["status"] == "pending" and upload["file"] is None

    part = await tenant.api.post(
        f"/v1/uploads/{upload['id']}/parts", files={"data": ("blob", body)}, headers=tenant.headers
    )
    assert part.status_code == 200, part.text
    assert_openai_shape(part.json(), UploadPart)

    done = await tenant.api.post(
        f"/v1/uploads/{upload['id']}/complete",
        json={"part_ids": [part.json()["id"]], "md5": hashlib.md5(body).hexdigest()},
        headers=tenant.headers,
    )
    assert done.status_code == 200, done.text
    assert_openai_shape(done.json(), Upload, extras={"file.details"})
    assert done.json()["file"]["status"] == "processed"

    other = (await tenant.api.post("/v1/uploads", json=new, headers=tenant.headers)).json()
    cancelled = await tenant.api.post(f"/v1/uploads/{other['id']}/cancel", headers=tenant.headers)
    assert_openai_shape(cancelled.json(), Upload)
    assert cancelled.json()["status"] == "cancelled"


async def test_job_create_retrieve_list_cancel(tenant: Tenant) -> None:
    file = await tenant.upload()
    job = await tenant.create_job(file["id"], suffix="shape", metadata={"team": "a"})
    assert_openai_shape(job, FineTuningJob, omitted=JOB_OMITTED, extras=JOB_EXTRAS)
    assert job["status"] == "queued" and job["estimated_finish"] is None and job["integrations"] == []

    retrieved = (await tenant.api.get(f"/v1/fine_tuning/jobs/{job['id']}", headers=tenant.headers)).json()
    assert_openai_shape(retrieved, FineTuningJob, omitted=JOB_OMITTED, extras=JOB_EXTRAS)
    listed = (await tenant.api.get("/v1/fine_tuning/jobs", headers=tenant.headers)).json()
    page_extras = {"object", *in_page(JOB_EXTRAS)}
    assert_openai_shape(
        listed, AsyncCursorPage[FineTuningJob], omitted=in_page(JOB_OMITTED), extras=page_extras
    )

    cancel = await tenant.api.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel", headers=tenant.headers)
    assert_openai_shape(cancel.json(), FineTuningJob, omitted=JOB_OMITTED, extras=JOB_EXTRAS)
    assert cancel.json()["status"] == "cancelled" and isinstance(cancel.json()["finished_at"], int)


async def test_a_failed_jobs_error(tenant: Tenant) -> None:
    failed = stored_job(tenant.client_id, created_at=int(time.time())).model_copy(
        update={
            "status": "failed",
            "error": JobError(code="out_of_memory", message="the worker ran out of memory", kind="platform"),
        }
    )
    await tenant.store.jobs.insert(failed)
    job = (await tenant.api.get(f"/v1/fine_tuning/jobs/{failed.id}", headers=tenant.headers)).json()
    # `kind`: whose fault it was (the user's data or settings, or the platform), beside OpenAI's three.
    assert_openai_shape(job, FineTuningJob, omitted=JOB_OMITTED, extras={*JOB_EXTRAS, "error.kind"})
    assert job["error"]["code"] == "out_of_memory" and job["error"]["param"] is None


async def test_job_events(tenant: Tenant) -> None:
    file = await tenant.upload()
    job = await tenant.create_job(file["id"])
    now = int(time.time())
    metrics = {"step": 4, "train_loss": 1.25, "valid_loss": 1.5, "valid_mean_token_accuracy": 0.5}
    # What the tracker stores as training reports its metrics.
    await tenant.store.job_events.add([
        JobEvent(
            id=f"ftevent-{job['id']}-m", job_id=str(job["id"]), client_id=tenant.client_id,
            seq=time.time_ns() // 1000, created_at=now, level="info", message="Step 4/8", type="metrics",
            data=metrics,
        )
    ])  # fmt: skip

    events = await tenant.api.get(f"/v1/fine_tuning/jobs/{job['id']}/events", headers=tenant.headers)
    assert events.status_code == 200, events.text
    assert_openai_shape(events.json(), AsyncCursorPage[FineTuningJobEvent], extras={"object"})
    types = {event["type"] for event in events.json()["data"]}
    assert types == {"message", "metrics"}
    for event in events.json()["data"]:
        assert_openai_shape(event, FineTuningJobEvent)


async def test_job_checkpoints(tenant: Tenant) -> None:
    file = await tenant.upload()
    job = await tenant.create_job(file["id"])
    metrics = {"step": 4, "train_loss": 1.25, "valid_loss": 1.5, "valid_mean_token_accuracy": 0.5}
    # What the tracker stores when training writes a checkpoint.
    await tenant.store.checkpoints.add(
        Checkpoint(
            id=f"ftckpt-{job['id']}-4", job_id=str(job["id"]), client_id=tenant.client_id, step=4,
            path="/data/jobs/x/checkpoint-4", model_name=f"{job['id']}:ckpt-step-4",
            metrics=CheckpointMetrics(**metrics), created_at=int(time.time()),
        )
    )  # fmt: skip
    checkpoints = await tenant.api.get(
        f"/v1/fine_tuning/jobs/{job['id']}/checkpoints", headers=tenant.headers
    )
    assert checkpoints.status_code == 200, checkpoints.text
    # `path`: where the checkpoint's files are, Mini Studio's.
    assert_openai_shape(
        checkpoints.json(), AsyncCursorPage[FineTuningJobCheckpoint], extras={"object", "data[].path"}
    )


async def test_models_list_and_retrieve(tenant: Tenant) -> None:
    job = stored_job(tenant.client_id, created_at=int(time.time()))
    tuned = fine_tuned_model_name(base_model=TINY, client_id=tenant.client_id, suffix="m", job_id=job.id)
    await tenant.store.jobs.insert(
        job.model_copy(
            update={"status": "succeeded", "fine_tuned_model": tuned, "finished_at": job.created_at}
        )
    )
    listed = (await tenant.api.get("/v1/models", headers=tenant.headers)).json()
    # `has_more`: every Mini Studio list says it (OpenAI's model list has no paging).
    assert_openai_shape(
        listed,
        AsyncPage[Model],
        omitted=in_page(MODEL_OMITTED),
        extras={"has_more", *in_page(MODEL_EXTRAS)},
    )
    assert {TINY, tuned} <= {model["id"] for model in listed["data"]}
    for name in (TINY, tuned):
        model = (await tenant.api.get(f"/v1/models/{name}", headers=tenant.headers)).json()
        assert_openai_shape(model, Model, omitted=MODEL_OMITTED, extras=MODEL_EXTRAS)
