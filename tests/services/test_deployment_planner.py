"""The deployment planner on the real MongoDB-protocol server: a fine-tune's deployment record carries the
job's `s3://` copy beside its directory, so a model server on a node without that directory loads it from
S3 (README, "No shared file system"); an adapter does not attach to a base deployed without adapters."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from studio.app.builtin_models import builtin_models
from studio.domain.jobs import fine_tuned_model_name
from studio.errors import Conflict
from studio.schemas.deployments import DeploymentCreate, EngineOptions
from studio.services.deployment_planner import DeploymentPlanner
from studio.stores.mongo import MongoStore
from tests.conftest import make_settings
from tests.helpers import SMALL_LORA, TINY, stored_job


@pytest.fixture
async def stored(tmp_path: Path, mongo_url: str) -> AsyncIterator[tuple[DeploymentPlanner, MongoStore]]:
    """A planner over a store holding the built-in base models."""
    settings = make_settings(tmp_path, mongo_url=mongo_url)
    store = await MongoStore.connect(mongo_url, settings.store)
    try:
        for entry in builtin_models():
            await store.base_models.put(entry)
        planner = DeploymentPlanner(
            deployments=store.deployments,
            base_models=store.base_models,
            jobs=store.jobs,
            settings=settings.serving,
        )
        yield planner, store
    finally:
        await store.close()


async def test_fine_tunes_are_planned_with_their_s3_copy(
    stored: tuple[DeploymentPlanner, MongoStore],
) -> None:
    planner, store = stored
    names = {}
    for method in ("lora", "full"):
        job = stored_job("client-p", created_at=1)
        name = fine_tuned_model_name(base_model=TINY, client_id="client-p", suffix=method, job_id=job.id)
        hyperparameters = SMALL_LORA.model_copy(update={"fine_tuning_method": method})
        await store.jobs.insert(
            job.model_copy(
                update={
                    "status": "succeeded",
                    "fine_tuned_model": name,
                    "hyperparameters": hyperparameters,
                    "output_model_path": f"/node-1/jobs/{job.id}/final",
                    "output_model_uri": f"s3://b/client-p/jobs/{job.id}/final",
                }
            )
        )
        names[method] = (name, job.id)

    full = await planner.plan(owner="client-p", allowed=None, body=DeploymentCreate(model=names["full"][0]))
    job_id = names["full"][1]
    assert (full.placement, full.model_source) == ("server", f"/node-1/jobs/{job_id}/final")
    assert (full.model_uri, full.adapter_uri) == (f"s3://b/client-p/jobs/{job_id}/final", None)

    base = await planner.plan(owner="client-p", allowed=None, body=DeploymentCreate(model=TINY))
    assert base.model_uri is None and base.adapter_uri is None
    await store.deployments.insert(base.model_copy(update={"status": "ready"}))
    lora = await planner.plan(owner="client-p", allowed=None, body=DeploymentCreate(model=names["lora"][0]))
    job_id = names["lora"][1]
    assert (lora.placement, lora.adapter_path) == ("adapter", f"/node-1/jobs/{job_id}/final")
    assert (lora.adapter_uri, lora.model_uri) == (f"s3://b/client-p/jobs/{job_id}/final", None)


async def test_an_adapter_does_not_attach_to_a_base_deployed_without_adapters(
    stored: tuple[DeploymentPlanner, MongoStore],
) -> None:
    planner, store = stored
    job = stored_job("client-q", created_at=1)
    name = fine_tuned_model_name(base_model=TINY, client_id="client-q", suffix="a", job_id=job.id)
    done = {"status": "succeeded", "fine_tuned_model": name, "hyperparameters": SMALL_LORA}
    await store.jobs.insert(job.model_copy(update={**done, "output_model_path": "/jobs/a/final"}))
    plain = DeploymentCreate(model=TINY, engine=EngineOptions(max_adapters=0))
    base = await planner.plan(owner="client-q", allowed=None, body=plain)
    await store.deployments.insert(base.model_copy(update={"status": "ready"}))

    with pytest.raises(Conflict) as refused:
        await planner.plan(owner="client-q", allowed=None, body=DeploymentCreate(model=name))
    assert refused.value.code == "base_without_adapters"
    assert "engine.max_adapters" in refused.value.message
