"""Job creation by method type: OpenAI's `method: {type: dpo}` echoed back, and files of the wrong kind
refused at creation, naming the file, its format and the method.

The app runs in-process on the real MongoDB-protocol, Redis and S3 servers; only compute is a stand-in
(the launcher records submissions, the cluster is a fixed 2-CPU one): creation plans a job but never
trains it here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest

from studio.api.errors import STATUS_OF
from studio.config import Settings
from studio.errors import InvalidInput
from studio.services.jobs import Compute
from studio.training import TINY_MODEL_NAME
from tests.api.conftest import new_client, running_api
from tests.api.datasets_data import chat_rows, jsonl
from tests.api.test_auth import assert_error
from tests.api.test_datasets import sdk
from tests.fakes import FixedCluster, RecordingLauncher, SilentTracker

INVALID_INPUT_STATUS = STATUS_OF[InvalidInput][0]


def preference_rows(count: int) -> list[dict[str, object]]:
    return [
        {
            "input": {"messages": [{"role": "user", "content": f"What is {i} + 1?"}]},
            "preferred_output": [{"role": "assistant", "content": str(i + 1)}],
            "non_preferred_output": [{"role": "assistant", "content": str(i + 2)}],
        }
        for i in range(count)
    ]


@pytest.fixture
async def api_with_compute(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    compute = Compute(
        launcher=RecordingLauncher(), cluster=FixedCluster(cpus=2, memory_gib=16), notifier=SilentTracker()
    )
    async with running_api(settings, compute=compute) as client:
        yield client


@pytest.fixture
async def files(api_with_compute: httpx.AsyncClient) -> tuple[dict[str, str], dict[str, str]]:
    """Return a tenant's auth headers and the ids of its `chat` and `preference` files (both ready)."""
    _, headers = await new_client(api_with_compute)
    client = sdk(api_with_compute, headers)
    ids = {}
    for kind, rows in (("chat", chat_rows(12)), ("preference", preference_rows(12))):
        created = await client.files.create(file=(f"{kind}.jsonl", jsonl(rows)), purpose="fine-tune")
        details = created.model_dump()["details"]
        assert details["validation_status"] == "ready" and details["format"] == kind, details
        ids[kind] = created.id
    return headers, ids


async def test_a_dpo_job_is_created_and_shows_its_method_as_openai_does(
    api_with_compute: httpx.AsyncClient, files: tuple[dict[str, str], dict[str, str]]
) -> None:
    headers, ids = files
    client = sdk(api_with_compute, headers)
    job = await client.fine_tuning.jobs.create(
        model=TINY_MODEL_NAME,
        training_file=ids["preference"],
        validation_file=ids["preference"],
        method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.25, "n_epochs": 2}}},
    )
    assert job.status == "queued" and job.method is not None and job.method.type == "dpo"
    assert job.method.supervised is None and job.method.dpo is not None
    hp = job.method.dpo.hyperparameters
    assert hp is not None and hp.beta == 0.25 and hp.n_epochs == 2
    assert hp.batch_size == job.hyperparameters.batch_size and hp.learning_rate_multiplier == 1.0

    # "auto" beta is 0.1, as OpenAI's and TRL's default.
    auto = await client.fine_tuning.jobs.create(
        model=TINY_MODEL_NAME, training_file=ids["preference"], method={"type": "dpo"}
    )
    retrieved = (await api_with_compute.get(f"/v1/fine_tuning/jobs/{auto.id}", headers=headers)).json()
    assert (
        retrieved["method"]["type"] == "dpo" and retrieved["method"]["dpo"]["hyperparameters"]["beta"] == 0.1
    )

    # A supervised job still shows OpenAI's supervised method.
    supervised = await client.fine_tuning.jobs.create(model=TINY_MODEL_NAME, training_file=ids["chat"])
    assert supervised.method is not None and supervised.method.type == "supervised"
    assert supervised.method.supervised is not None and supervised.method.dpo is None


