"""Turns a deployment request into the record to store: what the model is, where and how it runs.

`DeploymentPlanner.plan` resolves the model (a base model, a fine-tune and its placement), `with_layout`
splits a replica over its GPUs (the memory planner of `domain/serving_plan.py`), and `check_nodes`
refuses a replica whose workers must share one node when no node of the cluster has their GPUs (it
would otherwise wait in `deploying` until the deploy timeout).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from studio.config import ServingSettings
from studio.domain.deployments import LIVE, placement, serve_app_name
from studio.domain.ids import new_id
from studio.domain.jobs import parse_fine_tuned_model_name
from studio.domain.k8s_names import object_name
from studio.domain.limits import model_allowed
from studio.domain.serving_plan import DEFAULT_GPU_MEMORY_GIB, ServingRequest, plan_deployment
from studio.errors import Conflict, NotFound, Unavailable
from studio.ports import BaseModelRepository, ClusterInfo, DeploymentRepository, JobRepository
from studio.schemas.deployments import Deployment, DeploymentCreate, DeploymentLayout

log = logging.getLogger(__name__)


def _model_not_found(model: str) -> NotFound:
    return NotFound(f"the model {model!r} does not exist", param="model", code="model_not_found")


class DeploymentPlanner:
    def __init__(
        self,
        *,
        deployments: DeploymentRepository,
        base_models: BaseModelRepository,
        jobs: JobRepository,
        settings: ServingSettings,
        cluster: ClusterInfo | None = None,
    ) -> None:
        """`cluster`: the Ray cluster's nodes, for `check_nodes` (None: not checked, no cluster here)."""
        self._deployments = deployments
        self._base_models = base_models
        self._jobs = jobs
        self._settings = settings
        self._cluster = cluster

    async def plan(self, *, owner: str, allowed: list[str] | None, body: DeploymentCreate) -> Deployment:
        """Return the record of `body.model` deployed for `owner` (a client id, or the admin holder).

        A base model's record is held by `owner`. `allowed`: the owner's allowed base-model patterns
        (None: every registered base, the admin's).

        Raises:
            NotFound: no such model for this owner. Conflict: a LoRA fine-tune whose base is not live on
                Serve, or whose base model is no longer registered.
        """
        now = int(time.time())
        parsed = parse_fine_tuned_model_name(body.model)
        common: dict[str, Any] = {
            "id": new_id("dep"),
            "client_id": owner,
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
            if entry is None or (allowed is not None and not model_allowed(allowed, body.model)):
                raise _model_not_found(body.model)
            return Deployment(
                **common,
                kind="base",
                base_model=entry.id,
                placement="server",
                app_name=self._server_name(entry.id, owner, body.target),
                model_source=entry.source,
                holders=[owner],
            )
        job = await self._jobs.get(client_id=owner, job_id=parsed[3])
        if job is None or job.fine_tuned_model != body.model or not job.output_model_path:
            raise _model_not_found(body.model)
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
                app_name=self._server_name(body.model, owner, body.target),
                model_source=base_entry.source if base_entry is not None else final,
                adapter_path=final if lora else None,
                model_uri=None if lora else job.output_model_uri,
                adapter_uri=job.output_model_uri if lora else None,
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
        if base.engine.max_adapters == 0:
            raise Conflict(
                f"{body.model!r} is a LoRA adapter of {job.model!r}, whose deployment takes no adapters "
                f"(engine.max_adapters 0, an engine without LoRA): it must be undeployed and deployed again "
                f"with engine.max_adapters of 1 or more for adapters to attach",
                param="model",
                code="base_without_adapters",
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
            adapter_uri=job.output_model_uri,
        )

    async def with_layout(self, record: Deployment, *, gpu_memory_gib: float | None) -> Deployment:
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

    async def check_nodes(self, record: Deployment) -> None:
        """Refuse a Serve replica of several GPU workers that must share one node (tensor parallel only:
        a STRICT_PACK placement group of one GPU bundle per worker) when no node has that many GPUs, nor
        the largest node the autoscaler can add (`scalable_node_gpus`). Pipeline stages (PACK) may span
        nodes and are not refused here. Skipped, and logged, when the cluster does not answer.

        Raises:
            Conflict: (`no_node_fits`) naming the GPUs one replica needs on one node and the most any node
                has.
        """
        engine = record.engine
        workers = (engine.tensor_parallel_size or 1) * (engine.pipeline_parallel_size or 1)
        strict_pack = (engine.pipeline_parallel_size or 1) == 1 and workers > 1
        if self._cluster is None or record.target != "serve" or record.num_gpus <= 1 or not strict_pack:
            return
        try:
            cluster = await self._cluster.resources()
        except Unavailable as exc:  # the runner's deploy timeout still bounds it
            log.warning("cluster not read; the node check is skipped: %s", exc)
            return
        most = max(cluster.largest_node_gpus, self._settings.scalable_node_gpus)
        if record.num_gpus <= most:
            return
        raise Conflict(
            f"a replica of this deployment needs {record.num_gpus:g} GPUs on one node (tensor_parallel_size "
            f"{engine.tensor_parallel_size}: its workers share one node, a STRICT_PACK placement group of "
            f"one GPU bundle each), but the most GPUs any node of the cluster has is "
            f"{cluster.largest_node_gpus:g} ({cluster.nodes} nodes, {cluster.gpus_total:g} GPUs in all; "
            f"the largest node the autoscaler can add: {self._settings.scalable_node_gpus:g}, "
            "STUDIO_SERVING__SCALABLE_NODE_GPUS). Ask for fewer GPUs per replica, or split it into "
            "pipeline_parallel_size stages that may sit on different nodes",
            param="num_gpus",
            code="no_node_fits",
        )

    def _server_name(self, model: str, owner: str, target: str) -> str:
        """Return the Serve application's name, or the Kubernetes objects' (per owner: one namespace
        may hold several clients' servers)."""
        return serve_app_name(model) if target == "serve" else object_name(model, client_id=owner)
