"""Deployments with target "kubernetes", end to end without a cluster.

The API (in-process) and the tracker's deployment runner (in this process) drive the official client
against the fake Kubernetes API server (tests/k8s_fake: a fake, see its docstring), whose controller
marks Deployments ready. A real vLLM OpenAI server started here (the CPU build, serving the tiny model
and a LoRA adapter trained here) stands in for the in-cluster Services: `service_url_template` points
every Service at it. Inference goes through the ingress's pooled `httpx` proxy, streaming too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from kubernetes import client

from studio.app.container import open_deployment_runner
from studio.app.model_servers import model_servers
from studio.config import Settings
from studio.domain.jobs import fine_tuned_model_name
from studio.domain.k8s_names import object_name
from studio.schemas.jobs import Hyperparameters, Job
from studio.stores.mongo import MongoStore
from studio.training import TrainConfig, ensure_tiny_model
from studio.training.loop import train
from tests.api.conftest import ADMIN, new_client, running_api
from tests.conftest import make_settings
from tests.k8s.conftest import NAMESPACE, api_client
from tests.k8s_fake import FakeKubernetes
from tests.servers import free_port

pytestmark = pytest.mark.integration
TINY = "mini-studio/tiny-llama"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
KINDS = ("deployments", "services", "persistentvolumeclaims", "scaledobjects")


def train_adapter(tiny: Path, out: Path) -> Path:
    """Train a small LoRA adapter of the tiny model on the spot; return its final directory."""
    rows = [
        {"messages": [*QUESTION, {"role": "assistant", "content": "The capital of France is Paris."}]}
        for _ in range(16)
    ]
    data = out / "train.jsonl"
    data.parent.mkdir(parents=True, exist_ok=True)
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = TrainConfig(
        base_model=str(tiny), training_file=data, output_dir=out / "run", n_epochs=8, batch_size=4,
        learning_rate=5e-3, lora_r=8, lora_alpha=16,
    )  # fmt: skip
    result = train(config)
    assert result.final_path is not None
    return result.final_path


@contextlib.contextmanager
def vllm_server(model: Path, scratch: Path) -> Iterator[str]:
    """Run vLLM's OpenAI server (CPU) on the tiny model, adapters loadable at runtime; yield its URL."""
    port = free_port()
    for name in ("rpc", "cache", "tmp"):
        (scratch / name).mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        "VLLM_RPC_BASE_PATH": str(scratch / "rpc"),
        "VLLM_CACHE_ROOT": str(scratch / "cache"),
        "TMPDIR": str(scratch / "tmp"),
        "VLLM_NO_USAGE_STATS": "1",
        "OMP_NUM_THREADS": "1",
        "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
    }
    args = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
        "--served-model-name", TINY, "--port", str(port), "--host", "127.0.0.1", "--max-model-len", "256",
        "--enforce-eager", "--distributed-executor-backend", "uni", "--kv-cache-memory-bytes", str(64 << 20),
        "--enable-lora", "--max-lora-rank", "16",
    ]  # fmt: skip
    log = (scratch / "vllm.log").open("wb")
    process = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            assert process.poll() is None, (scratch / "vllm.log").read_text()[-4000:]
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, "vLLM did not start"
            time.sleep(1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


class Gate:
    """A TCP forwarder to the stand-in that refuses connections until opened: a Service whose
    Deployment has no pod (scaled to zero) until "KEDA" scales it up."""

    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self._target_port = target_port
        self._server: asyncio.Server | None = None

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._pipe, "127.0.0.1", self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self._target_port)

        async def copy(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(copy(reader, upstream_writer), copy(upstream_reader, writer))


class RecordingDemand:
    """`ModelDemand` that keeps the counts (where Ray's metrics agent would export them to KEDA)."""

    def __init__(self) -> None:
        self.waiting: dict[str, int] = {}

    def add(self, deployment: Any, delta: int) -> None:
        self.waiting[deployment.app_name] = self.waiting.get(deployment.app_name, 0) + delta


def managed_objects(fake: FakeKubernetes) -> dict[str, list[dict[str, Any]]]:
    """Return the objects managed by Mini Studio in the namespace, by kind."""
    selector = "app.kubernetes.io/managed-by=mini-studio"
    with api_client(fake) as api:
        core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
        custom = client.CustomObjectsApi(api)
        found = {
            "deployments": apps.list_namespaced_deployment(NAMESPACE, label_selector=selector).items,
            "services": core.list_namespaced_service(NAMESPACE, label_selector=selector).items,
            "persistentvolumeclaims": core.list_namespaced_persistent_volume_claim(
                NAMESPACE, label_selector=selector
            ).items,
        }
        result = {kind: [api.sanitize_for_serialization(o) for o in objs] for kind, objs in found.items()}
        scaled = custom.list_namespaced_custom_object(
            "keda.sh", "v1alpha1", NAMESPACE, "scaledobjects", label_selector=selector
        )
        result["scaledobjects"] = scaled["items"]
    return result


@pytest.fixture
def fake() -> Iterator[FakeKubernetes]:
    with FakeKubernetes(ready_delay_s=0.5) as server, api_client(server) as api:
        client.CoreV1Api(api).create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=NAMESPACE))
        )
        yield server


