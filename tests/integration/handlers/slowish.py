"""shop.users rows indexed after a few ms: a SIGKILL, a rebalance or a server fault lands with
work in flight."""

from __future__ import annotations

import asyncio
import random

from esupdater import Change, Context, on

from .params import INDEX


@on("shop.users")
async def sync_user(change: Change, ctx: Context) -> None:
    await asyncio.sleep(random.random() * 0.004)
    await ctx.index(index=INDEX, id=change.pk, doc=change.row)
