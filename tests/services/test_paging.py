"""Keyset pages on the real MongoDB-protocol server: every document once, in order, ties included."""

from __future__ import annotations

from typing import Any

from pymongo import AsyncMongoClient

from studio.stores.mongo_paging import page


async def test_pages_walk_every_document_once_in_order_across_ties(mongo_url: str) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url)
    try:
        collection = client["t_paging"]["docs"]
        await collection.drop()
        # Keys with ties (several documents created within one second), two owners.
        docs = [{"_id": f"d{i:02d}", "owner": "a", "created_at": i // 3} for i in range(11)]
        await collection.insert_many([*docs, {"_id": "other", "owner": "b", "created_at": 1}])
        for ascending in (True, False):
            expected = sorted(docs, key=lambda d: (d["created_at"], d["_id"]), reverse=not ascending)
            walked: list[dict[str, Any]] = []
            after = None
            while True:
                found = await page(
                    collection, {"owner": "a"}, key="created_at", after=after, limit=2, ascending=ascending
                )
                walked += found
                if len(found) < 2:
                    break
                after = found[-1]["_id"]
            assert [d["_id"] for d in walked] == [d["_id"] for d in expected]
    finally:
        await client.close()
