"""Fine-tuning jobs end to end: the API in-process, the tracker loop, real Ray jobs training a tiny model."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import psutil
import pytest
from openai.types.fine_tuning import FineTuningJob

from studio.app.container import open_job_runner
from studio.backends.ray_cluster import RayClusterInfo
from studio.backends.ray_jobs import RayJobLauncher
from studio.config import Settings
from studio.ports import TrainingLauncher
from studio.services.job_runner import JobRunner
from studio.services.jobs import Compute
from tests.api.conftest import new_client as make_client
from tests.api.conftest import running_api
from tests.api.datasets_data import jsonl
from tests.api.test_datasets import sdk
from tests.conftest import S3Endpoint, make_settings
from tests.helpers import TINY, capitals, state_after_running

pytestmark = pytest.mark.integration


class RunnerNotifier:
    def __init__(self, runner: JobRunner) -> None:
        self._runner = runner

    async def wake(self, client_id: str | None = None) -> None:
        self._runner.wake(client_id)


@dataclass
class Stack:
    api: httpx.AsyncClient
    settings: Settings
    launcher: TrainingLauncher
    headers: dict[str, str]
    sdk: openai.AsyncOpenAI


@asynccontextmanager
async def jobs_stack(
    settings: Settings,
    jobs_address: str,
    *,
    api_jobs_address: str | None = None,
    launcher: TrainingLauncher | None = None,
) -> AsyncIterator[Stack]:
    """The API with compute, and the tracker's loop running in this process (the actor runs the same).

    `api_jobs_address` gives the API its own (say, unreachable) Jobs API address; the tracker keeps
    `jobs_address`. `launcher`: the tracker's and the API's launcher instead of the Jobs API's.
    """
    assert settings.store.mongo_url is not None
    launcher = launcher or RayJobLauncher(jobs_address, namespace=settings.ray.namespace)
    api_launcher = RayJobLauncher(api_jobs_address, timeout_s=2) if api_jobs_address else launcher
    mongo_url = settings.store.mongo_url.get_secret_value()
    async with open_job_runner(settings, mongo_url=mongo_url, launcher=launcher) as runner:
        loop = asyncio.create_task(runner.run())
        compute = Compute(launcher=api_launcher, cluster=RayClusterInfo(), notifier=RunnerNotifier(runner))
        try:
            async with running_api(settings, compute) as api:
                _, headers = await make_client(api)
                yield Stack(api, settings, launcher, headers, sdk(api, headers))
        finally:
            runner.stop()
            await loop


@pytest.fixture
async def stack(
    tmp_path: Path, mongo_url: str, redis_url: str, s3_endpoint: S3Endpoint, ray_cluster: str
) -> AsyncIterator[Stack]:
    settings = make_settings(
        tmp_path,
        mongo_url=mongo_url,
        redis_url=redis_url,
        s3=s3_endpoint,
        tracker={"poll_interval_s": 0.5},
        training={
            "checkpoint_every_steps": 4,
            "eval_every_steps": 8,
            "max_seq_len": 64,
        },
    )
    async with jobs_stack(settings, ray_cluster) as ready:
        yield ready


async def upload(stack: Stack, content: bytes, name: str = "train.jsonl") -> str:
    created = await stack.sdk.files.create(file=(name, content), purpose="fine-tune")
    return created.id


async def wait_for_job(
    stack: Stack, job_id: str, predicate: Callable[[dict[str, Any]], bool], timeout_s: float = 240
) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        job: dict[str, Any] = (
            await stack.api.get(f"/v1/fine_tuning/jobs/{job_id}", headers=stack.headers)
        ).json()
        if predicate(job):
            return job
        assert asyncio.get_running_loop().time() < deadline, job
        await asyncio.sleep(0.5)


def data(event: Any) -> dict[str, Any]:
    """An event's `data` (typed `object` by the SDK)."""
    found = event.data or {}
    assert isinstance(found, dict)
    return found


