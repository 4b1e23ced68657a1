"""Deployments as clients and admins see them: create, read, list, undeploy. The tracker's runner does
the work.

Creating a deployment writes its routing record (`deploying`) and wakes the tracker, whose
`DeploymentRunner` starts the model server (or attaches the adapter) and marks it `ready` or `failed`.
Undeploying marks it `deleting` and answers once every ingress replica has re-read the table (so no
request reaches the model after the answer); the runner then removes the server.

Ownership: a fine-tune's deployment belongs to its client. A base model's deployment is one server
shared by every client allowed that base, owned by none (`domain/deployments.py`): it records its
holders, the clients that asked for it (and the admin). Any client allowed the base may deploy it (the
first sets its options), hold a live one (asking options that differ is a 409 naming them), or redeploy a
failed one; a client's undeploy drops its own hold, and the server is undeployed when nobody holds it.
An admin's undeploy of anything is never blocked: the adapters on a base are detached first, and their
owners see it in their deployment (`failed`, with the reason). Caps per client (`domain/limits.py`)
count its deployments and the shared bases it holds.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Literal

from studio.config import ServingSettings
from studio.domain.deployments import ADMIN_HOLDER, LIVE, check_deployment_transition
from studio.domain.limits import DeploymentCaps, DeploymentUse, check_deployment_caps, model_allowed
from studio.errors import Conflict, InvalidInput, NotFound, StudioError
from studio.ports import (
    BaseModelRepository,
    ClusterInfo,
    DeploymentRepository,
    JobNotifier,
    JobRepository,
    ModelServers,
)
from studio.schemas.clients import Client
from studio.schemas.deployments import Deployment, DeploymentChanges, DeploymentCreate
from studio.services.deployment_planner import DeploymentPlanner
from studio.services.shared_bases import SharedBases, option_differences, use_of

log = logging.getLogger(__name__)
ModelKind = Literal["base", "fine-tuned"]
ATTEMPTS = 3  # a record that changes between the read and the conditional write is read again


def _not_found(deployment_id: str) -> NotFound:
    return NotFound(f"no deployment {deployment_id!r}", param="deployment_id", code="deployment_not_found")


def visible(deployment: Deployment, client: Client) -> bool:
    """Return True when `client` may use the deployment: its own, or a base model it is allowed."""
    if deployment.client_id == client.id and not deployment.shared:
        return True
    return deployment.kind == "base" and model_allowed(client.limits.allowed_base_models, deployment.model)


def caps_of(client: Client) -> DeploymentCaps:
    limits = client.limits
    return DeploymentCaps(
        max_deployments=limits.max_deployments,
        max_replicas=limits.max_deployment_replicas,
        max_cpus=limits.max_deployment_cpus,
        max_gpus=limits.max_deployment_gpus,
    )


class DeploymentService:
    def __init__(
        self,
        *,
        deployments: DeploymentRepository,
        base_models: BaseModelRepository,
        jobs: JobRepository,
        notifier: JobNotifier | None,
        settings: ServingSettings,
        on_change: Callable[[], Awaitable[None]] | None = None,
        targets: frozenset[str] = frozenset({"serve"}),
        servers: ModelServers | None = None,
        cluster: ClusterInfo | None = None,
    ) -> None:
        """`on_change` runs after each change this service makes (this replica's routing table reload);
        `targets` are the deployment targets this server has (serve, and kubernetes when enabled);
        `cluster` the Ray cluster's nodes (None: a multi-GPU replica's node is not checked ahead)."""
        self._on_change = on_change
        self._targets = targets
        self._servers = servers
        self._deployments = deployments
        self._notifier = notifier
        self._settings = settings
        self._planner = DeploymentPlanner(
            deployments=deployments, base_models=base_models, jobs=jobs, settings=settings, cluster=cluster
        )
        self._shared = SharedBases(deployments)

    # -- create ---------------------------------------------------------------------------------------

    async def create(
        self, client: Client, body: DeploymentCreate, *, kind: ModelKind | None = None
    ) -> Deployment:
        """Record a new deployment of `body.model` (status `deploying`) and wake the runner; for a shared
        base that is live already, record the client's hold on it and return it.

        `kind` restricts the model to a base model or a fine-tune (the original design's two paths).

        Raises:
            NotFound: no such model for this client. InvalidInput: the model is not of `kind`, or a
                layout that does not fit. Conflict: already deployed (or held), a live shared base asked
                with other options (`shared_base_options`), being removed, a target that is not
                available, no node with the GPUs a replica needs, or a LoRA fine-tune whose base is not
                deployed on Serve. QuotaExceeded: one of the client's deployment caps.
        """
        allowed = client.limits.allowed_base_models
        return await self._create(client.id, allowed, body, kind=kind, caps=caps_of(client))

    async def admin_create(self, body: DeploymentCreate) -> Deployment:
        """Deploy a base model as the admin (no caps, any registered base), or hold a live one.

        Raises:
            As `create` (no QuotaExceeded); NotFound for a fine-tune too (its client deploys it).
        """
        return await self._create(ADMIN_HOLDER, None, body, kind="base", caps=None)

    async def _create(
        self,
        holder: str,
        allowed: list[str] | None,
        body: DeploymentCreate,
        *,
        kind: ModelKind | None,
        caps: DeploymentCaps | None,
    ) -> Deployment:
        if body.target not in self._targets:
            raise Conflict(
                f"the {body.target!r} target is not enabled on this server: set STUDIO_K8S__ENABLED=true and "
                "a cluster (STUDIO_K8S__KUBECONFIG or STUDIO_K8S__IN_CLUSTER), or deploy with target 'serve'",
                param="target",
                code="target_unavailable",
            )
        for _ in range(ATTEMPTS):
            record = await self._planner.plan(owner=holder, allowed=allowed, body=body)
            if kind is not None and record.kind != kind:
                raise InvalidInput(
                    f"{body.model!r} is not a {kind} model", param="model", code="wrong_model_kind"
                )
            existing = await self._deployments.get_by_model(record.model)
            if existing is not None and existing.shared and existing.status in LIVE:
                held = await self._hold(holder, existing, body, caps=caps)
                if held is not None:
                    return held
                continue  # it failed or is being removed meanwhile: decide again
            if existing is not None:
                self._check_replaceable(existing, holder)
                if existing.shared and ADMIN_HOLDER in existing.holders and holder != ADMIN_HOLDER:
                    # An admin's hold follows its base through a redeploy; a client's must be asked again.
                    record = record.model_copy(update={"holders": [holder, ADMIN_HOLDER]})
            try:
                return await self._insert(record, body=body, caps=caps, holder=holder, replacing=existing)
            except Conflict as exc:
                if not (record.shared and exc.code == "already_deployed"):
                    raise
                # Another client deployed the base meanwhile (the model is unique): hold that one.
        raise Conflict(
            f"the deployment of {body.model!r} kept changing meanwhile: try again",
            param="model",
            code="deployment_changed",
        )

    def _check_replaceable(self, existing: Deployment, holder: str) -> None:
        """Raise Conflict unless `existing` is a failed deployment `holder` may redeploy: a shared base
        (whoever is allowed the model, which `plan` checked), or the owner's own fine-tune."""
        if existing.status == "failed" and (existing.shared or existing.client_id == holder):
            return
        if existing.status == "deleting":
            raise Conflict(
                f"the deployment of {existing.model!r} ({existing.id}) is being removed: deploy it again in "
                "a few seconds",
                param="model",
                code="deployment_deleting",
            )
        raise Conflict(
            f"the model {existing.model!r} is already deployed ({existing.id}, {existing.status})",
            param="model",
            code="already_deployed",
        )

    async def _insert(
        self,
        record: Deployment,
        *,
        body: DeploymentCreate,
        caps: DeploymentCaps | None,
        holder: str,
        replacing: Deployment | None,
    ) -> Deployment:
        record = await self._planner.with_layout(record, gpu_memory_gib=body.gpu_memory_gib)
        if caps is not None:
            await self._check_caps(holder, caps, use_of(record), replacing=replacing)
        await self._planner.check_nodes(record)
        if self._servers is not None:
            await self._servers.check(record)  # 422/409/403 now, rather than a failed deployment later
        if replacing is not None:
            await self._deployments.remove(replacing.id)  # a redeploy replaces the failed attempt
        await self._deployments.insert(record)
        log.info("deployment created", extra={"deployment_id": record.id, "model": record.model})
        await self._wake()
        return record

    async def _hold(
        self, holder: str, base: Deployment, body: DeploymentCreate, *, caps: DeploymentCaps | None
    ) -> Deployment | None:
        """Record `holder`'s hold on the live shared `base`; return it, or None when it is no longer live.

        Raises:
            Conflict: options that differ from the base's (`shared_base_options`), or already held.
            QuotaExceeded: holding it would pass one of the client's caps.
        """
        differences = option_differences(base, body)
        if differences:
            listed = ", ".join(
                f"{name} (deployed {have!r}, asked {asked!r})" for name, have, asked in differences
            )
            then = (
                f"undeploy it first (DELETE /admin/deployments/{base.id}), then deploy it with these options"
                if holder == ADMIN_HOLDER
                else "leave them out to use it as deployed, or ask an admin to redeploy it with other options"
            )
            raise Conflict(
                f"the base model {base.model!r} is deployed already ({base.id}, {base.status}) and shared by "
                f"every client allowed it: its options stay as deployed. This request differs in {listed}: "
                f"{then}",
                param=differences[0][0],
                code="shared_base_options",
            )
        if holder in base.holders:
            raise Conflict(
                f"the model {base.model!r} is already deployed ({base.id}, {base.status}) and held by you",
                param="model",
                code="already_deployed",
            )
        if caps is not None:
            await self._check_caps(holder, caps, use_of(base), replacing=None)
        held = await self._deployments.add_holder(base, holder)
        if held is not None:
            log.info("shared deployment held", extra={"deployment_id": base.id, "holder": holder})
        return held

    async def _check_caps(
        self, client_id: str, caps: DeploymentCaps, asked: DeploymentUse, *, replacing: Deployment | None
    ) -> None:
        used = DeploymentUse()
        for deployment in await self._deployments.list_held(client_id):
            skip = replacing is not None and deployment.id == replacing.id
            if not skip and deployment.status != "deleting" and deployment.held_by(client_id):
                used += use_of(deployment)
        check_deployment_caps(caps, used, asked)

    # -- read -----------------------------------------------------------------------------------------

    async def get(self, client: Client, deployment_id: str) -> Deployment:
        """Return a deployment the client can see.

        Raises:
            NotFound: no such deployment, or one the client may not use.
        """
        deployment = await self._deployments.get(deployment_id)
        if deployment is None or not visible(deployment, client):
            raise _not_found(deployment_id)
        return deployment

    async def list(self, client: Client) -> list[Deployment]:
        """Return the deployments the client can use (its own and the base models it is allowed)."""
        return [d for d in await self._deployments.list_own_and_bases(client.id) if visible(d, client)]

    async def admin_list(self) -> builtins.list[Deployment]:
        """Return every deployment, oldest first."""
        return await self._deployments.list()

    # -- undeploy -------------------------------------------------------------------------------------

    async def delete(self, client: Client, deployment_id: str) -> Deployment:
        """Undeploy the client's deployment (marked `deleting`: requests to it stop at once); for a shared
        base, drop the client's hold, and undeploy it when nobody holds it any more. Return it.

        Raises:
            NotFound: not a deployment the client may use, or a shared base it does not hold
                (`deployment_not_held`). Conflict: it is the last holder of a base its own adapters
                run on (`adapters_attached`: undeploy them first).
        """
        deployment = await self._deployments.get(deployment_id)
        if deployment is None or not visible(deployment, client):
            raise _not_found(deployment_id)
        if not deployment.shared:
            return await self._undeploy(deployment)
        if client.id not in deployment.holders:
            raise NotFound(
                f"this client does not hold the shared deployment {deployment.id} of {deployment.model!r} "
                "(it runs for the clients holding it; an admin may undeploy it)",
                param="deployment_id",
                code="deployment_not_held",
            )
        if deployment.status == "deleting":
            return deployment
        if deployment.holders == [client.id]:
            own = [
                d.model
                for d in await self._deployments.list_attached(deployment.id)
                if d.client_id == client.id and d.status != "deleting"
            ]
            if own:
                raise Conflict(
                    f"your adapters run on {deployment.model!r}, which nobody else holds: undeploy them "
                    f"first ({', '.join(own)})",
                    code="adapters_attached",
                )
        released = await self._deployments.drop_holder(deployment, client.id)
        if released is None:  # a concurrent undeploy of this client dropped it first
            return await self._deployments.get(deployment.id) or deployment
        log.info("shared deployment released", extra={"deployment_id": deployment.id, "holder": client.id})
        if released.holders:
            return released
        return await self._undeploy(released, reason="the last client holding it released it", unheld=True)

    async def delete_model(self, client: Client, model: str) -> Deployment:
        """Undeploy the client's deployment of `model` (the original design's path), as `delete`."""
        deployment = await self._deployments.get_by_model(model)
        if deployment is None or not visible(deployment, client):
            raise NotFound(f"the model {model!r} is not deployed", param="model", code="deployment_not_found")
        return await self.delete(client, deployment.id)

    async def admin_delete(self, deployment_id: str) -> Deployment:
        """Undeploy any deployment at once, whoever holds it; a base's adapters are detached first.

        Raises:
            NotFound: no such deployment.
        """
        deployment = await self._deployments.get(deployment_id)
        if deployment is None:
            raise _not_found(deployment_id)
        return await self._undeploy(deployment, reason="an admin undeployed it")

    async def _undeploy(
        self, deployment: Deployment, *, reason: str | None = None, unheld: bool = False
    ) -> Deployment:
        """Mark the deployment `deleting`, detach the adapters running on it (failed, with `reason`), wake
        the runner and return it once every ingress replica stops routing to it.

        `unheld`: only while nobody holds it (a client that holds it meanwhile keeps it running; it is
        then returned as it is).
        """
        current: Deployment | None = deployment
        for _ in range(ATTEMPTS):
            if current is None or current.status == "deleting":
                return current or deployment
            if unheld and current.holders:
                return current
            check_deployment_transition(current.status, "deleting")
            updated = await self._deployments.update(
                deployment_id=current.id,
                expected=current.status,
                changes=DeploymentChanges(status="deleting", updated_at=int(time.time())),
                unheld=unheld,
            )
            if updated is not None:
                break
            current = await self._deployments.get(current.id)  # changed meanwhile: look again
        else:
            raise Conflict(
                f"the deployment {deployment.id} kept changing meanwhile: try again",
                code="deployment_changed",
            )
        if reason is not None:
            await self._shared.detach_adapters(updated, reason=reason)
        await self._wake()
        # Every ingress replica re-reads the routing table within `routing_refresh_s`: answering after
        # two of those means that once the caller has the answer, no replica routes to the model.
        await asyncio.sleep(2 * self._settings.routing_refresh_s)
        return updated

    async def _wake(self) -> None:
        if self._on_change is not None:
            await self._on_change()
        if self._notifier is None:
            return
        try:
            await self._notifier.wake()
        except StudioError as exc:  # the runner also polls: it will get to it, only later
            log.warning("could not wake the tracker: %s", exc)
