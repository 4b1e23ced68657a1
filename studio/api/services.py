"""The services the ingress puts on `app.state` at start, for routes to reach through `deps`."""

from __future__ import annotations

from dataclasses import dataclass

from studio.api.sse import StreamTimings
from studio.services.auth import AuthService
from studio.services.base_models import BaseModelService
from studio.services.clients import ClientService
from studio.services.datasets import DatasetService
from studio.services.deployments import DeploymentService
from studio.services.health import HealthService
from studio.services.idempotency import IdempotencyService
from studio.services.inference import InferenceService
from studio.services.jobs import JobService
from studio.services.model_download import ModelDownloads
from studio.services.models import ModelCatalog
from studio.services.uploads import UploadService


@dataclass(frozen=True, slots=True)
class Services:
    clients: ClientService
    auth: AuthService
    health: HealthService
    datasets: DatasetService
    uploads: UploadService
    base_models: BaseModelService
    jobs: JobService
    models: ModelCatalog
    deployments: DeploymentService
    inference: InferenceService
    streams: StreamTimings
    # `Idempotency-Key` on creates; None: the header is ignored.
    idempotency: IdempotencyService | None = None
    # `GET /v1/models/{id}/content`; None: downloads are not available.
    downloads: ModelDownloads | None = None
