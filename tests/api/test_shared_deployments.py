"""Shared base deployments that no tenant owns, and the admin's undeploy: in-process API on the real
MongoDB-protocol server, with the tracker's `DeploymentRunner` stepping the records against scripted model
servers (no Ray: servers come up, fail or go as the test says)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient

from studio.config import Settings
from studio.domain.jobs import fine_tuned_model_name
from studio.errors import StudioError, Unavailable
from studio.ports import JsonObject, ServerState
from studio.schemas.deployments import Deployment, DeploymentChanges
from studio.schemas.jobs import Hyperparameters, Job
from studio.services.deployment_runner import DeploymentRunner
from studio.stores.mongo import MongoStore
from tests.api.conftest import ADMIN, new_client, running_api
from tests.api.test_auth import assert_error
from tests.conftest import make_settings

TINY = "mini-studio/tiny-llama"


class ScriptedServers:
    """`ModelServers` whose servers come up `running`, or `failed` for the models in `failing`."""

    def __init__(self) -> None:
        self.failing: set[str] = set()
        self.apps: dict[str, ServerState] = {}
        self.attached: list[str] = []
        self.removal_error: StudioError | None = None  # what `remove` raises (the target failing)

    async def check(self, deployment: Deployment) -> None:
        return None

    async def deploy(self, deployment: Deployment) -> DeploymentChanges | None:
        self.apps[deployment.app_name or ""] = "failed" if deployment.model in self.failing else "running"
        return None

    async def state(self, deployment: Deployment) -> tuple[ServerState, str]:
        state = self.apps.get(deployment.app_name or "", "absent")
        return state, "the model cannot load" if state == "failed" else ""

    async def ready(self, deployment: Deployment) -> JsonObject:
        return {}

    async def attach(self, adapter: Deployment) -> None:
        self.attached.append(adapter.model)

    async def remove(self, deployment: Deployment) -> None:
        if self.removal_error is not None:
            raise self.removal_error
        if deployment.placement == "server":
            self.apps.pop(deployment.app_name or "", None)


@pytest.fixture
def settings(tmp_path: Path, mongo_url: str) -> Settings:
    return make_settings(tmp_path, mongo_url=mongo_url, serving={"routing_refresh_s": 0.05})


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[MongoStore]:
    assert settings.store.mongo_url is not None
    opened = await MongoStore.connect(settings.store.mongo_url.get_secret_value(), settings.store)
    yield opened
    await opened.close()


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with running_api(settings) as client:
        yield client


@pytest.fixture
def servers() -> ScriptedServers:
    return ScriptedServers()


@pytest.fixture
def runner(store: MongoStore, servers: ScriptedServers) -> DeploymentRunner:
    return DeploymentRunner(
        deployments=store.deployments,
        servers=servers,
        poll_interval_s=1,
        deploy_timeout_s=600,
        ready_check_interval_s=3600,
    )


async def settle(runner: DeploymentRunner, rounds: int = 2) -> None:
    """Run the tracker's deployment rounds (each steps every unsettled record once)."""
    for _ in range(rounds):
        await runner.round()
        await runner.settle()


async def lora_fine_tune(store: MongoStore, client_id: str, tmp_path: Path) -> str:
    """Store a finished LoRA fine-tune of TINY for the client (as the tracker does); return its name."""
    job_id = f"ftjob-{client_id[-8:]}"
    tuned = fine_tuned_model_name(base_model=TINY, client_id=client_id, suffix="x", job_id=job_id)
    hyper = Hyperparameters(
        n_epochs=1, batch_size=1, learning_rate_multiplier=1.0, fine_tuning_method="lora", lora_r=8,
        lora_alpha=16, lora_dropout=0.05, lora_target_modules=["q_proj"],
    )  # fmt: skip
    now = int(time.time())
    await store.jobs.insert(Job(
        id=job_id, client_id=client_id, model=TINY, training_file="file-x", validation_file=None,
        status="succeeded", hyperparameters=hyper, suffix="x", seed=0, fine_tuned_model=tuned,
        output_model_path=str(tmp_path / job_id), created_at=now, finished_at=now,
    ))  # fmt: skip
    return tuned


async def get(api: httpx.AsyncClient, deployment_id: str, headers: dict[str, str]) -> dict[str, Any]:
    found = await api.get(f"/v1/deployments/{deployment_id}", headers=headers)
    assert found.status_code == 200, found.text
    body: dict[str, Any] = found.json()
    return body


