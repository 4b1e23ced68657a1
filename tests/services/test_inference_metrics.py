"""`InferenceService`'s metrics with no Ray: a model server stand-in, a routing table over an in-memory
deployment list, and the fake `StudioMetrics` (requests by outcome, usage tokens, time to first token)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from studio.config import ServingSettings
from studio.errors import InvalidInput
from studio.ports import InferenceCall, JsonObject
from studio.schemas.clients import Client, ClientLimits
from studio.schemas.deployments import Deployment, EngineOptions
from studio.services.inference import InferenceService
from studio.services.routing import RoutingTable
from tests.fakes import RecordingMetrics

MODEL = "org/model"
CLIENT = Client(id="client-a", name="a", limits=ClientLimits(), created_at=1)
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]}


class OneDeployment:
    """The two reads `RoutingTable` makes of a `DeploymentRepository`."""

    def __init__(self, deployment: Deployment) -> None:
        self._deployment = deployment

    async def version(self) -> int:
        return 1

    async def list(self, *, client_id: str | None = None) -> list[Deployment]:
        return [self._deployment]


class ModelServer:
    """An `InferenceBackend` answering with fixed usage; `refuse` makes it raise as a server would."""

    def __init__(self, *, first_chunk_after_s: float = 0.0, refuse: bool = False) -> None:
        self.first_chunk_after_s = first_chunk_after_s
        self.refuse = refuse

    async def complete(self, call: InferenceCall) -> JsonObject:
        if self.refuse:
            raise InvalidInput("temperature: must be >= 0", param="temperature", code="invalid_value")
        return {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}}

    async def stream(self, call: InferenceCall) -> AsyncIterator[str]:
        await asyncio.sleep(self.first_chunk_after_s)
        yield 'data: {"choices":[{"delta":{"role":"assistant"}}],"usage":null}\n\n'
        yield 'data: {"choices":[{"delta":{"content":"Hello"}}],"usage":null}\n\n'
        yield 'data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2}}\n\ndata: [DONE]\n\n'


async def service(backend: ModelServer, metrics: RecordingMetrics) -> InferenceService:
    deployment = Deployment(
        id="dep-1", model=MODEL, kind="base", base_model=MODEL, placement="server", target="serve",
        status="ready", app_name="ms-model-x", min_replicas=1, max_replicas=1, target_ongoing_requests=8,
        num_cpus=1, num_gpus=0, engine=EngineOptions(), client_id=CLIENT.id, model_source=MODEL,
        created_at=1, updated_at=1,
    )  # fmt: skip
    routes = RoutingTable(deployments=OneDeployment(deployment), refresh_s=60)  # type: ignore[arg-type]
    await routes.refresh()
    catalog: Any = None  # only asked about models that are not deployed
    return InferenceService(
        routes=routes, backend=backend, catalog=catalog, settings=ServingSettings(), metrics=metrics
    )


async def test_answers_are_counted_with_their_usage_and_refusals_as_errors() -> None:
    metrics = RecordingMetrics()
    backend = ModelServer()
    inference = await service(backend, metrics)
    await inference.complete(CLIENT, "chat", BODY)
    backend.refuse = True
    with pytest.raises(InvalidInput):
        await inference.complete(CLIENT, "chat", BODY)
    assert [(m["outcome"], m["stream"], m["kind"]) for m in metrics.of("inference_request")] == [
        ("ok", False, "chat"),
        ("error", False, "chat"),
    ]
    assert metrics.of("inference_tokens") == [
        {"model": MODEL, "client_id": CLIENT.id, "prompt": 5, "completion": 7}
    ]
    assert metrics.of("time_to_first_token") == []  # not a stream


async def test_a_streams_first_chunk_and_usage_are_measured() -> None:
    metrics = RecordingMetrics()
    inference = await service(ModelServer(first_chunk_after_s=0.3), metrics)
    events = [event async for event in inference.stream(CLIENT, "chat", BODY | {"stream": True})]
    assert events[-1].endswith("data: [DONE]\n\n")
    (ttft,) = metrics.of("time_to_first_token")
    assert 0.3 <= ttft["seconds"] < 5 and ttft["model"] == MODEL
    assert metrics.of("inference_tokens") == [
        {"model": MODEL, "client_id": CLIENT.id, "prompt": 5, "completion": 2}
    ]
    assert [(m["outcome"], m["stream"]) for m in metrics.of("inference_request")] == [("ok", True)]

    # A client that goes away mid-stream: counted as cancelled.
    stream = inference.stream(CLIENT, "chat", BODY | {"stream": True})
    await anext(stream)
    await stream.aclose()
    assert metrics.of("inference_request")[-1]["outcome"] == "cancelled"


async def test_a_model_nobody_deployed_is_never_a_tag() -> None:
    metrics = RecordingMetrics()
    inference = await service(ModelServer(), metrics)
    with pytest.raises(InvalidInput):
        await inference.complete(CLIENT, "chat", {"messages": []})  # no model at all
    assert metrics.calls == []