def files_under(path: Path, pattern: str) -> list[Path]:
    return sorted(path.glob(pattern))


def fast_lora(epochs: int, batch: int = 8) -> dict[str, Any]:
    return {"n_epochs": epochs, "batch_size": batch, "learning_rate_multiplier": 100}


async def test_fine_tune_through_the_openai_sdk(stack: Stack) -> None:
    file_id = await upload(stack, capitals())
    job = await stack.sdk.fine_tuning.jobs.create(
        model=TINY,
        training_file=file_id,
        validation_file=file_id,
        method={
            "type": "supervised",
            "supervised": {
                "hyperparameters": {"n_epochs": 4, "batch_size": 8, "learning_rate_multiplier": 100}
            },
        },
        suffix="capitals",
        seed=7,
        metadata={"team": "geo"},
    )
    assert job.status == "queued" and job.model == TINY and job.seed == 7
    done = await wait_for_job(stack, job.id, lambda j: j["status"] in ("succeeded", "failed", "cancelled"))
    assert done["status"] == "succeeded", done
    final = await stack.sdk.fine_tuning.jobs.retrieve(job.id)
    assert final.fine_tuned_model == f"ft:{TINY}:{final.organization_id}:capitals:{job.id}"
    assert final.trained_tokens and final.trained_tokens > 0 and final.finished_at
    assert files_under(Path(done["output_model_path"]), "adapter_config.json")
    # OpenAI's step-metrics CSV, a file the SDK downloads.
    results = (await stack.sdk.files.content(final.result_files[0])).text.splitlines()
    assert results[0] == "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy"
    assert len(results) > 1

    # The fine-tune is a model the client can name; other clients cannot see it.
    models = {m.id: m.model_dump() async for m in stack.sdk.models.list()}
    assert models[TINY]["kind"] == "base" and models[TINY]["owned_by"] == "mini-studio"
    assert models[final.fine_tuned_model]["base_model"] == TINY
    retrieved = await stack.sdk.models.retrieve(final.fine_tuned_model)
    assert retrieved.owned_by == final.organization_id and (await stack.sdk.models.retrieve(TINY)).id == TINY
    _, other = await make_client(stack.api, name="stranger", allowed_base_models=["acme/*"])
    hidden = await stack.api.get(f"/v1/models/{final.fine_tuned_model}", headers=other)
    assert hidden.status_code == 404 and hidden.json()["error"]["code"] == "model_not_found"
    assert (await stack.api.get(f"/v1/models/{TINY}", headers=other)).status_code == 404
    assert (await stack.api.get("/v1/models", headers=other)).json()["data"] == []

    events = [e async for e in stack.sdk.fine_tuning.jobs.list_events(job.id, limit=100)]
    messages = [e.message for e in reversed(events)]
    assert messages[0].startswith("Created fine-tuning job")
    assert any(m == "Fine-tuning job started" for m in messages)
    assert messages.index("The job has successfully completed") > messages.index("Fine-tuning job started")
    losses = [
        data(e)["train_loss"] for e in reversed(events) if e.type == "metrics" and "train_loss" in data(e)
    ]
    assert len(losses) == 32  # 64 rows / 8 per step x 4 epochs
    assert sum(losses[-4:]) / 4 < 0.6 * losses[0], losses
    assert any(e.type == "metrics" and "valid_loss" in data(e) for e in events)

    checkpoints = [c async for c in stack.sdk.fine_tuning.jobs.checkpoints.list(job.id)]
    assert [c.step_number for c in checkpoints] == [32, 28, 24, 20, 16, 12, 8, 4][: len(checkpoints)]
    assert checkpoints and checkpoints[-1].fine_tuned_model_checkpoint.endswith(":ckpt-step-4")

    listed = await stack.api.get("/v1/fine_tuning/jobs?metadata[team]=geo", headers=stack.headers)
    assert [j["id"] for j in listed.json()["data"]] == [job.id]
    unmatched = await stack.api.get("/v1/fine_tuning/jobs?metadata[team]=other", headers=stack.headers)
    assert unmatched.json()["data"] == []

    streamed = await stack.api.get(f"/v1/fine_tuning/jobs/{job.id}/events?stream=true", headers=stack.headers)
    lines = [line for line in streamed.text.split("\n\n") if line]
    assert lines[-1] == "data: [DONE]" and len(lines) == len(events) + 1
    # Every event has an id; a reconnect sending one back goes on after it.
    ids = [line.split("\n", 1)[0].removeprefix("id: ") for line in lines[:-1]]
    assert all(line.startswith("id: ") for line in lines[:-1]) and len(set(ids)) == len(ids)
    resumed = await stack.api.get(
        f"/v1/fine_tuning/jobs/{job.id}/events?stream=true",
        headers={**stack.headers, "Last-Event-ID": ids[-3]},
    )
    assert [line for line in resumed.text.split("\n\n") if line] == lines[-3:]

    # The final adapter and each checkpoint are copied to S3 in the background.
    for _ in range(100):
        copied = [e.message async for e in stack.sdk.fine_tuning.jobs.list_events(job.id, limit=100)]
        if any(m.startswith("Copied final to s3://") for m in copied):
            break
        await asyncio.sleep(0.2)
    uri = f"s3://{stack.settings.s3.bucket}/{final.organization_id}/jobs/{job.id}"
    assert f"Copied final to {uri}/final" in copied, [m for m in copied if m.startswith("Copied")]
    assert f"Copied checkpoints/step-4 to {uri}/checkpoints/step-4" in copied

    log_tail = await stack.api.get(
        f"/v1/fine_tuning/jobs/{job.id}/logs?tail_bytes=4096", headers=stack.headers
    )
    assert "MINISTUDIO_EVENT" in log_tail.text

    again = await stack.api.post(f"/v1/fine_tuning/jobs/{job.id}/cancel", headers=stack.headers)
    assert again.status_code == 409 and again.json()["error"]["code"] == "job_finished"


