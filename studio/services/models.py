"""The models a client can name: registered base models it is allowed, and its own fine-tuned models."""

from __future__ import annotations

from collections.abc import Callable

from studio.domain.jobs import parse_fine_tuned_model_name
from studio.domain.limits import model_allowed
from studio.errors import NotFound
from studio.ports import BaseModelRepository, JobRepository
from studio.schemas.base_models import BaseModelEntry
from studio.schemas.clients import Client
from studio.schemas.deployments import Deployment
from studio.schemas.jobs import Job
from studio.schemas.models import ModelDeploymentRef, ModelPublic

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
    ) -> None:
        self._base_models = base_models
        self._jobs = jobs
        self._deployed = deployed

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
        tuned = [_fine_tuned(job, job.fine_tuned_model) for job in jobs if job.fine_tuned_model]
        return [self._with_deployment(model) for model in bases + tuned]

    async def get(self, client: Client, model_id: str) -> ModelPublic:
        """Return one model the client can name.

        Raises:
            NotFound: no such model, another client's fine-tune, or a base model it is not allowed.
        """
        parsed = parse_fine_tuned_model_name(model_id)
        if parsed is not None:
            job = await self._jobs.get(client_id=client.id, job_id=parsed[3])
            if job is not None and job.fine_tuned_model == model_id:
                return self._with_deployment(_fine_tuned(job, model_id))
        elif model_allowed(client.limits.allowed_base_models, model_id):
            entry = await self._base_models.get(model_id)
            if entry is not None:
                return self._with_deployment(_base(entry))
        raise NotFound(f"the model {model_id!r} does not exist", param="model", code="model_not_found")
