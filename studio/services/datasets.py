"""Datasets: streamed ingest (quota and disk guard), validation, S3 mirror, storage sweep, reads, delete."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from studio.config import DatasetSettings
from studio.domain.datasets import ValidationLimits
from studio.domain.files import check_filename
from studio.domain.ids import new_id, unix_now
from studio.domain.limits import model_allowed
from studio.errors import Conflict, Forbidden, InvalidInput, NotFound, Unavailable
from studio.ports import (
    BaseModelRepository,
    DatasetRepository,
    DatasetValidationRunner,
    FileStore,
    ObjectStore,
    WrittenFile,
)
from studio.schemas.clients import ClientLimits
from studio.schemas.datasets import Dataset, DatasetPreview, ListOrder, S3Mirror
from studio.services.storage import StorageGuard
from studio.services.storage_sweeper import StorageSweeper

log = logging.getLogger(__name__)

PREVIEW_MAX_BYTES = 4 << 20


@dataclass(frozen=True, slots=True)
class StagedFile:
    """An uploaded body written under its future dataset's directory, not yet a dataset."""

    client_id: str
    dataset_id: str
    written: WrittenFile


class DatasetService:
    """Owns a dataset from its first byte to its deletion."""

    def __init__(
        self,
        *,
        repository: DatasetRepository,
        files: FileStore,
        validator: DatasetValidationRunner,
        objects: ObjectStore | None,
        settings: DatasetSettings,
        base_models: BaseModelRepository,
        storage: StorageGuard,
        sweeper: StorageSweeper | None = None,
    ) -> None:
        self._repo = repository
        self._storage = storage
        self._sweeper = sweeper
        self._files = files
        self._validator = validator
        self._objects = objects
        self._settings = settings
        self._base_models = base_models
        self._limits = ValidationLimits(
            max_errors=settings.max_errors,
            max_line_bytes=settings.max_line_bytes,
            context_length=settings.context_length,
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._stopping = False
        self._worker: asyncio.Task[None] | None = None

    # -- ingest ---------------------------------------------------------------------------------

    async def receive(
        self,
        *,
        client_id: str,
        chunks: AsyncIterator[bytes],
        limits: ClientLimits,
        at_least_bytes: int = 0,
        max_bytes: int | None = None,
    ) -> StagedFile:
        """Stream an upload body to `<client>/<new dataset id>/.upload`; return it staged.

        `at_least_bytes` (from the request's declared length, 0 if unknown) lets a write that cannot fit
        be refused before its first byte; the bytes are also counted as they arrive.

        Raises:
            PayloadTooLarge: over the upload limit. StorageQuotaExceeded: past one of the client's
            storage quotas. InsufficientStorage: the disk guard. A refused, failed or broken upload
            leaves no file behind.
        """
        admission = await self._storage.admit_file(
            client_id=client_id, limits=limits, at_least_bytes=at_least_bytes
        )
        dataset_id = new_id("file")
        try:
            written = await self._files.write(
                f"{client_id}/{dataset_id}/.upload",
                self._storage.metered(chunks, admission),
                max_bytes=max_bytes or self._settings.max_upload_bytes,
            )
            await self._storage.confirm_file(client_id=client_id, limits=limits, file_bytes=written.bytes)
        except BaseException:
            await asyncio.shield(self._files.remove(f"{client_id}/{dataset_id}"))
            raise
        return StagedFile(client_id, dataset_id, written)

    async def discard(self, staged: StagedFile) -> None:
        """Remove a staged file that will not become a dataset."""
        await self._files.remove(f"{staged.client_id}/{staged.dataset_id}")

    async def ingest(
        self,
        staged: StagedFile,
        *,
        filename: str | None,
        purpose: str | None,
        model: str | None = None,
        allowed_base_models: Sequence[str] = (),
    ) -> Dataset:
        """Turn a staged upload into a dataset and validate it.

        Small files are validated before this returns (`ready` or `invalid`); bigger ones come back
        `validating` and are finished in the background. The same bytes uploaded again by the same
        client return the existing dataset. With `model` (a registered base model the client may use,
        by `allowed_base_models`) tokens are counted with its tokenizer, else estimated.

        Raises:
            InvalidInput: a bad file name or extension, a purpose other than fine-tune, an empty file.
            NotFound: `model` is not a registered base model. Forbidden: the client may not use it
            (its tokenizer would be fetched on the client's behalf).
        """
        try:
            if model is not None and not model_allowed(list(allowed_base_models), model):
                raise Forbidden(
                    f"this client may not use the base model {model!r}",
                    param="model",
                    code="model_not_allowed",
                )
            if model is not None and await self._base_models.get(model) is None:
                raise NotFound(f"unknown base model {model!r}", param="model", code="model_not_found")
            name = check_filename(filename)
            if purpose != "fine-tune":
                raise InvalidInput(
                    f"purpose must be 'fine-tune', not {purpose!r}", param="purpose", code="invalid_purpose"
                )
            if staged.written.bytes == 0:
                raise InvalidInput("the file is empty", param="file", code="empty_file")
            existing = await self._repo.find_by_sha256(
                client_id=staged.client_id, sha256=staged.written.sha256
            )
            if existing is not None:
                await self.discard(staged)
                return existing
            relative = f"{staged.client_id}/{staged.dataset_id}/{name}"
            await self._files.move(staged.written.relative_path, relative)
        except Exception:
            await self.discard(staged)
            raise
        dataset = Dataset(
            id=staged.dataset_id,
            client_id=staged.client_id,
            filename=name,
            bytes=staged.written.bytes,
            sha256=staged.written.sha256,
            # Inserted already `validating` under this replica's lease: if it dies, the lease runs
            # out and another replica's worker takes the validation over.
            status="validating",
            lease_until=time.time() + self._settings.lease_s,
            local_path=relative,
            s3=S3Mirror(state="pending" if self._objects is not None else "disabled"),
            tokenizer=model,
            created_at=unix_now(),
        )
        try:
            await self._repo.insert(dataset)
        except Conflict:
            # A concurrent upload of the same bytes won the race: answer with its dataset.
            await self.discard(staged)
            winner = await self._repo.find_by_sha256(client_id=staged.client_id, sha256=staged.written.sha256)
            if winner is None:
                raise
            return winner
        if dataset.bytes <= self._settings.sync_validation_bytes:
            return await self._validate(dataset)
        self._spawn(self._validate_quietly(dataset))
        return dataset

    async def _validate(self, dataset: Dataset) -> Dataset:
        source = None
        if dataset.tokenizer is not None:
            entry = await self._base_models.get(dataset.tokenizer)
            source = entry.source if entry is not None else dataset.tokenizer
        report = await self._validator.validate(dataset.local_path, self._limits, tokenizer=source)
        done = dataset.model_copy(update={"status": "ready" if report.valid else "invalid"})
        stored = await self._repo.change_status(
            dataset=done, expected="validating", lease_until=None, report=report, validated_at=unix_now()
        )
        if stored is None:
            # Another replica finished it first (our lease had run out): theirs is as good.
            found = await self._repo.get(client_id=dataset.client_id, dataset_id=dataset.id)
            return found or done
        if stored.s3.state == "pending":
            self._wake.set()
        return stored

    async def _validate_quietly(self, dataset: Dataset) -> None:
        try:
            await self._validate(dataset)
        except Exception:
            log.exception("validation of %s failed; the worker retries after the lease", dataset.id)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- background work: validations left behind, S3 mirror -----------------------------------

    def start_worker(self) -> None:
        """Start the background worker (stopped by `close`)."""
        self._worker = asyncio.create_task(self.run_worker(), name="dataset-worker")

    async def run_worker(self) -> None:
        """Until closed: take over validations whose lease ran out; mirror datasets to S3 with backoff."""
        # A stop flag, not only cancellation: the database driver may absorb a cancellation that
        # lands inside one of its calls, and the loop must still end.
        while not self._stopping:
            try:
                await self.work_once()
            except Exception as exc:
                # A driver may turn the task's cancellation into its own error: honour the cancel.
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise asyncio.CancelledError from exc
                if isinstance(exc, Unavailable):
                    log.warning("dataset worker: %s", exc.message)
                else:
                    log.exception("dataset worker failed; retrying")
            self._wake.clear()
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that lands
            # as the event fires, and the worker would then outlive the app's shutdown.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._settings.worker_interval_s):
                    await self._wake.wait()

    async def work_once(self) -> None:
        """Do every piece of due background work once: validations, S3 copies, the storage sweep."""
        while (
            stale := await self._repo.claim_stale_validation(
                now=time.time(), lease_until=time.time() + self._settings.lease_s
            )
        ) is not None:
            log.info("taking over the validation of %s", stale.id)
            await self._validate(stale)
        if self._objects is not None:
            await self._mirror_due(self._objects)
        if self._sweeper is not None:
            # One replica per sweep interval (a lease in the store); the others return at once.
            await self._sweeper.sweep_if_due()

    async def _mirror_due(self, objects: ObjectStore) -> None:
        while (
            due := await self._repo.claim_pending_mirror(
                now=time.time(), lease_until=time.time() + self._settings.lease_s
            )
        ) is not None:
            await self._mirror(due, objects)

    async def _mirror(self, dataset: Dataset, objects: ObjectStore) -> None:
        key = f"{dataset.client_id}/{dataset.id}/{dataset.filename}"
        attempts = dataset.s3.attempts + 1
        try:
            uri = await objects.put_file(key=key, path=self._files.absolute(dataset.local_path))
        except Unavailable as exc:
            delay = min(self._settings.mirror_backoff_max_s, 2.0 ** min(attempts, 12))
            log.warning(
                "S3 copy of %s failed (attempt %d), next in %.0f s: %s",
                dataset.id,
                attempts,
                delay,
                exc.message,
            )
            mirror = S3Mirror(
                state="pending",
                attempts=attempts,
                last_error=exc.message,
                next_attempt_at=time.time() + delay,
            )
        else:
            mirror = S3Mirror(state="mirrored", uri=uri, attempts=attempts)
        await self._repo.set_mirror(client_id=dataset.client_id, dataset_id=dataset.id, mirror=mirror)

    async def close(self) -> None:
        """Stop the worker; cancel in-flight validations (their leases let another replica finish them)."""
        self._stopping = True
        self._wake.set()
        tasks = [*self._tasks, *([self._worker] if self._worker is not None else [])]
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks, timeout=10) if tasks else None

    # -- reads ------------------------------------------------------------------------------------

    async def get(self, *, client_id: str, dataset_id: str) -> Dataset:
        """Return the client's dataset.

        Raises:
            NotFound: no such dataset for this client (another tenant's id included).
        """
        dataset = await self._repo.get(client_id=client_id, dataset_id=dataset_id)
        if dataset is None:
            raise NotFound(f"no file {dataset_id!r}", param="file_id", code="file_not_found")
        return dataset

    async def list(
        self, *, client_id: str, after: str | None, limit: int, order: ListOrder
    ) -> tuple[list[Dataset], bool]:
        """Return a page of the client's datasets and whether more follow."""
        rows = await self._repo.list(client_id=client_id, after=after, limit=limit + 1, order=order)
        return rows[:limit], len(rows) > limit

    async def content(self, *, client_id: str, dataset_id: str) -> tuple[Dataset, AsyncIterator[bytes]]:
        """Return the dataset and a stream of its bytes."""
        dataset = await self.get(client_id=client_id, dataset_id=dataset_id)
        return dataset, self._files.read(dataset.local_path)

    async def preview(self, *, client_id: str, dataset_id: str, rows: int) -> DatasetPreview:
        """Return the first `rows` rows, parsed; lines that are not JSON come back as text."""
        dataset = await self.get(client_id=client_id, dataset_id=dataset_id)
        buffer = b""
        truncated = False
        async for chunk in self._files.read(dataset.local_path, chunk_bytes=64 << 10):
            buffer += chunk
            if buffer.count(b"\n") >= rows:
                break
            if len(buffer) > PREVIEW_MAX_BYTES:
                truncated = True
                break
        parsed: list[object] = []
        for line in buffer.split(b"\n"):
            if len(parsed) == rows:
                break
            if not line.strip():
                continue
            try:
                parsed.append(json.loads(line))
            except ValueError:
                parsed.append(line[:1000].decode("utf-8", errors="replace"))
        return DatasetPreview(id=dataset.id, rows=parsed, truncated=truncated)

    # -- delete -----------------------------------------------------------------------------------

    async def delete(self, *, client_id: str, dataset_id: str) -> None:
        """Delete the dataset, its local file and its S3 copy.

        Raises:
            NotFound: no such dataset for this client.
            Conflict: a queued or running job uses it.
            Unavailable: the S3 copy could not be removed (nothing was deleted).
        """
        dataset = await self.get(client_id=client_id, dataset_id=dataset_id)
        job = await self._repo.used_by_active_job(client_id=client_id, dataset_id=dataset_id)
        if job is not None:
            raise Conflict(
                f"file {dataset_id!r} is used by job {job!r}, which is still active",
                param="file_id",
                code="file_in_use",
            )
        if dataset.s3.state == "mirrored" and self._objects is not None:
            await self._objects.delete(f"{client_id}/{dataset.id}/{dataset.filename}")
        await self._repo.delete(client_id=client_id, dataset_id=dataset_id)
        await self._files.remove(f"{client_id}/{dataset_id}")
