"""Deployments API without a cluster: records, ownership, limits, refusals (servers: tests/integration)."""

from __future__ import annotations

from pathlib import Path

import httpx

from studio.api.errors import STATUS_OF
from studio.errors import InvalidInput
from tests.api.conftest import ADMIN, new_client, running_api
from tests.api.test_errors import assert_error
from tests.conftest import make_settings

TINY = "mini-studio/tiny-llama"
SMALL_CONFIG = {
    "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
    "num_key_value_heads": 1, "vocab_size": 1024, "max_position_embeddings": 512,
}  # fmt: skip
# meta-llama/Llama-3.1-70B's config.json sizes (131 GiB of weights in bf16).
LLAMA_70B_CONFIG = {
    "hidden_size": 8192, "intermediate_size": 28672, "num_hidden_layers": 80, "num_attention_heads": 64,
    "num_key_value_heads": 8, "vocab_size": 128256, "max_position_embeddings": 131072,
}  # fmt: skip
INVALID_INPUT_STATUS = STATUS_OF[InvalidInput][0]


async def test_a_deployment_is_recorded_listed_and_undeployed(api: httpx.AsyncClient) -> None:
    _, headers = await new_client(api)
    created = await api.post("/v1/deployments", json={"model": TINY}, headers=headers)
    assert created.status_code == 201, created.text
    deployment = created.json()
    assert deployment["status"] == "deploying" and deployment["target"] == "serve"
    assert deployment["min_replicas"] == deployment["max_replicas"] == 1 and deployment["num_cpus"] == 0.5
    assert "client_id" not in deployment and "model_source" not in deployment
    assert_error(
        await api.post("/v1/deployments", json={"model": TINY}, headers=headers), 409, "already_deployed"
    )

    listed = (await api.get("/v1/deployments", headers=headers)).json()
    assert [d["id"] for d in listed["data"]] == [deployment["id"]] and listed["object"] == "list"
    model = (await api.get(f"/v1/models/{TINY}", headers=headers)).json()
    assert model["deployment"] == {
        "id": deployment["id"],
        "status": "deploying",
        "target": "serve",
        "placement": "server",
    }

    # This process has no model servers: a request for the deploying model says so (503), never hangs.
    chat = {"model": TINY, "messages": [{"role": "user", "content": "hi"}]}
    unavailable = await api.post("/v1/chat/completions", json=chat, headers=headers)
    assert_error(unavailable, 503, "serving_unavailable")

    # Another client may use the shared base (it sees the deployment) but not undeploy it: it holds none.
    assert deployment["shared"] and deployment["held"] and deployment["references"] == 1
    _, other = await new_client(api, name="other")
    seen = await api.get(f"/v1/deployments/{deployment['id']}", headers=other)
    assert seen.status_code == 200 and seen.json()["held"] is False
    assert_error(
        await api.delete(f"/v1/deployments/{deployment['id']}", headers=other), 404, "deployment_not_held"
    )
    _, walled = await new_client(api, name="walled", allowed_base_models=["acme/*"])
    assert_error(
        await api.get(f"/v1/deployments/{deployment['id']}", headers=walled), 404, "deployment_not_found"
    )

    removed = await api.delete(f"/inference/deploy/{TINY}", headers=headers)
    assert removed.status_code == 200 and removed.json()["status"] == "deleting"
    assert_error(
        await api.post("/v1/chat/completions", json=chat, headers=headers), 409, "model_not_deployed"
    )


async def test_bad_deployments_are_refused_and_nothing_is_stored(api: httpx.AsyncClient) -> None:
    _, headers = await new_client(api, max_deployments=1)
    unknown = await api.post("/v1/deployments", json={"model": "acme/nothing"}, headers=headers)
    assert_error(unknown, 404, "model_not_found")
    replicas = await api.post(
        "/v1/deployments", json={"model": TINY, "min_replicas": 3, "max_replicas": 2}, headers=headers
    )
    assert replicas.status_code == 400 and "max_replicas" in replicas.json()["error"]["message"]
    typo = await api.post("/v1/deployments", json={"model": TINY, "replicas": 2}, headers=headers)
    assert typo.status_code == 400 and typo.json()["error"]["param"] == "replicas"
    engine = await api.post(
        "/v1/deployments", json={"model": TINY, "engine": {"dtype": "int3"}}, headers=headers
    )
    assert engine.status_code == 400 and "dtype" in (engine.json()["error"]["param"] or "")
    k8s = await api.post("/v1/deployments", json={"model": TINY, "target": "kubernetes"}, headers=headers)
    assert_error(k8s, 409, "target_unavailable")
    wrong_path = await api.post("/inference/deploy/fine_tuned", json={"model": TINY}, headers=headers)
    assert_error(wrong_path, 400, "wrong_model_kind")
    no_job = await api.post(
        "/inference/deploy/fine_tuned", json={"model": f"ft:{TINY}:c:s:ftjob-x"}, headers=headers
    )
    assert_error(no_job, 404, "model_not_found")
    assert (await api.get("/v1/deployments", headers=headers)).json()["data"] == []

    # The per-client limit: one deployment, then 429.
    registered = await api.post(
        "/admin/base-models", json={"name": "acme/small", "config": SMALL_CONFIG}, headers=ADMIN
    )
    assert registered.status_code == 201, registered.text
    assert (
        await api.post("/inference/deploy/base", json={"base_model": TINY}, headers=headers)
    ).status_code == 201
    over = await api.post("/v1/deployments", json={"model": "acme/small"}, headers=headers)
    assert_error(over, 429, "deployment_limit")
    assert "Retry-After" in over.headers


