"""shop.users rows indexed after a random pause; a TRUNCATE empties the index (what a user's
handler for a truncated table does) as soon as it runs."""

from __future__ import annotations

import asyncio
import random

from esupdater import Change, Context, on

from .params import INDEX


@on("shop.users")
async def sync_user(change: Change, ctx: Context) -> None:
    await asyncio.sleep(random.random() * 0.05)
    await ctx.index(index=INDEX, id=change.pk, doc=change.row)


@on("shop.users", types={"TRUNCATE"})
async def truncated(change: Change, ctx: Context) -> None:
    # The test server has no _delete_by_query: search what is there and delete it.
    await ctx.es.indices.refresh(index=INDEX, ignore_unavailable=True)
    found = await ctx.es.search(index=INDEX, size=1000, ignore_unavailable=True)
    await ctx.bulk([{"_op_type": "delete", "_index": INDEX, "_id": hit["_id"]}
                    for hit in found["hits"]["hits"]])
