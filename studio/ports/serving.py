"""Deployments (the routing table), the model servers behind them and inference calls."""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from studio.domain.deployments import DeploymentStatus
from studio.schemas.deployments import Deployment, DeploymentChanges


class DeploymentRepository(Protocol):
    """Deployments, which are the routing table (`model_routing`), and the table's version counter."""

    async def insert(self, deployment: Deployment) -> None:
        """Store a new deployment and bump the version.

        Raises:
            Conflict: the model already has a deployment (code `already_deployed`).
        """
        ...

    async def get(self, deployment_id: str) -> Deployment | None: ...

    async def get_by_model(self, model: str) -> Deployment | None: ...

    async def list(self, *, client_id: str | None = None) -> builtins.list[Deployment]:
        """Return the client's deployments (every deployment when None), oldest first."""
        ...

    async def list_own_and_bases(self, client_id: str) -> builtins.list[Deployment]:
        """Return the client's deployments and every base model's (which others may use), oldest first."""
        ...

    async def list_held(self, client_id: str) -> builtins.list[Deployment]:
        """Return the deployments the client created and the shared bases it holds, oldest first
        (a base it created may no longer be held by it: `Deployment.held_by` tells)."""
        ...

    async def add_holder(self, deployment: Deployment, holder: str) -> Deployment | None:
        """Add `holder` to a shared base's holders while it is live (deploying or ready); return it
        after, or None when it is no longer live."""
        ...

    async def drop_holder(self, deployment: Deployment, holder: str) -> Deployment | None:
        """Remove `holder` from a shared base's holders; return it after, or None when it did not hold it."""
        ...

    async def list_in(self, statuses: builtins.list[DeploymentStatus]) -> builtins.list[Deployment]:
        """Return the deployments whose status is one of `statuses`, oldest first."""
        ...

    async def list_attached(self, base_deployment: str) -> builtins.list[Deployment]:
        """Return the adapter deployments that run on the deployment `base_deployment`."""
        ...

    async def update(
        self,
        *,
        deployment_id: str,
        expected: DeploymentStatus,
        changes: DeploymentChanges,
        unheld: bool = False,
    ) -> Deployment | None:
        """Write `changes` if the status is still `expected` (and, with `unheld`, no holder holds it) and
        bump the version; return it, or None."""
        ...

    async def remove(self, deployment_id: str) -> bool:
        """Delete the record and bump the version; return whether it existed."""
        ...

    async def version(self) -> int:
        """Return the routing version: it changes whenever a deployment is added, changed or removed."""
        ...


ServerState = Literal["starting", "running", "failed", "absent"]


JsonObject = dict[str, Any]


class ModelServers(Protocol):
    """Starts, follows and stops model servers (Serve applications or Kubernetes Deployments)."""

    async def check(self, deployment: Deployment) -> None:
        """Refuse, before anything is recorded or written, what the target would refuse later.

        Raises:
            InvalidInput: a value the target cannot take. Conflict: the target is not configured, or
                the server's name is taken by something Mini Studio does not manage. Forbidden: the
                target denies what deploying needs.
        """
        ...

    async def deploy(self, deployment: Deployment) -> DeploymentChanges | None:
        """Start (or update) the deployment's model server without waiting for it to be ready.

        Returns what to record of where it lives (Kubernetes: namespace, service URL), or None.
        """
        ...

    async def state(self, deployment: Deployment) -> tuple[ServerState, str]:
        """Return the server's state and, for `failed`, why."""
        ...

    async def ready(self, deployment: Deployment) -> JsonObject:
        """Wait (bounded) until a replica of the running server answers; return what it reports.

        Raises:
            Unavailable: no replica answered in time.
        """
        ...

    async def attach(self, adapter: Deployment) -> None:
        """Load the adapter into its base deployment's server (one replica now, others on first use).

        Raises:
            InvalidInput: the adapter cannot be loaded (the message says why).
        """
        ...

    async def remove(self, deployment: Deployment) -> None:
        """Stop the deployment's server (or detach the adapter); return once asked, not once gone."""
        ...


@dataclass(frozen=True, slots=True)
class InferenceCall:
    """One OpenAI inference request routed to a deployment: `body` is the client's JSON, passed through.

    `model` is the public name (a base model or an `ft:` name); `adapter` is set when it runs as a LoRA
    adapter of its base's server.
    """

    kind: Literal["chat", "completion"]
    model: str
    body: JsonObject
    deployment: Deployment


class InferenceBackend(Protocol):
    """Sends inference requests to the model servers."""

    async def complete(self, call: InferenceCall) -> JsonObject:
        """Return the OpenAI response object.

        Raises:
            InvalidInput: the server refused the request (prompt too long, bad sampling values).
            Unavailable: the server cannot be reached.
        """
        ...

    def stream(self, call: InferenceCall) -> AsyncIterator[str]:
        """Yield the Server-Sent Events as text, one or more whole events (`data: {...}\n\n`) a chunk,
        ending with `data: [DONE]\n\n`.

        Errors before the first event are raised as by `complete`.
        """
        ...


class ModelDemand(Protocol):
    """Publishes how many requests wait for a model server to start, per deployment (what scales a
    Kubernetes deployment up from zero: its KEDA trigger adds this count to vLLM's own load)."""

    def add(self, deployment: Deployment, delta: int) -> None:
        """Count `delta` more (or fewer) requests waiting for `deployment`'s server."""
        ...
