"""Builds the services from settings: connects the store, cache and object store, closes them after."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

from studio.api.errors import count_errors
from studio.api.services import Services
from studio.api.sse import StreamTimings
from studio.app.builtin_models import builtin_models
from studio.backends.model_files import RayAdapterMerger, TarDirectoryArchiver
from studio.backends.model_targets import ModelServersByTarget
from studio.backends.ray_studio_metrics import ray_studio_metrics
from studio.config import Settings
from studio.domain.ids import new_id
from studio.ports import DatasetValidationRunner, ModelDemand, ModelServers, StudioMetrics, TrainingLauncher
from studio.schemas.clients import ClientLimits
from studio.services.auth import AuthService, RateLimiter
from studio.services.base_models import BaseModelService
from studio.services.cache import ReadThroughCache
from studio.services.clients import ClientService
from studio.services.datasets import DatasetService
from studio.services.deployment_runner import DeploymentRunner
from studio.services.deployments import DeploymentService
from studio.services.health import HealthService, Probe
from studio.services.idempotency import IdempotencyService
from studio.services.inference import InferenceService
from studio.services.job_journal import JobJournal
from studio.services.job_results import JobResults
from studio.services.job_retention import EventRetention
from studio.services.job_runner import JobRunner, RoundObserver
from studio.services.jobs import Compute, JobService
from studio.services.metered import MeteredFileStore
from studio.services.model_download import ModelDownloads
from studio.services.models import ModelCatalog
from studio.services.routing import RoutingTable
from studio.services.storage import StorageGuard
from studio.services.storage_sweeper import StorageSweeper
from studio.services.uploads import UploadService
from studio.stores.disk_space import LocalDiskSpace
from studio.stores.local_files import LocalFileStore, ThreadValidationRunner
from studio.stores.model_configs import LocalModelInspector
from studio.stores.mongo import MongoStore
from studio.stores.redis_cache import RedisCache
from studio.stores.s3 import S3ObjectStore

log = logging.getLogger(__name__)


def studio_metrics(settings: Settings) -> StudioMetrics | None:
    """Return this process's Ray metrics, or None when `metrics.enabled` is off."""
    return ray_studio_metrics() if settings.metrics.enabled else None


def job_journal(store: MongoStore, metrics: StudioMetrics | None) -> JobJournal:
    """Return the journal every job status change goes through (counting final statuses in `metrics`)."""
    return JobJournal(jobs=store.jobs, events=store.job_events, metrics=metrics)


@asynccontextmanager
async def open_services(
    settings: Settings,
    *,
    mongo_url: str,
    admin_key_hash: str,
    validator_factory: Callable[[LocalFileStore], DatasetValidationRunner] | None = None,
    compute: Compute | None = None,
    model_servers: ModelServersByTarget | None = None,
    model_demand: ModelDemand | None = None,
    metrics: StudioMetrics | None = None,
) -> AsyncIterator[Services]:
    """Connect every dependency and yield the services; close the connections on exit.

    `metrics`: where the figures go (default: this process's Ray metrics, unless `metrics.enabled` is off).

    Raises:
        Unavailable: MongoDB does not answer (the start fails fast rather than serving errors).
    """
    metrics = metrics if metrics is not None else studio_metrics(settings)
    async with AsyncExitStack() as stack:
        if metrics is not None:
            stack.callback(count_errors(metrics))
        store = await MongoStore.connect(mongo_url, settings.store)
        stack.push_async_callback(store.close)
        cache: RedisCache | None = None
        if settings.redis.url is not None:
            cache = RedisCache.from_settings(settings.redis.url.get_secret_value(), settings.redis)
            stack.push_async_callback(cache.close)
        objects: S3ObjectStore | None = None
        if settings.s3.bucket is not None:
            objects = await S3ObjectStore.connect(settings.s3)
            stack.push_async_callback(objects.close)

        clients = ClientService(
            repository=store.clients,
            cache=ReadThroughCache(
                cache, ttl_s=settings.redis.config_ttl_s, local_ttl_s=settings.redis.config_local_ttl_s
            ),
            default_limits=ClientLimits(**settings.default_limits.model_dump()),
        )
        health = HealthService(
            [
                Probe("mongodb", store.ping, required=True),
                Probe("redis", cache.ping if cache else None, required=False),
                Probe("s3", objects.ping if objects else None, required=False),
            ]
        )
        auth = AuthService(
            clients=clients,
            rate_limiter=RateLimiter(cache),
            admin_key_hash=admin_key_hash,
            unknown_key_ttl_s=settings.api.unknown_key_cache_s,
        )
        files = LocalFileStore(settings.datasets_dir)
        # What clients send (files, upload parts) is counted as it is written.
        client_files = MeteredFileStore(files, metrics=metrics) if metrics is not None else files
        storage = StorageGuard(
            datasets=store.datasets,
            uploads=store.uploads,
            disk=LocalDiskSpace(files_root=settings.datasets_dir, data_dir=settings.data_dir),
            settings=settings.storage,
        )
        sweeper = StorageSweeper(
            datasets=store.datasets,
            uploads=store.uploads,
            files=files,
            leases=store.leases,
            settings=settings.storage,
            holder=new_id("sweeper"),
        )
        datasets = DatasetService(
            repository=store.datasets,
            files=client_files,
            validator=(
                validator_factory(files)
                if validator_factory is not None
                else ThreadValidationRunner(files, models_dir=settings.models_dir)
            ),
            base_models=store.base_models,
            objects=objects,
            settings=settings.datasets,
            storage=storage,
            sweeper=sweeper,
        )
        stack.push_async_callback(datasets.close)
        uploads = UploadService(
            repository=store.uploads,
            files=client_files,
            datasets=datasets,
            settings=settings.datasets,
            storage=storage,
        )
        base_models = BaseModelService(repository=store.base_models, inspector=LocalModelInspector())
        await base_models.install_builtins(builtin_models())
        jobs = JobService(
            jobs=store.jobs,
            journal=job_journal(store, metrics),
            events=store.job_events,
            checkpoints=store.checkpoints,
            datasets=store.datasets,
            base_models=base_models,
            compute=compute,
            settings=settings.training,
            storage=storage,
            wandb=settings.wandb,
        )
        if model_servers is not None:
            stack.push_async_callback(model_servers.close)
        routes = RoutingTable(deployments=store.deployments, refresh_s=settings.serving.routing_refresh_s)
        await routes.start()
        stack.push_async_callback(routes.close)
        models = ModelCatalog(
            base_models=store.base_models,
            jobs=store.jobs,
            deployed=routes.lookup,
            deployments=store.deployments,
            job_files=LocalFileStore(settings.jobs_dir),
        )
        downloads = ModelDownloads(
            jobs=store.jobs,
            base_models=store.base_models,
            archiver=TarDirectoryArchiver(),
            merger=RayAdapterMerger(models_dir=settings.models_dir),
            objects=objects,
            jobs_dir=settings.jobs_dir,
        )
        deployments = DeploymentService(
            deployments=store.deployments,
            base_models=store.base_models,
            jobs=store.jobs,
            notifier=compute.notifier if compute is not None else None,
            settings=settings.serving,
            on_change=routes.refresh,
            targets=model_servers.targets if model_servers is not None else frozenset({"serve"}),
            servers=model_servers,
            cluster=compute.cluster if compute is not None else None,
        )
        inference = InferenceService(
            routes=routes,
            backend=model_servers,
            catalog=models,
            settings=settings.serving,
            demand=model_demand,
            metrics=metrics,
        )
        datasets.start_worker()
        log.info(
            "services ready",
            extra={
                "redis": cache is not None,
                "s3": objects is not None,
                "database": settings.store.database,
            },
        )
        yield Services(
            clients=clients,
            auth=auth,
            health=health,
            datasets=datasets,
            uploads=uploads,
            base_models=base_models,
            jobs=jobs,
            models=models,
            deployments=deployments,
            inference=inference,
            streams=StreamTimings(
                keepalive_s=settings.api.sse_keepalive_s, idle_timeout_s=settings.api.stream_idle_timeout_s
            ),
            idempotency=IdempotencyService(
                repository=store.idempotency,
                ttl_s=settings.api.idempotency_ttl_s,
                wait_s=settings.api.idempotency_wait_s,
            ),
            downloads=downloads,
        )


