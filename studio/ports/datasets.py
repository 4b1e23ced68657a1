"""Datasets, multipart uploads and their validation."""

from __future__ import annotations

import builtins
from typing import Protocol

from studio.domain.datasets import ValidationLimits, ValidationReport
from studio.ports.storage import StoredPath
from studio.schemas.datasets import Dataset, DatasetStatus, ListOrder, S3Mirror, Upload, UploadPart


class DatasetRepository(Protocol):
    """Datasets (`fine_tuning_datasets`). Every read and write is scoped to one client."""

    async def insert(self, dataset: Dataset) -> None:
        """Raises Conflict when the client already has a dataset with the same sha256."""
        ...

    async def get(self, *, client_id: str, dataset_id: str) -> Dataset | None: ...

    async def find_by_sha256(self, *, client_id: str, sha256: str) -> Dataset | None: ...

    async def list(
        self, *, client_id: str, after: str | None, limit: int, order: ListOrder
    ) -> list[Dataset]: ...

    async def change_status(
        self,
        *,
        dataset: Dataset,
        expected: DatasetStatus,
        lease_until: float | None,
        report: ValidationReport | None = None,
        validated_at: int | None = None,
    ) -> Dataset | None:
        """Write `dataset.status` (and the report) if the stored status is still `expected`.

        Returns the stored dataset, or None when another writer changed it first.
        """
        ...

    async def claim_stale_validation(self, *, now: float, lease_until: float) -> Dataset | None:
        """Take one dataset whose validation is unowned (uploaded or lease expired); None if none."""
        ...

    async def claim_pending_mirror(self, *, now: float, lease_until: float) -> Dataset | None:
        """Take one dataset whose S3 copy is due; None if none."""
        ...

    async def set_mirror(self, *, client_id: str, dataset_id: str, mirror: S3Mirror) -> None: ...

    async def delete(self, *, client_id: str, dataset_id: str) -> bool: ...

    async def used_by_active_job(self, *, client_id: str, dataset_id: str) -> str | None:
        """Return the id of a queued or running job that uses the dataset, or None."""
        ...

    async def usage(self, client_id: str) -> tuple[int, int]:
        """Return the total bytes and the number of the client's datasets, counted from the store."""
        ...

    async def known_ids(self, *, client_id: str, ids: builtins.list[str]) -> set[str]:
        """Return which of `ids` are datasets of the client."""
        ...

    async def paths(self, *, after: str | None, limit: int) -> builtins.list[StoredPath]:
        """Return a page of every client's datasets' local paths, in id order after the id `after`."""
        ...

    async def set_missing(self, *, client_id: str, dataset_id: str, missing_since: int | None) -> None:
        """Mark the dataset's file as missing from disk since then (None: found again)."""
        ...


class UploadRepository(Protocol):
    """Multi-part uploads in progress (`uploads`)."""

    async def insert(self, upload: Upload) -> None: ...

    async def get(self, *, client_id: str, upload_id: str) -> Upload | None: ...

    async def add_part(
        self, *, client_id: str, upload_id: str, part: UploadPart, max_parts: int, max_total_bytes: int
    ) -> Upload | None:
        """Append a part to a pending upload that holds fewer than `max_parts` parts and whose parts
        stay within `max_total_bytes` with it, in one conditional write; None when any of that fails."""
        ...

    async def usage(self, *, client_id: str, now: int) -> tuple[int, int]:
        """Return the number and the declared bytes of the client's pending uploads not expired at `now`."""
        ...

    async def take_expired(self, *, before: int) -> Upload | None:
        """Delete and return one upload (any status) that expired before `before`; None if none.

        Atomic: of two replicas sweeping at once, each upload goes to one.
        """
        ...

    async def pending_ids(self, *, client_id: str, ids: list[str]) -> set[str]:
        """Return which of `ids` are pending uploads of the client."""
        ...

    async def finish(
        self, *, client_id: str, upload_id: str, status: str, file_id: str | None
    ) -> Upload | None:
        """Move a pending upload to `status`; None when it was not pending."""
        ...


class DatasetValidationRunner(Protocol):
    """Runs the (CPU-bound) streaming validation of a stored file off the event loop."""

    async def validate(
        self, relative_path: str, limits: ValidationLimits, *, tokenizer: str | None = None
    ) -> ValidationReport:
        """Validate the file; count tokens with `tokenizer` (a base model's source) when given."""
        ...
