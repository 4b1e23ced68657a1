"""OpenAI's Uploads API: a big file sent in parts, each retried alone, then assembled into a dataset.

An upload holds a file's place and its declared bytes in the client's storage quota from its creation to
its end. Its parts may hold the declared bytes plus one part (room for a part sent again after a lost
answer), in `max_upload_parts` parts at most; both caps are part of the one conditional write that
records a part, so concurrent parts cannot pass them together.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from studio.config import DatasetSettings
from studio.domain.files import check_filename
from studio.domain.ids import new_id, unix_now
from studio.errors import Conflict, InvalidInput, NotFound, PayloadTooLarge
from studio.ports import FileStore, UploadRepository
from studio.schemas.clients import ClientLimits
from studio.schemas.datasets import Dataset, Upload, UploadComplete, UploadCreate, UploadPart
from studio.services.datasets import DatasetService, StagedFile
from studio.services.storage import StorageGuard
from studio.services.storage_sweeper import parts_dir


def _parts_dir(upload: Upload) -> str:
    return parts_dir(upload.client_id, upload.id)


async def _capped(
    chunks: AsyncIterator[bytes], *, allowed: int, error: PayloadTooLarge
) -> AsyncIterator[bytes]:
    """Pass `chunks` on until they pass `allowed` bytes, then raise `error`."""
    received = 0
    async for chunk in chunks:
        received += len(chunk)
        if received > allowed:
            raise error
        yield chunk


class UploadService:
    def __init__(
        self,
        *,
        repository: UploadRepository,
        files: FileStore,
        datasets: DatasetService,
        settings: DatasetSettings,
        storage: StorageGuard,
    ) -> None:
        self._storage = storage
        self._repo = repository
        self._files = files
        self._datasets = datasets
        self._settings = settings

    async def create(self, *, client_id: str, data: UploadCreate, limits: ClientLimits) -> Upload:
        """Open an upload of `data.bytes` bytes, to be sent in parts.

        Raises:
            InvalidInput: bad file name. PayloadTooLarge: over the upload limit.
            StorageQuotaExceeded: past the client's uploads in progress, files or bytes.
            InsufficientStorage: the disk guard.
        """
        check_filename(data.filename)
        if data.bytes > self._settings.max_upload_bytes:
            raise PayloadTooLarge(
                f"uploads are limited to {self._settings.max_upload_bytes} bytes",
                param="bytes",
                code="file_too_large",
            )
        await self._storage.admit_upload(client_id=client_id, limits=limits, declared_bytes=data.bytes)
        now = unix_now()
        upload = Upload(
            id=new_id("upload"),
            client_id=client_id,
            filename=data.filename,
            purpose=data.purpose,
            bytes=data.bytes,
            mime_type=data.mime_type,
            status="pending",
            created_at=now,
            expires_at=now + self._settings.upload_expiry_s,
        )
        await self._repo.insert(upload)
        return upload

    async def get(self, *, client_id: str, upload_id: str) -> Upload:
        upload = await self._repo.get(client_id=client_id, upload_id=upload_id)
        if upload is None:
            raise NotFound(f"no upload {upload_id!r}", param="upload_id", code="upload_not_found")
        return upload

    async def _pending(self, *, client_id: str, upload_id: str) -> Upload:
        upload = await self.get(client_id=client_id, upload_id=upload_id)
        if upload.status == "pending" and upload.expires_at < unix_now():
            await self._repo.finish(client_id=client_id, upload_id=upload_id, status="expired", file_id=None)
            await self._files.remove(_parts_dir(upload))
            upload = upload.model_copy(update={"status": "expired"})
        if upload.status != "pending":
            raise Conflict(
                f"upload {upload_id!r} is {upload.status}", param="upload_id", code="upload_not_pending"
            )
        return upload

    async def add_part(
        self, *, client_id: str, upload_id: str, chunks: AsyncIterator[bytes], at_least_bytes: int = 0
    ) -> UploadPart:
        """Store one part. A part that breaks off is simply absent: send it again.

        `at_least_bytes` (from the declared length, 0 if unknown) refuses a part that cannot fit before
        its first byte is read.

        Raises:
            NotFound, Conflict (not pending), PayloadTooLarge (over the part limit, or the parts would
            pass the declared bytes plus one part), InvalidInput (`too_many_parts`), InsufficientStorage.
        """
        upload = await self._pending(client_id=client_id, upload_id=upload_id)
        max_parts = self._settings.max_upload_parts
        max_total = upload.bytes + self._settings.max_part_bytes
        held = sum(part.bytes for part in upload.parts)
        if len(upload.parts) >= max_parts:
            raise self._too_many_parts(upload)
        if held + at_least_bytes > max_total:
            raise self._parts_too_large(upload, max_total)
        await self._storage.check_disk()
        part_id = new_id("part")
        relative = f"{_parts_dir(upload)}/{part_id}"
        written = await self._files.write(
            relative,
            _capped(chunks, allowed=max_total - held, error=self._parts_too_large(upload, max_total)),
            max_bytes=self._settings.max_part_bytes,
        )
        part = UploadPart(id=part_id, upload_id=upload.id, bytes=written.bytes, created_at=unix_now())
        added = await self._repo.add_part(
            client_id=client_id,
            upload_id=upload_id,
            part=part,
            max_parts=max_parts,
            max_total_bytes=max_total,
        )
        if added is None:
            await self._files.remove(relative)
            # Refused by the conditional write: say which condition a concurrent writer broke.
            now = await self.get(client_id=client_id, upload_id=upload_id)
            if now.status != "pending":
                raise Conflict(
                    f"upload {upload_id!r} is no longer pending", param="upload_id", code="upload_not_pending"
                )
            if len(now.parts) >= max_parts:
                raise self._too_many_parts(now)
            raise self._parts_too_large(now, max_total)
        return part

    def _too_many_parts(self, upload: Upload) -> InvalidInput:
        return InvalidInput(
            f"upload {upload.id!r} already holds {len(upload.parts)} parts, the most one upload may hold "
            f"(max_upload_parts {self._settings.max_upload_parts}); complete it or send bigger parts",
            param="data",
            code="too_many_parts",
        )

    def _parts_too_large(self, upload: Upload, max_total: int) -> PayloadTooLarge:
        held = sum(part.bytes for part in upload.parts)
        return PayloadTooLarge(
            f"the parts of upload {upload.id!r} would pass {max_total} bytes (its declared {upload.bytes} "
            f"plus one part of {self._settings.max_part_bytes}); it holds {held}. Complete it with the "
            "parts you have, or cancel it",
            param="data",
            code="upload_parts_too_large",
        )

    async def complete(
        self, *, client_id: str, upload_id: str, data: UploadComplete
    ) -> tuple[Upload, Dataset]:
        """Assemble the listed parts, in order, into a dataset; return the completed upload and it.

        Raises:
            InvalidInput: an unknown part id, a total other than the declared bytes, an md5 mismatch.
        """
        upload = await self._pending(client_id=client_id, upload_id=upload_id)
        parts = {part.id: part for part in upload.parts}
        unknown = [part_id for part_id in data.part_ids if part_id not in parts]
        if unknown:
            raise InvalidInput(f"unknown part id {unknown[0]!r}", param="part_ids", code="unknown_part")
        if len(set(data.part_ids)) != len(data.part_ids):
            raise InvalidInput("a part id is listed twice", param="part_ids", code="duplicate_part")
        total = sum(parts[part_id].bytes for part_id in data.part_ids)
        if total != upload.bytes:
            raise InvalidInput(
                f"the parts hold {total} bytes but the upload declared {upload.bytes}",
                param="part_ids",
                code="size_mismatch",
            )
        # The assembled file is written while its parts are still on disk.
        await self._storage.check_disk(incoming_bytes=upload.bytes)
        dataset_id = new_id("file")
        written = await self._files.concat(
            [f"{_parts_dir(upload)}/{part_id}" for part_id in data.part_ids],
            f"{client_id}/{dataset_id}/.upload",
        )
        staged = StagedFile(client_id=client_id, dataset_id=dataset_id, written=written)
        if data.md5 is not None and data.md5.lower() != written.md5:
            await self._datasets.discard(staged)
            raise InvalidInput(
                f"md5 of the assembled file is {written.md5}, not {data.md5}",
                param="md5",
                code="checksum_mismatch",
            )
        dataset = await self._datasets.ingest(staged, filename=upload.filename, purpose=upload.purpose)
        finished = await self._repo.finish(
            client_id=client_id, upload_id=upload_id, status="completed", file_id=dataset.id
        )
        await asyncio.shield(self._files.remove(_parts_dir(upload)))
        return finished or upload.model_copy(update={"status": "completed", "file_id": dataset.id}), dataset

    async def cancel(self, *, client_id: str, upload_id: str) -> Upload:
        """Cancel a pending upload and drop its parts."""
        upload = await self._pending(client_id=client_id, upload_id=upload_id)
        cancelled = await self._repo.finish(
            client_id=client_id, upload_id=upload_id, status="cancelled", file_id=None
        )
        await self._files.remove(_parts_dir(upload))
        return cancelled or upload.model_copy(update={"status": "cancelled"})
