"""One route for the shards shop.orders_*: a document `<table>-<pk>` naming the table."""

from __future__ import annotations

from esupdater import Change, Context, on

from .params import INDEX


@on("shop.orders_*")
async def order(change: Change, ctx: Context) -> None:
    await ctx.index(index=INDEX, id=f"{change.table}-{change.pk}", doc={"table": change.table})