def training_process(output_dir: str) -> psutil.Process | None:
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if "studio.training" in cmdline and any(output_dir in part for part in cmdline):
            return process
    return None


async def test_cancel_stops_the_ray_job_and_keeps_checkpoints(stack: Stack) -> None:
    file_id = await upload(stack, capitals())
    created = await stack.api.post(
        "/fine_tuning/submit-finetune",
        json={"base_model": TINY, "dataset_id": file_id, "hyperparameters": fast_lora(100, batch=1)},
        headers=stack.headers,
    )
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]
    running = await wait_for_job(stack, job_id, lambda j: (j["progress"]["checkpoint_step"] or 0) >= 4)
    cancelled = await stack.api.post(f"/v1/fine_tuning/jobs/{job_id}/cancel", headers=stack.headers)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert await state_after_running(stack.launcher, running["ray_job_id"]) == "stopped"
    await asyncio.sleep(1.5)  # the tracker's rounds must leave it cancelled
    final = (await stack.api.get(f"/v1/fine_tuning/jobs/{job_id}", headers=stack.headers)).json()
    assert final["status"] == "cancelled" and final["fine_tuned_model"] is None
    assert files_under(stack.settings.jobs_dir / job_id / "checkpoints", "step-*")


async def checkpointed_job(stack: Stack) -> tuple[str, FineTuningJob, dict[str, Any]]:
    """Upload the capitals, start a 12-epoch LoRA job; return the file id, the job and the job as read
    once it has a checkpoint at step 8 or later (so a killed run has one to resume from)."""
    file_id = await upload(stack, capitals())
    job = await stack.sdk.fine_tuning.jobs.create(
        model=TINY,
        training_file=file_id,
        hyperparameters=fast_lora(12, batch=2),  # type: ignore[arg-type]
    )
    running = await wait_for_job(stack, job.id, lambda j: (j["progress"]["checkpoint_step"] or 0) >= 8)
    return file_id, job, running