def kubeconfig(path: Path, url: str) -> Path:
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": url}}],
        "users": [{"name": "me", "user": {}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "me"}}],
    }))  # fmt: skip
    return path


@contextlib.asynccontextmanager
async def running_runner(settings: Settings) -> AsyncIterator[None]:
    assert settings.store.mongo_url is not None
    servers = model_servers(settings)
    url = settings.store.mongo_url.get_secret_value()
    async with open_deployment_runner(settings, mongo_url=url, servers=servers) as runner:
        task = asyncio.create_task(runner.run())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await runner.settle()
            await servers.close()


async def wait_status(api: httpx.AsyncClient, deployment_id: str, headers: dict[str, str]) -> httpx.Response:
    for _ in range(300):
        response = await api.get(f"/v1/deployments/{deployment_id}", headers=headers)
        if response.status_code == 404 or response.json()["status"] not in ("deploying", "deleting"):
            return response
        await asyncio.sleep(0.1)
    raise AssertionError(response.json())


async def test_kubernetes_deployments_route_to_their_services(
    tmp_path: Path, mongo_url: str, fake: FakeKubernetes
) -> None:
    tiny = ensure_tiny_model(tmp_path / "models" / "tiny-llama")
    adapter = train_adapter(tiny, tmp_path / "job")
    # A short folder: vLLM's socket paths must stay under 107 bytes.
    with vllm_server(tiny, Path(tempfile.mkdtemp(prefix="vllm-", dir="/tmp"))) as url:
        gate = Gate(int(url.rsplit(":", 1)[1]))
        settings = make_settings(
            tmp_path,
            mongo_url=mongo_url,
            tracker={"poll_interval_s": 0.2},
            serving={"routing_refresh_s": 0.1, "keepalive_s": 0.5},
            k8s={
                "enabled": True, "kubeconfig": str(kubeconfig(tmp_path / "kubeconfig", fake.url)),
                "namespace": NAMESPACE, "timeout_s": 5, "prometheus_address": "http://prometheus.monitoring:9090",
                "service_url_template": f"http://127.0.0.1:{gate.port}",  # every Service is the stand-in
            },
        )  # fmt: skip
        demand = RecordingDemand()
        servers = model_servers(settings)
        async with (
            running_api(settings, model_servers=servers, model_demand=demand) as api,
            running_runner(settings),
        ):
            client_id, headers = await new_client(api, name="k8s", max_deployments=5)
            tuned = fine_tuned_model_name(
                base_model=TINY, client_id=client_id, suffix="paris", job_id="ftjob-k8s"
            )
            await record_finished_job(settings, client_id=client_id, tuned=tuned, final=adapter)
            # What the fine-tune's pod does at start (`--lora-modules`), done here on the shared stand-in.
            async with httpx.AsyncClient() as stand_in:
                body = {"lora_name": tuned, "lora_path": str(adapter)}
                loaded = await stand_in.post(f"{url}/v1/load_lora_adapter", json=body)
            assert loaded.status_code == 200, loaded.text
            try:
                await scale_from_zero(api, headers, fake, gate, demand)
                await check_story(api, headers, fake, tuned)
            finally:
                await gate.close()


