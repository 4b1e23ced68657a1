"""Serving as users run it: the `openai` SDK through Serve's proxy, model servers added at runtime (vLLM).

One Ray cluster and one ingress for the whole story: deploy the tiny base model, chat with it while it
is still starting (the request waits), stream, fine-tune a LoRA adapter, attach it to the running base,
chat with it, undeploy, and check the ingress replicas never restarted.
"""

from __future__ import annotations

import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import pytest
from openai.types import Completion
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from tests.contract import vllm_shapes
from tests.contract.strict import ERROR_OMITTED, ErrorBody, assert_openai_shape
from tests.helpers import wait_for
from tests.integration.conftest import ServeApp
from tests.integration.test_jobs import TINY, capitals

pytestmark = pytest.mark.integration
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def ingress_replicas(address: str) -> set[str]:
    """Return the actor ids of the live ingress replicas of the cluster whose dashboard is `address`
    (named: other Ray clusters on the machine make the default lookup fail)."""
    from ray.util.state import list_actors

    actors = list_actors(address=address, filters=[("state", "=", "ALIVE")], limit=1000)
    return {a.actor_id for a in actors if "StudioIngress" in (a.class_name or "")}


def tenant(http: httpx.Client, app: ServeApp, name: str, **limits: Any) -> tuple[str, dict[str, str]]:
    body: dict[str, Any] = {"name": name}
    if limits:
        body["limits"] = limits
    client = http.post("/admin/clients", json=body, headers=app.admin).json()
    key = http.post(f"/admin/clients/{client['id']}/keys", headers=app.admin).json()["secret"]
    return key, {"Authorization": f"Bearer {key}"}


def wait_deployment(
    http: httpx.Client, deployment_id: str, headers: dict[str, str], timeout_s: float = 300
) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        response = http.get(f"/v1/deployments/{deployment_id}", headers=headers)
        if response.status_code == 404 or response.json()["status"] not in ("deploying", "deleting"):
            return response
        assert time.monotonic() < deadline, response.json()
        time.sleep(0.5)


def chat(sdk: openai.OpenAI, model: str, **options: Any) -> str:
    reply = sdk.chat.completions.create(
        model=model, messages=QUESTION, max_tokens=12, temperature=0, **options
    )
    return reply.choices[0].message.content or ""


def long_chat(sdk: openai.OpenAI, model: str) -> str:
    reply = sdk.chat.completions.create(
        model=model, messages=QUESTION, max_tokens=32, temperature=0, extra_body={"ignore_eos": True}
    )
    return reply.choices[0].message.content or ""


def check_mixed_batches(sdk: openai.OpenAI, models: list[str]) -> None:
    """Tenants of one engine batched together: base and fine-tune requests sent at once (32 tokens each,
    so they share decoding steps) answer exactly as each model does alone."""
    solo = {model: long_chat(sdk, model) for model in models}
    assert len(set(solo.values())) == len(models), solo
    order = models * 4
    with ThreadPoolExecutor(len(order)) as pool:
        mixed = list(pool.map(lambda model: long_chat(sdk, model), order))
    assert mixed == [solo[model] for model in order], (mixed, solo)


def check_wire_shapes(http: httpx.Client, headers: dict[str, str]) -> None:
    """The answers on the wire, strictly as the SDK's models (tests/contract), nulls included."""
    body = {"model": TINY, "messages": QUESTION, "max_tokens": 4}
    reply = http.post("/v1/chat/completions", json=body, headers=headers)
    assert reply.status_code == 200, reply.text
    shape = vllm_shapes.chat_completion()
    assert_openai_shape(reply.json(), ChatCompletion, omitted=shape.omitted, extras=shape.extras)
    choice = reply.json()["choices"][0]
    assert choice["logprobs"] is None and choice["message"]["refusal"] is None
    streamed = http.post("/v1/chat/completions", json={**body, "stream": True}, headers=headers)
    chunks = [
        json.loads(event.removeprefix("data: "))
        for event in streamed.text.split("\n\n")
        if event.startswith("data: {")
    ]
    assert len(chunks) >= 2 and streamed.text.rstrip().endswith("data: [DONE]"), streamed.text
    shape = vllm_shapes.chat_completion_chunk()
    for chunk in chunks:
        assert_openai_shape(chunk, ChatCompletionChunk, omitted=shape.omitted, extras=shape.extras)
    text = http.post(
        "/v1/completions", json={"model": TINY, "prompt": "Paris is", "max_tokens": 4}, headers=headers
    )
    assert text.status_code == 200, text.text
    shape = vllm_shapes.text_completion()
    assert_openai_shape(text.json(), Completion, omitted=shape.omitted, extras=shape.extras)


