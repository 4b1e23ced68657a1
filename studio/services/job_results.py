"""A finished job's step-metrics CSV, stored as a file (`purpose: fine-tune-results`) in `result_files`.

The tracker calls `publish` once a job has ended (succeeded or failed). The CSV is built from the job's
stored metrics events (what the event stream showed, thinned as stored on long runs), written under the
client's files like an upload, and recorded as a `Dataset` of purpose `fine-tune-results`: the Files API
lists, shows, downloads (`GET /v1/files/{id}/content`, the SDK's `files.content`) and deletes it like
any file of the client, and jobs refuse it as training data. A job that stored no metrics (failed
before its first step) gets no file.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from studio.domain.ids import new_id, unix_now
from studio.domain.jobs import TERMINAL
from studio.domain.results_csv import RESULTS_FILENAME, results_csv, step_rows
from studio.errors import Conflict, StudioError
from studio.ports import DatasetRepository, FileStore, JobEventRepository, JobRepository
from studio.schemas.datasets import Dataset, S3Mirror
from studio.schemas.jobs import Job, JobChanges

log = logging.getLogger(__name__)

RESULTS_PURPOSE = "fine-tune-results"
EVENT_PAGE = 1000
# A results CSV holds a row per step (about 60 bytes); a cap far above any run's, against a runaway.
MAX_RESULTS_BYTES = 256 << 20


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


class JobResults:
    """Writes a finished job's results file and records its id on the job."""

    def __init__(
        self,
        *,
        jobs: JobRepository,
        events: JobEventRepository,
        datasets: DatasetRepository,
        files: FileStore,
        mirror_to_s3: bool,
    ) -> None:
        self._jobs = jobs
        self._events = events
        self._datasets = datasets
        self._files = files
        self._mirror = mirror_to_s3

    async def metrics(self, job_id: str) -> list[dict[str, Any]]:
        """Return the data of the job's stored metrics events, in the order they were stored."""
        found: list[dict[str, Any]] = []
        seq = -1
        while True:
            page = await self._events.since(job_id=job_id, seq=seq, limit=EVENT_PAGE)
            found += [event.data for event in page if event.type == "metrics" and event.data]
            if len(page) < EVENT_PAGE:
                return found
            seq = page[-1].seq

    async def publish(self, job: Job) -> Job:
        """Write the results file of the finished `job` and set `result_files` to its id.

        Returns the job as stored after (unchanged when it stored no metrics, or already has its file).

        Raises:
            Conflict: `job` has not finished. StudioError: the store or the disk failed (no file is left
            behind; the job keeps no result file).
        """
        if job.status not in TERMINAL:
            raise Conflict(f"job {job.id} has not finished", code="job_not_finished")
        if job.result_files:
            return job
        rows = step_rows(await self.metrics(job.id))
        if not rows:
            return job
        dataset = await self._store_file(job, results_csv(rows))
        updated = await self._jobs.update(
            job_id=job.id, expected=job.status, changes=JobChanges(result_files=[dataset.id])
        )
        return updated or job

    async def _store_file(self, job: Job, content: bytes) -> Dataset:
        file_id = new_id("file")
        relative = f"{job.client_id}/{file_id}/{RESULTS_FILENAME}"
        written = await self._files.write(relative, _one(content), max_bytes=MAX_RESULTS_BYTES)
        dataset = Dataset(
            id=file_id,
            client_id=job.client_id,
            filename=f"{job.id}-{RESULTS_FILENAME}",
            purpose=RESULTS_PURPOSE,
            bytes=written.bytes,
            sha256=written.sha256,
            status="ready",
            local_path=relative,
            s3=S3Mirror(state="pending" if self._mirror else "disabled"),
            created_at=unix_now(),
            validated_at=unix_now(),
        )
        try:
            await self._datasets.insert(dataset)
        except Conflict:
            # The client already has a file with these very bytes (the same metrics, step for step):
            # a results file is shared as it is; any other file is not reused.
            await self._files.remove(f"{job.client_id}/{file_id}")
            same = await self._datasets.find_by_sha256(client_id=job.client_id, sha256=written.sha256)
            if same is None or same.purpose != RESULTS_PURPOSE:
                raise
            return same
        except BaseException:
            await self._files.remove(f"{job.client_id}/{file_id}")
            raise
        return dataset


async def publish_quietly(results: JobResults | None, job: Job | None) -> None:
    """`results.publish(job)` for the tracker: a failure is logged, never raised (the job has ended)."""
    if results is None or job is None:
        return
    try:
        await results.publish(job)
    except StudioError as exc:
        log.warning("could not write the results file of %s: %s", job.id, exc, extra={"job_id": job.id})
    except Exception:
        log.exception("writing the results file of %s failed", job.id, extra={"job_id": job.id})
