"""Admission of writes: the disk guard (507 for everyone) and each client's storage quota (403).

Usage is recomputed from the store on every admission (an aggregate on the client's index), never kept
in a counter, so it is right after any crash. Two writes of one client admitted at the same moment can
both pass a quota they pass together: the overshoot is bounded by the client's open-request cap, and
the next write sees it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from studio.config import StorageSettings
from studio.domain.ids import unix_now
from studio.domain.limits import (
    StorageQuota,
    StorageUsage,
    bytes_left,
    check_free_space,
    check_storage_quota,
    free_space_floor,
)
from studio.errors import InsufficientStorage
from studio.ports import DatasetRepository, DiskSpace, UploadRepository
from studio.schemas.clients import ClientLimits

log = logging.getLogger(__name__)

# A body streaming in checks the disk again after this many bytes (a statvfs call).
DISK_RECHECK_BYTES = 64 << 20


def quota_of(limits: ClientLimits) -> StorageQuota:
    """Return the storage part of a client's limits."""
    return StorageQuota(
        max_stored_bytes=limits.max_stored_bytes,
        max_files=limits.max_files,
        max_uploads_in_progress=limits.max_uploads_in_progress,
    )


@dataclass(frozen=True, slots=True)
class Admission:
    """A write admitted for a client: its quota and what it held when admitted."""

    quota: StorageQuota
    usage: StorageUsage
    param: str


class StorageGuard:
    """Says whether a write may start, and meters the bytes of one whose size is not known up front."""

    def __init__(
        self,
        *,
        datasets: DatasetRepository,
        uploads: UploadRepository,
        disk: DiskSpace,
        settings: StorageSettings,
    ) -> None:
        self._datasets = datasets
        self._uploads = uploads
        self._disk = disk
        self._settings = settings

    async def check_disk(self, *, incoming_bytes: int = 0) -> None:
        """Refuse a write while a data disk is under its floor (or would be, after `incoming_bytes`).

        Raises:
            InsufficientStorage: 507 with Retry-After.
        """
        for disk in await self._disk.usage():
            floor = free_space_floor(
                total_bytes=disk.total_bytes,
                min_free_bytes=self._settings.min_free_bytes,
                min_free_percent=self._settings.min_free_percent,
            )
            try:
                check_free_space(
                    free_bytes=disk.free_bytes,
                    incoming_bytes=incoming_bytes if disk.holds_files else 0,
                    floor_bytes=floor,
                    retry_after_s=self._settings.retry_after_s,
                )
            except InsufficientStorage:
                log.warning(
                    "disk guard: %s has %d bytes free, under its floor of %d; writes refused",
                    disk.path,
                    disk.free_bytes,
                    floor,
                )
                raise

    async def usage(self, client_id: str) -> StorageUsage:
        """Return what the client holds now, counted from the store."""
        (file_bytes, files), (uploads, upload_bytes) = await asyncio.gather(
            self._datasets.usage(client_id), self._uploads.usage(client_id=client_id, now=unix_now())
        )
        return StorageUsage(file_bytes=file_bytes, files=files, uploads=uploads, upload_bytes=upload_bytes)

    async def admit_file(self, *, client_id: str, limits: ClientLimits, at_least_bytes: int = 0) -> Admission:
        """Admit a new file of at least `at_least_bytes` (0: unknown until it arrives).

        Raises:
            InsufficientStorage: the disk guard. StorageQuotaExceeded: `max_files`, or `max_stored_bytes`
                already reached or passed by the declared size.
        """
        await self.check_disk(incoming_bytes=at_least_bytes)
        admission = Admission(quota=quota_of(limits), usage=await self.usage(client_id), param="file")
        check_storage_quota(
            admission.quota, admission.usage, add_bytes=max(1, at_least_bytes), add_files=1, param="file"
        )
        return admission

    async def confirm_file(self, *, client_id: str, limits: ClientLimits, file_bytes: int) -> None:
        """Check the quota once more for a file now written, just before it is recorded.

        Raises:
            StorageQuotaExceeded: another write of the client got there first.
        """
        usage = await self.usage(client_id)
        check_storage_quota(quota_of(limits), usage, add_bytes=file_bytes, add_files=1, param="file")

    async def admit_upload(self, *, client_id: str, limits: ClientLimits, declared_bytes: int) -> None:
        """Admit an upload in parts of `declared_bytes`, which holds a file's place and those bytes.

        Raises:
            InsufficientStorage. StorageQuotaExceeded: `max_uploads_in_progress`, `max_files` or
                `max_stored_bytes`.
        """
        await self.check_disk(incoming_bytes=declared_bytes)
        check_storage_quota(
            quota_of(limits),
            await self.usage(client_id),
            add_bytes=declared_bytes,
            add_files=1,
            add_uploads=1,
            param="bytes",
        )

    async def metered(self, chunks: AsyncIterator[bytes], admission: Admission) -> AsyncIterator[bytes]:
        """Pass `chunks` on while they fit the client's quota and the disk stays above its floor.

        Raises:
            StorageQuotaExceeded: as soon as the bytes pass what the client may still store.
            InsufficientStorage: the disk fell under its floor while the body streamed.
        """
        allowed = bytes_left(admission.quota, admission.usage)
        received = 0
        next_disk_check = DISK_RECHECK_BYTES
        async for chunk in chunks:
            received += len(chunk)
            if received > allowed:
                check_storage_quota(
                    admission.quota, admission.usage, add_bytes=received, param=admission.param
                )
            if received >= next_disk_check:
                await self.check_disk()
                next_disk_check = received + DISK_RECHECK_BYTES
            yield chunk
