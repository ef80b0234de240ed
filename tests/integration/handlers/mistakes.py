"""A handler's own mistakes: the row named "no-await" calls ctx.index without awaiting it, the
row named "timeout" hits the handler's own asyncio timeout; other rows are indexed."""

from __future__ import annotations

import asyncio

from esupdater import Change, Context, on

from .params import INDEX


@on("shop.users")
async def sync_user(change: Change, ctx: Context) -> None:
    if change.row["name"] == "no-await":
        ctx.index(index=INDEX, id=change.pk, doc=change.row)  # type: ignore[unused-coroutine]
        return
    if change.row["name"] == "timeout":
        async with asyncio.timeout(0.01):
            await asyncio.sleep(1)
    await ctx.index(index=INDEX, id=change.pk, doc=change.row)
