"""`DatasetRepository` and `UploadRepository` on MongoDB. Every query names the client, but the sweeper's."""

from __future__ import annotations

import builtins
from typing import Any

from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase

from studio.domain.datasets import ValidationReport
from studio.domain.jobs import ACTIVE
from studio.ports import StoredPath
from studio.schemas.datasets import Dataset, DatasetStatus, ListOrder, S3Mirror, Upload, UploadPart
from studio.stores.documents import from_document, to_document
from studio.stores.errors import mongo_errors
from studio.stores.mongo_paging import page


class MongoDatasetRepository:
    def __init__(self, database: AsyncDatabase[dict[str, Any]]) -> None:
        self._datasets = database["fine_tuning_datasets"]
        self._jobs = database["fine_tuning_jobs"]

    async def insert(self, dataset: Dataset) -> None:
        with mongo_errors():
            await self._datasets.insert_one(to_document(dataset))

    async def get(self, *, client_id: str, dataset_id: str) -> Dataset | None:
        with mongo_errors():
            return from_document(
                Dataset, await self._datasets.find_one({"_id": dataset_id, "client_id": client_id})
            )

    async def find_by_sha256(self, *, client_id: str, sha256: str) -> Dataset | None:
        with mongo_errors():
            return from_document(
                Dataset, await self._datasets.find_one({"client_id": client_id, "sha256": sha256})
            )

    async def list(self, *, client_id: str, after: str | None, limit: int, order: ListOrder) -> list[Dataset]:
        with mongo_errors():
            docs = await page(
                self._datasets,
                {"client_id": client_id},
                key="created_at",
                after=after,
                limit=limit,
                ascending=order == "asc",
            )
        return [d for doc in docs if (d := from_document(Dataset, doc)) is not None]

    async def change_status(
        self,
        *,
        dataset: Dataset,
        expected: DatasetStatus,
        lease_until: float | None,
        report: ValidationReport | None = None,
        validated_at: int | None = None,
    ) -> Dataset | None:
        update: dict[str, Any] = {"status": dataset.status, "lease_until": lease_until}
        if report is not None:
            update |= {
                "format": report.format,
                "error_count": report.error_count,
                "errors": [issue.model_dump(mode="json") for issue in report.errors],
                "warnings": [issue.model_dump(mode="json") for issue in report.warnings],
                "stats": report.stats.model_dump(mode="json"),
                "validated_at": validated_at,
            }
        with mongo_errors():
            doc = await self._datasets.find_one_and_update(
                {"_id": dataset.id, "client_id": dataset.client_id, "status": expected},
                {"$set": update},
                return_document=ReturnDocument.AFTER,
            )
        return from_document(Dataset, doc)

    async def claim_stale_validation(self, *, now: float, lease_until: float) -> Dataset | None:
        query = {
            "status": {"$in": ["uploaded", "validating"]},
            "$or": [{"lease_until": None}, {"lease_until": {"$lt": now}}],
        }
        with mongo_errors():
            doc = await self._datasets.find_one_and_update(
                query,
                {"$set": {"status": "validating", "lease_until": lease_until}},
                return_document=ReturnDocument.AFTER,
            )
        return from_document(Dataset, doc)

    async def claim_pending_mirror(self, *, now: float, lease_until: float) -> Dataset | None:
        query = {
            "s3.state": "pending",
            "status": {"$in": ["ready", "invalid"]},
            "$or": [{"s3.next_attempt_at": None}, {"s3.next_attempt_at": {"$lte": now}}],
        }
        with mongo_errors():
            doc = await self._datasets.find_one_and_update(
                query, {"$set": {"s3.next_attempt_at": lease_until}}, return_document=ReturnDocument.AFTER
            )
        return from_document(Dataset, doc)

    async def set_mirror(self, *, client_id: str, dataset_id: str, mirror: S3Mirror) -> None:
        with mongo_errors():
            await self._datasets.update_one(
                {"_id": dataset_id, "client_id": client_id}, {"$set": {"s3": mirror.model_dump(mode="json")}}
            )

    async def delete(self, *, client_id: str, dataset_id: str) -> bool:
        with mongo_errors():
            result = await self._datasets.delete_one({"_id": dataset_id, "client_id": client_id})
        return result.deleted_count == 1

    async def used_by_active_job(self, *, client_id: str, dataset_id: str) -> str | None:
        with mongo_errors():
            job = await self._jobs.find_one(
                {
                    "client_id": client_id,
                    "status": {"$in": sorted(ACTIVE)},
                    "$or": [{"training_file": dataset_id}, {"validation_file": dataset_id}],
                },
                projection={"_id": 1},
            )
        return None if job is None else str(job["_id"])

    async def usage(self, client_id: str) -> tuple[int, int]:
        # Recomputed from the documents each time (on the client_id index): right after any crash.
        with mongo_errors():
            cursor = await self._datasets.aggregate(
                [
                    {"$match": {"client_id": client_id}},
                    {"$group": {"_id": None, "bytes": {"$sum": "$bytes"}, "files": {"$sum": 1}}},
                ]
            )
            rows = await cursor.to_list()
        return (int(rows[0]["bytes"]), int(rows[0]["files"])) if rows else (0, 0)

    async def known_ids(self, *, client_id: str, ids: builtins.list[str]) -> set[str]:
        with mongo_errors():
            found = await self._datasets.distinct("_id", {"_id": {"$in": ids}, "client_id": client_id})
        return {str(value) for value in found}

    async def paths(self, *, after: str | None, limit: int) -> builtins.list[StoredPath]:
        query: dict[str, Any] = {} if after is None else {"_id": {"$gt": after}}
        projection = {"_id": 1, "client_id": 1, "local_path": 1, "missing_since": 1}
        with mongo_errors():
            cursor = self._datasets.find(query, projection=projection).sort("_id", ASCENDING).limit(limit)
            docs = await cursor.to_list()
        return [
            StoredPath(
                id=str(doc["_id"]),
                client_id=str(doc["client_id"]),
                local_path=str(doc["local_path"]),
                missing_since=doc.get("missing_since"),
            )
            for doc in docs
        ]

    async def set_missing(self, *, client_id: str, dataset_id: str, missing_since: int | None) -> None:
        with mongo_errors():
            await self._datasets.update_one(
                {"_id": dataset_id, "client_id": client_id}, {"$set": {"missing_since": missing_since}}
            )