async def test_inference_requests_name_a_model_and_reach_only_deployed_ones(api: httpx.AsyncClient) -> None:
    _, headers = await new_client(api)
    missing = await api.post("/v1/chat/completions", json={"messages": []}, headers=headers)
    assert_error(missing, 400, "missing_model")
    not_json = await api.post(
        "/v1/completions", content=b"{", headers={**headers, "Content-Type": "application/json"}
    )
    assert_error(not_json, 400, "invalid_json")
    unknown = await api.post(
        "/v1/chat/completions", json={"model": "acme/none", "messages": []}, headers=headers
    )
    assert_error(unknown, 404, "model_not_found")
    idle = await api.post(
        "/v1/completions", json={"model": TINY, "prompt": "hi", "stream": True}, headers=headers
    )
    assert_error(idle, 409, "model_not_deployed")
    assert (await api.post("/v1/chat/completions", json={"model": TINY, "messages": []})).status_code == 401


async def test_the_kubernetes_target_needs_a_cluster(tmp_path: Path, mongo_url: str) -> None:
    from studio.app.model_servers import model_servers

    missing = {"enabled": True, "kubeconfig": str(tmp_path / "no-such-kubeconfig")}
    settings = make_settings(tmp_path, mongo_url=mongo_url, k8s=missing)
    async with running_api(settings, model_servers=model_servers(settings)) as api:
        _, headers = await new_client(api)
        body = {"model": TINY, "target": "kubernetes"}
        refused = await api.post("/v1/deployments", json=body, headers=headers)
        assert_error(refused, 409, "kubernetes_not_configured")
        assert "STUDIO_K8S__KUBECONFIG" in refused.json()["error"]["message"]
        assert (await api.get("/v1/deployments", headers=headers)).json()["data"] == []


async def test_a_model_too_big_for_its_gpus_is_refused_up_front_and_a_fitting_one_shows_its_layout(
    api: httpx.AsyncClient,
) -> None:
    _, headers = await new_client(api)
    registered = await api.post(
        "/admin/base-models",
        json={"name": "meta-llama/Llama-3.1-70B", "source": "/models/llama-70b", "config": LLAMA_70B_CONFIG},
        headers=ADMIN,
    )
    assert registered.status_code == 201, registered.text
    body = {"model": "meta-llama/Llama-3.1-70B", "num_gpus": 2}
    refused = await api.post("/v1/deployments", json=body, headers=headers)
    assert_error(refused, INVALID_INPUT_STATUS, "model_too_large")
    error = refused.json()["error"]
    assert error["param"] == "num_gpus"
    assert "89.2 GiB per GPU with tensor_parallel_size 2" in error["message"]
    assert "72.0 GiB usable of a 80 GiB GPU" in error["message"]
    assert "ask for num_gpus 4" in error["message"]
    # Bigger GPUs (a request field) or a layout that does not match the GPUs.
    h200 = await api.post(
        "/v1/deployments", json=body | {"num_gpus": 1, "gpu_memory_gib": 141}, headers=headers
    )
    assert_error(h200, INVALID_INPUT_STATUS, "model_too_large")
    assert "126.9 GiB usable of a 141 GiB GPU" in h200.json()["error"]["message"]
    assert "ask for num_gpus 2" in h200.json()["error"]["message"]
    mismatch = await api.post(
        "/v1/deployments", json=body | {"engine": {"tensor_parallel_size": 4}}, headers=headers
    )
    assert_error(mismatch, INVALID_INPUT_STATUS, "invalid_parallel_layout")
    assert mismatch.json()["error"]["param"] == "engine.tensor_parallel_size"
    cpu_pipeline = await api.post(
        "/v1/deployments", json={"model": TINY, "engine": {"pipeline_parallel_size": 2}}, headers=headers
    )
    assert_error(cpu_pipeline, INVALID_INPUT_STATUS, "invalid_parallel_layout")
    assert (await api.get("/v1/deployments", headers=headers)).json()["data"] == []

    created = await api.post("/v1/deployments", json=body | {"num_gpus": 4}, headers=headers)
    assert created.status_code == 201, created.text
    shown = (await api.get(f"/v1/deployments/{created.json()['id']}", headers=headers)).json()
    layout = shown["layout"]
    assert layout["tensor_parallel_size"] == 4 and layout["pipeline_parallel_size"] == 1
    assert layout["gpus_per_replica"] == 4 and layout["gpu_memory_gib"] == 80
    assert 40 < layout["estimated_gib_per_gpu"] <= layout["usable_gib_per_gpu"] == 72.0
    assert layout["weights_gib_per_gpu"] == 32.85 and layout["max_model_len"] == 131072
    assert layout["kv_cache_tokens"] > 131072
    assert shown["engine"]["tensor_parallel_size"] == 4 and shown["engine"]["pipeline_parallel_size"] == 1

    # Without GPUs: tensor parallel over CPU worker processes, no memory estimate.
    cpu = await api.post(
        "/v1/deployments", json={"model": TINY, "engine": {"tensor_parallel_size": 2}}, headers=headers
    )
    assert cpu.status_code == 201, cpu.text
    assert cpu.json()["layout"] == {
        "tensor_parallel_size": 2, "pipeline_parallel_size": 1, "gpus_per_replica": 0.0,
        "gpu_memory_gib": None, "usable_gib_per_gpu": None, "estimated_gib_per_gpu": None,
        "weights_gib_per_gpu": None, "kv_cache_gib_per_sequence": None, "max_model_len": None,
        "kv_cache_tokens": None,
    }  # fmt: skip
