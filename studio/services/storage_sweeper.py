"""The storage sweeper: expired uploads, orphaned files, and records whose file has gone missing.

Run from the dataset worker's loop on every ingress replica; a lease in the store lets one replica
sweep per `sweep_interval_s`. Every step is idempotent (removing what is already gone is fine, each
expired upload is taken by one atomic delete), so a sweep cut short by a crash is finished by the next.

The datasets directory holds `<client>/<file id>/<name>` (a dataset, staged as `.upload` first) and
`<client>/uploads/<upload id>/<part id>` (parts of an upload in progress). The sweeper only ever removes
directories named like those ids, and only once nothing in them has changed for `orphan_grace_s`.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field

from studio.config import StorageSettings
from studio.domain.ids import unix_now
from studio.ports import DatasetRepository, FileStore, LeaseRepository, UploadRepository

log = logging.getLogger(__name__)

LEASE_NAME = "storage-sweeper"
UPLOADS_DIR = "uploads"
# An upload is swept this long after it expired, so that a part or a `complete` that began just
# before the expiry (an 8 GiB concatenation takes a while) is not pulled from under it.
UPLOAD_SWEEP_MARGIN_S = 600
BATCH = 500
_DATASET_DIR = re.compile(r"file-[0-9a-f]{24}")
_UPLOAD_DIR = re.compile(r"upload-[0-9a-f]{24}")


def parts_dir(client_id: str, upload_id: str) -> str:
    """Return where an upload's parts are kept, relative to the datasets directory."""
    return f"{client_id}/{UPLOADS_DIR}/{upload_id}"


@dataclass(slots=True)
class SweepReport:
    """What one sweep did: uploads removed, orphan directories removed, files found missing."""

    expired_uploads: int = 0
    orphans_removed: list[str] = field(default_factory=list)
    missing_files: list[str] = field(default_factory=list)
    found_again: list[str] = field(default_factory=list)


class StorageSweeper:
    """Removes what nobody will use again; marks (never deletes) records whose bytes are gone."""

    def __init__(
        self,
        *,
        datasets: DatasetRepository,
        uploads: UploadRepository,
        files: FileStore,
        leases: LeaseRepository,
        settings: StorageSettings,
        holder: str,
    ) -> None:
        self._datasets = datasets
        self._uploads = uploads
        self._files = files
        self._leases = leases
        self._settings = settings
        self._holder = holder

    async def sweep_if_due(self) -> SweepReport | None:
        """Sweep if no replica has within `sweep_interval_s`; return the report, or None if not due."""
        now = time.time()
        until = now + self._settings.sweep_interval_s
        if not await self._leases.claim(LEASE_NAME, holder=self._holder, now=now, until=until):
            return None
        return await self.sweep()

    async def sweep(self) -> SweepReport:
        """Sweep once, whatever the lease says; return what was done."""
        report = SweepReport()
        await self._sweep_expired_uploads(report)
        await self._sweep_orphans(report)
        await self._check_missing(report)
        if report.expired_uploads or report.orphans_removed or report.missing_files or report.found_again:
            log.info(
                "storage sweep: %d expired uploads removed, %d orphan directories removed, "
                "%d files newly missing, %d found again",
                report.expired_uploads,
                len(report.orphans_removed),
                len(report.missing_files),
                len(report.found_again),
            )
        return report

    async def _sweep_expired_uploads(self, report: SweepReport) -> None:
        before = unix_now() - UPLOAD_SWEEP_MARGIN_S
        # The record goes first (atomically, to one replica), then its parts: a crash in between
        # leaves a parts directory no pending upload claims, which the orphan pass removes.
        while (upload := await self._uploads.take_expired(before=before)) is not None:
            await self._files.remove(parts_dir(upload.client_id, upload.id))
            report.expired_uploads += 1

    async def _sweep_orphans(self, report: SweepReport) -> None:
        cutoff = time.time() - self._settings.orphan_grace_s
        for client_id in await self._files.children(""):
            entries = await self._files.children(client_id)
            names = [name for name in entries if _DATASET_DIR.fullmatch(name)]
            for batch in _batches(names):
                known = await self._datasets.known_ids(client_id=client_id, ids=batch)
                for name in batch:
                    if name not in known:
                        await self._remove_if_quiet(f"{client_id}/{name}", cutoff, report)
            if UPLOADS_DIR not in entries:
                continue
            uploads_dir = f"{client_id}/{UPLOADS_DIR}"
            names = [name for name in await self._files.children(uploads_dir) if _UPLOAD_DIR.fullmatch(name)]
            for batch in _batches(names):
                pending = await self._uploads.pending_ids(client_id=client_id, ids=batch)
                for name in batch:
                    if name not in pending:
                        await self._remove_if_quiet(f"{uploads_dir}/{name}", cutoff, report)

    async def _remove_if_quiet(self, relative: str, cutoff: float, report: SweepReport) -> None:
        modified = await self._files.last_modified(relative)
        if modified is None or modified >= cutoff:
            return  # gone already, or still being written (a staged upload not yet recorded)
        log.warning("storage sweep: removing %s, which no record claims", relative)
        await self._files.remove(relative)
        report.orphans_removed.append(relative)

    async def _check_missing(self, report: SweepReport) -> None:
        after: str | None = None
        while True:
            page = await self._datasets.paths(after=after, limit=BATCH)
            for stored in page:
                present = await self._files.last_modified(stored.local_path) is not None
                if not present and stored.missing_since is None:
                    log.error(
                        "storage sweep: the file of dataset %s (client %s) is missing from disk: %s",
                        stored.id,
                        stored.client_id,
                        stored.local_path,
                    )
                    await self._datasets.set_missing(
                        client_id=stored.client_id, dataset_id=stored.id, missing_since=unix_now()
                    )
                    report.missing_files.append(stored.id)
                elif present and stored.missing_since is not None:
                    await self._datasets.set_missing(
                        client_id=stored.client_id, dataset_id=stored.id, missing_since=None
                    )
                    report.found_again.append(stored.id)
            if len(page) < BATCH:
                return
            after = page[-1].id


def _batches(names: list[str]) -> list[list[str]]:
    return [names[start : start + BATCH] for start in range(0, len(names), BATCH)]
