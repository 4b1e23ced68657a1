"""Model servers on Kubernetes (`KubernetesBackend`), and inference proxied to their Services over HTTP.

Each deployment becomes the four objects of `k8s_manifests` (vLLM's OpenAI server, scaled by KEDA);
requests go to its Service through one pooled, streaming `httpx` client. The cluster client is made on
first use, so a server whose Kubernetes settings are wrong starts anyway and says what is missing when
a Kubernetes deployment is asked for.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx

from studio.backends import k8s_manifests as m
from studio.backends.kubernetes import KubernetesBackend
from studio.config import K8sSettings
from studio.errors import BadRequest, InvalidInput, NotFound, Unavailable
from studio.ports import InferenceCall, JsonObject, ServerState
from studio.schemas.deployments import Deployment, DeploymentChanges
from studio.serving.errors import clean_param, refusal_code

_PATHS = {"chat": "/v1/chat/completions", "completion": "/v1/completions"}
# The Service has no ready pod (scaled to zero, or starting): the caller may wait for one (the code
# `studio.services.inference` retries on).
MODEL_STARTING = "model_starting"


def _unreachable(exc: httpx.HTTPError) -> Unavailable:
    if isinstance(exc, httpx.ConnectError):
        return Unavailable(f"the model server has no ready replica yet: {exc}", code=MODEL_STARTING)
    return Unavailable(f"the model server cannot be reached: {exc}")


_STATES: dict[str, ServerState] = {"deploying": "starting", "ready": "running", "failed": "failed"}


def _error(response: httpx.Response, text: str) -> Exception:
    """Return the domain error for a model server's error answer (OpenAI's error shape, or text):
    the same status, `param` and `code` as the Serve target gives the same refusal."""
    try:
        error = (response.json() or {}).get("error") or {}
        message, param = str(error.get("message") or text), clean_param(error.get("param"))
    except (ValueError, AttributeError):
        message, param = text or response.reason_phrase, None
    status = response.status_code
    if status == 404:
        return NotFound(message, param=param or "model", code=refusal_code(404, param))
    if status in (400, 422):
        return BadRequest(message, param=param, code=refusal_code(400, param))
    return Unavailable(f"the model server answered {status}: {message}")


class KubernetesModelServers:
    """`ModelServers` and `InferenceBackend` for deployments with target "kubernetes"."""

    def __init__(self, settings: K8sSettings, *, backend: KubernetesBackend | None = None) -> None:
        self._settings = settings
        self._backend = backend
        timeout = httpx.Timeout(settings.request_timeout_s, connect=settings.timeout_s)
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
        self._http = httpx.AsyncClient(timeout=timeout, limits=limits)

    def _cluster(self) -> KubernetesBackend:
        if self._backend is None:
            self._backend = KubernetesBackend(self._settings)  # Conflict naming the settings if unusable
        return self._backend

    def spec(self, deployment: Deployment) -> m.ModelServerSpec:
        """Return the model server spec of a deployment."""
        engine = deployment.engine
        lora = deployment.adapter_path is not None
        return m.ModelServerSpec(
            model=deployment.model_source,
            served_model_name=deployment.base_model if lora else deployment.model,
            deployment_model=deployment.model,
            client_id=deployment.client_id,
            max_model_len=engine.max_model_len,
            dtype=engine.dtype,
            gpu_memory_utilization=engine.gpu_memory_utilization if deployment.num_gpus else None,
            enable_lora=lora,
            max_lora_rank=engine.max_lora_rank if lora else None,
            lora_modules=((deployment.model, deployment.adapter_path),) if deployment.adapter_path else (),
            min_replicas=deployment.min_replicas,
            max_replicas=deployment.max_replicas,
            cpu_request=f"{int(deployment.num_cpus * 1000)}m",
            gpus=int(deployment.num_gpus),
            # As the planner resolved them (None on older records: every GPU a tensor-parallel worker).
            tensor_parallel_size=engine.tensor_parallel_size,
            pipeline_parallel_size=engine.pipeline_parallel_size,
            quantization=engine.quantization,
            kv_cache_dtype=engine.kv_cache_dtype,
        )

    async def check(self, deployment: Deployment) -> None:
        await self._cluster().check(self.spec(deployment))

    async def deploy(self, deployment: Deployment) -> DeploymentChanges | None:
        applied = await self._cluster().apply(self.spec(deployment))
        url = self._settings.service_url_template.format(
            name=applied.name, namespace=applied.namespace, port=m.PORT
        )
        return DeploymentChanges(namespace=applied.namespace, service_url=url)

    async def state(self, deployment: Deployment) -> tuple[ServerState, str]:
        if deployment.app_name is None or deployment.service_url is None:
            return "absent", "not applied yet"
        try:
            state, message = await self._cluster().status(deployment.app_name, namespace=deployment.namespace)
        except NotFound:
            return "absent", "the Deployment does not exist"
        if deployment.min_replicas == 0 and state != "failed":
            # Scaled to zero is a normal state: the route is live, and a request is what starts a pod.
            return "running", message
        return _STATES.get(state, "starting"), message

    async def ready(self, deployment: Deployment) -> JsonObject:
        """Check the Service answers (vLLM's `/health`); with min_replicas 0 there may be no pod to ask."""
        if deployment.min_replicas == 0:
            return {"model": deployment.model, "replicas": "scaled by demand"}
        try:
            response = await self._http.get(
                f"{deployment.service_url}/health", timeout=self._settings.timeout_s
            )
        except httpx.HTTPError as exc:
            raise Unavailable(f"the model server's Service does not answer: {exc}") from exc
        if response.status_code != 200:
            raise Unavailable(f"the model server's health check answered {response.status_code}")
        return {"model": deployment.model}

    async def attach(self, adapter: Deployment) -> None:
        raise InvalidInput("on Kubernetes, a LoRA fine-tune gets its own model server", param="target")

    async def remove(self, deployment: Deployment) -> None:
        if deployment.app_name is not None:
            await self._cluster().delete(deployment.app_name, namespace=deployment.namespace)

    async def complete(self, call: InferenceCall) -> JsonObject:
        url = f"{call.deployment.service_url}{_PATHS[call.kind]}"
        try:
            response = await self._http.post(url, json={**call.body, "stream": False})
        except httpx.HTTPError as exc:
            raise _unreachable(exc) from exc
        if response.status_code != 200:
            raise _error(response, response.text)
        result: JsonObject = response.json()
        return result

    async def stream(self, call: InferenceCall) -> AsyncIterator[str]:
        url = f"{call.deployment.service_url}{_PATHS[call.kind]}"
        try:
            async with self._http.stream("POST", url, json={**call.body, "stream": True}) as response:
                if response.status_code != 200:
                    raise _error(response, (await response.aread()).decode(errors="replace"))
                buffer = ""
                async for text in response.aiter_text():
                    buffer += text
                    *events, buffer = buffer.split("\n\n")
                    for event in events:
                        if event.strip():
                            yield event + "\n\n"
                if buffer.strip():
                    yield buffer + "\n\n"
        except httpx.HTTPError as exc:
            raise _unreachable(exc) from exc

    async def close(self) -> None:
        await self._http.aclose()
        if self._backend is not None:
            await self._backend.close()
