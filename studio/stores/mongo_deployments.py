"""Deployments (`model_routing`) on MongoDB, and the routing version counter (`model_routing_version`).

Every write bumps the counter after the record is written, so an ingress that reads the counter and
sees it change reloads a table that already holds the change.
"""

from __future__ import annotations

import builtins
from typing import Any

from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase

from studio.domain.deployments import LIVE, DeploymentStatus
from studio.errors import Conflict
from studio.schemas.deployments import Deployment, DeploymentChanges
from studio.stores.documents import from_document, to_document
from studio.stores.errors import mongo_errors

_VERSION_ID = "routing"


class MongoDeploymentRepository:
    def __init__(self, database: AsyncDatabase[dict[str, Any]]) -> None:
        self._deployments = database["model_routing"]
        self._version = database["model_routing_version"]

    async def _bump(self) -> None:
        with mongo_errors():
            await self._version.update_one({"_id": _VERSION_ID}, {"$inc": {"version": 1}}, upsert=True)

    async def insert(self, deployment: Deployment) -> None:
        try:
            with mongo_errors():
                await self._deployments.insert_one(to_document(deployment))
        except Conflict as exc:
            raise Conflict(
                f"the model {deployment.model!r} is already deployed", param="model", code="already_deployed"
            ) from exc
        await self._bump()

    async def get(self, deployment_id: str) -> Deployment | None:
        with mongo_errors():
            return from_document(Deployment, await self._deployments.find_one({"_id": deployment_id}))

    async def get_by_model(self, model: str) -> Deployment | None:
        with mongo_errors():
            return from_document(Deployment, await self._deployments.find_one({"model": model}))

    async def _find(self, query: dict[str, Any]) -> builtins.list[Deployment]:
        with mongo_errors():
            docs = (
                await self._deployments.find(query)
                .sort([("created_at", ASCENDING), ("_id", ASCENDING)])
                .to_list()
            )
        return [d for doc in docs if (d := from_document(Deployment, doc)) is not None]

    async def list(self, *, client_id: str | None = None) -> builtins.list[Deployment]:
        return await self._find({} if client_id is None else {"client_id": client_id})

    async def list_own_and_bases(self, client_id: str) -> builtins.list[Deployment]:
        # Two indexed reads rather than every record: a tenant's list must not cost the whole table.
        found = {d.id: d for d in await self._find({"client_id": client_id})}
        found.update((d.id, d) for d in await self._find({"kind": "base"}))
        return sorted(found.values(), key=lambda d: (d.created_at, d.id))

    async def list_held(self, client_id: str) -> builtins.list[Deployment]:
        # Two indexed reads, as above: what it created (a fine-tune it owns, a base it may have let go)
        # and the shared bases it holds; the caller keeps those it holds (`Deployment.held_by`).
        found = {d.id: d for d in await self._find({"client_id": client_id})}
        found.update((d.id, d) for d in await self._find({"holders": client_id}))
        return sorted(found.values(), key=lambda d: (d.created_at, d.id))

    async def _record_holders(self, deployment: Deployment) -> None:
        # A base stored before holders existed: write the holders it is read with (its creator), so the
        # atomic updates below have a list to work on. A no-op for every newer record.
        with mongo_errors():
            await self._deployments.update_one(
                {"_id": deployment.id, "holders": {"$exists": False}},
                {"$set": {"holders": deployment.holders}},
            )

    async def add_holder(self, deployment: Deployment, holder: str) -> Deployment | None:
        await self._record_holders(deployment)
        with mongo_errors():
            doc = await self._deployments.find_one_and_update(
                {"_id": deployment.id, "status": {"$in": sorted(LIVE)}},
                {"$addToSet": {"holders": holder}},
                return_document=ReturnDocument.AFTER,
            )
        return from_document(Deployment, doc)

    async def drop_holder(self, deployment: Deployment, holder: str) -> Deployment | None:
        await self._record_holders(deployment)
        with mongo_errors():
            doc = await self._deployments.find_one_and_update(
                {"_id": deployment.id, "holders": holder},
                {"$pull": {"holders": holder}},
                return_document=ReturnDocument.AFTER,
            )
        return from_document(Deployment, doc)

    async def list_in(self, statuses: builtins.list[DeploymentStatus]) -> builtins.list[Deployment]:
        return await self._find({"status": {"$in": statuses}})

    async def list_attached(self, base_deployment: str) -> builtins.list[Deployment]:
        return await self._find({"base_deployment": base_deployment})

    async def update(
        self,
        *,
        deployment_id: str,
        expected: DeploymentStatus,
        changes: DeploymentChanges,
        unheld: bool = False,
    ) -> Deployment | None:
        fields = changes.model_dump(mode="json", exclude_unset=True)
        query: dict[str, Any] = {"_id": deployment_id, "status": expected}
        if unheld:
            query["holders"] = {"$size": 0}
        with mongo_errors():
            doc = await self._deployments.find_one_and_update(
                query,
                {"$set": fields},
                return_document=ReturnDocument.AFTER,
            )
        if doc is not None:
            await self._bump()
        return from_document(Deployment, doc)

    async def remove(self, deployment_id: str) -> bool:
        with mongo_errors():
            result = await self._deployments.delete_one({"_id": deployment_id})
        await self._bump()
        return result.deleted_count == 1

    async def version(self) -> int:
        with mongo_errors():
            doc = await self._version.find_one({"_id": _VERSION_ID})
        return int(doc["version"]) if doc else 0
