"""shop.users rows indexed after an uneven pause of up to 0.1 s, each start logged
("handling topic/partition@offset#row") for the test to check the order of starts against
rebalances. Uneven, so all the rows of one partition can end first."""

from __future__ import annotations

import asyncio
import random

from esupdater import Change, Context, on

from .params import INDEX


@on("shop.users")
async def sync_user(change: Change, ctx: Context) -> None:
    ctx.log.info("handling %s#%d", change.position, change.row_index)
    await asyncio.sleep(random.random() * 0.1)
    await ctx.index(index=INDEX, id=change.pk, doc=change.row)
