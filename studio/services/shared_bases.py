"""Shared base deployments: what a request asks of one that runs already, what a deployment holds against
a client's caps, and detaching the adapters of a base that is undeployed.
"""

from __future__ import annotations

import logging
import time

from studio.domain.deployments import check_deployment_transition
from studio.domain.limits import DeploymentUse, deployment_use
from studio.ports import DeploymentRepository
from studio.schemas.deployments import Deployment, DeploymentChanges, DeploymentCreate

log = logging.getLogger(__name__)

# The request fields that set how a model server runs, compared when a client asks for a live shared
# base (`gpu_memory_gib` is a hint to the planner, not a server option).
SERVER_OPTIONS = ("target", "min_replicas", "max_replicas", "target_ongoing_requests", "num_cpus", "num_gpus")
DETACH_ATTEMPTS = 3


def option_differences(base: Deployment, body: DeploymentCreate) -> list[tuple[str, object, object]]:
    """Return the options `body` sets explicitly that differ from the deployed `base`'s, as
    (field, deployed value, asked value); a field left out, or given as null, asks nothing."""
    differences: list[tuple[str, object, object]] = []
    for name in SERVER_OPTIONS:
        asked = getattr(body, name)
        if name in body.model_fields_set and asked is not None and asked != getattr(base, name):
            differences.append((name, getattr(base, name), asked))
    if "engine" in body.model_fields_set:
        for name in sorted(body.engine.model_fields_set):
            asked = getattr(body.engine, name)
            have = getattr(base.engine, name)
            if asked is not None and asked != have:
                differences.append((f"engine.{name}", have, asked))
    return differences


def use_of(deployment: Deployment) -> DeploymentUse:
    """Return what the deployment holds against its holders' caps (`domain.limits.deployment_use`)."""
    return deployment_use(
        own_server=deployment.placement == "server",
        running=deployment.status != "failed",
        max_replicas=deployment.max_replicas,
        num_cpus=deployment.num_cpus,
        num_gpus=deployment.num_gpus,
    )


class SharedBases:
    """The writes an undeploy of a base makes beside its own: its adapters' detaching."""

    def __init__(self, deployments: DeploymentRepository) -> None:
        self._deployments = deployments

    async def detach_adapters(self, base: Deployment, *, reason: str) -> list[Deployment]:
        """Fail every adapter that runs on `base` (deploying or ready) with why: their owners see
        `failed` and the reason on their deployment, and requests to them get a 409 naming it. Return
        those detached.

        Adapters already failed or being removed are left as they are.
        """
        message = (
            f"detached: its base deployment {base.id} ({base.model}) was undeployed: {reason}. Deploy "
            f"the base model again (POST /v1/deployments with model {base.model!r}; holding it keeps it "
            "running), then this adapter"
        )
        detached: list[Deployment] = []
        for adapter in await self._deployments.list_attached(base.id):
            current: Deployment | None = adapter
            for _ in range(DETACH_ATTEMPTS):
                if current is None or current.status not in ("deploying", "ready"):
                    break
                check_deployment_transition(current.status, "failed")
                changes = DeploymentChanges(status="failed", error=message, updated_at=int(time.time()))
                updated = await self._deployments.update(
                    deployment_id=current.id, expected=current.status, changes=changes
                )
                if updated is not None:
                    detached.append(updated)
                    log.info("adapter detached", extra={"deployment_id": current.id, "base": base.id})
                    break
                current = await self._deployments.get(current.id)  # the runner moved it meanwhile
        return detached
