"""Jobs, their events and checkpoints on MongoDB. Status changes are conditional on the old status."""

from __future__ import annotations

import builtins
from typing import Any

from pymongo import ASCENDING, DESCENDING, ReturnDocument, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, WriteError
from pymongo.write_concern import WriteConcern

from studio.domain.jobs import JobStatus
from studio.errors import Conflict
from studio.schemas.jobs import Checkpoint, Job, JobChanges, JobEvent
from studio.schemas.queue import QueueSummary
from studio.stores.documents import from_document, to_document
from studio.stores.errors import mongo_errors
from studio.stores.group_commit import GroupCommit, bulk_outcomes
from studio.stores.mongo_paging import page

# `launched` is stored beside `ray_job_id` (true when it is set), written by `insert` and `update` only,
# so the queue's queries are equality matches an index answers: no `$ne`, which scans.
WAITING: dict[str, Any] = {"status": "queued", "launched": False}
LAUNCHED: dict[str, Any] = {"status": "queued", "launched": True}
# A client's waiting jobs in launch order (documents older than `created_ns` hold 0 there: first).
DUPLICATE_KEY = 11000
QUEUE_SUMMARY_ID = "summary"
RETENTION_MARK_ID = "retention"
QUEUE_ORDER = [("priority", DESCENDING), ("created_ns", ASCENDING), ("_id", ASCENDING)]


def _write_error(error: dict[str, Any]) -> BaseException:
    """Return the domain error of one failed operation of a bulk write."""
    if error.get("code") == DUPLICATE_KEY:
        return Conflict("an object with the same unique fields already exists", code="duplicate")
    return WriteError(str(error.get("errmsg", "write failed")), error.get("code"), error)


def job_document(job: Job) -> dict[str, Any]:
    """Return the stored document of `job`, with its `launched` flag."""
    doc = to_document(job)
    doc["launched"] = job.ray_job_id is not None
    return doc


