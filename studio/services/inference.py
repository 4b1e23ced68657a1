"""OpenAI inference requests: find the model's deployment in the in-memory table, wait while it starts
(bounded), and pass the request to its model server.

The client's JSON body is passed through as it came: the model server checks it with vLLM's own
request models (an invalid value is a 422 naming the field, a prompt over the context a 400).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

from studio.config import ServingSettings
from studio.errors import Conflict, InvalidInput, Unavailable
from studio.ports import InferenceBackend, InferenceCall, JsonObject, ModelDemand, StudioMetrics
from studio.schemas.clients import Client
from studio.schemas.deployments import Deployment
from studio.services.deployments import visible
from studio.services.models import ModelCatalog
from studio.services.routing import RoutingTable

Kind = Literal["chat", "completion"]
KEEPALIVE = ": keep-alive\n\n"
# A backend's Unavailable with this code: the server has no ready replica yet (retry, bounded).
MODEL_STARTING = "model_starting"
RETRY_S = 1.0


def model_of(body: JsonObject) -> str:
    """Return the request's `model`.

    Raises:
        InvalidInput: `model` is missing or not a string.
    """
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidInput(
            "model is required: the name of a deployed model", param="model", code="missing_model"
        )
    return model


def stream_usage(events: str) -> JsonObject | None:
    """Return the `usage` object of the Server-Sent Events in `events`, or None.

    A stream carries usage only when the client asked for it (`stream_options.include_usage`), in its
    last chunk; every other chunk is skipped after a substring test, without parsing.
    """
    if '"usage":{' not in events and '"usage": {' not in events:
        return None
    usage = None
    for line in events.splitlines():
        if not line.startswith("data: {"):
            continue
        try:
            found = json.loads(line.removeprefix("data: ")).get("usage")
        except ValueError:
            continue
        if isinstance(found, dict):
            usage = found
    return usage


class InferenceService:
    def __init__(
        self,
        *,
        routes: RoutingTable,
        backend: InferenceBackend | None,
        catalog: ModelCatalog,
        settings: ServingSettings,
        demand: ModelDemand | None = None,
        metrics: StudioMetrics | None = None,
    ) -> None:
        """`demand` is told how many requests wait for a server with no ready replica (scale from zero);
        `metrics` counts requests, tokens and time to first token, by model and client."""
        self._demand = demand
        self._metrics = metrics
        self._routes = routes
        self._backend = backend
        self._catalog = catalog
        self._settings = settings

    async def _backend_for(self, client: Client, model: str) -> InferenceBackend:
        """Return the backend once the model is known to be deployed (or deploying).

        Raises:
            NotFound, Conflict: as `_check`. Unavailable: this process cannot reach model servers.
        """
        await self._check(client, model)
        if self._backend is None:
            raise Unavailable("model serving is not available in this process", code="serving_unavailable")
        return self._backend

    async def _check(self, client: Client, model: str) -> Deployment | None:
        """Return the model's deployment when ready, None while it is starting.

        Raises:
            NotFound: no such model for this client. Conflict: not deployed, failed or being removed.
        """
        deployment = self._routes.lookup(model)
        if deployment is None:
            # A miss may be a deployment made through another ingress replica since the last refresh:
            # check the version (one read, on this error path only) before answering that it is absent.
            await self._routes.refresh()
            deployment = self._routes.lookup(model)
        if deployment is None or not visible(deployment, client):
            await self._catalog.get(client, model)  # NotFound for a model this client cannot name
            raise Conflict(
                f"the model {model!r} is not deployed: deploy it with POST /v1/deployments",
                param="model",
                code="model_not_deployed",
            )
        if deployment.status == "ready":
            return deployment
        if deployment.status == "failed":
            raise Conflict(
                f"the model {model!r} failed to deploy: {deployment.error}",
                param="model",
                code="model_failed",
            )
        if deployment.status == "deleting":
            raise Conflict(
                f"the model {model!r} is being undeployed", param="model", code="model_not_deployed"
            )
        return None

    async def route(self, client: Client, model: str) -> Deployment:
        """Return the model's ready deployment, waiting up to `cold_start_timeout_s` while it deploys.

        Raises:
            NotFound, Conflict: as `_check`. Unavailable: still not ready after the wait (503).
        """
        deadline = time.monotonic() + self._settings.cold_start_timeout_s
        while (deployment := await self._check(client, model)) is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Unavailable(
                    f"the model {model!r} is still starting; try again shortly",
                    code="model_loading",
                    retry_after_s=10,
                )
            await self._routes.wait_for_change(min(remaining, 1.0))
        return deployment

    async def complete(self, client: Client, kind: Kind, body: JsonObject) -> JsonObject:
        """Return the OpenAI response of a non-streaming request."""
        model = model_of(body)
        backend = await self._backend_for(client, model)
        deadline = time.monotonic() + self._settings.cold_start_timeout_s
        deployment = await self.route(client, model)
        # Counted from here on only: `model` is a deployed model's name, not whatever a client sent.
        outcome = "error"
        try:
            call = InferenceCall(kind=kind, model=model, body=body, deployment=deployment)
            response = await self._complete(backend, call, deadline)
            outcome = "ok"
        finally:
            self._count_request(client, model, kind=kind, stream=False, outcome=outcome)
        self._count_usage(client, model, response.get("usage"))
        return response

    async def _complete(self, backend: InferenceBackend, call: InferenceCall, deadline: float) -> JsonObject:
        """Return the backend's answer, waiting (bounded) while the server has no ready replica."""
        timeout_s = self._settings.cold_start_timeout_s + self._settings.request_timeout_s
        waiting = False
        try:
            while True:
                try:
                    return await asyncio.wait_for(backend.complete(call), timeout=timeout_s)
                except TimeoutError:
                    raise Unavailable(
                        f"the model {call.model!r} did not answer within {timeout_s:.0f} s"
                    ) from None
                except Unavailable as exc:
                    # No ready replica yet (scaled to zero): count the request as demand and wait.
                    if exc.code != MODEL_STARTING or time.monotonic() + RETRY_S > deadline:
                        raise
                    if not waiting:
                        waiting = True
                        self._demand_add(call.deployment, 1)
                    await asyncio.sleep(RETRY_S)
        finally:
            if waiting:
                self._demand_add(call.deployment, -1)

    async def stream(self, client: Client, kind: Kind, body: JsonObject) -> AsyncIterator[str]:
        """Yield the Server-Sent Events of a streaming request, and keep-alive comments while it waits.

        Errors before anything is yielded are raised by the first `__anext__`; a wait longer than
        `keepalive_s` yields comments first, so later errors arrive inside the stream.
        """
        arrived = time.monotonic()
        model = model_of(body)
        backend = await self._backend_for(client, model)
        deadline = arrived + self._settings.cold_start_timeout_s
        routed: asyncio.Task[Deployment] = asyncio.ensure_future(self.route(client, model))
        async for keepalive in self._until(routed, deadline, model):
            yield keepalive
        deployment = routed.result()
        call = InferenceCall(kind=kind, model=model, body=body, deployment=deployment)
        # Counted from here on only: `model` is a deployed model's name, not whatever a client sent.
        outcome = "error"
        try:
            events = None
            async for item in self._first_event(backend, call, deadline):
                if isinstance(item, str):
                    yield item  # a keep-alive
                else:
                    events, first = item
            assert events is not None
            self._observe_ttft(client, model, time.monotonic() - arrived)
            yield first
            async for event in events:
                self._count_usage(client, model, stream_usage(event))
                yield event
            outcome = "ok"
        except (GeneratorExit, asyncio.CancelledError):
            outcome = "cancelled"  # the client went away
            raise
        finally:
            self._count_request(client, model, kind=kind, stream=True, outcome=outcome)

    async def _first_event(
        self, backend: InferenceBackend, call: InferenceCall, deadline: float
    ) -> AsyncIterator[str | tuple[AsyncIterator[str], str]]:
        """Yield keep-alives while the model server's first event is awaited (retrying, bounded, while
        it has no ready replica), then (its events, the first event).

        Raises:
            Unavailable: still no replica by `deadline`. What the backend raises before its first event.
        """
        waiting = False
        try:
            while True:
                events = backend.stream(call)
                # The first event can wait for a replica to start (a deployment scaled to zero).
                first: asyncio.Task[str] = asyncio.ensure_future(anext(events))
                async for keepalive in self._until(first, deadline, call.model):
                    yield keepalive
                error = first.exception()
                if not (isinstance(error, Unavailable) and error.code == MODEL_STARTING):
                    break
                if time.monotonic() + RETRY_S > deadline:
                    raise error
                if not waiting:
                    waiting = True
                    self._demand_add(call.deployment, 1)
                pause: asyncio.Task[None] = asyncio.ensure_future(asyncio.sleep(RETRY_S))
                async for keepalive in self._until(pause, deadline, call.model):
                    yield keepalive
        finally:
            if waiting:
                self._demand_add(call.deployment, -1)
        yield events, first.result()

    def _count_request(self, client: Client, model: str, *, kind: Kind, stream: bool, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.inference_request(
                model=model, client_id=client.id, kind=kind, stream=stream, outcome=outcome
            )

    def _count_usage(self, client: Client, model: str, usage: Any) -> None:
        """Count the tokens of an OpenAI `usage` object (nothing when it is absent or malformed)."""
        if self._metrics is None or not isinstance(usage, dict):
            return
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        self._metrics.inference_tokens(
            model=model,
            client_id=client.id,
            prompt=prompt if isinstance(prompt, int) else 0,
            completion=completion if isinstance(completion, int) else 0,
        )

    def _observe_ttft(self, client: Client, model: str, seconds: float) -> None:
        if self._metrics is not None:
            self._metrics.time_to_first_token(model=model, client_id=client.id, seconds=seconds)

    def _demand_add(self, deployment: Deployment, delta: int) -> None:
        if self._demand is not None:
            self._demand.add(deployment, delta)

    async def _until(self, task: asyncio.Task[Any], deadline: float, model: str) -> AsyncIterator[str]:
        """Yield a keep-alive every `keepalive_s` until `task` is done; cancel it past `deadline`."""
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    task.cancel()
                    raise Unavailable(
                        f"the model {model!r} is still starting; try again shortly",
                        code="model_loading",
                        retry_after_s=10,
                    )
                done, _ = await asyncio.wait({task}, timeout=min(self._settings.keepalive_s, remaining))
                if done:
                    return
                yield KEEPALIVE
        except BaseException:
            task.cancel()
            raise

    async def predict(self, client: Client, model: str, body: JsonObject) -> JsonObject:
        """The original design's `/predict`: a prompt (or chat messages) in, the generated text out."""
        request = {key: value for key, value in body.items() if key != "stream"} | {"model": model}
        kind: Kind = "chat" if "messages" in request else "completion"
        if kind == "completion" and "prompt" not in request:
            raise InvalidInput("give a prompt or messages", param="prompt", code="missing_prompt")
        response = await self.complete(client, kind, request)
        choices = response.get("choices") or []
        if not choices:
            raise Unavailable(f"the model {model!r} returned no choices")
        choice = choices[0]
        text = choice["message"]["content"] if kind == "chat" else choice["text"]
        return {
            "model": model,
            "output": text,
            "finish_reason": choice.get("finish_reason"),
            "usage": response.get("usage"),
        }
