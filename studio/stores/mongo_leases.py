"""`LeaseRepository` on MongoDB: one document per lease in `leases`, taken by a conditional write."""

from __future__ import annotations

from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from studio.errors import Conflict
from studio.stores.errors import mongo_errors


class MongoLeaseRepository:
    def __init__(self, database: AsyncDatabase[dict[str, Any]]) -> None:
        self._leases = database["leases"]

    async def claim(self, name: str, *, holder: str, now: float, until: float) -> bool:
        with mongo_errors():
            taken = await self._leases.update_one(
                {"_id": name, "until": {"$lte": now}}, {"$set": {"until": until, "holder": holder}}
            )
        if taken.matched_count == 1:
            return True
        try:
            # Never taken before: the first insert wins; a replica racing it gets a duplicate key.
            with mongo_errors():
                await self._leases.insert_one({"_id": name, "until": until, "holder": holder})
        except Conflict:
            return False
        return True
