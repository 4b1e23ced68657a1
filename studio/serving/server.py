"""`ModelServer`: one replica of a deployed model, a vLLM `AsyncLLM` behind vLLM's own OpenAI layer.

Requests arrive through deployment handles as the client's OpenAI JSON body, checked by vLLM's request
models and served by vLLM's `OpenAIServingChat` / `OpenAIServingCompletion` in this process (no HTTP hop).
LoRA adapters are Serve multiplexed models: the caller names the adapter (`multiplexed_model_id`, its
public `ft:` name) and passes its directory; a replica loads it on first use (`add_lora`, tens of ms)
and keeps up to `max_adapters` (least recently used is dropped), and Serve routes an adapter's requests
to replicas that already hold it.

No shared file system needed: a model or adapter whose directory is not on the replica's node is loaded
from its S3 copy (the `model_uri` of the spec, the `adapter_uri` of a request) through the node's bounded
cache (`model_cache.py`); scratch files and base models made here go to the node's cache folder when the
head's data directory is not mounted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray import serve

from studio.serving.engine import (
    adapter_rank,
    check_model_dir,
    engine_args,
    engine_env,
    prepare_scratch,
    write_zero_adapter,
    zero_adapter_reason,
)
from studio.serving.errors import ModelRequestError
from studio.serving.model_cache import ModelCache, local_model, node_local
from studio.serving.spec import ServerSpec

if TYPE_CHECKING:
    from pydantic import ValidationError

log = logging.getLogger(__name__)
JsonObject = dict[str, Any]


class _Adapter:
    """What the multiplexed loader caches; Serve drops it (LRU), which unregisters the name."""

    def __init__(self, name: str, server: ModelServer) -> None:
        self.name = name
        self._server = server

    def __del__(self) -> None:
        server = getattr(self, "_server", None)
        if server is not None:
            server._forget(self.name)


class ModelServer:
    """A Serve deployment class (options are set by `studio.backends.serve_models`)."""

    def __init__(self, spec: ServerSpec) -> None:
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM
        from vllm.v1.metrics.ray_wrappers import RayPrometheusStatLogger

        from studio.training.models import resolve_base_model

        store = spec.store
        self._cache = (
            ModelCache(
                max_bytes=store.cache_max_bytes,
                endpoint_url=store.endpoint_url,
                region=store.region,
                timeout_s=store.timeout_s,
            )
            if store is not None
            else None
        )
        scratch_dir = str(node_local(Path(spec.scratch_dir)))
        if scratch_dir != spec.scratch_dir:  # the deploy's environment named the head's folder
            os.environ.update(engine_env(scratch_dir, cpu_workers=1 if spec.use_gpu else spec.workers))
            tempfile.tempdir = None  # read TMPDIR again
        models_dir = node_local(Path(spec.models_dir)) if spec.models_dir else None
        local = local_model(spec.model_source, spec.model_uri, self._cache)
        source = resolve_base_model(local, models_dir)
        check_model_dir(source)
        spec = dataclasses.replace(spec, model_source=str(source), scratch_dir=scratch_dir)
        self._spec = spec
        self._scratch = Path(spec.scratch_dir)
        prepare_scratch(spec.scratch_dir)
        reason = zero_adapter_reason(spec)
        if reason is not None:
            log.warning("base requests of %s go through a zero adapter (slower): %s", spec.model_name, reason)
        self._zero_adapter = reason is not None
        self._args = AsyncEngineArgs(**engine_args(spec, zero_adapter=self._zero_adapter))
        # vLLM's engine stats as Ray metrics (`ray_vllm_*`, tagged model_name, engine and ReplicaId), as Ray
        # Serve LLM exports them; `disable_log_stats` (engine.py) only keeps the periodic log lines off.
        self._engine = AsyncLLM.from_engine_args(self._args, stat_loggers=[RayPrometheusStatLogger])
        # Each adapter's directory as given and its S3 copy; the folder it was loaded from, on this node.
        self._adapter_sources: dict[str, tuple[str, str | None]] = {}
        self._adapter_paths: dict[str, str] = {}
        self._loop = asyncio.get_running_loop()
        self._ready = self._loop.create_task(self._prepare())
        # At least 1 (Serve's floor): an engine without LoRA (max_adapters 0) is never sent an adapter.
        self._load_adapter: Callable[[str], Awaitable[_Adapter]] = serve.multiplexed(
            max_num_models_per_replica=max(spec.max_adapters, 1)
        )(self._loader())

    async def _prepare(self) -> None:
        """Build vLLM's OpenAI serving objects; make sure base requests cannot get an adapter's weights.

        Raises:
            RuntimeError: an engine worker did not take the LoRA row fix (the replica must not serve).
        """
        import argparse

        from starlette.datastructures import State
        from vllm.entrypoints.launchers.api_server.app_state import init_app_state
        from vllm.entrypoints.launchers.cli_args import FrontendArgs

        namespace = argparse.Namespace(**(vars(FrontendArgs()) | vars(self._args)))
        self._state = State()
        tasks = await self._engine.get_supported_tasks()
        await init_app_state(self._engine, self._state, namespace, supported_tasks=tasks)
        if self._zero_adapter:
            zero = write_zero_adapter(self._spec.model_source, self._scratch / f"zero-adapter-{os.getpid()}")
            await self._register(self._spec.model_name, str(zero))
        elif self._spec.adapters and not self._spec.use_gpu:
            fixed = await self._engine.collective_rpc("mini_studio_lora_rows_fixed", timeout=60)
            if not fixed or not all(fixed):
                raise RuntimeError(f"the LoRA row fix is not active in every engine worker: {fixed}")

    async def _register(self, name: str, path: str) -> None:
        from vllm.entrypoints.serve.engine.protocol import ErrorResponse
        from vllm.entrypoints.serve.lora.protocol import LoadLoRAAdapterRequest

        result = await self._state.openai_serving_models.load_lora_adapter(
            LoadLoRAAdapterRequest(lora_name=name, lora_path=path)
        )
        if isinstance(result, ErrorResponse):
            raise ModelRequestError(400, f"the adapter {name!r} could not be loaded: {result.error.message}")

    def _forget(self, name: str) -> None:
        models = getattr(getattr(self, "_state", None), "openai_serving_models", None)
        if models is not None and not self._loop.is_closed():
            from vllm.entrypoints.serve.lora.protocol import UnloadLoRAAdapterRequest

            request = UnloadLoRAAdapterRequest(lora_name=name)
            asyncio.run_coroutine_threadsafe(models.unload_lora_adapter(request), self._loop)

    def _loader(self) -> Callable[[str], Awaitable[_Adapter]]:
        async def load(model_id: str) -> _Adapter:
            source = self._adapter_sources.get(model_id)
            if source is None:
                raise ModelRequestError(404, f"the adapter {model_id!r} is not known to this server")
            path = await self._local_adapter(model_id, *source)
            try:
                rank = adapter_rank(path)
            except ValueError as exc:
                raise ModelRequestError(400, str(exc)) from exc
            if rank > self._spec.max_lora_rank:
                raise ModelRequestError(
                    400,
                    f"the adapter {model_id!r} has rank {rank}, above this deployment's max_lora_rank "
                    f"{self._spec.max_lora_rank}; redeploy the base with engine.max_lora_rank >= {rank}",
                )
            await self._register(model_id, path)
            self._adapter_paths[model_id] = path
            return _Adapter(model_id, self)

        return load

    async def _local_adapter(self, model_id: str, path: str, uri: str | None) -> str:
        """Return the adapter's folder on this node: `path`, or its S3 copy in the node's cache."""
        try:
            return await asyncio.to_thread(local_model, path, uri, self._cache)
        except FileNotFoundError as exc:
            raise ModelRequestError(
                400, f"the adapter {model_id!r} is neither at {path} on this node nor in S3: {exc}"
            ) from exc
        except Exception as exc:  # botocore's: S3 unreachable or refusing the credentials
            log.warning("fetching adapter %s from %s failed", model_id, uri, exc_info=True)
            raise ModelRequestError(
                503, f"the adapter {model_id!r} could not be fetched from S3: {exc}"
            ) from exc

    async def ready(self) -> JsonObject:
        """Wait until this replica can serve; return what it serves."""
        await self._ready
        return {
            "model": self._spec.model_name,
            "max_model_len": self._engine.model_config.max_model_len,
            "adapters": self._spec.adapters,
        }

    async def engine_settings(self) -> JsonObject:
        """Return this replica's effective engine settings, how base requests run and the adapter
        directories it knows (benchmarks start a plain `vllm serve` with the same)."""
        await self._ready
        config = self._engine.vllm_config
        lora = config.lora_config
        return {
            "model_source": self._spec.model_source,
            "served_model_name": self._args.served_model_name,
            "dtype": str(config.model_config.dtype).removeprefix("torch."),
            "max_model_len": config.model_config.max_model_len,
            "max_num_seqs": config.scheduler_config.max_num_seqs,
            "max_num_batched_tokens": config.scheduler_config.max_num_batched_tokens,
            "enforce_eager": config.model_config.enforce_eager,
            "kv_cache_memory_bytes": config.cache_config.kv_cache_memory_bytes,
            "max_loras": lora.max_loras if lora else None,
            "max_lora_rank": lora.max_lora_rank if lora else None,
            "base_requests": "zero adapter" if self._zero_adapter else "no adapter",
            "adapters": dict(self._adapter_paths),
            "env": {k: v for k, v in os.environ.items() if k.startswith(("VLLM_", "OMP_"))},
        }

    async def check_health(self) -> None:
        """Serve's health check: the engine core must be alive (a dead one gets the replica replaced)."""
        if self._ready.done() and self._ready.exception() is not None:
            raise RuntimeError(f"the model server failed to start: {self._ready.exception()}")
        await self._engine.check_health()

    async def attach(self, adapter_path: str, adapter_uri: str | None = None) -> JsonObject:
        """Load the adapter named by the request's multiplexed model id (a warm-up); return its name and
        the folder it was loaded from on this replica's node."""
        name = await self._select(adapter_path, adapter_uri)
        return {"adapter": name, "path": self._adapter_paths.get(name)}

    async def _select(self, adapter_path: str | None, adapter_uri: str | None = None) -> str:
        """Return the model name the request runs as: the adapter it names, else the base (the engine's
        own model, or the zero adapter registered under its name)."""
        await self._ready
        adapter = serve.get_multiplexed_model_id()
        if not adapter:
            return self._spec.model_name
        if adapter_path is None:
            raise ModelRequestError(400, f"no adapter directory given for {adapter!r}")
        self._adapter_sources[adapter] = (adapter_path, adapter_uri)
        await self._load_adapter(adapter)
        return adapter

    async def _serve(
        self, kind: str, body: JsonObject, adapter_path: str | None, adapter_uri: str | None
    ) -> Any:
        from pydantic import ValidationError
        from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
        from vllm.entrypoints.openai.completion.protocol import CompletionRequest
        from vllm.entrypoints.serve.engine.protocol import ErrorResponse
        from vllm.exceptions import VLLMValidationError

        name = await self._select(adapter_path, adapter_uri)
        request_type = ChatCompletionRequest if kind == "chat" else CompletionRequest
        try:
            request = request_type.model_validate({**body, "model": name})
        except ValidationError as exc:
            raise _invalid_body(exc) from None
        try:
            if kind == "chat":
                result = await self._state.openai_serving_chat.create_chat_completion(request, None)
            else:
                result = await self._state.openai_serving_completion.create_completion(request, None)
        except VLLMValidationError as exc:
            # A value out of range (temperature, max_tokens, ...) or a prompt over the context: a 400
            # naming the parameter, as vLLM's own server and OpenAI's API answer.
            raise ModelRequestError(400, str(exc), param=exc.parameter) from None
        except ValueError as exc:  # vLLM raises some request problems (a chat template error) as such
            raise ModelRequestError(400, str(exc)) from None
        if isinstance(result, ErrorResponse):
            raise ModelRequestError(
                result.error.code, result.error.message, type=result.error.type, param=result.error.param
            )
        return result

    async def complete(
        self, kind: str, body: JsonObject, adapter_path: str | None = None, adapter_uri: str | None = None
    ) -> JsonObject:
        """Return the OpenAI response (`kind` "chat" or "completion") for a non-streaming request.

        Dumped whole, nulls included, as vLLM's OpenAI server sends it (the Kubernetes target forwards
        that body): OpenAI's shape has `logprobs: null`, `refusal: null` and `content: null` beside
        `tool_calls`, which `exclude_none` would drop.
        """
        result = await self._serve(kind, {**body, "stream": False}, adapter_path, adapter_uri)
        dumped: JsonObject = result.model_dump(mode="json")
        return dumped

    async def stream(
        self, kind: str, body: JsonObject, adapter_path: str | None = None, adapter_uri: str | None = None
    ) -> AsyncIterator[list[str]]:
        """Yield the response's Server-Sent Events in small batches (one item per `stream_batch_ms`)."""
        events = await self._serve(kind, {**body, "stream": True}, adapter_path, adapter_uri)
        window = self._spec.stream_batch_ms / 1000
        batch: list[str] = []
        flush_at = 0.0  # the first event goes at once (time to first token); later ones gather
        async for event in events:
            batch.append(event)
            now = time.monotonic()
            if now >= flush_at:
                yield batch
                batch = []
                flush_at = now + window
        if batch:
            yield batch

    def __del__(self) -> None:
        engine = getattr(self, "_engine", None)
        if engine is not None:
            engine.shutdown()


def _invalid_body(exc: ValidationError) -> ModelRequestError:
    """Return the 400 for a body vLLM's request model refused, naming the field as vLLM's server does:
    the parameter a validator named (`VLLMValidationError`), else the location of the first error."""
    from vllm.entrypoints.serve.exception_handling.handlers.validation import clean_loc_for_param
    from vllm.exceptions import VLLMValidationError

    errors = exc.errors()
    param = next(
        (
            error["ctx"]["error"].parameter
            for error in errors
            if isinstance(error.get("ctx", {}).get("error"), VLLMValidationError)
        ),
        None,
    )
    first = errors[0]
    param = param or clean_loc_for_param(tuple(first["loc"])) or None
    message = f"{param}: {first['msg']}" if param else first["msg"]
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more)"
    return ModelRequestError(400, message, param=param)