def check_refusals(http: httpx.Client, headers: dict[str, str]) -> None:
    """A model server's refusals: 400 naming the field and OpenAI's code, never to be retried."""
    for body, param, code in (
        ({"temperature": -1}, "temperature", "invalid_value"),
        ({"n": "many"}, "n", "invalid_value"),
        (
            {"messages": [{"role": "user", "content": "word " * 2000}]},
            "input_text",
            "context_length_exceeded",
        ),
    ):
        refused = http.post(
            "/v1/chat/completions", json={"model": TINY, "messages": QUESTION, **body}, headers=headers
        )
        assert refused.status_code == 400, refused.text
        assert_openai_shape(refused.json(), ErrorBody, omitted=ERROR_OMITTED)
        error = refused.json()["error"]
        assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, code), error
        assert refused.headers["x-should-retry"] == "false"


def test_deploy_chat_attach_an_adapter_and_undeploy(
    serve_app: ServeApp, http: httpx.Client, ray_cluster: str
) -> None:
    before = ingress_replicas(ray_cluster)
    key, headers = tenant(http, serve_app, "serving")
    sdk = openai.OpenAI(api_key=key, base_url=f"{serve_app.url}/v1", max_retries=0, timeout=300)

    # A fine-tune trains meanwhile (the base's server starts in about 30 s on two cores).
    file_id = sdk.files.create(file=("capitals.jsonl", capitals()), purpose="fine-tune").id
    hyperparameters = {"n_epochs": 4, "batch_size": 8, "learning_rate_multiplier": 100}
    job = sdk.fine_tuning.jobs.create(
        model=TINY,
        training_file=file_id,
        method={"type": "supervised", "supervised": {"hyperparameters": hyperparameters}},
        suffix="capitals",
    )

    models = {m.id: m.model_dump() for m in sdk.models.list()}
    assert models[TINY]["deployment"] is None
    # One adapter slot: the fine-tune below fills the engine's last slot, the one vLLM's CPU kernels give
    # rows without an adapter (the leak the mixed batch below must not show).
    created = http.post(
        "/v1/deployments", json={"model": TINY, "engine": {"max_adapters": 1}}, headers=headers
    )
    assert created.status_code == 201, created.text
    base = created.json()
    assert (
        base["status"] == "deploying"
        and base["placement"] == "server"
        and base["app_name"].startswith("ms-model-")
    )
    again = http.post("/v1/deployments", json={"model": TINY}, headers=headers)
    assert again.status_code == 409 and again.json()["error"]["code"] == "already_deployed"

    # A request for a model still starting waits for it instead of failing.
    base_text = chat(sdk, TINY)
    assert http.get(f"/v1/deployments/{base['id']}", headers=headers).json()["status"] == "ready"
    # `/v1/models` answers from each ingress replica's routing table, which follows the store within
    # its refresh interval: the other replica may say `deploying` for a moment after `ready`.
    for _ in range(60):
        status = sdk.models.retrieve(TINY).model_dump()["deployment"]["status"]
        if status == "ready":
            break
        time.sleep(0.5)
    assert status == "ready"

    reply = sdk.chat.completions.create(model=TINY, messages=QUESTION, max_tokens=8, n=2, seed=3)
    assert len(reply.choices) == 2 and reply.usage and reply.usage.completion_tokens > 0
    assert reply.model == TINY
    chunks = list(
        sdk.chat.completions.create(model=TINY, messages=QUESTION, max_tokens=12, temperature=0, stream=True)
    )
    assert chunks and "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == base_text
    completion = sdk.completions.create(model=TINY, prompt="The capital of France", max_tokens=5, stop=["."])
    assert completion.choices[0].finish_reason in ("length", "stop") and completion.usage
    check_wire_shapes(http, headers)
    predicted = http.post(
        f"/inference/{TINY}/predict", json={"prompt": "Hello", "max_tokens": 4}, headers=headers
    )
    assert predicted.status_code == 200 and predicted.json()["model"] == TINY, predicted.text

    # Bad requests: each gets OpenAI's error shape with the right status; the server keeps serving.
    with pytest.raises(openai.BadRequestError) as bad_value:
        sdk.chat.completions.create(model=TINY, messages=QUESTION, temperature=-1)
    assert bad_value.value.body["param"] == "temperature"  # type: ignore[index]
    check_refusals(http, headers)
    with pytest.raises(openai.BadRequestError):
        sdk.chat.completions.create(model=TINY, messages=[{"role": "user", "content": "word " * 2000}])
    with pytest.raises(openai.NotFoundError):
        sdk.chat.completions.create(model="acme/unknown", messages=QUESTION)

    # The fine-tune attaches to the running base: ready in seconds, and it answers differently.
    done = wait_for(http, job.id, headers, lambda j: j["status"] in ("succeeded", "failed", "cancelled"))
    assert done["status"] == "succeeded", done
    tuned = done["fine_tuned_model"]
    not_yet = http.get(f"/v1/models/{tuned}", headers=headers).json()
    assert not_yet["deployment"] is None
    with pytest.raises(openai.ConflictError):
        chat(sdk, tuned)
    conflict = http.post("/v1/chat/completions", json={"model": tuned, "messages": QUESTION}, headers=headers)
    assert conflict.json()["error"]["code"] == "model_not_deployed", conflict.text
    assert conflict.headers["x-should-retry"] == "false"  # the SDK would retry a bare 409
    started = time.monotonic()
    attached = http.post("/inference/deploy/fine_tuned", json={"fine_tuned_model": tuned}, headers=headers)
    assert attached.status_code == 201, attached.text
    adapter = attached.json()
    assert adapter["placement"] == "adapter" and adapter["base_deployment"] == base["id"]
    assert wait_deployment(http, adapter["id"], headers).json()["status"] == "ready"
    tuned_text = chat(sdk, tuned)
    attach_s = time.monotonic() - started
    assert tuned_text and tuned_text != base_text, (tuned_text, base_text)
    assert chat(sdk, TINY) == base_text  # the base is unchanged beside its adapter
    check_mixed_batches(sdk, [TINY, tuned])
    assert attach_s < 30, attach_s

    # Another tenant sees neither the fine-tune nor its deployment; the base it may use.
    other_key, other = tenant(http, serve_app, "stranger")
    assert http.get(f"/v1/deployments/{adapter['id']}", headers=other).status_code == 404
    stranger = openai.OpenAI(api_key=other_key, base_url=f"{serve_app.url}/v1", max_retries=0, timeout=120)
    with pytest.raises(openai.NotFoundError):
        chat(stranger, tuned)
    assert chat(stranger, TINY) == base_text
    undeploy_other = http.delete(f"/v1/deployments/{base['id']}", headers=other)
    assert undeploy_other.status_code == 404

    # Undeploy: the base cannot go while its adapter runs; each model's requests then get a clear error.
    blocked = http.delete(f"/v1/deployments/{base['id']}", headers=headers)
    assert blocked.status_code == 409 and blocked.json()["error"]["code"] == "adapters_attached"
    removed = http.delete(f"/inference/deploy/{tuned}", headers=headers)
    assert removed.status_code == 200 and removed.json()["status"] == "deleting"
    with pytest.raises(openai.ConflictError) as gone:
        chat(sdk, tuned)
    assert "not deployed" in gone.value.message or "undeployed" in gone.value.message
    assert wait_deployment(http, adapter["id"], headers).status_code == 404
    assert http.delete(f"/v1/deployments/{base['id']}", headers=headers).status_code == 200
    assert wait_deployment(http, base["id"], headers).status_code == 404
    with pytest.raises(openai.ConflictError):
        chat(sdk, TINY)
    assert http.get("/v1/deployments", headers=headers).json()["data"] == []

    assert ingress_replicas(ray_cluster) == before  # the ingress never restarted


