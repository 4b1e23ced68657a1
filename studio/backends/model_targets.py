"""One `ModelServers` and `InferenceBackend` over every deployment target: each call goes to its target's."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

from studio.errors import Conflict
from studio.ports import InferenceBackend, InferenceCall, JsonObject, ModelServers, ServerState
from studio.schemas.deployments import Deployment, DeploymentChanges


class TargetServers(ModelServers, InferenceBackend, Protocol):
    """What one target provides: both ports."""


class ModelServersByTarget:
    """Dispatches on `deployment.target`; a target's servers are made on first use (`factories`)."""

    def __init__(self, factories: dict[str, Callable[[], Any]]) -> None:
        self._factories = factories
        self._made: dict[str, TargetServers] = {}

    @property
    def targets(self) -> frozenset[str]:
        return frozenset(self._factories)

    def _for(self, deployment: Deployment) -> TargetServers:
        servers = self._made.get(deployment.target)
        if servers is None:
            factory = self._factories.get(deployment.target)
            if factory is None:
                raise Conflict(f"the {deployment.target!r} target is not enabled", code="target_unavailable")
            servers = self._made[deployment.target] = factory()
        return servers

    async def check(self, deployment: Deployment) -> None:
        await self._for(deployment).check(deployment)

    async def deploy(self, deployment: Deployment) -> DeploymentChanges | None:
        return await self._for(deployment).deploy(deployment)

    async def state(self, deployment: Deployment) -> tuple[ServerState, str]:
        return await self._for(deployment).state(deployment)

    async def ready(self, deployment: Deployment) -> JsonObject:
        return await self._for(deployment).ready(deployment)

    async def attach(self, adapter: Deployment) -> None:
        await self._for(adapter).attach(adapter)

    async def remove(self, deployment: Deployment) -> None:
        await self._for(deployment).remove(deployment)

    async def complete(self, call: InferenceCall) -> JsonObject:
        return await self._for(call.deployment).complete(call)

    async def stream(self, call: InferenceCall) -> AsyncIterator[str]:
        async for event in self._for(call.deployment).stream(call):
            yield event

    async def close(self) -> None:
        for servers in self._made.values():
            close = getattr(servers, "close", None)
            if close is not None:
                await close()
