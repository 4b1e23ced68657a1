"""Keyset pagination shared by every list: `after` names the last item of the previous page."""

from __future__ import annotations

from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.collection import AsyncCollection


async def page(
    collection: AsyncCollection[dict[str, Any]],
    query: dict[str, Any],
    *,
    key: str,
    after: str | None,
    limit: int,
    ascending: bool,
) -> list[dict[str, Any]]:
    """Return up to `limit` documents matching `query`, ordered by (`key`, `_id`), past the document `after`.

    An `after` that matches no document (deleted, or another tenant's) gives an empty page.
    """
    direction = ASCENDING if ascending else DESCENDING
    if after is not None:
        anchor = await collection.find_one({**query, "_id": after}, projection={key: 1})
        if anchor is None:
            return []
        op = "$gt" if ascending else "$lt"
        query = {
            **query,
            "$or": [{key: {op: anchor[key]}}, {key: anchor[key], "_id": {op: after}}],
        }
    cursor = collection.find(query).sort([(key, direction), ("_id", direction)]).limit(limit)
    return await cursor.to_list()