def test_a_model_that_cannot_load_fails_with_the_reason(serve_app: ServeApp, http: httpx.Client) -> None:
    from studio.training import ensure_tiny_model

    key, headers = tenant(http, serve_app, "broken")
    # A registered base model whose directory has the config and tokenizer but no weights.
    tiny = ensure_tiny_model(serve_app.settings.models_dir / "tiny-llama")
    broken = serve_app.settings.data_dir / "broken-model"
    broken.mkdir(exist_ok=True)
    for path in tiny.iterdir():
        if path.is_file() and not path.name.endswith(".safetensors"):
            shutil.copy(path, broken / path.name)
    registered = http.post(
        "/admin/base-models", json={"name": "acme/broken", "source": str(broken)}, headers=serve_app.admin
    )
    assert registered.status_code == 201, registered.text

    deployment = http.post("/v1/deployments", json={"model": "acme/broken"}, headers=headers).json()
    failed = wait_deployment(http, deployment["id"], headers).json()
    assert failed["status"] == "failed" and failed["error"], failed
    assert "has no weights" in failed["error"], failed
    sdk = openai.OpenAI(api_key=key, base_url=f"{serve_app.url}/v1", max_retries=0, timeout=60)
    with pytest.raises(openai.ConflictError) as refused:
        chat(sdk, "acme/broken")
    assert "failed to deploy" in refused.value.message
    assert http.get("/healthz").status_code == 200  # the ingress serves on

    # A failed deployment can be removed (its server is already gone).
    assert http.delete(f"/v1/deployments/{deployment['id']}", headers=headers).status_code == 200
    assert wait_deployment(http, deployment["id"], headers).status_code == 404