@asynccontextmanager
async def open_job_runner(
    settings: Settings,
    *,
    mongo_url: str,
    launcher: TrainingLauncher,
    on_round: RoundObserver | None = None,
    metrics: StudioMetrics | None = None,
) -> AsyncIterator[JobRunner]:
    """Connect the store and yield the tracker's `JobRunner` (not yet running); close it after.

    `metrics`: as `open_services`'.
    """
    metrics = metrics if metrics is not None else studio_metrics(settings)
    async with AsyncExitStack() as stack:
        store = await MongoStore.connect(mongo_url, settings.store)
        stack.push_async_callback(store.close)
        objects: S3ObjectStore | None = None
        if settings.s3.bucket is not None:
            objects = await S3ObjectStore.connect(settings.s3)
            stack.push_async_callback(objects.close)

        yield JobRunner(
            jobs=store.jobs,
            journal=job_journal(store, metrics),
            checkpoints=store.checkpoints,
            datasets=store.datasets,
            base_models=store.base_models,
            dataset_files=LocalFileStore(settings.datasets_dir),
            job_files=LocalFileStore(settings.jobs_dir),
            launcher=launcher,
            objects=objects,
            clients=store.clients,
            settings=settings.training,
            tracker=settings.tracker,
            models_dir=settings.models_dir,
            storage=settings.storage,
            on_round=on_round,
            metrics=metrics,
            retention=EventRetention(
                jobs=store.jobs,
                events=store.job_events,
                retention_days=settings.tracker.event_retention_days,
                interval_s=settings.tracker.retention_interval_s,
            ),
            results=JobResults(
                jobs=store.jobs,
                events=store.job_events,
                datasets=store.datasets,
                files=LocalFileStore(settings.datasets_dir),
                mirror_to_s3=objects is not None,
            ),
            wandb=settings.wandb,
            # With a bucket, every run's config names its S3 locations: a run on a node that does not
            # see this data directory takes its dataset from S3 and sends its outputs there.
            s3=settings.s3 if settings.s3.bucket is not None else None,
        )


@asynccontextmanager
async def open_deployment_runner(
    settings: Settings, *, mongo_url: str, servers: ModelServers
) -> AsyncIterator[DeploymentRunner]:
    """Connect the store and yield the tracker's `DeploymentRunner` (not yet running); close it after."""
    store = await MongoStore.connect(mongo_url, settings.store)
    try:
        yield DeploymentRunner(
            deployments=store.deployments,
            servers=servers,
            poll_interval_s=settings.tracker.poll_interval_s,
            ready_check_interval_s=settings.tracker.ready_check_interval_s,
            deploy_timeout_s=settings.serving.deploy_timeout_s,
        )
    finally:
        await store.close()
