"""Model servers as Serve applications added at runtime, and inference through their deployment handles.

Each base model or full fine-tune gets its own Serve application (`ms-model-...`, no HTTP route: only
handles reach it), added with `serve.run_many` without waiting and followed with `serve.status()`;
removed with `serve.delete`. Never through Serve's REST config endpoint: a PUT of a partial config
deletes the applications it does not name, the ingress included. LoRA adapters run on their base's
application as multiplexed models (`multiplexed_model_id` = the fine-tune's name).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import ray
from ray import serve
from ray.serve.handle import DeploymentHandle

from studio.errors import BadRequest, InvalidInput, NotFound, Unavailable
from studio.ports import InferenceCall, JsonObject, ServerState
from studio.schemas.deployments import Deployment
from studio.serving.engine import engine_env
from studio.serving.errors import ModelRequestError
from studio.serving.server import ModelServer
from studio.serving.spec import ServerSpec

# Requests one replica takes at once; vLLM batches them (Serve's autoscaling reads the ongoing count).
MAX_ONGOING_REQUESTS = 64
CONSTRUCTOR_RETRIES = 2
_STATES: dict[str, ServerState] = {
    "NOT_STARTED": "starting",
    "DEPLOYING": "starting",
    "RUNNING": "running",
    "DEPLOY_FAILED": "failed",
    "UNHEALTHY": "failed",
    "DELETING": "absent",
}


def failure_reason(app: Any) -> str:
    """Return why a Serve application failed: the last line of its deployments' error (the exception)."""
    for deployment in app.deployments.values():
        lines = [line.strip() for line in (deployment.message or "").splitlines() if line.strip()]
        if lines:
            return lines[-1] if len(lines) > 1 else lines[0]
    return str(app.message or "the model server failed to start")


def _request_error(exc: ModelRequestError) -> Exception:
    if exc.status == 404:
        return NotFound(exc.message, param=exc.param or "model", code="model_not_found")
    if exc.status == 400:
        return BadRequest(exc.message, param=exc.param)
    if exc.status == 422:
        return InvalidInput(exc.message, param=exc.param)
    return Unavailable(f"the model server failed: {exc.message}")


def _unwrap(exc: BaseException) -> Exception:
    """Return the domain error for an exception raised by a handle call."""
    cause = exc.cause if isinstance(exc, ray.exceptions.RayTaskError) else exc
    if isinstance(cause, ModelRequestError):
        return _request_error(cause)
    if isinstance(exc, TimeoutError):
        return Unavailable("the model server did not answer in time")
    return Unavailable(f"the model server failed: {type(cause).__name__}: {cause}")