async def test_a_killed_worker_resumes_from_its_checkpoint(stack: Stack) -> None:
    _, job, running = await checkpointed_job(stack)
    process = training_process(str(stack.settings.jobs_dir / job.id))
    assert process is not None
    os.kill(process.pid, signal.SIGKILL)
    done = await wait_for_job(stack, job.id, lambda j: j["status"] in ("succeeded", "failed", "cancelled"))
    assert done["status"] == "succeeded" and done["attempts"] == 2, done
    events = [e async for e in stack.sdk.fine_tuning.jobs.list_events(job.id, limit=1000)]
    retry = [e.message for e in events if e.message.startswith("Attempt 1 failed")]
    assert retry and "Retrying from the checkpoint at step" in retry[0], retry
    resumed_at = int(retry[0].rsplit("step ", 1)[1])
    assert resumed_at >= running["progress"]["checkpoint_step"]
    steps = [data(e)["step"] for e in events if e.type == "metrics" and "train_loss" in data(e)]
    # The second attempt starts after the checkpoint, not from step 1.
    assert steps.count(1) == 1 and min(s for s in steps if s > resumed_at) == resumed_at + 1


async def test_a_dataset_training_cannot_use_fails_as_a_user_error(stack: Stack) -> None:
    # Valid chat data, but each prompt is longer than the job's 64-token sequence: truncation leaves no
    # assistant token to train on, which only the training process can find out.
    rows = [
        {
            "messages": [
                {"role": "user", "content": "word " * 200 + str(i)},
                {"role": "assistant", "content": "a"},
            ]
        }
        for i in range(8)
    ]
    file_id = await upload(stack, jsonl(rows))  # type: ignore[arg-type]
    created = await stack.api.post(
        "/v1/fine_tuning/jobs", json={"model": TINY, "training_file": file_id}, headers=stack.headers
    )
    assert created.status_code == 200, created.text
    done = await wait_for_job(stack, created.json()["id"], lambda j: j["status"] in ("succeeded", "failed"))
    assert done["status"] == "failed" and done["attempts"] == 1
    assert done["error"]["kind"] == "user" and done["error"]["message"], done