async def test_a_failed_shared_base_is_redeployed_by_any_client_allowed_it(
    api: httpx.AsyncClient, runner: DeploymentRunner, servers: ScriptedServers
) -> None:
    _, squatter = await new_client(api, name="squatter")
    _, other = await new_client(api, name="other")
    servers.failing.add(TINY)
    failed = (await api.post("/v1/deployments", json={"model": TINY}, headers=squatter)).json()
    await settle(runner)
    assert (await get(api, failed["id"], other))["status"] == "failed"

    servers.failing.clear()
    retried = await api.post("/v1/deployments", json={"model": TINY, "max_replicas": 2}, headers=other)
    assert retried.status_code == 201, retried.text
    redeployed = retried.json()
    assert redeployed["status"] == "deploying" and redeployed["id"] != failed["id"]
    assert redeployed["max_replicas"] == 2  # nothing runs: the retry sets its options
    assert redeployed["shared"] and redeployed["held"] and redeployed["references"] == 1
    assert (await get(api, redeployed["id"], squatter))["held"] is False  # its hold ended with the failure
    assert_error(
        await api.delete(f"/v1/deployments/{redeployed['id']}", headers=squatter), 404, "deployment_not_held"
    )
    await settle(runner)
    assert (await get(api, redeployed["id"], other))["status"] == "ready"


async def test_a_live_shared_base_is_held_by_each_client_that_asks_and_keeps_its_options(
    api: httpx.AsyncClient, runner: DeploymentRunner
) -> None:
    _, first = await new_client(api, name="first")
    _, second = await new_client(api, name="second")
    created = await api.post(
        "/v1/deployments", json={"model": TINY, "engine": {"max_model_len": 256}}, headers=first
    )
    assert created.status_code == 201, created.text
    base = created.json()
    await settle(runner)

    other_options = {"model": TINY, "num_cpus": 1, "engine": {"max_model_len": 512, "dtype": "auto"}}
    refused = await api.post("/v1/deployments", json=other_options, headers=second)
    assert_error(refused, 409, "shared_base_options")
    error = refused.json()["error"]
    assert error["param"] == "num_cpus"
    assert "num_cpus (deployed 0.5, asked 1.0)" in error["message"]
    assert "engine.max_model_len (deployed 256, asked 512)" in error["message"]
    assert "dtype" not in error["message"]  # asked as deployed

    held = await api.post(
        "/v1/deployments", json={"model": TINY, "engine": {"max_model_len": 256}}, headers=second
    )
    assert held.status_code == 201, held.text
    assert held.json()["id"] == base["id"] and held.json()["status"] == "ready"
    assert held.json()["held"] is True and held.json()["references"] == 2
    assert_error(
        await api.post("/v1/deployments", json={"model": TINY}, headers=second), 409, "already_deployed"
    )

    # The creator's undeploy drops its hold only: the server runs on for the other holder.
    released = await api.delete(f"/v1/deployments/{base['id']}", headers=first)
    assert released.status_code == 200, released.text
    assert released.json()["status"] == "ready" and released.json()["held"] is False
    assert released.json()["references"] == 1
    listed = (await api.get("/v1/deployments", headers=first)).json()["data"]
    assert [(d["id"], d["held"]) for d in listed] == [(base["id"], False)]  # still usable, not held
    for _ in range(100):  # the ingress's routing table is re-read every `routing_refresh_s`
        model = (await api.get(f"/v1/models/{TINY}", headers=first)).json()
        if model["deployment"]["status"] == "ready":
            break
        await asyncio.sleep(0.05)
    assert model["deployment"] == {
        "id": base["id"],
        "status": "ready",
        "target": "serve",
        "placement": "server",
    }
    assert_error(await api.delete(f"/v1/deployments/{base['id']}", headers=first), 404, "deployment_not_held")

    # The last holder's undeploy removes it.
    last = await api.delete(f"/inference/deploy/{TINY}", headers=second)
    assert last.status_code == 200 and last.json()["status"] == "deleting", last.text
    await settle(runner, rounds=1)
    assert (await api.get(f"/v1/deployments/{base['id']}", headers=second)).status_code == 404