class MongoJobRepository:
    def __init__(self, database: AsyncDatabase[dict[str, Any]]) -> None:
        self._jobs = database["fine_tuning_jobs"]
        # Derived, rewritten every `queue_refresh_s`: no journal needed.
        self._summary = database.get_collection("job_queue", write_concern=WriteConcern(w=1))
        # Creates arriving together leave as one journaled insert (see stores/group_commit.py).
        self._inserts: GroupCommit[dict[str, Any]] = GroupCommit(self._insert_many)

    async def insert(self, job: Job) -> None:
        await self._inserts.write(job_document(job))

    async def _insert_many(self, docs: list[dict[str, Any]]) -> list[BaseException | None]:
        try:
            with mongo_errors():
                await self._jobs.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            return bulk_outcomes(len(docs), exc.details, _write_error)
        return [None] * len(docs)

    async def get(self, *, client_id: str, job_id: str) -> Job | None:
        with mongo_errors():
            return from_document(Job, await self._jobs.find_one({"_id": job_id, "client_id": client_id}))

    async def get_any(self, job_id: str) -> Job | None:
        with mongo_errors():
            return from_document(Job, await self._jobs.find_one({"_id": job_id}))

    async def list(
        self, *, client_id: str, after: str | None, limit: int, metadata: dict[str, str]
    ) -> list[Job]:
        query: dict[str, Any] = {"client_id": client_id}
        query.update({f"metadata.{key}": value for key, value in metadata.items()})
        with mongo_errors():
            docs = await page(self._jobs, query, key="created_at", after=after, limit=limit, ascending=False)
        return [job for doc in docs if (job := from_document(Job, doc)) is not None]

    async def list_followed(self) -> builtins.list[Job]:
        # Everything the tracker follows, but not the queue itself: it may hold thousands of jobs.
        # Three indexed queries rather than one `$or`, which the embedded server answers by a scan.
        queries: list[dict[str, Any]] = [
            {"status": {"$in": ["validating_files", "running"]}},
            LAUNCHED,
            {"stop_pending": True},
        ]
        found: dict[str, dict[str, Any]] = {}
        with mongo_errors():
            for query in queries:
                for doc in await self._jobs.find(query).to_list():
                    found[doc["_id"]] = doc
        docs = sorted(found.values(), key=lambda doc: (doc["created_at"], doc["_id"]))
        return [job for doc in docs if (job := from_document(Job, doc)) is not None]

    async def mark_launch_state(self) -> None:
        """Add `priority` and `launched` to queued jobs stored before they existed (at start; a no-op
        once done)."""
        missing = {"status": "queued", "launched": {"$exists": False}}
        with mongo_errors():
            await self._jobs.update_many(
                {"status": "queued", "priority": {"$exists": False}}, {"$set": {"priority": 0}}
            )
            await self._jobs.update_many({**missing, "ray_job_id": None}, {"$set": {"launched": False}})
            await self._jobs.update_many(missing, {"$set": {"launched": True}})

    async def waiting_counts(self) -> dict[str, int]:
        pipeline = [{"$match": WAITING}, {"$group": {"_id": "$client_id", "n": {"$sum": 1}}}]
        with mongo_errors():
            groups = await (await self._jobs.aggregate(pipeline)).to_list()
        return {str(group["_id"]): int(group["n"]) for group in groups}

    async def count_waiting(self, client_id: str, *, limit: int) -> int:
        if limit <= 0:
            return 0
        with mongo_errors():
            return await self._jobs.count_documents({"client_id": client_id, **WAITING}, limit=limit)

    async def count_ahead(self, job: Job) -> int:
        # Two indexed counts rather than one `$or` (a scan on the embedded server).
        mine = {"client_id": job.client_id, **WAITING}
        with mongo_errors():
            higher = await self._jobs.count_documents({**mine, "priority": {"$gt": job.priority}})
            earlier = await self._jobs.count_documents(
                {**mine, "priority": job.priority, "created_ns": {"$lt": job.created_ns}}
            )
        return higher + earlier

    async def mean_run_seconds(self, *, sample: int) -> float | None:
        query = {"status": "succeeded"}
        fields = {"started_at": 1, "finished_at": 1}
        with mongo_errors():
            cursor = self._jobs.find(query, fields).sort([("created_at", DESCENDING)]).limit(sample)
            docs = await cursor.to_list()
        runs = [
            doc["finished_at"] - doc["started_at"]
            for doc in docs
            if doc.get("started_at") and doc.get("finished_at")
        ]
        return sum(runs) / len(runs) if runs else None

    async def put_queue_summary(self, summary: QueueSummary) -> None:
        with mongo_errors():
            await self._summary.replace_one({"_id": QUEUE_SUMMARY_ID}, summary.model_dump(), upsert=True)

    async def queue_summary(self) -> QueueSummary | None:
        with mongo_errors():
            doc = await self._summary.find_one({"_id": QUEUE_SUMMARY_ID})
        if doc is None:
            return None
        doc.pop("_id")
        return QueueSummary.model_validate(doc)

    async def next_waiting(self, client_id: str) -> Job | None:
        with mongo_errors():
            doc = await self._jobs.find_one({"client_id": client_id, **WAITING}, sort=QUEUE_ORDER)
        return from_document(Job, doc)

    async def list_fine_tuned(self, client_id: str) -> builtins.list[Job]:
        query = {"client_id": client_id, "status": "succeeded", "fine_tuned_model": {"$ne": None}}
        with mongo_errors():
            docs = (
                await self._jobs.find(query).sort([("created_at", DESCENDING), ("_id", DESCENDING)]).to_list()
            )
        return [job for doc in docs if (job := from_document(Job, doc)) is not None]

    async def update(self, *, job_id: str, expected: JobStatus, changes: JobChanges) -> Job | None:
        fields = changes.model_dump(mode="json", exclude_unset=True)
        if "ray_job_id" in fields:
            fields["launched"] = fields["ray_job_id"] is not None
        with mongo_errors():
            doc = await self._jobs.find_one_and_update(
                {"_id": job_id, "status": expected}, {"$set": fields}, return_document=ReturnDocument.AFTER
            )
        return from_document(Job, doc)

    async def finished_before(
        self, *, before: int, after: str | None, limit: int
    ) -> builtins.list[Job] | None:
        with mongo_errors():
            if after is not None and await self._jobs.find_one({"_id": after}, projection={"_id": 1}) is None:
                return None
            # Unfinished jobs hold no `finished_at` and are not in the range; the index orders the rest.
            docs = await page(
                self._jobs,
                {"finished_at": {"$gt": 0}},
                key="finished_at",
                after=after,
                limit=limit,
                ascending=True,
            )
        jobs = [job for doc in docs if (job := from_document(Job, doc)) is not None]
        return [job for job in jobs if job.finished_at is not None and job.finished_at < before]

    async def retention_mark(self) -> str | None:
        with mongo_errors():
            doc = await self._summary.find_one({"_id": RETENTION_MARK_ID})
        return None if doc is None else str(doc["job_id"])

    async def put_retention_mark(self, job_id: str) -> None:
        # Derived (w=1): a lost mark only makes the next sweep look at jobs it already swept.
        with mongo_errors():
            await self._summary.replace_one({"_id": RETENTION_MARK_ID}, {"job_id": job_id}, upsert=True)