async def test_bad_requests_get_clear_errors(stack: Stack) -> None:
    api, headers = stack.api, stack.headers
    file_id = await upload(stack, capitals(16))
    broken = await api.post(
        "/v1/files",
        files={"file": ("bad.jsonl", b'{"messages": 1}\n')},
        data={"purpose": "fine-tune"},
        headers=headers,
    )
    assert broken.json()["status"] == "error" or broken.json()["details"]["validation_status"] == "invalid"

    async def create(**body: Any) -> httpx.Response:
        return await api.post(
            "/v1/fine_tuning/jobs", json={"model": TINY, "training_file": file_id, **body}, headers=headers
        )

    missing = await create(training_file="file-000000000000000000000000")
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "training_file"
    invalid = await create(training_file=broken.json()["id"])
    assert invalid.status_code == 409 and invalid.json()["error"]["code"] == "invalid_file"
    unknown = await create(model="acme/never-heard-of")
    assert unknown.status_code == 404 and unknown.json()["error"]["param"] == "model"
    too_many = await create(hyperparameters={"n_epochs": 1000})
    assert too_many.status_code == 400 and "n_epochs" in too_many.json()["error"]["param"]
    suffix = await create(suffix="no spaces allowed")
    assert suffix.status_code == 400 and suffix.json()["error"]["param"] == "suffix"
    both = await create(hyperparameters={"n_epochs": 1}, method={"type": "supervised"})
    assert both.status_code == 400

    # Another tenant sees none of it.
    _, other = await make_client(api, name="other")
    theirs = await api.post(
        "/v1/fine_tuning/jobs", json={"model": TINY, "training_file": file_id}, headers=other
    )
    assert theirs.status_code == 404

    # A 70B full fine-tune can never run on this 2-CPU cluster: refused with the estimate's reason.
    config = {
        "hidden_size": 8192, "intermediate_size": 28672, "num_hidden_layers": 80, "num_attention_heads": 64,
        "num_key_value_heads": 8, "vocab_size": 128256, "max_position_embeddings": 8192,
    }  # fmt: skip
    from tests.api.conftest import ADMIN

    zero_heads = {**config, "num_attention_heads": 0}
    refused = await api.post(
        "/admin/base-models", json={"name": "meta/broken", "config": zero_heads}, headers=ADMIN
    )
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "invalid_model_config"
    registered = await api.post(
        "/admin/base-models", json={"name": "meta/llama-70b", "config": config}, headers=ADMIN
    )
    assert registered.status_code == 201, registered.text
    assert registered.json()["parameters"] > 68e9
    huge = await create(model="meta/llama-70b", hyperparameters={"fine_tuning_method": "full"})
    assert huge.status_code == 400 and huge.json()["error"]["code"] == "job_infeasible", huge.text
    assert "GiB" in huge.json()["error"]["message"]
    dry = await api.post(
        "/v1/fine_tuning/jobs/estimate",
        json={
            "model": "meta/llama-70b",
            "training_file": file_id,
            "hyperparameters": {"fine_tuning_method": "full"},
        },
        headers=headers,
    )
    assert dry.status_code == 200 and dry.json()["fits"] is False, dry.text
    # The smallest layout the planner found (sharded over many workers) still needs GPUs this CPU
    # cluster lacks: the reason and the layout say so.
    assert dry.json()["resources"]["sharding"] == "fsdp" and dry.json()["resources"]["workers"] > 2
    assert "fsdp" in dry.json()["reason"].lower(), dry.json()["reason"]

    ok = await api.post(
        "/v1/fine_tuning/jobs/estimate", json={"model": TINY, "training_file": file_id}, headers=headers
    )
    assert ok.json()["fits"] is True and ok.json()["resources"]["accelerator"] == "cpu"
    listed = await api.get("/v1/fine_tuning/jobs", headers=headers)
    assert listed.json()["data"] == []  # a dry run creates nothing

    resources = await api.get("/v1/cluster/resources", headers=headers)
    assert resources.status_code == 200 and resources.json()["cpus_total"] == 2.0
    unknown_job = await api.post("/v1/fine_tuning/jobs/ftjob-nope/cancel", headers=headers)
    assert unknown_job.status_code == 404


async def test_a_client_over_its_concurrent_jobs_waits_queued(stack: Stack) -> None:
    from tests.api.conftest import ADMIN

    client_id, headers = await make_client(
        stack.api, name="one-at-a-time", max_concurrent_jobs=1, max_queued_jobs=1
    )
    tenant = sdk(stack.api, headers)
    file_id = (await tenant.files.create(file=("t.jsonl", capitals(16)), purpose="fine-tune")).id
    body = {"model": TINY, "training_file": file_id, "hyperparameters": fast_lora(2)}

    def get(job_id: str) -> Any:
        return stack.api.get(f"/v1/fine_tuning/jobs/{job_id}", headers=headers)

    first = (await stack.api.post("/v1/fine_tuning/jobs", json=body, headers=headers)).json()
    for _ in range(100):  # launched: no longer waiting in the queue, where one job may wait at a time
        if (await get(first["id"])).json()["ray_job_id"] is not None:
            break
        await asyncio.sleep(0.1)
    second = (await stack.api.post("/v1/fine_tuning/jobs", json=body, headers=headers)).json()
    await asyncio.sleep(2)
    waiting = (await get(second["id"])).json()
    assert waiting["status"] == "queued" and waiting["ray_job_id"] is None, (
        waiting,
        (await get(first["id"])).json(),
        (await stack.api.get(f"/v1/fine_tuning/jobs/{first['id']}/events", headers=headers)).json(),
    )
    assert waiting["queue"]["jobs_ahead"] == 0 and waiting["queue"]["waiting_clients"] == 1
    third = await stack.api.post("/v1/fine_tuning/jobs", json=body, headers=headers)
    assert third.status_code == 429 and third.json()["error"]["code"] == "too_many_queued_jobs"
    assert "max_queued_jobs" in third.json()["error"]["message"] and third.headers["retry-after"] == "60"
    for job_id in (first["id"], second["id"]):
        for _ in range(480):
            job = (await get(job_id)).json()
            if job["status"] in ("succeeded", "failed"):
                break
            if job_id == first["id"]:  # while the first runs, the second never holds a Ray job
                assert (await get(second["id"])).json()["ray_job_id"] is None
            await asyncio.sleep(0.5)
        assert job["status"] == "succeeded", (job, (await get(first["id"])).json())

    await stack.api.post(f"/admin/clients/{client_id}/disable", headers=ADMIN)
    _, no_jobs = await make_client(stack.api, name="no-jobs", max_concurrent_jobs=0)
    refused = await stack.api.post("/v1/fine_tuning/jobs", json=body, headers=no_jobs)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "jobs_not_allowed"


