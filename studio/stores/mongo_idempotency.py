"""`Idempotency-Key` records in MongoDB: an atomic claim (unique `_id`), the stored answer, expiry."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from studio.errors import Conflict
from studio.schemas.idempotency import IdempotencyRecord
from studio.stores.documents import from_document, to_document
from studio.stores.errors import mongo_errors

COLLECTION = "idempotency_keys"


class MongoIdempotencyRepository:
    """The `IdempotencyRepository` of `studio.services.idempotency`, on `idempotency_keys`."""

    def __init__(self, database: AsyncDatabase[dict[str, Any]]) -> None:
        self._keys = database[COLLECTION]

    async def claim(self, record: IdempotencyRecord, *, now: datetime) -> IdempotencyRecord | None:
        """Insert `record` (in progress) unless its client and key have a live record; return that one.

        Returns None when `record` was stored: the caller owns the key. A record past its expiry is
        replaced (removed, then the insert tried again once).
        """
        for _ in range(2):
            try:
                document = to_document(record)
                document["expires_at"] = record.expires_at  # a BSON date, for the TTL index
                with mongo_errors():
                    await self._keys.insert_one(document)
                return None
            except Conflict:
                found = await self.get(record.id)
                if found is None:
                    continue  # expired and swept between the insert and the read: try again
                if found.expires_at.replace(tzinfo=None) > now.replace(tzinfo=None):
                    return found
                with mongo_errors():
                    await self._keys.delete_one({"_id": record.id, "created_at": found.created_at})
        found = await self.get(record.id)
        if found is None:
            raise Conflict("the idempotency key could not be claimed; try again", code="idempotency_race")
        return found

    async def get(self, record_id: str) -> IdempotencyRecord | None:
        with mongo_errors():
            return from_document(IdempotencyRecord, await self._keys.find_one({"_id": record_id}))

    async def complete(
        self,
        *,
        record_id: str,
        request_hash: str,
        status_code: int,
        body: str,
        final_hash: str | None = None,
    ) -> None:
        """Store the answer of the request that claimed the key (and its hash, once known)."""
        done = {"state": "done", "status_code": status_code, "body": body}
        with mongo_errors():
            await self._keys.update_one(
                {"_id": record_id, "request_hash": request_hash, "state": "in_progress"},
                {"$set": {**done, "request_hash": final_hash or request_hash}},
            )

    async def release(self, *, record_id: str, request_hash: str) -> None:
        """Drop a claim whose request failed, so the same key can be tried again."""
        with mongo_errors():
            await self._keys.delete_one(
                {"_id": record_id, "request_hash": request_hash, "state": "in_progress"}
            )
