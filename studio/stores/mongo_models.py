"""The base-model registry on MongoDB."""

from __future__ import annotations

from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase

from studio.schemas.base_models import BaseModelEntry
from studio.stores.documents import from_document, to_document
from studio.stores.errors import mongo_errors


class MongoBaseModelRepository:
    def __init__(self, database: AsyncDatabase[dict[str, Any]]) -> None:
        self._models = database["base_models"]

    async def put(self, entry: BaseModelEntry) -> None:
        doc = to_document(entry)
        with mongo_errors():
            await self._models.replace_one({"_id": doc["_id"]}, doc, upsert=True)

    async def get(self, model_id: str) -> BaseModelEntry | None:
        with mongo_errors():
            return from_document(BaseModelEntry, await self._models.find_one({"_id": model_id}))

    async def list(self) -> list[BaseModelEntry]:
        with mongo_errors():
            docs = await self._models.find({}).sort([("_id", ASCENDING)]).to_list()
        return [m for doc in docs if (m := from_document(BaseModelEntry, doc)) is not None]

    async def delete(self, model_id: str) -> bool:
        with mongo_errors():
            result = await self._models.delete_one({"_id": model_id})
        return result.deleted_count == 1
