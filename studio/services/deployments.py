"""Deployments as clients see them: create, read, list, undeploy. The tracker's runner does the work.

Creating a deployment writes its routing record (`deploying`) and wakes the tracker, whose
`DeploymentRunner` starts the model server (or attaches the adapter) and marks it `ready` or `failed`.
Undeploying marks it `deleting` and answers once every ingress replica has re-read the table (so no
request reaches the model after the answer); the runner then removes the server.

Ownership: a fine-tune's deployment belongs to its client; a base model's deployment is shared by
every client allowed that base model (it is one server), and only the client that created it may
undeploy it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Literal

from studio.config import ServingSettings
from studio.domain.deployments import LIVE, check_deployment_transition, placement, serve_app_name
from studio.domain.jobs import parse_fine_tuned_model_name
from studio.domain.k8s_names import object_name
from studio.domain.limits import model_allowed
from studio.domain.serving_plan import DEFAULT_GPU_MEMORY_GIB, ServingRequest, plan_deployment
from studio.errors import Conflict, InvalidInput, NotFound, QuotaExceeded, StudioError
from studio.ports import BaseModelRepository, DeploymentRepository, JobNotifier, JobRepository, ModelServers
from studio.schemas.clients import Client
from studio.schemas.deployments import Deployment, DeploymentChanges, DeploymentCreate, DeploymentLayout

log = logging.getLogger(__name__)
ModelKind = Literal["base", "fine-tuned"]


def _not_found(deployment_id: str) -> NotFound:
    return NotFound(f"no deployment {deployment_id!r}", param="deployment_id", code="deployment_not_found")


def visible(deployment: Deployment, client: Client) -> bool:
    """Return True when `client` may use the deployment: its own, or a base model it is allowed."""
    if deployment.client_id == client.id:
        return True
    return deployment.kind == "base" and model_allowed(client.limits.allowed_base_models, deployment.model)


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
    ) -> None:
        """`on_change` runs after each change this service makes (this replica's routing table reload);
        `targets` are the deployment targets this server has (serve, and kubernetes when enabled)."""
        self._on_change = on_change
        self._targets = targets
        self._servers = servers
        self._deployments = deployments
        self._base_models = base_models
        self._jobs = jobs
        self._notifier = notifier
        self._settings = settings

    async def create(
        self, client: Client, body: DeploymentCreate, *, kind: ModelKind | None = None
    ) -> Deployment:
        """Record a new deployment of `body.model` (status `deploying`) and wake the runner.

        `kind` restricts the model to a base model or a fine-tune (the original design's two paths).

        Raises:
            NotFound: no such model for this client. InvalidInput: the model is not of `kind`.
            Conflict: already deployed, a target that is not available, or a LoRA fine-tune whose base
                is not deployed on Serve. QuotaExceeded: the client's `max_deployments` is reached.
        """
        if body.target not in self._targets:
            raise Conflict(
                f"the {body.target!r} target is not enabled on this server: set STUDIO_K8S__ENABLED=true and "
                "a cluster (STUDIO_K8S__KUBECONFIG or STUDIO_K8S__IN_CLUSTER), or deploy with target 'serve'",
                param="target",
                code="target_unavailable",
            )
        record = await self._plan(client, body)
        if kind is not None and record.kind != kind:
            raise InvalidInput(
                f"{body.model!r} is not a {kind} model", param="model", code="wrong_model_kind"
            )
        existing = await self._deployments.get_by_model(record.model)
        if existing is not None:
            if existing.status != "failed" or existing.client_id != client.id:
                raise Conflict(
                    f"the model {record.model!r} is already deployed ({existing.id}, {existing.status})",
                    param="model",
                    code="already_deployed",
                )
            await self._deployments.remove(existing.id)  # a redeploy replaces the failed attempt
        mine = [d for d in await self._deployments.list(client_id=client.id) if d.status != "deleting"]
        if len(mine) >= client.limits.max_deployments:
            raise QuotaExceeded(
                f"this client has {len(mine)} deployments, its limit (max_deployments)",
                code="deployment_limit",
                retry_after_s=60,
            )
        record = await self._with_layout(record, gpu_memory_gib=body.gpu_memory_gib)
        if self._servers is not None:
            await self._servers.check(record)  # 422/409/403 now, rather than a failed deployment later
        await self._deployments.insert(record)
        log.info("deployment created", extra={"deployment_id": record.id, "model": record.model})
        await self._wake()
        return record

    async def _plan(self, client: Client, body: DeploymentCreate) -> Deployment:
        now = int(time.time())
        parsed = parse_fine_tuned_model_name(body.model)
        common = {
            "id": f"dep-{uuid.uuid4().hex[:24]}",
            "client_id": client.id,
            "model": body.model,
            "target": body.target,
            "status": "deploying",
            "min_replicas": body.min_replicas,
            "max_replicas": body.max_replicas,
            "target_ongoing_requests": body.target_ongoing_requests,
            "num_cpus": body.num_cpus or self._settings.model_num_cpus,
            "num_gpus": body.num_gpus,
            "engine": body.engine,
            "created_at": now,
            "updated_at": now,
        }
        if parsed is None:
            entry = await self._base_models.get(body.model)
            if entry is None or not model_allowed(client.limits.allowed_base_models, body.model):
                raise NotFound(
                    f"the model {body.model!r} does not exist", param="model", code="model_not_found"
                )
            return Deployment(
                **common,
                kind="base",
                base_model=entry.id,
                placement="server",
                app_name=self._server_name(entry.id, client, body.target),
                model_source=entry.source,
            )
        job = await self._jobs.get(client_id=client.id, job_id=parsed[3])
        if job is None or job.fine_tuned_model != body.model or not job.output_model_path:
            raise NotFound(f"the model {body.model!r} does not exist", param="model", code="model_not_found")
        final = job.output_model_path
        method = job.hyperparameters.fine_tuning_method
        if placement(fine_tuning_method=method, target=body.target) == "server":
            lora = method == "lora"  # on Kubernetes: the base, with the adapter loaded at start
            base_entry = await self._base_models.get(job.model) if lora else None
            if lora and base_entry is None:
                raise Conflict(f"the base model {job.model!r} is no longer registered", param="model")
            return Deployment(
                **common,
                kind="fine-tuned",
                base_model=job.model,
                placement="server",
                app_name=self._server_name(body.model, client, body.target),
                model_source=base_entry.source if base_entry is not None else final,
                adapter_path=final if lora else None,
            )
        base = await self._deployments.get_by_model(job.model)
        if base is None or base.status not in LIVE or base.target != "serve" or base.placement != "server":
            state = "not deployed" if base is None else f"{base.status} ({base.target})"
            raise Conflict(
                f"{body.model!r} is a LoRA adapter of {job.model!r}, which is {state}: deploy the base model "
                f"first (POST /v1/deployments with model {job.model!r}), then this adapter attaches to it",
                param="model",
                code="base_not_deployed",
            )
        return Deployment(
            **common,
            kind="fine-tuned",
            base_model=job.model,
            placement="adapter",
            app_name=base.app_name,
            base_deployment=base.id,
            model_source=final,
            adapter_path=final,
        )

    async def _with_layout(self, record: Deployment, *, gpu_memory_gib: float | None) -> Deployment:
        """Return the record with its replicas' layout planned (tp/pp resolved into its engine options).

        Raises:
            InvalidInput: the layout does not match the GPUs, or the model does not fit them (the planner's
                message names the GiB needed per GPU, the GiB usable and the tensor-parallel size tried).
        """
        if record.placement != "server":  # an adapter runs inside its base's replicas
            return record
        entry = await self._base_models.get(record.base_model)  # a full fine-tune has its base's shape
        engine = record.engine
        memory_gib = gpu_memory_gib or DEFAULT_GPU_MEMORY_GIB
        request = ServingRequest(
            num_gpus=record.num_gpus,
            tensor_parallel_size=engine.tensor_parallel_size,
            pipeline_parallel_size=engine.pipeline_parallel_size,
            max_model_len=engine.max_model_len,
            dtype=engine.dtype,
            quantization=engine.quantization,
            kv_cache_dtype=engine.kv_cache_dtype,
            gpu_memory_utilization=engine.gpu_memory_utilization,
            gpu_memory_gib=memory_gib,
        )
        plan = plan_deployment(entry.shape if entry is not None else None, request)
        sizes = {
            "tensor_parallel_size": plan.layout.tensor_parallel_size,
            "pipeline_parallel_size": plan.layout.pipeline_parallel_size,
        }
        layout = DeploymentLayout.of(plan, num_gpus=record.num_gpus, gpu_memory_gib=memory_gib)
        return record.model_copy(update={"engine": engine.model_copy(update=sizes), "layout": layout})

    def _server_name(self, model: str, client: Client, target: str) -> str:
        """Return the Serve application's name, or the Kubernetes objects' (per client: one namespace
        may hold several clients' servers)."""
        return serve_app_name(model) if target == "serve" else object_name(model, client_id=client.id)

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

    async def delete(self, client: Client, deployment_id: str) -> Deployment:
        """Mark the client's deployment `deleting` (requests to it stop at once); return it.

        Raises:
            NotFound: not the client's deployment. Conflict: adapters still run on it.
        """
        deployment = await self._deployments.get(deployment_id)
        if deployment is None or deployment.client_id != client.id:
            raise _not_found(deployment_id)
        if deployment.status == "deleting":
            return deployment
        attached = [
            d.model for d in await self._deployments.list_attached(deployment.id) if d.status != "deleting"
        ]
        if attached:
            raise Conflict(
                f"adapters still run on {deployment.model!r}: undeploy them first ({', '.join(attached)})",
                code="adapters_attached",
            )
        check_deployment_transition(deployment.status, "deleting")
        changes = DeploymentChanges(status="deleting", updated_at=int(time.time()))
        updated = await self._deployments.update(
            deployment_id=deployment.id, expected=deployment.status, changes=changes
        )
        if updated is None:  # changed meanwhile (the runner marked it ready or failed): try once more
            return await self.delete(client, deployment_id)
        await self._wake()
        # Every ingress replica re-reads the routing table within `routing_refresh_s`: answering after
        # two of those means that once the caller has the answer, no replica routes to the model.
        await asyncio.sleep(2 * self._settings.routing_refresh_s)
        return updated

    async def delete_model(self, client: Client, model: str) -> Deployment:
        """Undeploy the client's deployment of `model` (the original design's path)."""
        deployment = await self._deployments.get_by_model(model)
        if deployment is None or deployment.client_id != client.id:
            raise NotFound(f"the model {model!r} is not deployed", param="model", code="deployment_not_found")
        return await self.delete(client, deployment.id)

    async def _wake(self) -> None:
        if self._on_change is not None:
            await self._on_change()
        if self._notifier is None:
            return
        try:
            await self._notifier.wake()
        except StudioError as exc:  # the runner also polls: it will get to it, only later
            log.warning("could not wake the tracker: %s", exc)
