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
    order = [(key, direction), ("_id", direction)]
    if after is None:
        return await collection.find(query).sort(order).limit(limit).to_list()
    anchor = await collection.find_one({**query, "_id": after}, projection={key: 1})
    if anchor is None:
        return []
    op = "$gt" if ascending else "$lt"
    # Two indexed range reads rather than one `$or` (which the embedded server answers by a scan):
    # the anchor's ties past it by id, then the keys past it.
    ties = (
        await collection.find({**query, key: anchor[key], "_id": {op: after}})
        .sort(order)
        .limit(limit)
        .to_list()
    )
    if len(ties) >= limit:
        return ties
    rest = (
        await collection.find({**query, key: {op: anchor[key]}})
        .sort(order)
        .limit(limit - len(ties))
        .to_list()
    )
    return ties + rest
