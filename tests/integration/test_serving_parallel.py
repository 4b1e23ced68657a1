"""Tensor parallelism on the Serve target, on CPU: the tiny model's engine split over two worker
processes (vLLM's CPU backend, multiprocessing executor) answers as the one-worker engine does."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.integration.conftest import ServeApp
from tests.integration.test_jobs import TINY
from tests.integration.test_serving import chat, tenant, wait_deployment

pytestmark = pytest.mark.integration
SPLIT = "acme/tiny-llama-tp2"


def test_a_tensor_parallel_replica_answers_as_a_single_worker_one(
    serve_app: ServeApp, http: httpx.Client
) -> None:
    from studio.training import ensure_tiny_model

    key, headers = tenant(http, serve_app, "parallel")
    tiny = ensure_tiny_model(serve_app.settings.models_dir / "tiny-llama")
    registered = http.post(
        "/admin/base-models", json={"name": SPLIT, "source": str(tiny)}, headers=serve_app.admin
    )
    assert registered.status_code == 201, registered.text

    split = http.post(
        "/v1/deployments", json={"model": SPLIT, "engine": {"tensor_parallel_size": 2}}, headers=headers
    )
    assert split.status_code == 201, split.text
    assert split.json()["layout"]["tensor_parallel_size"] == 2
    single = http.post("/v1/deployments", json={"model": TINY}, headers=headers)
    assert single.status_code == 201, single.text
    assert single.json()["layout"]["tensor_parallel_size"] == 1

    for deployment in (split.json(), single.json()):
        ready = wait_deployment(http, deployment["id"], headers).json()
        assert ready["status"] == "ready", ready
    sdk = openai.OpenAI(api_key=key, base_url=f"{serve_app.url}/v1", max_retries=0, timeout=300)
    # Greedy decoding: the same weights split over two workers give the same tokens.
    split_text = chat(sdk, SPLIT)
    assert split_text and split_text == chat(sdk, TINY)

    for deployment in (split.json(), single.json()):
        assert http.delete(f"/v1/deployments/{deployment['id']}", headers=headers).status_code == 200
        assert wait_deployment(http, deployment["id"], headers).status_code == 404