async def test_adapters_never_hold_a_base_hostage_and_their_owners_see_it_detached(
    api: httpx.AsyncClient, runner: DeploymentRunner, store: MongoStore, tmp_path: Path
) -> None:
    owner_id, owner = await new_client(api, name="owner")
    tenant_id, tenant = await new_client(api, name="tenant")
    base = (await api.post("/v1/deployments", json={"model": TINY}, headers=owner)).json()
    await settle(runner)
    adapters = {}
    for client_id, headers in ((owner_id, owner), (tenant_id, tenant)):
        tuned = await lora_fine_tune(store, client_id, tmp_path)
        attached = await api.post("/v1/deployments", json={"model": tuned}, headers=headers)
        assert attached.status_code == 201 and attached.json()["placement"] == "adapter", attached.text
        adapters[client_id] = (tuned, attached.json()["id"], headers)
    await settle(runner)
    for _, adapter_id, headers in adapters.values():
        assert (await get(api, adapter_id, headers))["status"] == "ready"

    # The last holder is refused only for its own adapters; the other tenant's are not named.
    own = await api.delete(f"/v1/deployments/{base['id']}", headers=owner)
    assert_error(own, 409, "adapters_attached")
    assert adapters[owner_id][0] in own.json()["error"]["message"]
    assert adapters[tenant_id][0] not in own.json()["error"]["message"]
    # A tenant cannot undeploy the base at all, nor reach the admin's paths.
    assert_error(
        await api.delete(f"/v1/deployments/{base['id']}", headers=tenant), 404, "deployment_not_held"
    )
    assert (await api.delete(f"/admin/deployments/{base['id']}", headers=tenant)).status_code == 401

    # The admin's undeploy is never blocked: the adapters are detached first, their owners told why.
    admin_view = (await api.get("/admin/deployments", headers=ADMIN)).json()["data"]
    assert {d["id"]: d["holders"] for d in admin_view}[base["id"]] == [owner_id]
    removed = await api.delete(f"/admin/deployments/{base['id']}", headers=ADMIN)
    assert removed.status_code == 200, removed.text
    assert removed.json()["status"] == "deleting"
    for tuned, adapter_id, headers in adapters.values():
        detached = await get(api, adapter_id, headers)
        assert detached["status"] == "failed", detached
        assert detached["error"].startswith(f"detached: its base deployment {base['id']} ({TINY})")
        assert "an admin undeployed it" in detached["error"]
        chat = {"model": tuned, "messages": [{"role": "user", "content": "hi"}]}
        refused = await api.post("/v1/chat/completions", json=chat, headers=headers)
        assert_error(refused, 409, "model_failed")
        assert "detached" in refused.json()["error"]["message"]
    await settle(runner, rounds=1)
    assert (await api.get(f"/v1/deployments/{base['id']}", headers=owner)).status_code == 404

    # An owner clears its detached adapter, or redeploys it once the base runs again.
    tuned, adapter_id, headers = adapters[tenant_id]
    assert (await api.delete(f"/v1/deployments/{adapter_id}", headers=headers)).status_code == 200
    again = await api.post("/admin/deployments", json={"model": TINY}, headers=ADMIN)
    assert again.status_code == 201 and again.json()["holders"] == ["admin"], again.text
    await settle(runner)
    tuned, adapter_id, headers = adapters[owner_id]
    redeployed = await api.post("/v1/deployments", json={"model": tuned}, headers=headers)
    assert redeployed.status_code == 201 and redeployed.json()["base_deployment"] == again.json()["id"]


async def test_the_last_holder_letting_go_detaches_the_other_tenants_adapters(
    api: httpx.AsyncClient, runner: DeploymentRunner, store: MongoStore, tmp_path: Path
) -> None:
    _, holder = await new_client(api, name="holder")
    tenant_id, tenant = await new_client(api, name="tenant")
    base = (await api.post("/v1/deployments", json={"model": TINY}, headers=holder)).json()
    await settle(runner)
    tuned = await lora_fine_tune(store, tenant_id, tmp_path)
    adapter = (await api.post("/v1/deployments", json={"model": tuned}, headers=tenant)).json()
    await settle(runner)

    released = await api.delete(f"/v1/deployments/{base['id']}", headers=holder)
    assert released.status_code == 200 and released.json()["status"] == "deleting", released.text
    detached = await get(api, adapter["id"], tenant)
    assert detached["status"] == "failed" and "the last client holding it released it" in detached["error"]


