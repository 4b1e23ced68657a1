"""Dependencies as `Annotated` aliases: services from `app.state`, the caller, the admin check.

Every dependency is `async def`: FastAPI runs a plain `def` dependency in its thread pool, a hop to a
worker thread and back on every request for what is an attribute read (three per inference request
cost ~12% of the ingress's CPU at 32 requests in flight: `docs/research/profiles/`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from studio.api.auth_gate import ADMIN_STATE, PRINCIPAL_STATE
from studio.api.services import Services
from studio.api.sse import StreamTimings
from studio.errors import Unavailable
from studio.logs import client_id_var
from studio.schemas.clients import Principal
from studio.services.base_models import BaseModelService
from studio.services.clients import ClientService
from studio.services.datasets import DatasetService
from studio.services.deployments import DeploymentService
from studio.services.health import HealthService
from studio.services.inference import InferenceService
from studio.services.jobs import JobService
from studio.services.models import ModelCatalog
from studio.services.uploads import UploadService

bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <API key>")
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]


async def get_services(request: Request) -> Services:
    services: Services | None = getattr(request.app.state, "services", None)
    if services is None:
        raise Unavailable("Mini Studio is starting", retry_after_s=2)
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_clients(services: ServicesDep) -> ClientService:
    return services.clients


async def get_health(services: ServicesDep) -> HealthService:
    return services.health


async def get_datasets(services: ServicesDep) -> DatasetService:
    return services.datasets


async def get_uploads(services: ServicesDep) -> UploadService:
    return services.uploads


async def get_jobs(services: ServicesDep) -> JobService:
    return services.jobs


async def get_models(services: ServicesDep) -> ModelCatalog:
    return services.models


async def get_base_models(services: ServicesDep) -> BaseModelService:
    return services.base_models


async def get_deployments(services: ServicesDep) -> DeploymentService:
    return services.deployments


async def get_inference(services: ServicesDep) -> InferenceService:
    return services.inference


async def get_streams(services: ServicesDep) -> StreamTimings:
    return services.streams


ClientsDep = Annotated[ClientService, Depends(get_clients)]
HealthDep = Annotated[HealthService, Depends(get_health)]
DatasetsDep = Annotated[DatasetService, Depends(get_datasets)]
UploadsDep = Annotated[UploadService, Depends(get_uploads)]
JobsDep = Annotated[JobService, Depends(get_jobs)]
BaseModelsDep = Annotated[BaseModelService, Depends(get_base_models)]
ModelsDep = Annotated[ModelCatalog, Depends(get_models)]
DeploymentsDep = Annotated[DeploymentService, Depends(get_deployments)]
InferenceDep = Annotated[InferenceService, Depends(get_inference)]
StreamsDep = Annotated[StreamTimings, Depends(get_streams)]


def _authorization(credentials: HTTPAuthorizationCredentials | None) -> str | None:
    return None if credentials is None else f"{credentials.scheme} {credentials.credentials}"


async def current_principal(request: Request, services: ServicesDep, credentials: BearerDep) -> Principal:
    """Return the caller: the one the auth gate found, or (in an app without the gate) checked here."""
    principal = getattr(request.state, PRINCIPAL_STATE, None)
    if not isinstance(principal, Principal):
        principal = await services.auth.authenticate(_authorization(credentials))
    # The access log line is written by middleware outside this task's context: leave the id in scope state.
    request.state.client_id = principal.client.id
    client_id_var.set(principal.client.id)
    return principal


async def require_admin(request: Request, services: ServicesDep, credentials: BearerDep) -> None:
    """Check the admin key, unless the auth gate already did."""
    if getattr(request.state, ADMIN_STATE, None) is not True:
        services.auth.require_admin(_authorization(credentials))
    request.state.client_id = "admin"
    client_id_var.set("admin")


PrincipalDep = Annotated[Principal, Depends(current_principal)]
AdminDep = Depends(require_admin)