async def test_cpu_workers_train_data_parallel_through_ray_train(
    tmp_path: Path, mongo_url: str, ray_cluster: str
) -> None:
    settings = make_settings(
        tmp_path,
        mongo_url=mongo_url,
        tracker={"poll_interval_s": 0.5},
        training={"cpu_workers": 2, "cpus_per_worker": 0.5, "max_seq_len": 64},
    )
    async with jobs_stack(settings, ray_cluster) as ready:
        file_id = await upload(ready, capitals(32))
        job = await ready.sdk.fine_tuning.jobs.create(
            model=TINY,
            training_file=file_id,
            hyperparameters=fast_lora(3),  # type: ignore[arg-type]
        )
        done = await wait_for_job(ready, job.id, lambda j: j["status"] in ("succeeded", "failed"))
        assert done["status"] == "succeeded", done
        assert done["resources"]["workers"] == 2 and done["resources"]["num_cpus_per_worker"] == 0.5
        config = await asyncio.to_thread((settings.jobs_dir / job.id / "config.json").read_text)
        assert '"ray_train": true' in config and '"num_workers": 2' in config
        # 32 rows, batch 8 per rank on 2 ranks: 2 steps an epoch.
        assert done["progress"]["total_steps"] == 6 and done["trained_tokens"] > 0


async def test_a_cancel_while_ray_is_unreachable_is_finished_by_the_tracker(
    tmp_path: Path, mongo_url: str, ray_cluster: str
) -> None:
    from tests.servers import free_port

    settings = make_settings(
        tmp_path, mongo_url=mongo_url, tracker={"poll_interval_s": 0.5}, training={"max_seq_len": 64}
    )
    dead = f"http://127.0.0.1:{free_port()}"
    async with jobs_stack(settings, ray_cluster, api_jobs_address=dead) as ready:
        file_id = await upload(ready, capitals())
        job = await ready.sdk.fine_tuning.jobs.create(
            model=TINY,
            training_file=file_id,
            hyperparameters=fast_lora(100, batch=1),  # type: ignore[arg-type]
        )
        running = await wait_for_job(ready, job.id, lambda j: j["progress"]["step"] > 0)
        cancelled = await ready.api.post(f"/v1/fine_tuning/jobs/{job.id}/cancel", headers=ready.headers)
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        stopped_message = f"Stopped Ray job {running['ray_job_id']}"
        for _ in range(120):
            messages = [e.message async for e in ready.sdk.fine_tuning.jobs.list_events(job.id, limit=100)]
            if stopped_message in messages:
                break
            await asyncio.sleep(0.5)
        assert stopped_message in messages
        state = await state_after_running(ready.launcher, running["ray_job_id"])
        done = (await ready.api.get(f"/v1/fine_tuning/jobs/{job.id}", headers=ready.headers)).json()
        assert state == "stopped" and done["status"] == "cancelled"
        messages = [e.message async for e in ready.sdk.fine_tuning.jobs.list_events(job.id, limit=100)]
        assert "The Ray job could not be stopped yet; the tracker will stop it" in messages
