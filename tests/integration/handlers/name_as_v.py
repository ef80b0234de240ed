"""shop.users rows indexed as {"v": the row's name}: a name that is not a number is a document
an index mapping `v` as a long refuses."""

from __future__ import annotations

from esupdater import Change, Context, on

from .params import INDEX


@on("shop.users")
async def sync_user(change: Change, ctx: Context) -> None:
    await ctx.index(index=INDEX, id=change.pk, doc={"v": change.raw["name"]})
