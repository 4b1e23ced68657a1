"""Per-client caps on deployments (count, replicas, CPUs, GPUs in total), and the refusal up front of a
multi-GPU replica no node of the cluster can hold: in-process API on the real MongoDB-protocol server,
with the cluster's nodes from a fixed `ClusterInfo`."""

from __future__ import annotations

from pathlib import Path

import httpx

from studio.services.jobs import Compute
from tests.api.conftest import ADMIN, new_client, running_api
from tests.api.test_auth import assert_error
from tests.conftest import make_settings
from tests.fakes import FixedCluster, RecordingLauncher, SilentTracker

TINY = "mini-studio/tiny-llama"
LLAMA_70B = "meta-llama/Llama-3.1-70B"
# meta-llama/Llama-3.1-70B's config.json sizes (131 GiB of weights in bf16).
LLAMA_70B_CONFIG = {
    "hidden_size": 8192, "intermediate_size": 28672, "num_hidden_layers": 80, "num_attention_heads": 64,
    "num_key_value_heads": 8, "vocab_size": 128256, "max_position_embeddings": 131072,
}  # fmt: skip
SMALL_CONFIG = {
    "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
    "num_key_value_heads": 1, "vocab_size": 1024, "max_position_embeddings": 512,
}  # fmt: skip


def gpu_cluster(gpus_per_node: int, nodes: int) -> Compute:
    return Compute(
        launcher=RecordingLauncher(),
        cluster=FixedCluster(gpus_per_node=gpus_per_node, nodes=nodes),
        notifier=SilentTracker(),
    )


async def register(api: httpx.AsyncClient, name: str, config: dict[str, int]) -> None:
    registered = await api.post(
        "/admin/base-models",
        json={"name": name, "source": f"/models/{name}", "config": config},
        headers=ADMIN,
    )
    assert registered.status_code == 201, registered.text


async def test_each_cap_is_refused_with_429_naming_it_the_use_and_the_request(
    tmp_path: Path, mongo_url: str
) -> None:
    settings = make_settings(tmp_path, mongo_url=mongo_url, serving={"routing_refresh_s": 0.05})
    async with running_api(settings) as api:
        await register(api, LLAMA_70B, LLAMA_70B_CONFIG)
        await register(api, "acme/small", SMALL_CONFIG)
        await register(api, "acme/other", SMALL_CONFIG)
        client_id, headers = await new_client(
            api, max_deployments=5, max_deployment_gpus=4, max_deployment_replicas=3, max_deployment_cpus=2
        )

        # 2 replicas x 4 GPUs: 8 GPUs, over the 4 allowed in total.
        big = {"model": LLAMA_70B, "num_gpus": 4, "max_replicas": 2}
        gpus = await api.post("/v1/deployments", json=big, headers=headers)
        error = assert_error(gpus, 429, "deployment_gpus_limit")
        assert error["param"] == "num_gpus" and "Retry-After" in gpus.headers
        message = str(error["message"])
        assert (
            "max_deployment_gpus is 4 GPUs" in message
            and "hold 0 now" in message
            and "asks 8 more" in message
        )

        replicas = await api.post("/v1/deployments", json={"model": TINY, "max_replicas": 4}, headers=headers)
        assert_error(replicas, 429, "deployment_replicas_limit")
        assert "max_deployment_replicas is 3 replicas" in replicas.json()["error"]["message"]
        cpus = await api.post(
            "/v1/deployments", json={"model": TINY, "num_cpus": 1, "max_replicas": 3}, headers=headers
        )
        assert_error(cpus, 429, "deployment_cpus_limit")
        assert "asks 3 more" in cpus.json()["error"]["message"]
        assert (await api.get("/v1/deployments", headers=headers)).json()["data"] == []

        # Within the caps: 2 replicas of 1 CPU. Then the CPU total is used up.
        fits = await api.post(
            "/v1/deployments", json={"model": TINY, "num_cpus": 1, "max_replicas": 2}, headers=headers
        )
        assert fits.status_code == 201, fits.text

        # Holding a shared base counts against the caps as deploying it would.
        shared = await api.post(
            "/admin/deployments", json={"model": "acme/small", "num_cpus": 1}, headers=ADMIN
        )
        assert shared.status_code == 201, shared.text
        hold = await api.post("/v1/deployments", json={"model": "acme/small"}, headers=headers)
        assert_error(hold, 429, "deployment_cpus_limit")
        assert "they hold 2 now and this request asks 1 more" in hold.json()["error"]["message"]
        raised = await api.patch(
            f"/admin/clients/{client_id}", json={"limits": {"max_deployment_cpus": 3}}, headers=ADMIN
        )
        assert raised.status_code == 200 and raised.json()["limits"]["max_deployment_cpus"] == 3
        held = await api.post("/v1/deployments", json={"model": "acme/small"}, headers=headers)
        assert held.status_code == 201, held.text
        replicas = await api.post(
            "/v1/deployments", json={"model": "acme/other", "num_gpus": 1}, headers=headers
        )
        assert_error(replicas, 429, "deployment_replicas_limit")
        assert "they hold 3 now and this request asks 1 more" in replicas.json()["error"]["message"]

        # Letting go of the shared base frees what it held.
        released = await api.delete(f"/v1/deployments/{held.json()['id']}", headers=headers)
        assert released.status_code == 200 and released.json()["held"] is False
        after = await api.post(
            "/v1/deployments", json={"model": "acme/other", "num_gpus": 1}, headers=headers
        )
        assert after.status_code == 201, after.text


