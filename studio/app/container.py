"""Builds the services from settings: connects the store, cache and object store, closes them after."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

from studio.api.services import Services
from studio.config import Settings
from studio.ports import DatasetValidationRunner
from studio.schemas.clients import ClientLimits
from studio.services.auth import AuthService, RateLimiter
from studio.services.cache import ReadThroughCache
from studio.services.clients import ClientService
from studio.services.datasets import DatasetService
from studio.services.health import HealthService, Probe
from studio.services.uploads import UploadService
from studio.stores.local_files import LocalFileStore, ThreadValidationRunner
from studio.stores.mongo import MongoStore
from studio.stores.redis_cache import RedisCache
from studio.stores.s3 import S3ObjectStore

log = logging.getLogger(__name__)


@asynccontextmanager
async def open_services(
    settings: Settings,
    *,
    mongo_url: str,
    admin_key_hash: str,
    validator_factory: Callable[[LocalFileStore], DatasetValidationRunner] = ThreadValidationRunner,
) -> AsyncIterator[Services]:
    """Connect every dependency and yield the services; close the connections on exit.

    Raises:
        Unavailable: MongoDB does not answer (the start fails fast rather than serving errors).
    """
    async with AsyncExitStack() as stack:
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
            cache=ReadThroughCache(cache, ttl_s=settings.redis.config_ttl_s),
            default_limits=ClientLimits(**settings.default_limits.model_dump()),
        )
        health = HealthService(
            [
                Probe("mongodb", store.ping, required=True),
                Probe("redis", cache.ping if cache else None, required=False),
                Probe("s3", objects.ping if objects else None, required=False),
            ]
        )
        auth = AuthService(clients=clients, rate_limiter=RateLimiter(cache), admin_key_hash=admin_key_hash)
        files = LocalFileStore(settings.datasets_dir)
        datasets = DatasetService(
            repository=store.datasets,
            files=files,
            validator=validator_factory(files),
            objects=objects,
            settings=settings.datasets,
        )
        stack.push_async_callback(datasets.close)
        uploads = UploadService(
            repository=store.uploads, files=files, datasets=datasets, settings=settings.datasets
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
        yield Services(clients=clients, auth=auth, health=health, datasets=datasets, uploads=uploads)