class MongoUploadRepository:
    def __init__(self, database: AsyncDatabase[dict[str, Any]]) -> None:
        self._uploads = database["uploads"]

    async def insert(self, upload: Upload) -> None:
        # `parts_bytes` (the parts' total, kept beside `parts` by each push) lets one conditional
        # write cap the total; it lives in the store only.
        document = to_document(upload) | {"parts_bytes": sum(part.bytes for part in upload.parts)}
        with mongo_errors():
            await self._uploads.insert_one(document)

    async def get(self, *, client_id: str, upload_id: str) -> Upload | None:
        with mongo_errors():
            return from_document(
                Upload, await self._uploads.find_one({"_id": upload_id, "client_id": client_id})
            )

    async def add_part(
        self, *, client_id: str, upload_id: str, part: UploadPart, max_parts: int, max_total_bytes: int
    ) -> Upload | None:
        query: dict[str, Any] = {
            "_id": upload_id,
            "client_id": client_id,
            "status": "pending",
            # Fewer than max_parts parts: the array has no element at index max_parts - 1.
            f"parts.{max_parts - 1}": {"$exists": False},
            "$or": [
                {"parts_bytes": {"$lte": max_total_bytes - part.bytes}},
                {"parts_bytes": {"$exists": False}},  # an upload stored before the field
            ],
        }
        with mongo_errors():
            doc = await self._uploads.find_one_and_update(
                query,
                {"$push": {"parts": part.model_dump(mode="json")}, "$inc": {"parts_bytes": part.bytes}},
                projection={"parts": 0},
                return_document=ReturnDocument.AFTER,
            )
        return from_document(Upload, doc)

    async def usage(self, *, client_id: str, now: int) -> tuple[int, int]:
        with mongo_errors():
            cursor = await self._uploads.aggregate(
                [
                    {"$match": {"client_id": client_id, "status": "pending", "expires_at": {"$gte": now}}},
                    {"$group": {"_id": None, "bytes": {"$sum": "$bytes"}, "uploads": {"$sum": 1}}},
                ]
            )
            rows = await cursor.to_list()
        return (int(rows[0]["uploads"]), int(rows[0]["bytes"])) if rows else (0, 0)

    async def take_expired(self, *, before: int) -> Upload | None:
        with mongo_errors():
            doc = await self._uploads.find_one_and_delete(
                {"expires_at": {"$lt": before}}, projection={"parts": 0}
            )
        return from_document(Upload, doc)

    async def pending_ids(self, *, client_id: str, ids: list[str]) -> set[str]:
        with mongo_errors():
            found = await self._uploads.distinct(
                "_id", {"_id": {"$in": ids}, "client_id": client_id, "status": "pending"}
            )
        return {str(value) for value in found}

    async def finish(
        self, *, client_id: str, upload_id: str, status: str, file_id: str | None
    ) -> Upload | None:
        with mongo_errors():
            doc = await self._uploads.find_one_and_update(
                {"_id": upload_id, "client_id": client_id, "status": "pending"},
                {"$set": {"status": status, "file_id": file_id}},
                return_document=ReturnDocument.AFTER,
            )
        return from_document(Upload, doc)