async def test_admin_deployments_are_base_models_held_by_the_admin(api: httpx.AsyncClient) -> None:
    assert (await api.get("/admin/deployments")).status_code == 401
    fine_tune = f"ft:{TINY}:client-x::ftjob-x"
    assert_error(
        await api.post("/admin/deployments", json={"model": fine_tune}, headers=ADMIN), 404, "model_not_found"
    )
    created = await api.post("/admin/deployments", json={"model": TINY, "num_cpus": 1}, headers=ADMIN)
    assert created.status_code == 201, created.text
    assert created.json()["holders"] == ["admin"] and created.json()["client_id"] == "admin"
    changed = await api.post("/admin/deployments", json={"model": TINY, "num_cpus": 2}, headers=ADMIN)
    assert_error(changed, 409, "shared_base_options")
    assert f"DELETE /admin/deployments/{created.json()['id']}" in changed.json()["error"]["message"]

    # A client allowed the base sees it (not held), may hold it; one not allowed sees nothing.
    _, tenant = await new_client(api, name="tenant")
    seen = await get(api, created.json()["id"], tenant)
    assert seen["shared"] and not seen["held"] and seen["references"] == 1 and "holders" not in seen
    held = await api.post("/v1/deployments", json={"model": TINY}, headers=tenant)
    assert held.status_code == 201 and held.json()["references"] == 2
    _, walled = await new_client(api, name="walled", allowed_base_models=["acme/*"])
    assert_error(
        await api.post("/v1/deployments", json={"model": TINY}, headers=walled), 404, "model_not_found"
    )
    released = await api.delete(f"/v1/deployments/{created.json()['id']}", headers=tenant)
    assert (
        released.json()["status"] == "deploying" and released.json()["references"] == 1
    )  # the admin holds it


async def test_clients_asking_for_a_base_at_the_same_time_each_hold_the_one_deployment(
    api: httpx.AsyncClient,
) -> None:
    tenants = [(await new_client(api, name=f"tenant-{i}"))[1] for i in range(3)]
    answers = await asyncio.gather(
        *(api.post("/v1/deployments", json={"model": TINY}, headers=headers) for headers in tenants)
    )
    assert [a.status_code for a in answers] == [201, 201, 201], [a.text for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1
    admin_view = (await api.get("/admin/deployments", headers=ADMIN)).json()["data"]
    assert len(admin_view) == 1 and len(admin_view[0]["holders"]) == 3


async def test_a_base_recorded_before_holders_is_held_by_its_creator(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    _, creator = await new_client(api, name="creator")
    _, other = await new_client(api, name="other")
    base = (await api.post("/v1/deployments", json={"model": TINY}, headers=creator)).json()
    assert settings.store.mongo_url is not None
    raw: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.store.mongo_url.get_secret_value())
    try:  # the record as an older Mini Studio wrote it: no holders
        routing = raw[settings.store.database]["model_routing"]
        assert (
            await routing.update_one({"_id": base["id"]}, {"$unset": {"holders": ""}})
        ).modified_count == 1
    finally:
        await raw.close()
    assert (await get(api, base["id"], creator))["held"] is True
    held = await api.post("/v1/deployments", json={"model": TINY}, headers=other)
    assert held.status_code == 201 and held.json()["references"] == 2, held.text
    released = await api.delete(f"/v1/deployments/{base['id']}", headers=creator)
    assert released.json()["held"] is False and released.json()["references"] == 1


async def test_a_removal_that_keeps_failing_ends_failed_past_its_deadline_and_can_be_retried(
    api: httpx.AsyncClient, store: MongoStore, servers: ScriptedServers
) -> None:
    runner = DeploymentRunner(
        deployments=store.deployments,
        servers=servers,
        poll_interval_s=1,
        deploy_timeout_s=2,  # records keep whole seconds
        ready_check_interval_s=3600,
    )
    created = (await api.post("/admin/deployments", json={"model": TINY}, headers=ADMIN)).json()
    await settle(runner)
    servers.removal_error = Unavailable("Serve did not answer within 30 s")
    deleting = await api.delete(f"/admin/deployments/{created['id']}", headers=ADMIN)
    assert deleting.json()["status"] == "deleting"

    async def admin_view() -> dict[str, Any] | None:
        listed = (await api.get("/admin/deployments", headers=ADMIN)).json()["data"]
        return next((d for d in listed if d["id"] == created["id"]), None)

    await settle(runner)  # within the deadline: still deleting, the next round tries again
    assert (await admin_view() or {}).get("status") == "deleting"
    await asyncio.sleep(3.1)
    await settle(runner)
    failed = await admin_view()
    assert failed is not None and failed["status"] == "failed", failed
    assert "could not be removed within" in failed["error"] and "Serve did not answer" in failed["error"]

    servers.removal_error = None  # the target answers again: a new delete removes it
    assert (await api.delete(f"/admin/deployments/{created['id']}", headers=ADMIN)).status_code == 200
    await settle(runner)
    assert await admin_view() is None
