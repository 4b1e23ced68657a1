"""The document store as one object: every repository over one database connection."""

from __future__ import annotations

from typing import Protocol

from studio.ports.clients import ClientRepository
from studio.ports.datasets import DatasetRepository, UploadRepository
from studio.ports.jobs import BaseModelRepository, CheckpointRepository, JobEventRepository, JobRepository


class DocumentStore(Protocol):
    """The database: repositories plus lifecycle."""

    @property
    def clients(self) -> ClientRepository: ...

    @property
    def datasets(self) -> DatasetRepository: ...

    @property
    def uploads(self) -> UploadRepository: ...

    @property
    def jobs(self) -> JobRepository: ...

    @property
    def job_events(self) -> JobEventRepository: ...

    @property
    def checkpoints(self) -> CheckpointRepository: ...

    @property
    def base_models(self) -> BaseModelRepository: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...
