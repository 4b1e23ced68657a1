"""Model servers as Serve applications added at runtime, and inference through their deployment handles.

Each base model or full fine-tune gets its own Serve application (`ms-model-...`, no HTTP route: only
handles reach it), added with `serve.run_many` without waiting and followed with `serve.status()`;
removed with `serve.delete`. Never through Serve's REST config endpoint: a PUT of a partial config
deletes the applications it does not name, the ingress included. LoRA adapters run on their base's
application as multiplexed models (`multiplexed_model_id` = the fine-tune's name).

A replica over several GPUs (tensor x pipeline parallel workers) is laid out as Ray Serve LLM lays out
its vLLM replicas: a placement group per replica with one bundle of one GPU per worker, the replica actor
itself (no GPU) in the first bundle beside worker 0, and vLLM's Ray executor placing its workers on the
bundles. Tensor parallel only: STRICT_PACK (one node: the workers exchange activations every layer);
with pipeline stages, PACK (stages may span nodes).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import ray
from ray import serve
from ray.serve.handle import DeploymentHandle

from studio.blocking import BlockingCalls
from studio.errors import BadRequest, InvalidInput, NotFound, Unavailable
from studio.ports import InferenceCall, JsonObject, ServerState
from studio.schemas.deployments import Deployment
from studio.serving.engine import engine_env
from studio.serving.errors import ModelRequestError, refusal_code
from studio.serving.server import ModelServer
from studio.serving.spec import ModelStore, ServerSpec

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
    """Return the domain error of a model server's refusal: the same status and code as the Kubernetes
    target derives from vLLM's answer (`refusal_code`)."""
    if exc.status == 404:
        return NotFound(exc.message, param=exc.param or "model", code=refusal_code(404, exc.param))
    if exc.status in (400, 422):
        return BadRequest(exc.message, param=exc.param, code=refusal_code(400, exc.param))
    return Unavailable(f"the model server failed: {exc.message}")


def _unwrap(exc: BaseException) -> Exception:
    """Return the domain error for an exception raised by a handle call."""
    cause = exc.cause if isinstance(exc, ray.exceptions.RayTaskError) else exc
    if isinstance(cause, ModelRequestError):
        return _request_error(cause)
    if isinstance(exc, TimeoutError):
        return Unavailable("the model server did not answer in time")
    return Unavailable(f"the model server failed: {type(cause).__name__}: {cause}")


def parallel_sizes(deployment: Deployment) -> tuple[int, int]:
    """Return the (tensor, pipeline) parallel sizes of the deployment's engine, as the planner stored
    them; 1 each for a record written before they were planned (the engine then used one device)."""
    engine = deployment.engine
    return engine.tensor_parallel_size or 1, engine.pipeline_parallel_size or 1


def deployment_options(
    deployment: Deployment, *, scratch_dir: str, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Return the Serve deployment options of a model server (`serve.deployment(...).options(**)`);
    `env`: added to its replicas' environment (the S3 credentials of the node cache).

    One GPU worker or none: the replica actor reserves `num_cpus` and `num_gpus` itself. Several GPU
    workers: a placement group per replica, one `{"GPU": 1}` bundle per worker, the first also holding
    the replica's CPUs; the replica reserves no GPU (its engine's workers do, in their bundles).
    """
    tp, pp = parallel_sizes(deployment)
    workers = tp * pp
    gpu_workers = deployment.num_gpus > 0 and workers > 1
    cpu_workers = workers if deployment.num_gpus <= 0 else 1
    options: dict[str, Any] = {
        "name": "ModelServer",
        "ray_actor_options": {
            "num_cpus": deployment.num_cpus,
            "num_gpus": 0 if gpu_workers else deployment.num_gpus,
            "runtime_env": {"env_vars": {**engine_env(scratch_dir, cpu_workers=cpu_workers), **(env or {})}},
        },
        "max_ongoing_requests": MAX_ONGOING_REQUESTS,
        # The ingress writes the access line of every inference request; Serve's own line per handle
        # call here would be a second one, written to the log file and stderr on the request path.
        "logging_config": {"enable_access_log": False},
        "health_check_period_s": 10,
        "health_check_timeout_s": 30,
        # A model that cannot load fails the same way every time: report it after a few tries
        # (each costs vLLM's import and engine start) rather than Serve's default of 20.
        "max_constructor_retry_count": CONSTRUCTOR_RETRIES,
    }
    if gpu_workers:
        bundles: list[dict[str, float]] = [{"CPU": deployment.num_cpus, "GPU": 1}]
        bundles += [{"GPU": 1} for _ in range(workers - 1)]
        options["placement_group_bundles"] = bundles
        options["placement_group_strategy"] = "STRICT_PACK" if pp == 1 else "PACK"
    if deployment.min_replicas == deployment.max_replicas:
        options["num_replicas"] = deployment.max_replicas
    else:
        options["autoscaling_config"] = {
            "min_replicas": deployment.min_replicas,
            "max_replicas": deployment.max_replicas,
            "initial_replicas": max(deployment.min_replicas, 1),
            "target_ongoing_requests": deployment.target_ongoing_requests,
        }
    return options


class ServeModelServers:
    """`ModelServers` and `InferenceBackend` on this Ray cluster's Serve."""

    def __init__(
        self,
        *,
        scratch_dir: str,
        models_dir: str | None,
        timeout_s: float,
        stream_batch_ms: float = 20.0,
        store: ModelStore | None = None,
        store_env: dict[str, str] | None = None,
    ) -> None:
        """`store`: where replicas fetch models and adapters whose folder is not on their node (S3), with
        `store_env` (its credentials) in their environment."""
        self._store = store
        self._store_env = store_env or {}
        self._scratch_dir = scratch_dir
        self._models_dir = models_dir
        self._timeout_s = timeout_s
        self._stream_batch_ms = stream_batch_ms
        self._calls = BlockingCalls("Serve's controller", max_threads=4)
        self._handles: dict[str, DeploymentHandle[Any]] = {}

    def spec(self, deployment: Deployment) -> ServerSpec:
        """Return the model server spec of a deployment (every replica gets the same)."""
        engine = deployment.engine
        tp, pp = parallel_sizes(deployment)
        return ServerSpec(
            model_name=deployment.model,
            model_source=deployment.model_source,
            adapters=deployment.kind == "base" and engine.max_adapters > 0,
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
            tensor_parallel_size=tp,
            pipeline_parallel_size=pp,
            quantization=engine.quantization,
            kv_cache_dtype=engine.kv_cache_dtype,
            model_uri=deployment.model_uri,
            store=self._store,
        )

    def _application(self, deployment: Deployment) -> Any:
        server: Any = serve.deployment(ModelServer)
        options = deployment_options(deployment, scratch_dir=self._scratch_dir, env=self._store_env)
        return server.options(**options).bind(self.spec(deployment))

    async def _blocking(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await self._calls.run_within(self._timeout_s, fn, *args, **kwargs)
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
                self._call_handle(adapter, stream=False).attach.remote(
                    adapter.adapter_path, adapter.adapter_uri
                ),
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
                call.kind, call.body, call.deployment.adapter_path, call.deployment.adapter_uri
            )
        except Exception as exc:
            raise _unwrap(exc) from exc
        return result

    async def stream(self, call: InferenceCall) -> AsyncIterator[str]:
        handle = self._call_handle(call, stream=True)
        response: Any = handle.stream.remote(
            call.kind, call.body, call.deployment.adapter_path, call.deployment.adapter_uri
        )
        try:
            async for batch in response:
                yield "".join(batch)  # one write for the events of a batch, not one per token
        except Exception as exc:
            raise _unwrap(exc) from exc