class MongoJobEventRepository:
    def __init__(self, database: AsyncDatabase[dict[str, Any]]) -> None:
        self._events = database["fine_tuning_job_events"]
        # Each writer's list of events is one item; lists arriving together leave as one bulk write.
        self._adds: GroupCommit[list[JobEvent]] = GroupCommit(self._add_many)

    async def add(self, events: list[JobEvent]) -> None:
        if events:
            await self._adds.write(events)

    async def _add_many(self, batches: list[list[JobEvent]]) -> list[BaseException | None]:
        # Upserts keyed by the event id: a tracker that re-reads a log after a restart adds nothing twice.
        writes = [
            UpdateOne({"_id": event.id}, {"$setOnInsert": to_document(event)}, upsert=True)
            for events in batches
            for event in events
        ]
        owner = [index for index, events in enumerate(batches) for _ in events]
        try:
            with mongo_errors():
                await self._events.bulk_write(writes, ordered=False)
        except BulkWriteError as exc:
            outcomes: list[BaseException | None] = [None] * len(batches)
            for position, outcome in enumerate(bulk_outcomes(len(writes), exc.details, _write_error)):
                if outcome is not None:
                    outcomes[owner[position]] = outcome
            return outcomes
        return [None] * len(batches)

    async def list(self, *, job_id: str, after: str | None, limit: int) -> list[JobEvent]:
        with mongo_errors():
            docs = await page(
                self._events, {"job_id": job_id}, key="seq", after=after, limit=limit, ascending=False
            )
        return [e for doc in docs if (e := from_document(JobEvent, doc)) is not None]

    async def since(self, *, job_id: str, seq: int, limit: int) -> builtins.list[JobEvent]:
        with mongo_errors():
            cursor = self._events.find({"job_id": job_id, "seq": {"$gt": seq}}).sort([("seq", ASCENDING)])
            docs = await cursor.limit(limit).to_list()
        return [e for doc in docs if (e := from_document(JobEvent, doc)) is not None]

    async def delete_for_jobs(self, job_ids: builtins.list[str]) -> int:
        with mongo_errors():
            result = await self._events.delete_many({"job_id": {"$in": job_ids}})
        return result.deleted_count


class MongoCheckpointRepository:
    def __init__(self, database: AsyncDatabase[dict[str, Any]]) -> None:
        self._checkpoints = database["fine_tuning_job_checkpoints"]

    async def add(self, checkpoint: Checkpoint) -> None:
        doc = to_document(checkpoint)
        with mongo_errors():
            await self._checkpoints.update_one({"_id": doc["_id"]}, {"$setOnInsert": doc}, upsert=True)

    async def list(self, *, job_id: str, after: str | None, limit: int) -> list[Checkpoint]:
        with mongo_errors():
            docs = await page(
                self._checkpoints, {"job_id": job_id}, key="step", after=after, limit=limit, ascending=False
            )
        return [c for doc in docs if (c := from_document(Checkpoint, doc)) is not None]