class ServeModelServers:
    """`ModelServers` and `InferenceBackend` on this Ray cluster's Serve."""

    def __init__(
        self, *, scratch_dir: str, models_dir: str | None, timeout_s: float, stream_batch_ms: float = 20.0
    ) -> None:
        self._scratch_dir = scratch_dir
        self._models_dir = models_dir
        self._timeout_s = timeout_s
        self._stream_batch_ms = stream_batch_ms
        self._handles: dict[str, DeploymentHandle[Any]] = {}

    def _spec(self, deployment: Deployment) -> ServerSpec:
        engine = deployment.engine
        return ServerSpec(
            model_name=deployment.model,
            model_source=deployment.model_source,
            adapters=deployment.kind == "base",
            scratch_dir=self._scratch_dir,
            models_dir=self._models_dir,
            use_gpu=deployment.num_gpus > 0,
            max_model_len=engine.max_model_len,
            dtype=engine.dtype,
            gpu_memory_utilization=engine.gpu_memory_utilization,
            kv_cache_bytes=engine.kv_cache_bytes,
            max_lora_rank=engine.max_lora_rank,
            max_adapters=engine.max_adapters,
            stream_batch_ms=self._stream_batch_ms,
        )

    def _application(self, deployment: Deployment) -> Any:
        options: dict[str, Any] = {
            "name": "ModelServer",
            "ray_actor_options": {
                "num_cpus": deployment.num_cpus,
                "num_gpus": deployment.num_gpus,
                "runtime_env": {"env_vars": engine_env(self._scratch_dir)},
            },
            "max_ongoing_requests": MAX_ONGOING_REQUESTS,
            "health_check_period_s": 10,
            "health_check_timeout_s": 30,
            # A model that cannot load fails the same way every time: report it after a few tries
            # (each costs vLLM's import and engine start) rather than Serve's default of 20.
            "max_constructor_retry_count": CONSTRUCTOR_RETRIES,
        }
        if deployment.min_replicas == deployment.max_replicas:
            options["num_replicas"] = deployment.max_replicas
        else:
            options["autoscaling_config"] = {
                "min_replicas": deployment.min_replicas,
                "max_replicas": deployment.max_replicas,
                "initial_replicas": max(deployment.min_replicas, 1),
                "target_ongoing_requests": deployment.target_ongoing_requests,
            }
        server: Any = serve.deployment(ModelServer)
        return server.options(**options).bind(self._spec(deployment))

    async def _blocking(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await asyncio.wait_for(asyncio.to_thread(fn, *args, **kwargs), timeout=self._timeout_s)
        except TimeoutError as exc:
            raise Unavailable(f"Serve did not answer within {self._timeout_s:.0f} s") from exc
        except ray.exceptions.RaySystemError as exc:
            raise Unavailable(f"Serve is unreachable: {exc}") from exc

    async def check(self, deployment: Deployment) -> None:
        """Nothing to check ahead: Serve takes any application under the reserved prefix."""

    async def deploy(self, deployment: Deployment) -> None:
        if deployment.app_name is None or deployment.placement != "server":
            raise ValueError(f"{deployment.id} has no model server to deploy")
        target = serve.RunTarget(self._application(deployment), name=deployment.app_name, route_prefix=None)
        await self._blocking(
            serve.run_many,
            [target],
            wait_for_ingress_deployment_creation=False,
            wait_for_applications_running=False,
        )

    async def state(self, deployment: Deployment) -> tuple[ServerState, str]:
        status = await self._blocking(serve.status)
        app = status.applications.get(deployment.app_name or "")
        if app is None:
            return "absent", "the Serve application does not exist"
        state = _STATES.get(str(app.status.value), "starting")
        return state, failure_reason(app) if state == "failed" else app.message or ""

    def _handle(self, app_name: str) -> DeploymentHandle[Any]:
        handle = self._handles.get(app_name)
        if handle is None:
            handle = self._handles[app_name] = serve.get_deployment_handle("ModelServer", app_name)
        return handle

    def _call_handle(self, call: InferenceCall | Deployment, *, stream: bool) -> DeploymentHandle[Any]:
        deployment = call.deployment if isinstance(call, InferenceCall) else call
        if deployment.app_name is None:
            raise Unavailable(f"the model {deployment.model!r} has no Serve application")
        adapter = deployment.model if deployment.placement == "adapter" else ""
        return self._handle(deployment.app_name).options(stream=stream, multiplexed_model_id=adapter)

    async def ready(self, deployment: Deployment) -> JsonObject:
        """Wait (bounded) until a replica of the server can serve; return what it reports."""
        try:
            result: JsonObject = await asyncio.wait_for(
                self._call_handle(deployment, stream=False).ready.remote(), timeout=self._timeout_s
            )
        except Exception as exc:
            raise _unwrap(exc) from exc
        return result

    async def attach(self, adapter: Deployment) -> None:
        try:
            await asyncio.wait_for(
                self._call_handle(adapter, stream=False).attach.remote(adapter.adapter_path),
                timeout=self._timeout_s,
            )
        except Exception as exc:
            error = _unwrap(exc)
            if isinstance(error, BadRequest | NotFound):  # the adapter itself is at fault
                raise InvalidInput(error.message, param="model") from exc
            raise error from exc

    async def remove(self, deployment: Deployment) -> None:
        if deployment.placement == "server" and deployment.app_name is not None:
            self._handles.pop(deployment.app_name, None)
            await self._blocking(serve.delete, deployment.app_name, _blocking=False)

    async def complete(self, call: InferenceCall) -> JsonObject:
        handle = self._call_handle(call, stream=False)
        try:
            result: JsonObject = await handle.complete.remote(
                call.kind, call.body, call.deployment.adapter_path
            )
        except Exception as exc:
            raise _unwrap(exc) from exc
        return result

    async def stream(self, call: InferenceCall) -> AsyncIterator[str]:
        handle = self._call_handle(call, stream=True)
        response: Any = handle.stream.remote(call.kind, call.body, call.deployment.adapter_path)
        try:
            async for batch in response:
                yield "".join(batch)  # one write for the events of a batch, not one per token
        except Exception as exc:
            raise _unwrap(exc) from exc
