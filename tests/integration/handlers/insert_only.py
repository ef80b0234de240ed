"""An INSERT-only handler writing to INDEX, and one for every change writing to INDEX-all."""

from __future__ import annotations

from esupdater import Change, Context, on

from .params import INDEX


@on("shop.users", types={"INSERT"})
async def inserted(change: Change, ctx: Context) -> None:
    await ctx.index(index=INDEX, id=change.pk, doc={"type": change.type, "v": change.row["v"]})


@on("shop.users")
async def every(change: Change, ctx: Context) -> None:
    await ctx.index(index=INDEX + "-all", id=f"{change.pk}-{change.offset}",
                    doc={"type": change.type})
