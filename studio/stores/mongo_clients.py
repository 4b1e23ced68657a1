"""`ClientRepository` on MongoDB: `client_config` (clients, `_id` = client id) and `api_keys`."""

from __future__ import annotations

from typing import Any

from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase

from studio.schemas.clients import ApiKey, Client, ClientLimits
from studio.stores.documents import from_document, to_document
from studio.stores.errors import mongo_errors


class MongoClientRepository:
    def __init__(self, database: AsyncDatabase[dict[str, Any]]) -> None:
        self._clients = database["client_config"]
        self._keys = database["api_keys"]

    async def insert_client(self, client: Client) -> None:
        with mongo_errors():
            await self._clients.insert_one(to_document(client))

    async def get_client(self, client_id: str) -> Client | None:
        with mongo_errors():
            doc = await self._clients.find_one({"_id": client_id})
        return from_document(Client, doc)

    async def get_clients(self, client_ids: list[str]) -> list[Client]:
        with mongo_errors():
            docs = await self._clients.find({"_id": {"$in": client_ids}}).to_list()
        return [client for doc in docs if (client := from_document(Client, doc)) is not None]

    async def list_clients(self, *, after: str | None, limit: int) -> list[Client]:
        query: dict[str, Any] = {} if after is None else {"_id": {"$gt": after}}
        with mongo_errors():
            docs = await self._clients.find(query).sort("_id", ASCENDING).limit(limit).to_list()
        return [client for doc in docs if (client := from_document(Client, doc)) is not None]

    async def set_client_disabled(self, client_id: str, disabled: bool) -> Client | None:
        with mongo_errors():
            doc = await self._clients.find_one_and_update(
                {"_id": client_id}, {"$set": {"disabled": disabled}}, return_document=ReturnDocument.AFTER
            )
        return from_document(Client, doc)

    async def update_client(self, client_id: str, *, name: str, limits: ClientLimits) -> Client | None:
        changes = {"name": name, "limits": limits.model_dump(mode="json")}
        with mongo_errors():
            doc = await self._clients.find_one_and_update(
                {"_id": client_id}, {"$set": changes}, return_document=ReturnDocument.AFTER
            )
        return from_document(Client, doc)

    async def insert_key(self, key: ApiKey) -> None:
        with mongo_errors():
            await self._keys.insert_one(to_document(key))

    async def find_key_by_hash(self, key_hash: str) -> ApiKey | None:
        with mongo_errors():
            doc = await self._keys.find_one({"key_hash": key_hash})
        return from_document(ApiKey, doc)

    async def list_keys(self, client_id: str) -> list[ApiKey]:
        with mongo_errors():
            docs = await self._keys.find({"client_id": client_id}).sort("created_at", ASCENDING).to_list()
        return [key for doc in docs if (key := from_document(ApiKey, doc)) is not None]

    async def set_key_disabled(self, *, client_id: str, key_id: str, disabled: bool) -> ApiKey | None:
        with mongo_errors():
            doc = await self._keys.find_one_and_update(
                {"_id": key_id, "client_id": client_id},
                {"$set": {"disabled": disabled}},
                return_document=ReturnDocument.AFTER,
            )
        return from_document(ApiKey, doc)