async def scale_from_zero(
    api: httpx.AsyncClient, headers: dict[str, str], fake: FakeKubernetes, gate: Gate, demand: RecordingDemand
) -> None:
    """min_replicas 0: the route is live with no pod; a request waits, counted as demand, until "KEDA"
    (this test, reading the demand the ScaledObject's query adds) gives the Service a pod."""
    body = {"model": TINY, "target": "kubernetes", "min_replicas": 0}
    created = await api.post("/v1/deployments", json=body, headers=headers)
    assert created.status_code == 201, created.text
    deployment = (await wait_status(api, created.json()["id"], headers)).json()
    assert deployment["status"] == "ready", deployment
    scaled = managed_objects(fake)["scaledobjects"][0]
    assert scaled["spec"]["minReplicaCount"] == 0
    query = scaled["spec"]["triggers"][0]["metadata"]["query"]
    assert f'model_server="{deployment["app_name"]}"' in query and "waiting_requests" in query

    chat = {"model": TINY, "messages": QUESTION, "max_tokens": 4, "stream": True}
    request = asyncio.create_task(api.post("/v1/chat/completions", json=chat, headers=headers))
    for _ in range(100):
        if demand.waiting.get(deployment["app_name"]):
            break
        await asyncio.sleep(0.1)
    assert demand.waiting == {deployment["app_name"]: 1}, demand.waiting
    await asyncio.sleep(1.2)  # the streaming client gets keep-alive comments meanwhile
    await gate.open()  # KEDA scaled the Deployment up: its Service has a ready pod
    response = await request
    assert response.status_code == 200, response.text
    events = response.text.split("\n\n")
    assert events[0] == ": keep-alive" and "data: [DONE]" in events, events
    assert demand.waiting == {deployment["app_name"]: 0}
    assert (await api.delete(f"/v1/deployments/{deployment['id']}", headers=headers)).status_code == 200
    assert (await wait_status(api, deployment["id"], headers)).status_code == 404


async def record_finished_job(settings: Settings, *, client_id: str, tuned: str, final: Path) -> None:
    """Store the finished LoRA job that produced `final` (as the tracker does when training ends)."""
    assert settings.store.mongo_url is not None
    store = await MongoStore.connect(settings.store.mongo_url.get_secret_value(), settings.store)
    hyper = Hyperparameters(
        n_epochs=8, batch_size=4, learning_rate_multiplier=1.0, fine_tuning_method="lora", lora_r=8,
        lora_alpha=16, lora_dropout=0.05, lora_target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
    )  # fmt: skip
    now = int(time.time())
    await store.jobs.insert(Job(
        id="ftjob-k8s", client_id=client_id, model=TINY, training_file="file-x", validation_file=None,
        status="succeeded", hyperparameters=hyper, suffix="paris", seed=0, fine_tuned_model=tuned,
        output_model_path=str(final), created_at=now, finished_at=now,
    ))  # fmt: skip
    await store.close()


