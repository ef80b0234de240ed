"""shop.users rows indexed; rows named "slow" first leave a file `started-<pk>` in the working
directory and take `slow_seconds` (0: none), so a stop finds them in flight."""

from __future__ import annotations

import asyncio

from esupdater import Change, Context, on

from .params import INDEX, WORKDIR, param

SLOW_SECONDS = float(param("slow_seconds"))


@on("shop.users")
async def sync_user(change: Change, ctx: Context) -> None:
    if change.row["name"] == "slow" and SLOW_SECONDS:
        (WORKDIR / f"started-{change.pk}").touch()
        await asyncio.sleep(SLOW_SECONDS)
    await ctx.index(index=INDEX, id=change.pk, doc=change.row)
