"""MongoDB through PyMongo's async API. The same code talks to a real MongoDB and to the embedded server."""

from __future__ import annotations

import logging

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, IndexModel, monitoring
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.write_concern import WriteConcern

from studio.config import StoreSettings
from studio.errors import StudioError
from studio.logs import DB_LOGGER
from studio.stores.errors import mongo_errors
from studio.stores.mongo_clients import MongoClientRepository
from studio.stores.mongo_datasets import MongoDatasetRepository, MongoUploadRepository
from studio.stores.mongo_deployments import MongoDeploymentRepository
from studio.stores.mongo_idempotency import MongoIdempotencyRepository
from studio.stores.mongo_jobs import MongoCheckpointRepository, MongoJobEventRepository, MongoJobRepository
from studio.stores.mongo_leases import MongoLeaseRepository
from studio.stores.mongo_models import MongoBaseModelRepository

db_log = logging.getLogger(DB_LOGGER)

Document = dict[str, object]

# Indexes created at start; `_id` is each document's own id. Every tenant-owned collection is
# indexed by client first, since every query filters by it.
INDEXES: dict[str, list[IndexModel]] = {
    "client_config": [IndexModel([("created_at", ASCENDING)])],
    "api_keys": [
        IndexModel([("key_hash", ASCENDING)], unique=True),
        IndexModel([("client_id", ASCENDING), ("created_at", ASCENDING)]),
    ],
    "fine_tuning_datasets": [
        IndexModel([("client_id", ASCENDING), ("created_at", ASCENDING)]),
        # One dataset per content and client: a second upload of the same bytes returns the first.
        IndexModel([("client_id", ASCENDING), ("sha256", ASCENDING)], unique=True),
        IndexModel([("status", ASCENDING), ("lease_until", ASCENDING)]),
        IndexModel([("s3.state", ASCENDING), ("s3.next_attempt_at", ASCENDING)]),
    ],
    "uploads": [
        IndexModel([("client_id", ASCENDING), ("created_at", ASCENDING)]),
        # A client's uploads in progress (its storage quota), and the sweep of expired ones.
        IndexModel([("client_id", ASCENDING), ("status", ASCENDING), ("expires_at", ASCENDING)]),
        IndexModel([("expires_at", ASCENDING)]),
    ],
    "fine_tuning_jobs": [
        IndexModel([("client_id", ASCENDING), ("created_at", ASCENDING)]),
        # The retention sweep: finished jobs in the order they finished.
        IndexModel([("finished_at", ASCENDING), ("_id", ASCENDING)]),
        IndexModel([("status", ASCENDING), ("created_at", ASCENDING)]),
        # The queue: which clients wait (distinct), each client's oldest waiting job, the launched ones.
        IndexModel([("status", ASCENDING), ("launched", ASCENDING), ("client_id", ASCENDING)]),
        IndexModel(
            [
                ("client_id", ASCENDING),
                ("status", ASCENDING),
                ("launched", ASCENDING),
                ("priority", DESCENDING),
                ("created_ns", ASCENDING),
            ]
        ),
        IndexModel([("stop_pending", ASCENDING)]),
    ],
    # One record per client and key (`_id` is `<client>:<key>`); MongoDB deletes them at `expires_at`.
    "idempotency_keys": [
        IndexModel([("client_id", ASCENDING), ("key", ASCENDING)], unique=True),
        IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=0),
    ],
    "fine_tuning_job_events": [IndexModel([("job_id", ASCENDING), ("seq", ASCENDING)])],
    "fine_tuning_job_checkpoints": [IndexModel([("job_id", ASCENDING), ("step", ASCENDING)])],
    # One deployment per model name: the name is what inference requests route by.
    "model_routing": [
        IndexModel([("model", ASCENDING)], unique=True, name="model_unique"),
        IndexModel([("client_id", ASCENDING), ("created_at", ASCENDING)]),
        IndexModel([("base_deployment", ASCENDING)]),
        IndexModel([("kind", ASCENDING), ("created_at", ASCENDING)]),
        IndexModel([("status", ASCENDING), ("created_at", ASCENDING)]),
    ],
}


class CommandTimer(monitoring.CommandListener):
    """Logs every database command with its duration at DEBUG level."""

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        pass

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        self._log(event, ok=True)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self._log(event, ok=False)

    @staticmethod
    def _log(event: monitoring.CommandSucceededEvent | monitoring.CommandFailedEvent, *, ok: bool) -> None:
        if db_log.isEnabledFor(logging.DEBUG):
            db_log.debug(
                "db %s%s",
                event.command_name,
                "" if ok else " failed",
                extra={
                    "db_command": event.command_name,
                    "db": event.database_name,
                    "duration_ms": round(event.duration_micros / 1000, 3),
                    "ok": ok,
                },
            )


class MongoStore:
    """The `DocumentStore` backed by MongoDB. Writes of lasting state use a journaled write concern."""

    def __init__(self, client: AsyncMongoClient[Document], database: AsyncDatabase[Document]) -> None:
        self._client = client
        self._db = database
        self._clients = MongoClientRepository(database)
        self._datasets = MongoDatasetRepository(database)
        self._uploads = MongoUploadRepository(database)
        self._jobs = MongoJobRepository(database)
        self._job_events = MongoJobEventRepository(database)
        self._checkpoints = MongoCheckpointRepository(database)
        self._base_models = MongoBaseModelRepository(database)
        self._deployments = MongoDeploymentRepository(database)
        self._leases = MongoLeaseRepository(database)
        self._idempotency = MongoIdempotencyRepository(database)

    @classmethod
    async def connect(cls, url: str, settings: StoreSettings) -> MongoStore:
        """Connect, check the server answers, create indexes; return the store.

        Raises:
            Unavailable: the server did not answer within the server-selection timeout.
        """
        client: AsyncMongoClient[Document] = AsyncMongoClient(
            url,
            serverSelectionTimeoutMS=int(settings.server_selection_timeout_s * 1000),
            connectTimeoutMS=int(settings.server_selection_timeout_s * 1000),
            timeoutMS=int(settings.operation_timeout_s * 1000),
            event_listeners=[CommandTimer()],
            appname="mini-studio",
        )
        database = client.get_database(settings.database, write_concern=WriteConcern(w=1, j=True))
        store = cls(client, database)
        try:
            with mongo_errors():
                await database.command("ping")
                for name, indexes in INDEXES.items():
                    await database[name].create_indexes(indexes)
                await store._jobs.mark_launch_state()
        except StudioError:
            await client.close()
            raise
        return store

    @property
    def clients(self) -> MongoClientRepository:
        return self._clients

    @property
    def datasets(self) -> MongoDatasetRepository:
        return self._datasets

    @property
    def uploads(self) -> MongoUploadRepository:
        return self._uploads

    @property
    def jobs(self) -> MongoJobRepository:
        return self._jobs

    @property
    def job_events(self) -> MongoJobEventRepository:
        return self._job_events

    @property
    def checkpoints(self) -> MongoCheckpointRepository:
        return self._checkpoints

    @property
    def base_models(self) -> MongoBaseModelRepository:
        return self._base_models

    @property
    def deployments(self) -> MongoDeploymentRepository:
        return self._deployments

    @property
    def leases(self) -> MongoLeaseRepository:
        return self._leases

    @property
    def idempotency(self) -> MongoIdempotencyRepository:
        return self._idempotency

    async def ping(self) -> None:
        with mongo_errors():
            await self._db.command("ping")

    async def close(self) -> None:
        await self._client.close()