async def check_story(
    api: httpx.AsyncClient, headers: dict[str, str], fake: FakeKubernetes, tuned: str
) -> None:
    sdk = openai.AsyncOpenAI(
        api_key=headers["Authorization"].removeprefix("Bearer "), base_url="http://studio/v1", http_client=api
    )
    base = await api.post("/v1/deployments", json={"model": TINY, "target": "kubernetes"}, headers=headers)
    assert base.status_code == 201, base.text
    ready = (await wait_status(api, base.json()["id"], headers)).json()
    assert ready["status"] == "ready" and ready["namespace"] == NAMESPACE, ready
    objects = managed_objects(fake)
    assert {kind: len(objs) for kind, objs in objects.items()} == dict.fromkeys(KINDS, 1)
    container = objects["deployments"][0]["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][:2] == ["--model", TINY] and "--enable-lora" not in container["args"]
    versions = {kind: objs[0]["metadata"]["resourceVersion"] for kind, objs in objects.items()}

    reply = await sdk.chat.completions.create(model=TINY, messages=QUESTION, max_tokens=8, temperature=0)
    base_text = reply.choices[0].message.content or ""
    assert reply.model == TINY and reply.usage and reply.usage.completion_tokens > 0
    stream = await sdk.chat.completions.create(
        model=TINY, messages=QUESTION, max_tokens=8, temperature=0, stream=True
    )
    assert "".join([c.choices[0].delta.content or "" async for c in stream if c.choices]) == base_text

    # A second identical deploy changes nothing in the cluster.
    again = await api.post("/v1/deployments", json={"model": TINY, "target": "kubernetes"}, headers=headers)
    assert again.status_code == 409 and again.json()["error"]["code"] == "already_deployed"
    after = managed_objects(fake)
    assert {kind: objs[0]["metadata"]["resourceVersion"] for kind, objs in after.items()} == versions

    # The LoRA fine-tune gets its own four objects: its base with the adapter loaded at start.
    lora = await api.post(
        "/inference/deploy/fine_tuned", json={"model": tuned, "target": "kubernetes"}, headers=headers
    )
    assert lora.status_code == 201 and lora.json()["placement"] == "server", lora.text
    assert (await wait_status(api, lora.json()["id"], headers)).json()["status"] == "ready"
    objects = managed_objects(fake)
    assert {kind: len(objs) for kind, objs in objects.items()} == dict.fromkeys(KINDS, 2)
    args = next(
        d["spec"]["template"]["spec"]["containers"][0]["args"]
        for d in objects["deployments"]
        if "--enable-lora" in d["spec"]["template"]["spec"]["containers"][0]["args"]
    )
    assert args[args.index("--lora-modules") + 1].startswith(f"{tuned}=")
    tuned_reply = await sdk.chat.completions.create(
        model=tuned, messages=QUESTION, max_tokens=8, temperature=0
    )
    assert tuned_reply.choices[0].message.content != base_text
    chunks = await sdk.completions.create(model=tuned, prompt="The capital", max_tokens=4, stream=True)
    assert [c async for c in chunks]

    # A name taken by an object Mini Studio does not manage: refused at once (409), the object untouched.
    config = {"hidden_size": 64, "num_hidden_layers": 2, "vocab_size": 1024, "num_attention_heads": 2}
    added = await api.post("/admin/base-models", json={"name": "acme/other", "config": config}, headers=ADMIN)
    assert added.status_code == 201, added.text
    me = (await api.get("/v1/me", headers=headers)).json()
    taken = object_name("acme/other", client_id=me["id"])
    with api_client(fake) as k8s:
        service = client.V1Service(
            metadata=client.V1ObjectMeta(name=taken),
            spec=client.V1ServiceSpec(ports=[client.V1ServicePort(port=80)]),
        )
        client.CoreV1Api(k8s).create_namespaced_service(NAMESPACE, service)
    other = await api.post(
        "/v1/deployments", json={"model": "acme/other", "target": "kubernetes"}, headers=headers
    )
    assert other.status_code == 409 and other.json()["error"]["code"] == "kubernetes_object_exists", (
        other.text
    )
    assert "not managed by Mini Studio" in other.json()["error"]["message"]
    listed = (await api.get("/v1/deployments", headers=headers)).json()["data"]
    assert [d["model"] for d in listed] == [TINY, tuned]

    # Undeploy both: nothing managed is left; requests then get a clear error.
    for deployment in (lora.json(), base.json()):
        assert (await api.delete(f"/v1/deployments/{deployment['id']}", headers=headers)).status_code == 200
        assert (await wait_status(api, deployment["id"], headers)).status_code == 404
    assert managed_objects(fake) == {kind: [] for kind in KINDS}
    with pytest.raises(openai.ConflictError):
        await sdk.chat.completions.create(model=TINY, messages=QUESTION)