@pytest.mark.parametrize(
    ("body", "param", "file_format", "method_type"),
    [
        ({"training_file": "preference"}, "training_file", "preference", "supervised"),
        (
            {"training_file": "preference", "method": {"type": "supervised"}},
            "training_file",
            "preference",
            "supervised",
        ),
        ({"training_file": "chat", "method": {"type": "dpo"}}, "training_file", "chat", "dpo"),
        (
            {"training_file": "preference", "validation_file": "chat", "method": {"type": "dpo"}},
            "validation_file",
            "chat",
            "dpo",
        ),
    ],
    ids=[
        "preference-to-legacy-supervised",
        "preference-to-supervised",
        "chat-to-dpo",
        "chat-validation-to-dpo",
    ],
)
async def test_a_file_the_method_does_not_train_on_is_refused_at_creation(
    api_with_compute: httpx.AsyncClient,
    files: tuple[dict[str, str], dict[str, str]],
    body: dict[str, Any],
    param: str,
    file_format: str,
    method_type: str,
) -> None:
    headers, ids = files
    request = {"model": TINY_MODEL_NAME, **body}
    for field in ("training_file", "validation_file"):
        if field in request:
            request[field] = ids[request[field]]
    for path in ("/v1/fine_tuning/jobs", "/v1/fine_tuning/jobs/estimate"):
        response = await api_with_compute.post(path, json=request, headers=headers)
        error = assert_error(response, INVALID_INPUT_STATUS, "file_format_mismatch")
        assert error["param"] == param
        message = str(error["message"])
        assert request[param] in message and file_format in message and method_type in message, message
    listed = await api_with_compute.get("/v1/fine_tuning/jobs", headers=headers)
    assert listed.json()["data"] == []  # nothing was created


async def test_the_sdk_sees_the_refusal_as_its_error_with_the_param(
    api_with_compute: httpx.AsyncClient, files: tuple[dict[str, str], dict[str, str]]
) -> None:
    headers, ids = files
    client = sdk(api_with_compute, headers)
    with pytest.raises(openai.APIStatusError) as refused:
        await client.fine_tuning.jobs.create(
            model=TINY_MODEL_NAME, training_file=ids["chat"], method={"type": "dpo", "dpo": {}}
        )
    assert refused.value.status_code == INVALID_INPUT_STATUS
    assert refused.value.body["param"] == "training_file"  # type: ignore[index]
    assert refused.value.body["code"] == "file_format_mismatch"  # type: ignore[index]


async def test_a_job_create_gets_507_while_the_data_disk_is_under_its_floor(
    settings: Settings,
    api_with_compute: httpx.AsyncClient,
    files: tuple[dict[str, str], dict[str, str]],
) -> None:
    headers, ids = files
    request = {"model": TINY_MODEL_NAME, "training_file": ids["chat"]}
    settings.storage.min_free_bytes = 1 << 60  # above any disk's free space
    refused = await api_with_compute.post("/v1/fine_tuning/jobs", json=request, headers=headers)
    assert refused.status_code == 507, refused.text
    assert refused.json()["error"]["code"] == "insufficient_storage" and refused.headers["retry-after"]
    listed = await api_with_compute.get("/v1/fine_tuning/jobs", headers=headers)
    assert listed.json()["data"] == []
    settings.storage.min_free_bytes = 0
    created = await api_with_compute.post("/v1/fine_tuning/jobs", json=request, headers=headers)
    assert created.status_code == 200, created.text


async def test_wandb_is_refused_naming_the_missing_setting_and_echoed_once_configured(
    api_with_compute: httpx.AsyncClient, files: tuple[dict[str, str], dict[str, str]], settings: Settings
) -> None:
    headers, ids = files
    wandb = [{"type": "wandb", "wandb": {"project": "sweeps", "tags": ["geo"]}}]
    request = {"model": TINY_MODEL_NAME, "training_file": ids["chat"], "integrations": wandb}
    for mode, setting in ((None, "STUDIO_WANDB__MODE"), ("online", "STUDIO_WANDB__API_KEY")):
        settings.wandb.mode = mode
        for path in ("/v1/fine_tuning/jobs", "/v1/fine_tuning/jobs/estimate"):
            refused = await api_with_compute.post(path, json=request, headers=headers)
            assert refused.status_code == 400, refused.text
            error = refused.json()["error"]
            assert (error["code"], error["param"]) == ("integration_not_configured", "integrations")
            assert setting in error["message"] and refused.headers["x-should-retry"] == "false"
    listed = await api_with_compute.get("/v1/fine_tuning/jobs", headers=headers)
    assert listed.json()["data"] == []

    settings.wandb.mode = "offline"
    created = await api_with_compute.post("/v1/fine_tuning/jobs", json=request, headers=headers)
    assert created.status_code == 200, created.text
    echoed = [
        {"type": "wandb", "wandb": {"project": "sweeps", "name": None, "entity": None, "tags": ["geo"]}}
    ]
    assert created.json()["integrations"] == echoed
    job = await sdk(api_with_compute, headers).fine_tuning.jobs.retrieve(created.json()["id"])
    assert job.integrations and job.integrations[0].wandb.project == "sweeps"
    two = await api_with_compute.post(
        "/v1/fine_tuning/jobs", json={**request, "integrations": wandb * 2}, headers=headers
    )
    assert two.status_code in (400, 422) and "integrations" in two.text
