"""The ingress: a Serve deployment whose FastAPI app is built inside each replica at start."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from ray import serve

from studio.api.app import create_api
from studio.api.middleware import BodyLimits
from studio.api.services import Services
from studio.app.container import open_services
from studio.app.embedded import embedded_mongo_url
from studio.app.job_tracker import job_tracker, training_launcher
from studio.app.model_servers import model_servers
from studio.app.validation import RayTaskValidationRunner
from studio.backends.ray_cluster import RayClusterInfo
from studio.backends.ray_metrics import RayModelDemand
from studio.backends.ray_tracker import ActorJobNotifier, TrackerWatch
from studio.backends.serve_body_flow import install as bound_request_bodies
from studio.config import Settings
from studio.logs import configure_logging
from studio.services.jobs import Compute


@serve.ingress()
class StudioIngress:
    """One replica of the HTTP API. Settings arrive as constructor arguments, never from the environment.

    `issued_at` is when this deployment's settings were built: the tracker takes the newest.
    """

    def __init__(self, settings: Settings, admin_key_hash: str, issued_at: float = 0.0) -> None:
        self._settings = settings
        self._admin_key_hash = admin_key_hash
        self._issued_at = issued_at
        configure_logging(log_dir=settings.log_dir, level=settings.api.log_level)
        # When HAProxy (or a client) reaches this replica on its own port, read bodies at the app's
        # pace, not into memory ahead of it. Behind Serve's Python proxy this changes nothing.
        bound_request_bodies()

    def __serve_build_asgi_app__(self) -> FastAPI:
        api = self._settings.api
        return create_api(
            self._open_services,
            cors_origins=api.cors_origins,
            cors_allow_credentials=api.cors_allow_credentials,
            body_limits=BodyLimits.from_settings(self._settings),
            max_open_requests=api.max_open_requests_per_client,
            echo_request_id=False,
        )

    @asynccontextmanager
    async def _open_services(self) -> AsyncIterator[Services]:
        settings = self._settings
        if settings.store.mongo_url is not None:
            mongo_url = settings.store.mongo_url.get_secret_value()
        else:
            mongo_url = await embedded_mongo_url(settings)
        threshold = settings.datasets.sync_validation_bytes
        # Checked in the background: the tracker connects in its own time, this replica serves meanwhile.
        watch = TrackerWatch(
            lambda: job_tracker(settings, self._issued_at),
            start_args=(settings, self._issued_at),
            interval_s=settings.tracker.liveness_interval_s,
            timeout_s=settings.ray.actor_timeout_s,
        )
        compute = Compute(
            launcher=training_launcher(settings),
            cluster=RayClusterInfo(timeout_s=settings.ray.actor_timeout_s),
            notifier=ActorJobNotifier(watch),
        )
        async with (
            watch.running(),
            open_services(
                settings,
                mongo_url=mongo_url,
                admin_key_hash=self._admin_key_hash,
                validator_factory=lambda files: RayTaskValidationRunner(
                    files, task_above_bytes=threshold, models_dir=settings.models_dir
                ),
                compute=compute,
                model_servers=model_servers(settings),
                model_demand=RayModelDemand(),
            ) as services,
        ):
            yield services


StudioIngressDeployment = serve.deployment(name="StudioIngress")(StudioIngress)