async def test_new_clients_get_the_caps_of_the_settings(tmp_path: Path, mongo_url: str) -> None:
    caps = {"max_deployment_gpus": 1, "max_deployment_replicas": 4, "max_deployment_cpus": 16}
    settings = make_settings(tmp_path, mongo_url=mongo_url, default_limits=caps)
    assert settings.default_limits.max_deployment_gpus == 1
    async with running_api(settings) as api:
        await register(api, "acme/small", SMALL_CONFIG)
        _, headers = await new_client(api)
        me = (await api.get("/v1/me", headers=headers)).json()
        assert {key: me["limits"][key] for key in caps} == caps
        refused = await api.post(
            "/v1/deployments", json={"model": "acme/small", "num_gpus": 2}, headers=headers
        )
        assert_error(refused, 429, "deployment_gpus_limit")


async def test_a_replica_needing_more_gpus_on_one_node_than_any_node_has_is_refused_up_front(
    tmp_path: Path, mongo_url: str
) -> None:
    settings = make_settings(tmp_path, mongo_url=mongo_url)
    # Two nodes of two GPUs: four GPUs in all, but a tensor-parallel replica's workers share one node.
    async with running_api(settings, compute=gpu_cluster(gpus_per_node=2, nodes=2)) as api:
        await register(api, LLAMA_70B, LLAMA_70B_CONFIG)
        _, headers = await new_client(api, max_deployments=3)
        refused = await api.post("/v1/deployments", json={"model": LLAMA_70B, "num_gpus": 4}, headers=headers)
        error = assert_error(refused, 409, "no_node_fits")
        assert error["param"] == "num_gpus"
        message = str(error["message"])
        assert "needs 4 GPUs on one node (tensor_parallel_size 4" in message
        assert "the most GPUs any node of the cluster has is 2 (2 nodes, 4 GPUs in all" in message
        assert (await api.get("/v1/deployments", headers=headers)).json()["data"] == []

        # Pipeline stages may sit on different nodes (PACK): 2 stages of tp 2 are not refused.
        staged = {"model": LLAMA_70B, "num_gpus": 4, "engine": {"pipeline_parallel_size": 2}}
        created = await api.post("/v1/deployments", json=staged, headers=headers)
        assert created.status_code == 201, created.text
        assert created.json()["layout"]["tensor_parallel_size"] == 2
        # A replica that fits one node is not refused either.
        assert (
            await api.post("/v1/deployments", json={"model": TINY, "num_gpus": 2}, headers=headers)
        ).status_code == 201

    # A cluster whose autoscaler can add a node of 8 GPUs takes the tensor-parallel replica.
    scaling = make_settings(tmp_path, mongo_url=mongo_url, serving={"scalable_node_gpus": 8})
    async with running_api(scaling, compute=gpu_cluster(gpus_per_node=2, nodes=2)) as api:
        await register(api, LLAMA_70B, LLAMA_70B_CONFIG)
        _, headers = await new_client(api)
        created = await api.post("/v1/deployments", json={"model": LLAMA_70B, "num_gpus": 4}, headers=headers)
        assert created.status_code == 201, created.text
