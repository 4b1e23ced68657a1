"""Metrics taken where they happen, as decorators of what the services already use: a job journal
that counts jobs reaching a final status, and a file store that counts the bytes clients send.

Wired by `app/container.py` in place of the plain ones, so neither `JobService`, `JobRunner` nor the
dataset and upload services need to know about metrics.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

from studio.domain.jobs import JobStatus
from studio.ports import FileStore, JobEventRepository, JobRepository, StudioMetrics, WrittenFile
from studio.schemas.jobs import EventLevel, Job, JobChanges
from studio.services.job_journal import JobJournal

FINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})


class MeteredJobJournal(JobJournal):
    """A `JobJournal` that counts each job reaching a final status, once: only the writer whose
    conditional update won counts it (the API's cancel, the tracker's success or failure)."""

    def __init__(self, *, jobs: JobRepository, events: JobEventRepository, metrics: StudioMetrics) -> None:
        super().__init__(jobs=jobs, events=events)
        self._metrics = metrics

    async def transition(
        self,
        job: Job,
        target: JobStatus,
        changes: JobChanges | None = None,
        *,
        message: str | None = None,
        level: EventLevel = "info",
    ) -> Job | None:
        updated = await super().transition(job, target, changes, message=message, level=level)
        if updated is not None and target in FINAL_STATUSES:
            self._metrics.job_ended(status=target, model=job.model, client_id=job.client_id)
        return updated


class MeteredFileStore:
    """A `FileStore` that counts the bytes of every file written through it (paths begin with the
    client id: `<client>/<file>/...`, `<client>/uploads/<upload>/<part>`)."""

    def __init__(self, files: FileStore, *, metrics: StudioMetrics) -> None:
        self._files = files
        self._metrics = metrics

    async def write(self, relative_path: str, chunks: AsyncIterator[bytes], *, max_bytes: int) -> WrittenFile:
        written = await self._files.write(relative_path, chunks, max_bytes=max_bytes)
        client_id = relative_path.split("/", 1)[0]
        self._metrics.uploaded_bytes(client_id=client_id, size=written.bytes)
        return written

    async def concat(self, parts: list[str], relative_path: str) -> WrittenFile:
        # The parts were counted as they arrived.
        return await self._files.concat(parts, relative_path)

    async def move(self, source: str, target: str) -> None:
        await self._files.move(source, target)

    def read(
        self, relative_path: str, *, offset: int = 0, chunk_bytes: int = 1 << 20
    ) -> AsyncIterator[bytes]:
        return self._files.read(relative_path, offset=offset, chunk_bytes=chunk_bytes)

    async def remove(self, relative_path: str) -> None:
        await self._files.remove(relative_path)

    def absolute(self, relative_path: str) -> Path:
        return self._files.absolute(relative_path)

    async def children(self, relative_path: str) -> list[str]:
        return await self._files.children(relative_path)

    async def last_modified(self, relative_path: str) -> float | None:
        return await self._files.last_modified(relative_path)
