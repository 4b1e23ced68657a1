"""The models a client can name: registered base models it is allowed, and its own fine-tuned models."""

from __future__ import annotations

from collections.abc import Callable

from studio.domain.ids import unix_now
from studio.domain.jobs import parse_fine_tuned_model_name
from studio.domain.limits import model_allowed
from studio.errors import Conflict, Forbidden, NotFound, Unavailable
from studio.ports import BaseModelRepository, DeploymentRepository, FileStore, JobRepository
from studio.schemas.base_models import BaseModelEntry
from studio.schemas.clients import Client
from studio.schemas.deployments import Deployment
from studio.schemas.jobs import Job, JobChanges
from studio.schemas.models import ModelDeleted, ModelDeploymentRef, ModelPublic

BASE_OWNER = "mini-studio"


def _base(entry: BaseModelEntry) -> ModelPublic:
    return ModelPublic(
        id=entry.id,
        created=entry.created_at,
        owned_by=BASE_OWNER,
        kind="base",
        context_length=entry.shape.context_length,
    )


def _fine_tuned(job: Job, name: str) -> ModelPublic:
    return ModelPublic(
        id=name,
        created=job.finished_at or job.created_at,
        owned_by=job.client_id,
        kind="fine-tuned",
        base_model=job.model,
        fine_tuning_job=job.id,
        fine_tuning_method=job.hyperparameters.fine_tuning_method,
    )


class ModelCatalog:
    """The models a client can name; with `deployed`, each says where it is deployed (in-memory table)."""

    def __init__(
        self,
        *,
        base_models: BaseModelRepository,
        jobs: JobRepository,
        deployed: Callable[[str], Deployment | None] | None = None,
        deployments: DeploymentRepository | None = None,
        job_files: FileStore | None = None,
    ) -> None:
        self._base_models = base_models
        self._jobs = jobs
        self._deployed = deployed
        self._deployments = deployments
        self._job_files = job_files

    def _with_deployment(self, model: ModelPublic) -> ModelPublic:
        deployment = self._deployed(model.id) if self._deployed is not None else None
        if deployment is None:
            return model
        ref = ModelDeploymentRef(
            id=deployment.id,
            status=deployment.status,
            target=deployment.target,
            placement=deployment.placement,
        )
        return model.model_copy(update={"deployment": ref})

    async def list(self, client: Client) -> list[ModelPublic]:
        """Return the base models the client may use, then its fine-tuned models (newest first)."""
        allowed = client.limits.allowed_base_models
        bases = [_base(e) for e in await self._base_models.list() if model_allowed(allowed, e.id)]
        jobs = await self._jobs.list_fine_tuned(client.id)
        tuned = [
            _fine_tuned(job, job.fine_tuned_model)
            for job in jobs
            if job.fine_tuned_model and job.model_deleted_at is None
        ]
        return [self._with_deployment(model) for model in bases + tuned]

    async def get(self, client: Client, model_id: str) -> ModelPublic:
        """Return one model the client can name.

        Raises:
            NotFound: no such model, another client's fine-tune, or a base model it is not allowed.
        """
        parsed = parse_fine_tuned_model_name(model_id)
        if parsed is not None:
            job = await self._fine_tune_job(client, model_id)
            if job is not None:
                return self._with_deployment(_fine_tuned(job, model_id))
        elif model_allowed(client.limits.allowed_base_models, model_id):
            entry = await self._base_models.get(model_id)
            if entry is not None:
                return self._with_deployment(_base(entry))
        raise NotFound(f"the model {model_id!r} does not exist", param="model", code="model_not_found")

    async def _fine_tune_job(self, client: Client, model_id: str) -> Job | None:
        """Return the job that made the client's fine-tuned model `model_id` (None: no such model)."""
        parsed = parse_fine_tuned_model_name(model_id)
        if parsed is None:
            return None
        job = await self._jobs.get(client_id=client.id, job_id=parsed[3])
        if job is None or job.fine_tuned_model != model_id or job.model_deleted_at is not None:
            return None
        return job

    async def delete(self, client: Client, model_id: str) -> ModelDeleted:
        """Delete the client's fine-tuned model: its weights and checkpoints on disk; it no longer lists,
        cannot be deployed, and its job keeps its record (`fine_tuned_model` names what it made).

        Raises:
            NotFound: no such fine-tuned model of this client. Forbidden: a base model (never deleted
            through the API). Conflict: the model is deployed (undeploy it first; its deployment record
            holds the name until it is gone). Unavailable: this Mini Studio cannot delete models.
        """
        if self._deployments is None or self._job_files is None:
            raise Unavailable("deleting models is not available here")
        job = await self._fine_tune_job(client, model_id)
        if job is None:
            if parse_fine_tuned_model_name(model_id) is None and (await self._base_models.get(model_id)):
                raise Forbidden(
                    f"{model_id!r} is a base model; only fine-tuned models can be deleted",
                    param="model",
                    code="model_not_deletable",
                )
            raise NotFound(f"the model {model_id!r} does not exist", param="model", code="model_not_found")
        deployment = await self._deployments.get_by_model(model_id)
        if deployment is not None:
            raise Conflict(
                f"the model {model_id!r} is deployed ({deployment.id}, {deployment.status}): undeploy it "
                f"first (DELETE /v1/deployments/{deployment.id})",
                param="model",
                code="model_deployed",
            )
        # `result_files` written back as read: a job stored by an earlier version had the weights' path
        # there, which reading it moved to `output_model_path`.
        changes = JobChanges(
            model_deleted_at=unix_now(), output_model_path=None, result_files=job.result_files
        )
        deleted = await self._jobs.update(job_id=job.id, expected=job.status, changes=changes)
        if deleted is None:
            raise Conflict(f"the job of {model_id!r} changed meanwhile; try again", param="model")
        # The job's directory: its configuration, checkpoints and final weights.
        await self._job_files.remove(job.id)
        return ModelDeleted(id=model_id)
